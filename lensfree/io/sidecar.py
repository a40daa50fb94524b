"""Files beside a run store: the writer's lock and the log.

Neither lives inside the store's folder, so Zarr tools list only Zarr there:
``RUN.zarr.lock`` names the one process writing the store, ``RUN.zarr.log`` collects every
command run on it, the library's INFO records and the error that ended a run.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import threading
import time
from contextlib import contextmanager

from lensfree.errors import LensfreeError

log = logging.getLogger(__name__)

_held: dict[str, int] = {}  # lock path -> how many times this process holds it
_guard = threading.Lock()


def lock_path(store: str) -> str:
    return os.path.normpath(os.path.abspath(store)) + ".lock"


def log_path(store: str) -> str:
    return os.path.normpath(os.path.abspath(store)) + ".log"


def _alive(pid: int) -> bool:
    """Whether process ``pid`` still runs (a zombie, killed but not yet reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return True


@contextmanager
def lock(store: str):
    """Hold ``store``'s writer lock (re-entrant within this process).

    Another live process holding it is a LensfreeError naming its pid, host and command;
    a lock left by a process of this host that no longer exists is taken over.
    """
    path = lock_path(store)
    with _guard:
        if _held.get(path):
            _held[path] += 1
            owner = None
        else:
            owner = _acquire(path, store)
            _held[path] = 1
    try:
        yield
    finally:
        with _guard:
            _held[path] -= 1
            if not _held[path]:
                del _held[path]
                if owner is not None:
                    try:
                        os.remove(path)
                    except FileNotFoundError:
                        pass


def _acquire(path: str, store: str) -> dict:
    me = {"pid": os.getpid(), "host": socket.gethostname(),
          "command": " ".join(os.path.basename(a) if i == 0 else a
                              for i, a in enumerate(sys.argv)),
          "since": time.strftime("%Y-%m-%d %H:%M:%S")}
    os.makedirs(os.path.dirname(path), exist_ok=True)
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _holder(path)
            if holder.get("host") == me["host"] and not _alive(int(holder.get("pid", 0))):
                log.warning("%s: taking over the lock of pid %s, which no longer runs",
                            store, holder.get("pid"))
                os.remove(path)
                continue
            raise LensfreeError(
                f"{store}: in use by pid {holder.get('pid')} on {holder.get('host')} since "
                f"{holder.get('since')} ({holder.get('command')}); wait for it to finish, or "
                f"remove {path} if that process is gone") from None
        with os.fdopen(fd, "w") as f:
            json.dump(me, f)
        return me
    raise LensfreeError(f"{store}: could not take the lock {path}")


def _holder(path: str) -> dict:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


class _StoreLog(logging.Handler):
    """Appends records to ``RUN.zarr.log`` once the store exists (records from before wait,
    so a command refused on bad input never leaves a log of a store that is not there)."""

    def __init__(self, store: str):
        super().__init__(logging.INFO)
        self.store, self.path = store, log_path(store)
        self.pending: list[str] = []
        self.setFormatter(logging.Formatter(
            "%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"))

    def emit(self, record):
        self.pending.append(self.format(record))
        if os.path.isdir(self.store):
            with open(self.path, "a") as f:  # a line at a time: a SIGKILL loses nothing
                f.write("\n".join(self.pending) + "\n")
            self.pending.clear()


_logs: dict[str, list] = {}  # log path -> [handler, users]


@contextmanager
def store_log(store: str, logger: str = "lensfree"):
    """Send ``logger``'s INFO records to ``store``'s log while inside (nested uses share
    one handler, so every record is written once)."""
    path = log_path(store)
    root = logging.getLogger(logger)
    with _guard:
        entry = _logs.get(path)
        if entry is None:
            entry = _logs[path] = [_StoreLog(store), 0]
            root.addHandler(entry[0])
            if root.getEffectiveLevel() > logging.INFO:
                root.setLevel(logging.INFO)
        entry[1] += 1
    try:
        yield entry[0]
    finally:
        with _guard:
            entry[1] -= 1
            if not entry[1]:
                root.removeHandler(entry[0])
                del _logs[path]
