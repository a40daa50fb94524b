"""The MPI back end: SPMD under ``mpirun -n N lensfree ...``, rank 0 the root."""

from __future__ import annotations

import os
import pickle
from bisect import bisect_right

from lensfree.errors import LensfreeError
from lensfree.launch.backends.base import Backend, check_tasks
from lensfree.partitioning import assign, fold_split

#: environment variables in which MPI launchers give the job's size
_MPI_SIZE_VARS = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE", "PMIX_SIZE")


def mpi_world_size() -> int:
    """Ranks in the MPI job this process was launched in (1 outside ``mpirun``)."""
    for var in _MPI_SIZE_VARS:
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    return 1


def _world():
    """``MPI.COMM_WORLD``, or None without mpi4py (then no MPI job can be running it)."""
    try:
        from mpi4py import MPI
    except ImportError:
        return None
    return MPI.COMM_WORLD


class MPIBackend(Backend):
    """SPMD under ``mpirun -n N lensfree ...``: every rank runs the stage; rank 0 is root."""

    name = "mpi"

    def __init__(self, **kw):
        super().__init__(**kw)
        self.comm = _world()
        if self.comm is None:
            raise LensfreeError("--backend mpi needs mpi4py: pip install 'lensfree[mpi]'")
        self.rank = self.comm.Get_rank()
        self.n_workers = self.comm.Get_size()
        self.is_root = self.rank == 0
        # one core per rank: Blosc would start a decode thread per core in every rank (it
        # does on a process's main thread), oversubscribing a node N-fold; Dask workers
        # and the local back end's pool decode on one thread already (numcodecs' rule)
        import numcodecs.blosc

        numcodecs.blosc.set_nthreads(1)

    @classmethod
    def process_rank(cls) -> int:
        comm = _world()
        return comm.Get_rank() if comm is not None else 0

    @classmethod
    def abort_job(cls, code: int) -> None:
        comm = _world()
        if comm is not None and comm.Get_size() > 1:
            comm.Abort(code)  # one failing rank must not leave the others hanging

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

    def reduce(self, fn, tasks, shared=None, *, combine, names=None, desc="", everywhere=True):
        """The fixed tree over the ranks' contiguous blocks of tasks (as `map` assigns them).

        A node is evaluated by the rank that owns its first task: wholly inside that rank's
        block it is plain recursion; spanning ranks, its right child comes by message from
        the rank owning that child's first task, which evaluates it the same way. Every
        rank receives from higher ranks only and sends without blocking, so the highest
        rank never waits and none deadlocks; the root's value is then broadcast (unless
        ``everywhere`` is false).
        """
        check_tasks(tasks)
        n = len(tasks)
        starts = [assign(n, self.n_workers, r).start for r in range(self.n_workers)]
        mine = assign(n, self.n_workers, self.rank)

        def owner(i):
            return bisect_right(starts, i) - 1  # ranks with no tasks start at n

        def node(lo, hi):
            if hi - lo == 1:
                value = fn(tasks[lo], shared)
                bar.update()
                return value
            mid = fold_split(lo, hi)
            left = node(lo, mid)
            if owner(mid) == self.rank:
                return combine(left, node(mid, hi))
            return combine(left, recv_value(self.comm, owner(mid)))

        def tops(lo, hi, parent_owner):
            """The nodes this rank evaluates whole (its first task is ours, its parent's
            is not), with the rank each goes to (None: the tree's root)."""
            if owner(lo) == self.rank:
                yield lo, hi, parent_owner
            elif lo < mine.stop and mine.start < hi:
                mid = fold_split(lo, hi)
                yield from tops(lo, mid, owner(lo))
                yield from tops(mid, hi, owner(lo))

        result, sends = None, []
        with self._bar(len(mine), desc) as bar:
            for lo, hi, dest in tops(0, n, None):
                value = node(lo, hi)
                if dest is None:
                    result = value
                else:
                    # ranks send and receive the nodes between them left to right, in
                    # the same order, so no message needs a tag
                    sends.extend(isend_value(self.comm, value, dest))
                    value = None
        for request in sends:
            request.wait()
        sends = None
        return bcast_value(self.comm, result) if everywhere else result

    def placement(self, n_tasks: int) -> list[range]:
        return [assign(n_tasks, self.n_workers, r) for r in range(self.n_workers)]

    def bcast(self, obj):
        # arrays out of band (`bcast_value`): no copy into a pickle on the root, none out
        # of it on the others; an object-sized array every batch of a ptycho iteration
        return bcast_value(self.comm, obj if self.is_root else None)


