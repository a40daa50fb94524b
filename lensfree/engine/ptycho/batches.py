"""Sub-batches of the block engines: how much the probe positions overlap, and each
block's positions dealt into batches that spread over the block.

An iteration of the parallel and LSQML engines runs the batches one after the other, each
one reduction over every block that updates object and probe before the next: the update
of a pixel lit by a hundred positions is no longer the mean of a hundred projections
(one small step) but a few steps of a few each, as ePIE's (one position a step) and the
minibatches of LSQML (Odstrcil et al. 2018, sec. 3.3) do. Near-field scans, whose probe
fills the frame, need it most.
"""

from __future__ import annotations

import numpy as np

from lensfree.engine.ptycho.geometry import corners, object_frame

#: positions per pixel to aim for in one batch
TARGET_OVERLAP = 1.5
#: at most this many batches per iteration (each one is a reduction and a broadcast)
MAX_BATCHES = 16


def scan_overlap(positions: np.ndarray, probe: np.ndarray) -> float:
    """Mean number of positions lighting a lit pixel: the probe's footprint (pixels above
    10% of its peak power, modes summed) counted at every (whole-pixel) position."""
    power = np.sum(np.abs(np.asarray(probe)) ** 2, axis=0)
    footprint = power >= 0.1 * power.max()
    h, w = footprint.shape
    origin, shape = object_frame(positions, (h, w), 0)
    crops, _ = corners(positions, origin, shape, (h, w))
    count = np.zeros(shape, np.int32)
    one = footprint.astype(np.int32)
    for y, x in crops:
        count[y:y + h, x:x + w] += one
    return float(count[count > 0].mean())


def default_batches(overlap: float, n_positions: int) -> int:
    """Batches per iteration for a scan of this overlap: about ``TARGET_OVERLAP`` positions
    per pixel in each, 1 to ``MAX_BATCHES``, never more than the positions."""
    return int(np.clip(round(overlap / TARGET_OVERLAP), 1, min(MAX_BATCHES, n_positions)))


def split_batches(blocks, n_batches: int) -> list[tuple]:
    """``n_batches`` tuples of blocks: every block's positions dealt in a seeded random
    order (the seed is the block's first position and size: the same on every back end),
    so that each batch spreads over the whole block; empty blocks are dropped, and with
    one batch the blocks are returned as they are. (A deal by position index would put a
    raster's rows, or a spiral's arms, in one batch; one position of every cell of
    neighbours per batch measured worse for position refinement.)"""
    if n_batches == 1:
        return [tuple(blocks)]
    out = [[] for _ in range(n_batches)]
    for block in blocks:
        block = np.asarray(block)
        dealt = block[np.random.default_rng([int(block[0]), len(block)]).permutation(len(block))]
        for g in range(n_batches):
            mine = np.sort(dealt[g::n_batches])
            if len(mine):
                out[g].append(mine)
    return [tuple(b) for b in out if b]
