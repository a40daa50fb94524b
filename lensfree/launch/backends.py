"""Back ends: one small interface over a plain loop, Dask distributed and MPI.

Stages describe work as a list of small picklable tasks and a module-level function; a
back end runs ``fn(task)`` for every task somewhere and hands the results back to the
root, in task order. Because the order of results never depends on who computed them,
a stage that folds them left to right gets the same numbers on every back end.
"""

from __future__ import annotations

import logging
import os
import sys
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from tqdm.auto import tqdm

from lensfree.errors import LensfreeError
from lensfree.partitioning import assign

log = logging.getLogger(__name__)

BACKENDS = ("local", "dask", "mpi")


class Backend(ABC):
    """Where tasks run. ``is_root`` is True on the one process that combines and writes."""

    name: str = ""
    n_workers: int = 1
    is_root: bool = True

    def __init__(self, *, progress: bool = True):
        self.progress = progress

    @abstractmethod
    def map(self, fn: Callable, tasks: Sequence, shared=None, *,
            names: Sequence[str] | None = None, desc: str = "") -> list | None:
        """``[fn(t, shared) for t in tasks]`` computed on the workers.

        ``shared`` (say, a detector mask) travels to each worker once, not with every
        task. Returns the list, in task order, on the root, and None elsewhere.
        """

    def bcast(self, obj):
        """``obj`` from the root, on every process (identity where there is one process)."""
        return obj

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _bar(self, total: int, desc: str):
        return tqdm(total=total, desc=desc, unit="task", file=sys.stderr, leave=False,
                    disable=not (self.progress and self.is_root), dynamic_ncols=True)


class LocalBackend(Backend):
    """In this process: a plain loop, or a thread pool with ``workers > 1``."""

    name = "local"

    def __init__(self, workers: int = 1, **kw):
        super().__init__(**kw)
        self.n_workers = workers

    def map(self, fn, tasks, shared=None, *, names=None, desc=""):
        with self._bar(len(tasks), desc) as bar:
            if self.n_workers == 1:
                results = []
                for task in tasks:
                    results.append(fn(task, shared))
                    bar.update()
                return results
            with ThreadPoolExecutor(self.n_workers) as pool:
                futures = [pool.submit(fn, t, shared) for t in tasks]
                for f in futures:
                    f.add_done_callback(lambda _: bar.update())
                return [f.result() for f in futures]


class DaskBackend(Backend):
    """``distributed.Client`` on a new LocalCluster, or on an existing scheduler."""

    name = "dask"

    def __init__(self, workers: int | None = None, scheduler: str | None = None,
                 dashboard_address: str = ":8787", shutdown: bool = False, **kw):
        super().__init__(**kw)
        from distributed import Client, LocalCluster

        self.cluster = None
        self.shutdown = shutdown
        if scheduler:
            try:
                self.client = Client(scheduler, timeout="10s")
            except OSError as exc:
                raise LensfreeError(f"--scheduler {scheduler}: cannot connect ({exc})") from None
            if workers:
                self.client.wait_for_workers(workers, timeout=120)
        else:
            self.cluster = LocalCluster(
                n_workers=workers or os.cpu_count(),
                threads_per_worker=1,
                processes=True,
                dashboard_address=dashboard_address,
            )
            self.client = Client(self.cluster)
        self.n_workers = max(1, len(self.client.scheduler_info()["workers"]))
        self.dashboard_link = self.client.dashboard_link
        log.info("dask: %d workers, dashboard %s", self.n_workers, self.dashboard_link)

    def map(self, fn, tasks, shared=None, *, names=None, desc=""):
        from distributed import as_completed

        if not tasks:
            return []
        # a token keeps keys unique across runs sharing one cluster; the task stream
        # still shows the readable prefix ("sum-shard-0003")
        token = uuid.uuid4().hex[:8]
        keys = [f"{n}-{token}" for n in names] if names else None
        # scatter a one-element list: scatter would split a tuple into many futures
        [shared_future] = self.client.scatter([shared], broadcast=True, hash=False)
        futures = self.client.map(fn, tasks, shared=shared_future, key=keys, pure=False,
                                  retries=2)
        with self._bar(len(tasks), desc) as bar:
            for _ in as_completed(futures):
                bar.update()
        results = self.client.gather(futures)
        for f in futures:
            f.release()
        shared_future.release()
        return results

    def close(self):
        if self.shutdown:  # a cluster booted for this run alone (inside an MPI job)
            self.client.shutdown()
        else:
            self.client.close()
        if self.cluster is not None:
            self.cluster.close()


