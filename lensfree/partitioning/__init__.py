"""Who does what: shards of frames aligned to Zarr chunks, and tasks to workers.

Everything here depends on the data and the parameters only, never on the number of
workers, except `assign` itself; so results are the same on any back end.
"""

from __future__ import annotations

from dataclasses import dataclass

#: frames per shard to aim for: big enough that per-task overhead is small, small enough
#: that a few shards per worker balance the load.
TARGET_SHARD_FRAMES = 256


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
    n_frames: int, chunk_frames: int, target_frames: int = TARGET_SHARD_FRAMES
) -> list[Shard]:
    """Split ``n_frames`` into shards of whole chunks of about ``target_frames`` frames.

    Shard boundaries fall on chunk boundaries, so no two workers ever read or write the
    same chunk.
    """
    if n_frames <= 0 or chunk_frames <= 0:
        raise ValueError(f"n_frames={n_frames} and chunk_frames={chunk_frames} must be > 0")
    chunks_per_shard = max(1, round(target_frames / chunk_frames))
    step = chunks_per_shard * chunk_frames
    return [
        Shard(i, start, min(start + step, n_frames))
        for i, start in enumerate(range(0, n_frames, step))
    ]


def assign(n_tasks: int, n_workers: int, worker: int) -> range:
    """The contiguous block of task indices that ``worker`` of ``n_workers`` takes.

    Blocks differ in length by at most one; contiguous blocks keep a worker's reads local.
    """
    if not 0 <= worker < n_workers:
        raise ValueError(f"worker {worker} outside 0..{n_workers - 1}")
    base, extra = divmod(n_tasks, n_workers)
    start = worker * base + min(worker, extra)
    return range(start, start + base + (worker < extra))
