"""Who does what: shards of frames aligned to Zarr chunks, and tasks to workers.

Everything here depends on the data and the parameters only, never on the number of
workers, except `assign` itself; so results are the same on any back end.
"""

from __future__ import annotations

from dataclasses import dataclass

#: frames per shard to aim for: big enough that per-task overhead is small, small enough
#: that a few shards per worker balance the load.
TARGET_SHARD_FRAMES = 256
#: and at most this many bytes of decoded frames per shard (at least one chunk): 18-Mpx
#: uint32 frames then come 14 to a shard, so a 77,170-frame run has ~5,500 tasks to
#: spread over a few thousand workers instead of 302 of 19 GB each
TARGET_SHARD_BYTES = 2**30


@dataclass(frozen=True)
class Shard:
    """Frames [start, stop) of a store: whole chunks, read by one worker."""

    index: int
    start: int
    stop: int

    @property
    def name(self) -> str:
        return f"shard-{self.index:04d}"


def frame_shards(
    n_frames: int, chunk_frames: int, target_frames: int = TARGET_SHARD_FRAMES,
    frame_bytes: int | None = None,
) -> list[Shard]:
    """Split ``n_frames`` into shards of whole chunks of about ``target_frames`` frames
    (fewer for large frames: at most `TARGET_SHARD_BYTES` when ``frame_bytes`` is given).

    Shard boundaries fall on chunk boundaries, so no two workers ever read or write the
    same chunk.
    """
    if n_frames <= 0 or chunk_frames <= 0:
        raise ValueError(f"n_frames={n_frames} and chunk_frames={chunk_frames} must be > 0")
    if frame_bytes:
        target_frames = min(target_frames, max(1, TARGET_SHARD_BYTES // frame_bytes))
    chunks_per_shard = max(1, round(target_frames / chunk_frames))
    step = chunks_per_shard * chunk_frames
    return [
        Shard(i, start, min(start + step, n_frames))
        for i, start in enumerate(range(0, n_frames, step))
    ]


def assign(n_tasks: int, n_workers: int, worker: int) -> range:
    """The contiguous block of task indices that ``worker`` of ``n_workers`` takes.

    Blocks differ in length by at most one; contiguous blocks keep a worker's reads local.
    The longer blocks go to workers 1, 2, ... before worker 0, the root, which also
    combines and updates (it takes one only when there are fewer tasks than workers, so
    that it always holds the first task).
    """
    if not 0 <= worker < n_workers:
        raise ValueError(f"worker {worker} outside 0..{n_workers - 1}")
    base, extra = divmod(n_tasks, n_workers)
    if base == 0:  # one task each for the first n_tasks workers
        return range(min(worker, n_tasks), min(worker + 1, n_tasks))
    start = worker * base + min(max(worker - 1, 0), extra)
    return range(start, start + base + (1 <= worker <= extra))



def fold_split(lo: int, hi: int) -> int:
    """Where the fixed reduction tree splits the task indices [lo, hi) (``hi - lo >= 2``).

    ``mid = lo + 2**floor(log2(hi - lo - 1))``: the left part is the largest power of two
    shorter than the node, so subtrees are complete and the tree depends on the number of
    tasks alone. Every back end folds partial results in this one tree, which makes
    floating-point sums bit-identical on any back end and worker count.
    """
    if hi - lo < 2:
        raise ValueError(f"node [{lo}, {hi}) has fewer than two tasks: nothing to split")
    return lo + (1 << ((hi - lo - 1).bit_length() - 1))


def position_blocks(positions, n_blocks: int) -> list:
    """Split scan positions into ``n_blocks`` spatially compact blocks of near-equal size.

    Recursive bisection: the positions are halved (in proportion to the blocks each half
    gets) across the longer side of their bounding box, until every part is one block.
    Each block (an int array of position indices, ascending) covers a small patch of the
    object, so its partial sums span a small bounding box. Depends on the positions and
    ``n_blocks`` only (ties broken by index), never on the number of workers.
    """
    import numpy as np

    positions = np.asarray(positions, dtype=np.float64)
    n = len(positions)
    if positions.ndim != 2 or positions.shape[1] != 2:
        raise ValueError(f"positions must be (N, 2), got {positions.shape}")
    if not 1 <= n_blocks <= max(n, 1):
        raise ValueError(f"n_blocks={n_blocks} must lie in 1..{n} (the number of positions)")

    def split(idx, k):
        if k == 1:
            return [np.sort(idx)]
        pts = positions[idx]
        axis = int(np.argmax(np.ptp(pts, axis=0)))
        order = idx[np.lexsort((idx, pts[:, axis]))]
        k_left = k // 2
        cut = int(round(len(idx) * k_left / k))
        return split(order[:cut], k_left) + split(order[cut:], k - k_left)

    return split(np.arange(n), n_blocks)
