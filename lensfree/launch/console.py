"""What the command line shows while a command runs: the back end it got and its result.

Only the command line prints; the library logs.
"""

from __future__ import annotations

import logging
import os
import sys
from contextlib import contextmanager

from lensfree.launch import backends


class ServedCluster(Exception):  # noqa: N818 (not an error: a rank's part is done)
    """This MPI rank ran the scheduler or a worker of a Dask cluster booted inside the
    allocation, and the cluster has finished: the command is done here."""


@contextmanager
def open_backend(execution, backend=None):
    """The back end ``execution`` asks for, announced on the root, closed afterwards;
    ``backend``: one already open, used as it is (and left open)."""
    if backend is not None:
        yield backend
        return
    if execution.backend == "dask" and not os.environ.get("LENSFREE_DEBUG"):
        import distributed  # noqa: F401  (its import sets its loggers to INFO)

        # cluster start and stop at INFO are noise on a user's terminal
        logging.getLogger("distributed").setLevel(logging.WARNING)
    backend = backends.start_backend(
        execution.backend, workers=execution.workers, scheduler=execution.scheduler,
        progress=not execution.quiet, dashboard_address=execution.dashboard_address,
        security=execution.security)
    if backend is None:
        raise ServedCluster
    with backend:
        if backend.is_root:
            link = getattr(backend, "dashboard_link", None)
            extra = f", dashboard {link}" if link else ""
            report([f"backend {backend.name}: {backend.n_workers} worker(s){extra}"])
        try:
            yield backend
        except KeyboardInterrupt:
            # workers cut short while closing are expected now: keep the one-line ending
            logging.getLogger("distributed").setLevel(logging.ERROR)
            raise


def report(lines) -> None:
    """Print a command's result lines."""
    for line in lines:
        print(line, file=sys.stdout, flush=True)
