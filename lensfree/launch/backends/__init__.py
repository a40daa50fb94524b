"""Back ends: one small interface over a plain loop, Dask distributed and MPI.

`BACKENDS` maps each ``--backend`` name to its class; a new back end is one `Backend`
subclass and one line there. The command line needs four functions: `start_backend`
(which also boots a Dask cluster inside an MPI job), and `rank_of` and `abort_job` for
reporting a failure on one rank of a job.
"""

from __future__ import annotations

from lensfree.errors import LensfreeError
from lensfree.launch.backends.base import DASHBOARD_ADDRESS, Backend, BackendOptions
from lensfree.launch.backends.dask import DaskBackend, boot_dask_in_mpi
from lensfree.launch.backends.local import LocalBackend
from lensfree.launch.backends.mpi import MPIBackend, mpi_world_size

__all__ = ["BACKENDS", "Backend", "BackendOptions", "DaskBackend", "LocalBackend",
           "MPIBackend", "abort_job", "boot_dask_in_mpi", "make_backend", "mpi_world_size",
           "rank_of", "start_backend"]

BACKENDS: dict[str, type[Backend]] = {
    cls.name: cls for cls in (LocalBackend, DaskBackend, MPIBackend)
}


def _backend_class(name: str) -> type[Backend]:
    try:
        return BACKENDS[name]
    except KeyError:
        raise LensfreeError(f"--backend {name}: unknown, choose one of "
                            f"{', '.join(BACKENDS)}") from None


def make_backend(name: str, **options) -> Backend:
    """The back end ``name`` (a key of `BACKENDS`) with `BackendOptions` ``options``."""
    cls = _backend_class(name)
    return cls.from_options(BackendOptions(**options))


def start_backend(name: str, **options) -> Backend | None:
    """`make_backend`, except for ``dask`` inside an MPI job of N > 1 ranks.

    There it first boots a Dask cluster across the job (`boot_dask_in_mpi`): rank 1 goes
    on with a back end on that cluster (N - 2 workers, shut down when it closes); the
    scheduler's and the workers' ranks get None once the cluster has finished, and have
    nothing left to do.
    """
    if name == "dask" and mpi_world_size() > 1:
        address = boot_dask_in_mpi(options.get("dashboard_address", DASHBOARD_ADDRESS))
        if address is None:
            return None
        options.update(scheduler=address, workers=mpi_world_size() - 2, shutdown=True)
    return make_backend(name, **options)


def rank_of(name: str | None) -> int:
    """This process's rank under back end ``name`` (0 outside MPI; None: a command that
    has no back end)."""
    return _backend_class(name).process_rank() if name else 0


def abort_job(name: str | None, code: int) -> None:
    """After a failure on this process, stop every process of the job with ``code``
    (MPI with more than one rank: ``Abort``, so no rank waits forever; others: nothing)."""
    if name:
        _backend_class(name).abort_job(code)
