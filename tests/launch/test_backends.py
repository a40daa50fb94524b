"""The Backend interface itself (map, bcast, reduce, failures, the registry) on local with
1 and 2 threads, a real Dask LocalCluster and ``mpiexec -n 2``.

``reduce`` must fold in one fixed tree: every back end's sums are compared bit for bit
with a serial evaluation of that tree, written here from its definition.
"""

from __future__ import annotations

import math
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from lensfree.errors import LensfreeError
from lensfree.launch.backends import (
    BACKENDS,
    DaskBackend,
    LocalBackend,
    abort_job,
    make_backend,
    rank_of,
    start_backend,
)
from tests.conftest import mpiexec
from tests.launch.mpi_backend_check import (
    SEED,
    TASK_COUNTS,
    add,
    add_records,
    add_tiles,
    fails_on_last,
    random_block,
    sums_record,
    tagged,
    tiles_record,
)

MPI_CHECK = Path(__file__).with_name("mpi_backend_check.py")


def _blocks(n):
    return [random_block(t, SEED) for t in range(n)]


def _tree(values, lo, hi):
    """The fold's definition: [lo, hi) splits at lo + 2**floor(log2(hi - lo - 1))."""
    if hi - lo == 1:
        return values[lo]
    mid = lo + 2 ** math.floor(math.log2(hi - lo - 1))
    return _tree(values, lo, mid) + _tree(values, mid, hi)


@pytest.fixture(scope="module")
def serial_sums():
    return {n: _tree(_blocks(n), 0, n) for n in TASK_COUNTS}


@pytest.fixture(scope="module")
def dask_backend():
    with DaskBackend(2, dashboard_address=":0", progress=False) as backend:
        yield backend


@pytest.fixture(params=["local-1", "local-2", "dask"])
def backend(request):
    if request.param == "dask":
        return request.getfixturevalue("dask_backend")
    return LocalBackend(int(request.param[-1]), progress=False)


def test_map_returns_results_in_task_order_with_shared(backend):
    tasks = list(range(9))
    names = [f"tagged-{t}" for t in tasks]
    assert backend.map(tagged, tasks, {"mask": 1}, names=names) == [(t, {"mask": 1})
                                                                     for t in tasks]
    assert backend.map(tagged, [], None) == []


def _trim_threshold():
    import os

    return os.environ.get("MALLOC_TRIM_THRESHOLD_")


def test_dask_workers_keep_the_default_malloc_trim_threshold(dask_backend, monkeypatch):
    # the nanny's MALLOC_TRIM_THRESHOLD_=65536 makes workers read chunks ~1.6x slower
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    got = dask_backend.client.run(_trim_threshold)
    assert len(got) == 2 and set(got.values()) == {None}, got


def test_bcast_on_one_process_is_the_object(backend):
    obj = {"run_id": "abc", "shape": (3, 4)}
    assert backend.bcast(obj) == obj


@pytest.mark.parametrize("n", TASK_COUNTS)
def test_reduce_is_the_fixed_tree_bit_for_bit(backend, serial_sums, n):
    names = [f"block-{t:02d}" for t in range(n)]
    total = backend.reduce(random_block, list(range(n)), SEED, combine=add, names=names,
                           desc="test")
    assert total.dtype == np.float64
    assert np.array_equal(total, serial_sums[n])
    np.testing.assert_allclose(total, np.sum(_blocks(n), axis=0), rtol=1e-12, atol=0)


def test_the_data_tell_fold_orders_apart(serial_sums):
    """Guard for the test above: a left-to-right fold of the same blocks differs in the
    last bits, so agreeing with the tree is not agreeing with any order at all."""
    for n in (7, 16, 37):
        left_to_right = _blocks(n)[0]
        for block in _blocks(n)[1:]:
            left_to_right = left_to_right + block
        assert not np.array_equal(left_to_right, serial_sums[n])


def test_reduce_over_no_tasks_is_an_error(backend):
    with pytest.raises(ValueError, match="empty task list"):
        backend.reduce(random_block, [], SEED, combine=add)


def test_a_failing_task_is_an_error_on_the_root(backend):
    with pytest.raises(ValueError, match="task 6 fails"):
        backend.map(fails_on_last, list(range(7)), 7)
    with pytest.raises(ValueError, match="task 6 fails"):
        backend.reduce(fails_on_last, list(range(7)), 7, combine=add)


class _Partial:
    """A partial result that counts how many of its kind are alive."""

    alive = peak = 0
    lock = threading.Lock()

    def __init__(self):
        with _Partial.lock:
            _Partial.alive += 1
            _Partial.peak = max(_Partial.peak, _Partial.alive)

    def __del__(self):
        with _Partial.lock:
            _Partial.alive -= 1


def _partial(task, shared):
    return _Partial()


def _merge(a, b):
    return _Partial()


@pytest.mark.parametrize("workers", [1, 2])
def test_local_reduce_never_holds_every_partial(workers):
    _Partial.peak = _Partial.alive
    LocalBackend(workers, progress=False).reduce(_partial, list(range(256)), None,
                                                 combine=_merge)
    # log2(256) + 1 complete subtrees, plus two tasks per thread computed ahead
    assert _Partial.peak <= 9 + 2 + 2 * workers + 1


