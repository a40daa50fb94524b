"""The Dask back end: a ``distributed.Client`` on a LocalCluster, an existing scheduler,
or a cluster booted inside an MPI job (dask-mpi)."""

from __future__ import annotations

import logging
import os
import uuid

from lensfree.errors import LensfreeError
from lensfree.launch.backends.base import (
    DASHBOARD_ADDRESS,
    Backend,
    BackendOptions,
    check_tasks,
    fold_in_order,
)
from lensfree.launch.backends.mpi import mpi_world_size
from lensfree.partitioning import fold_split

log = logging.getLogger(__name__)

#: the nanny's setting that slows workers' reads (see `DaskBackend`)
_TRIM_KEY = "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_"


class DaskBackend(Backend):
    """``distributed.Client`` on a new LocalCluster, or on an existing scheduler."""

    name = "dask"

    def __init__(self, workers: int | None = None, scheduler: str | None = None,
                 dashboard_address: str = DASHBOARD_ADDRESS, shutdown: bool = False,
                 security: str | None = None, **kw):
        super().__init__(**kw)
        from distributed import Client, LocalCluster

        self.cluster = None
        self.shutdown = shutdown
        if scheduler:
            try:
                self.client = Client(scheduler, timeout="10s", security=_security(security))
            except OSError as exc:
                raise LensfreeError(f"--scheduler {scheduler}: cannot connect ({exc})") from None
            if workers:
                self.client.wait_for_workers(workers, timeout=120)
        else:
            import dask

            # distributed's nannies start workers with MALLOC_TRIM_THRESHOLD_=65536: glibc
            # then hands every freed decode buffer back and each chunk page-faults fresh
            # memory, so workers read Zarr chunks ~1.6x slower than this process does
            # (NOTES.md). Workers keep glibc's default, as this process has it.
            with dask.config.set({_TRIM_KEY: None}):
                self.cluster = LocalCluster(
                    n_workers=workers or os.cpu_count(),
                    threads_per_worker=1,
                    processes=True,
                    dashboard_address=dashboard_address,
                    # the workers' own warnings (a task cancelled by Ctrl-C) stay off the
                    # terminal unless they are errors; --debug keeps everything
                    silence_logs=logging.DEBUG if os.environ.get("LENSFREE_DEBUG")
                    else logging.ERROR,
                )
            self.client = Client(self.cluster)
        self.n_workers = max(1, len(self.client.scheduler_info()["workers"]))
        self.dashboard_link = self.client.dashboard_link
        log.info("dask: %d workers, scheduler %s, dashboard %s", self.n_workers,
                 self.client.scheduler.address, self.dashboard_link)

    @classmethod
    def from_options(cls, options: BackendOptions) -> DaskBackend:
        return cls(options.workers, options.scheduler,
                   dashboard_address=options.dashboard_address, shutdown=options.shutdown,
                   security=options.security, progress=options.progress)

    def map(self, fn, tasks, shared=None, *, names=None, desc=""):
        if not tasks:
            return []
        futures, shared_future, _ = self._submit(fn, tasks, shared, names)
        self._wait(futures, desc)
        results = self.client.gather(futures)
        for f in futures:
            f.release()
        shared_future.release()
        return results

    def reduce(self, fn, tasks, shared=None, *, combine, names=None, desc="", everywhere=True):
        from distributed import as_completed

        check_tasks(tasks)
        # the tree's lowest levels run inside one task per subtree of `group` leaves
        # (`fold_in_order` folds a subtree as the tree does: bit-identical), so the
        # scheduler handles a few tasks per worker instead of two per leaf, and no
        # partial of those levels travels between workers
        group = _group_size(len(tasks), self.n_workers)
        names = names or [f"{desc or 'reduce'}-{i}" for i in range(len(tasks))]
        spans = [(lo, min(lo + group, len(tasks))) for lo in range(0, len(tasks), group)]
        leaves, shared_future, token = self._submit(
            _fold_subtree, [(fn, combine, tasks[lo:hi]) for lo, hi in spans], shared,
            [names[lo] if hi - lo == 1 else f"{names[lo]}-x{hi - lo}" for lo, hi in spans])
        prefix = f"{desc or 'reduce'}-fold"

        def node(lo, hi):  # over subtrees: complete ones of `group` leaves, then the rest
            if hi - lo == 1:
                return leaves[lo]
            mid = fold_split(lo, hi)
            # a fold runs before any further leaf (priority), so partials do not pile up
            return self.client.submit(combine, node(lo, mid), node(mid, hi),
                                      key=f"{prefix}-{lo}-{hi}-{token}", priority=1,
                                      pure=False, retries=2)

        # the client lets go of every future but the root's (a done leaf at once): the
        # scheduler frees each partial once its fold has run, and sends the root alone
        root = node(0, len(leaves))
        sizes = {leaf.key: hi - lo for leaf, (lo, hi) in zip(leaves, spans, strict=True)}
        with self._bar(len(tasks), desc) as bar:
            for leaf in as_completed(leaves):
                bar.update(sizes[leaf.key])
                if leaf is not root:
                    leaf.release()
        shared_future.release()
        result = root.result()
        root.release()
        return result

    def _submit(self, fn, tasks, shared, names):
        """Futures of ``fn(t, shared)``, the future of ``shared`` and the run's key token."""
        # a token keeps keys unique across runs sharing one cluster; the task stream
        # still shows the readable prefix ("sum-shard-0003")
        token = uuid.uuid4().hex[:8]
        keys = [f"{n}-{token}" for n in names] if names else None
        # scatter a one-element list: scatter would split a tuple into many futures
        [shared_future] = self.client.scatter([shared], broadcast=True, hash=False)
        futures = self.client.map(fn, tasks, shared=shared_future, key=keys, pure=False,
                                  retries=2)
        return futures, shared_future, token

    def _wait(self, futures, desc):
        from distributed import as_completed

        with self._bar(len(futures), desc) as bar:
            for _ in as_completed(futures):
                bar.update()

    def close(self):
        if self.shutdown:  # a cluster booted for this run alone (inside an MPI job)
            self.client.shutdown()
        else:
            self.client.close()
        if self.cluster is not None:
            self.cluster.close()