# Partial results travel as MPI buffers: a value is pickled (protocol 5) with its numpy
# arrays left out of band, so the pickle is small metadata (shapes, dtypes, counts,
# timings) and each large array goes by ``Isend``/``Recv`` of its own memory, never copied
# into a pickle. Frame-sized float64 sums of 18-Mpx frames are 145 MB each. Arrays under
# `PACK_BYTES` go together in one packed buffer: a message costs its latency whatever its
# size (0.05-0.5 ms on a loaded node), and a ptycho partial holds hundreds of 64^2 tiles.

#: arrays smaller than this travel in one packed buffer per message
PACK_BYTES = 1 << 20
#: offsets in the packed buffer are multiples of this (arrays rebuilt on it stay aligned)
_ALIGN = 64


def _split(value) -> tuple[bytes, list, list]:
    """``(pickle, sizes, buffers to send)``: the small buffers packed into the first."""
    import numpy as np

    raws = []
    header = pickle.dumps(value, protocol=5, buffer_callback=raws.append)
    raws = [b.raw() for b in raws]
    sizes = [b.nbytes for b in raws]
    small = [b for b in raws if b.nbytes < PACK_BYTES]
    if len(small) < 2:
        return header, sizes, raws
    packed = np.empty(sum(_padded(b.nbytes) for b in small), np.uint8)
    offset = 0
    for b in small:
        packed[offset:offset + b.nbytes] = np.frombuffer(b, np.uint8)
        offset += _padded(b.nbytes)
    return header, sizes, [packed] + [b for b in raws if b.nbytes >= PACK_BYTES]


def _padded(n: int) -> int:
    return -(-n // _ALIGN) * _ALIGN


def _unpacked(sizes: list, received: list) -> list:
    """The buffers of ``sizes`` from what `_split` sent (``received``, in its order)."""
    if len(received) == len(sizes):  # nothing was packed
        return received
    packed, large = received[0], iter(received[1:])
    out, offset = [], 0
    for n in sizes:
        if n < PACK_BYTES:
            out.append(packed[offset:offset + n])
            offset += _padded(n)
        else:
            out.append(next(large))
    return out


def _join(header: bytes, buffers: list):
    return pickle.loads(header, buffers=buffers)


def _receive_buffers(comm, sizes, sent, source: int) -> list:
    import numpy as np
    from mpi4py import MPI

    buffers = []
    for n in sent:
        buf = np.empty(n, dtype=np.uint8)  # writable, so the arrays rebuilt on it are too
        comm.Recv([buf, MPI.BYTE], source=source)
        buffers.append(buf)
    return _unpacked(sizes, buffers)


def isend_value(comm, value, dest: int) -> list:
    """Start sending ``value`` to ``dest``: its pickled metadata, then each array's
    buffer. Returns the requests; the arrays stay referenced by them until waited."""
    from mpi4py import MPI

    header, sizes, buffers = _split(value)
    requests = [comm.isend((header, sizes, [b.nbytes for b in buffers]), dest=dest)]
    requests += [comm.Isend([b, MPI.BYTE], dest=dest) for b in buffers]
    return requests


def recv_value(comm, source: int):
    """The value `isend_value` sent from ``source`` (messages of one pair keep order)."""
    header, sizes, sent = comm.recv(source=source)
    return _join(header, _receive_buffers(comm, sizes, sent, source))


def bcast_value(comm, value):
    """``value`` from rank 0 on every rank: metadata by pickle, arrays by ``Bcast``."""
    import numpy as np
    from mpi4py import MPI

    if comm.Get_rank() == 0:
        header, sizes, buffers = _split(value)
        comm.bcast((header, sizes, [b.nbytes for b in buffers]), root=0)
    else:
        header, sizes, sent = comm.bcast(None, root=0)
        buffers = [np.empty(n, dtype=np.uint8) for n in sent]
    for buf in buffers:
        comm.Bcast([buf, MPI.BYTE], root=0)
    if comm.Get_rank() == 0:
        return value
    return _join(header, _unpacked(sizes, buffers))