def test_registry_and_its_errors():
    assert tuple(BACKENDS) == ("local", "dask", "mpi")
    assert all(cls.name == name for name, cls in BACKENDS.items())
    backend = make_backend("local", workers=2, progress=False)
    assert isinstance(backend, LocalBackend) and backend.n_workers == 2
    assert isinstance(start_backend("local", progress=False), LocalBackend)  # not in MPI
    with pytest.raises(LensfreeError, match="--backend gpu: unknown, choose one of "
                                            "local, dask, mpi"):
        make_backend("gpu")
    for workers in (0, -1):
        with pytest.raises(LensfreeError, match=f"--workers {workers}: must be at least 1"):
            make_backend("local", workers=workers)
    with pytest.raises(LensfreeError, match="--workers 0"):
        start_backend("dask", workers=0)
    assert rank_of("local") == rank_of("dask") == rank_of(None) == 0
    assert abort_job("local", 3) is None  # nothing to stop: the caller returns the code


def _mpi(*args, timeout=120):
    return subprocess.run([mpiexec(), "-n", "2", sys.executable, "-m", "mpi4py",
                           str(MPI_CHECK), *args], capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.skipif(mpiexec() is None, reason="no mpiexec (pip install 'lensfree[mpi]')")
def test_mpiexec_two_ranks_map_bcast_and_reduce_bit_for_bit(serial_sums, tmp_path):
    proc = _mpi(str(tmp_path), "check")
    assert proc.returncode == 0, proc.stderr
    for rank in (0, 1):  # the root's value on every rank
        sums = np.load(tmp_path / f"rank{rank}.npz")
        for n in TASK_COUNTS:
            assert np.array_equal(sums[f"n{n}"], serial_sums[n]), (rank, n)
        local = LocalBackend(1, progress=False).reduce(sums_record, list(range(37)), SEED,
                                                       combine=add_records)
        assert np.array_equal(sums["record0"], local["sums"][0])
        assert np.array_equal(sums["record1"], local["sums"][1])
        tiles = LocalBackend(1, progress=False).reduce(tiles_record, list(range(7)), SEED,
                                                       combine=add_tiles)
        for name in ("tiles", "rooted"):  # packed small arrays, the odd one, the large one
            assert np.array_equal(sums[f"{name}_stack"], np.stack(tiles["tiles"]))
            assert np.array_equal(sums[f"{name}_odd"], tiles["odd"])
            assert np.array_equal(sums[f"{name}_large"], tiles["large"])


def test_mpi_values_travel_as_buffers_beside_small_metadata():
    from lensfree.launch.backends.mpi import _join, _split

    big = np.arange(2048 * 2048, dtype=np.float64).reshape(2048, 2048)
    value = {"sums": (big, big[::2].copy()), "counts": {"accepted": 3}, "names": ["a"]}
    header, sizes, buffers = _split(value)
    # the 50 MB of arrays go out of band, as buffers sharing the arrays' memory
    assert len(header) < 1000 and sum(b.nbytes for b in buffers) == big.nbytes * 3 // 2
    assert sizes == [b.nbytes for b in buffers]
    assert np.shares_memory(np.asarray(buffers[0]), big)
    back = _join(header, [np.frombuffer(b, np.uint8).copy() for b in buffers])
    assert np.array_equal(back["sums"][0], big) and back["counts"] == {"accepted": 3}
    assert back["sums"][0].flags.writeable


def test_mpi_small_arrays_travel_packed_in_one_buffer_and_come_back_aligned():
    from lensfree.launch.backends.mpi import PACK_BYTES, _join, _split, _unpacked

    rng = np.random.default_rng(5)
    tiles = {(i, j): rng.random((64, 64)) + 1j * rng.random((64, 64))
             for i in range(10) for j in range(30)}
    odd = rng.random(7).astype(np.float32)  # 28 bytes: the next array must stay aligned
    large = rng.random(PACK_BYTES // 8)
    value = {"tiles": tiles, "odd": odd, "large": large, "n": 3}
    header, sizes, buffers = _split(value)
    # 302 arrays, two messages: the packed small ones, then the large one by itself
    assert len(sizes) == 302 and len(buffers) == 2
    assert np.shares_memory(np.asarray(buffers[1]), large)
    received = [np.frombuffer(b, np.uint8).copy() for b in buffers]
    back = _join(header, _unpacked(sizes, received))
    assert back["n"] == 3 and np.array_equal(back["odd"], odd)
    assert np.array_equal(back["large"], large)
    assert all(np.array_equal(back["tiles"][k], tiles[k]) for k in tiles)
    assert all(a.flags.aligned and a.flags.writeable for a in back["tiles"].values())


@pytest.mark.skipif(mpiexec() is None, reason="no mpiexec (pip install 'lensfree[mpi]')")
def test_mpiexec_failing_task_aborts_the_job(tmp_path):
    # rank 0 waits for rank 1's partial when rank 1's last task raises: abort, not a hang
    # (the code is abort_job's; the rank's message may die with it in mpiexec's pipes)
    proc = _mpi(str(tmp_path), "fail")
    assert proc.returncode == 3, proc.stderr
