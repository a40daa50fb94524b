"""The Backend interface on MPI: run as ``mpiexec -n 2 python -m mpi4py THIS OUT_DIR MODE``.

MODE ``check``: map, bcast and reduce; every rank writes what it got to ``OUT_DIR/rankR.npz``
for `test_backends` to compare. MODE ``fail``: a task on the last rank raises during a
reduce while rank 0 waits for that rank's partial; the job must abort, not hang.
The task functions here serve the local and Dask cases of `test_backends` too.
"""

from __future__ import annotations

import sys

import numpy as np

#: reduce over these numbers of tasks: one leaf, a pair, the tree's uneven shapes, a full
#: power of two and a long right spine
TASK_COUNTS = (1, 2, 3, 7, 16, 37)
SEED = 20260


def random_block(task: int, shared: int) -> np.ndarray:
    """Positive float64 values over six decades, seeded by ``shared``: any change of
    summation order shows in the last bits, and no cancellation spoils np.sum's."""
    rng = np.random.default_rng([shared, task])
    return rng.random(64) * 10.0 ** rng.uniform(-3, 3, 64)


def add(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return a + b


def sums_record(task: int, shared: int) -> dict:
    """A partial result shaped like stage 1's: arrays inside a dict and a tuple, with
    small metadata beside them."""
    block = random_block(task, shared)
    return {"n": 1, "frames": [task], "sums": (block, np.outer(block[:8], block[:8]))}


def add_records(a: dict, b: dict) -> dict:
    return {"n": a["n"] + b["n"], "frames": a["frames"] + b["frames"],
            "sums": tuple(x + y for x, y in zip(a["sums"], b["sums"]))}


def tiles_record(task: int, shared: int) -> dict:
    """A partial shaped like a ptycho block's: many small arrays (packed into one message
    by the MPI back end), one of an odd size, and one large array sent by itself."""
    block = random_block(task, shared)
    return {"tiles": [block * k for k in range(1, 41)], "odd": block[:7].astype(np.float32),
            "large": np.tile(block, 2048)}


def add_tiles(a: dict, b: dict) -> dict:
    return {"tiles": [x + y for x, y in zip(a["tiles"], b["tiles"])],
            "odd": a["odd"] + b["odd"], "large": a["large"] + b["large"]}


def tagged(task, shared):
    return task, shared


def fails_on_last(task: int, shared: int) -> np.ndarray:
    """A block, except for the last of ``shared`` tasks."""
    if task == shared - 1:
        raise ValueError(f"task {task} fails")
    return random_block(task, SEED)


def _check(out_dir: str) -> None:
    from lensfree.launch.backends import MPIBackend, rank_of

    backend = MPIBackend(progress=False)
    assert rank_of("mpi") == backend.rank
    mapped = backend.map(tagged, list(range(5)), "shared")
    assert mapped == ([(t, "shared") for t in range(5)] if backend.is_root else None), mapped
    assert backend.bcast({"root": backend.rank}) == {"root": 0}
    try:
        backend.reduce(random_block, [], SEED, combine=add)
    except ValueError:
        pass
    else:
        raise AssertionError("reduce over no tasks returned")
    sums = {f"n{n}": backend.reduce(random_block, list(range(n)), SEED, combine=add)
            for n in TASK_COUNTS}
    records = backend.reduce(sums_record, list(range(37)), SEED, combine=add_records)
    assert records["n"] == 37 and records["frames"] == list(range(37)), records["frames"]
    sums["record0"], sums["record1"] = records["sums"]
    tiles = backend.reduce(tiles_record, list(range(7)), SEED, combine=add_tiles)
    rooted = backend.reduce(tiles_record, list(range(7)), SEED, combine=add_tiles,
                            everywhere=False)
    assert (rooted is None) != backend.is_root, "everywhere=False: the root's value alone"
    for name, value in (("tiles", tiles), ("rooted", rooted or tiles)):
        sums[f"{name}_stack"] = np.stack(value["tiles"])
        sums[f"{name}_odd"], sums[f"{name}_large"] = value["odd"], value["large"]
    np.savez(f"{out_dir}/rank{backend.rank}.npz", **sums)


def _fail() -> None:
    from lensfree.launch.backends import MPIBackend

    backend = MPIBackend(progress=False)
    backend.reduce(fails_on_last, list(range(16)), 16, combine=add)


if __name__ == "__main__":
    from lensfree.launch.backends import abort_job, rank_of

    try:
        _check(sys.argv[1]) if sys.argv[2] == "check" else _fail()
    except Exception as exc:  # as the CLI does: report, then take the whole job down
        print(f"rank {rank_of('mpi')}: {exc!r}", file=sys.stderr, flush=True)
        abort_job("mpi", 3)
        raise