def _group_size(n_tasks: int, n_workers: int) -> int:
    """Leaves per subtree task: a power of two (so that subtrees are the tree's own
    complete nodes) leaving at least four subtree tasks per worker to balance the load."""
    return max(1, 1 << max(0, (n_tasks // (4 * max(1, n_workers))).bit_length() - 1))


def _fold_subtree(task, shared):
    """One subtree of a reduce, in a worker: its leaves computed and folded in order."""
    fn, combine, leaves = task
    return fold_in_order((fn(t, shared) for t in leaves), combine)


def boot_dask_in_mpi(dashboard_address: str = DASHBOARD_ADDRESS) -> str | None:
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
    # the scheduler listens on the network: only this job's ranks may talk to it (TLS with
    # a certificate made for this run on rank 0 and handed to the others over MPI)
    dask.config.set(_tls_config(_run_certificate()))
    with dask.config.set({_TRIM_KEY: None}):  # as for a LocalCluster (DaskBackend)
        is_client = dask_mpi.initialize(exit=False, worker_class="distributed.Nanny",
                                        nthreads=1, dashboard_address=dashboard_address,
                                        protocol="tls")
    return dask.config.get("scheduler_address") if is_client else None


def _security(folder: str | None):
    """TLS credentials for ``--scheduler``: ``ca.pem``, ``cert.pem`` and ``key.pem`` in
    ``folder`` (None: whatever the Dask configuration says)."""
    if folder is None:
        return None
    from distributed.security import Security

    files = {name: os.path.join(folder, f"{name}.pem") for name in ("ca", "cert", "key")}
    missing = [path for path in files.values() if not os.path.isfile(path)]
    if missing:
        raise LensfreeError(f"--security {folder}: no {', '.join(missing)}")
    return Security(tls_ca_file=files["ca"], tls_client_cert=files["cert"],
                    tls_client_key=files["key"], require_encryption=True)


def _run_certificate() -> tuple[str, str]:
    """(certificate, key) in PEM, made on rank 0 for this run, the same on every rank."""
    from mpi4py import MPI

    pem = None
    if MPI.COMM_WORLD.Get_rank() == 0:
        from distributed.security import Security

        temporary = Security.temporary()
        pem = (temporary.tls_ca_file, temporary.tls_scheduler_key)
    return MPI.COMM_WORLD.bcast(pem, root=0)


def _tls_config(pem: tuple[str, str]) -> dict:
    cert, key = pem
    config = {"distributed.comm.require-encryption": True,
              "distributed.comm.tls.ca-file": cert}
    for role in ("scheduler", "worker", "client"):
        config[f"distributed.comm.tls.{role}.cert"] = cert
        config[f"distributed.comm.tls.{role}.key"] = key
    return config