#: environment variables in which MPI launchers give the job's size
_MPI_SIZE_VARS = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE", "PMIX_SIZE")


def mpi_world_size() -> int:
    """Ranks in the MPI job this process was launched in (1 outside ``mpirun``)."""
    for var in _MPI_SIZE_VARS:
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    return 1


def boot_dask_in_mpi(dashboard_address: str = ":8787") -> str | None:
    """A Dask cluster inside an MPI allocation (dask-mpi): rank 0 runs the scheduler, ranks
    2 and up run workers (each under a nanny, so a dying worker is restarted), rank 1
    goes on as the client. Returns the scheduler address on rank 1; the other ranks
    return None once the client has shut the cluster down.
    """
    size = mpi_world_size()
    if size < 3:
        raise LensfreeError(f"--backend dask under mpirun needs at least 3 ranks (scheduler, "
                            f"client, a worker), got {size}; or use --backend mpi")
    # cluster start-up and shut-down chatter (and its closed-comm tracebacks) at INFO on
    # every rank and nanny-spawned worker: keep it off the job's output unless asked
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")
    try:
        import dask
        import dask_mpi
    except ImportError:
        raise LensfreeError("--backend dask under mpirun needs dask-mpi: "
                            "pip install 'lensfree[mpi]'") from None
    is_client = dask_mpi.initialize(exit=False, worker_class="distributed.Nanny", nthreads=1,
                                    dashboard_address=dashboard_address)
    return dask.config.get("scheduler_address") if is_client else None


class MPIBackend(Backend):
    """SPMD under ``mpirun -n N lensfree ...``: every rank runs the stage; rank 0 is root."""

    name = "mpi"

    def __init__(self, **kw):
        super().__init__(**kw)
        try:
            from mpi4py import MPI
        except ImportError:
            raise LensfreeError(
                "--backend mpi needs mpi4py: pip install 'lensfree[mpi]'"
            ) from None
        self.comm = MPI.COMM_WORLD
        self.rank = self.comm.Get_rank()
        self.n_workers = self.comm.Get_size()
        self.is_root = self.rank == 0

    def map(self, fn, tasks, shared=None, *, names=None, desc=""):
        mine = assign(len(tasks), self.n_workers, self.rank)
        local = []
        # The root's bar counts its own block; ranks get blocks of equal length.
        with self._bar(len(mine), desc) as bar:
            for i in mine:
                local.append(fn(tasks[i], shared))
                bar.update()
        gathered = self.comm.gather(local, root=0)
        if not self.is_root:
            return None
        return [r for block in gathered for r in block]

    def bcast(self, obj):
        return self.comm.bcast(obj, root=0)

    def abort(self, code: int = 1) -> None:
        self.comm.Abort(code)


def make_backend(name: str, *, workers: int | None = None, scheduler: str | None = None,
                 progress: bool = True, dashboard_address: str = ":8787",
                 shutdown: bool = False) -> Backend:
    """The back end ``name`` (one of `BACKENDS`)."""
    if workers is not None and workers < 1:
        raise LensfreeError(f"--workers {workers}: must be at least 1")
    if name == "local":
        return LocalBackend(workers or 1, progress=progress)
    if name == "dask":
        return DaskBackend(workers, scheduler, dashboard_address=dashboard_address,
                           shutdown=shutdown, progress=progress)
    if name == "mpi":
        return MPIBackend(progress=progress)
    raise LensfreeError(f"--backend {name}: unknown, choose one of {', '.join(BACKENDS)}")
