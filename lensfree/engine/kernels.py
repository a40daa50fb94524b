"""Compiled per-frame loops of stage 1 (Numba): one pass over a frame where numpy needs
several.

Stage 1 reads each frame once and must keep up with decompression (about 0.1 ms for a
256^2 uint16 frame here). Its numpy form casts each frame to float64, sums it, gathers the
unmeasured pixels and the ring, then adds it to its class sum: five passes and a dozen
calls, about 0.08 ms. These loops do the statistics in one pass and the addition in
another: 24-32 us a frame in `lensfree sum` (``benchmarks/bench_sum.py``'s marginal
compute per frame, 24,000 frames of 256^2 uint16), and relatively more saved at 1024^2,
where the float64 copy no longer fits the cache. They are for integer frames, whose sums
are exact integers in any order: the results are the bits of the numpy form. Float frames
keep the numpy form (NaN and inf handling, numpy's pairwise totals).

Compiled on first use and cached on disk (``cache=True``); importing this module costs
Numba's import only where stage 1 needs it.
"""

from __future__ import annotations

import numba

__all__ = ["add_frame", "frame_stats"]


@numba.njit(cache=True, nogil=True)
def frame_stats(frame, measured, ring_index):
    """(total over the measured pixels, chi-square over the ring, negative) of one
    integer frame: ``sum_D (I - mean)^2 / mean`` (0 when the ring's mean is not > 0);
    ``negative`` is True when a measured pixel is below zero. Totals are exact (int64)."""
    f = frame.ravel()
    m = measured.ravel()
    total = 0
    negative = False
    for p in range(f.size):
        if m[p]:
            v = f[p]
            total += v
            if v < 0:
                negative = True
    n = ring_index.size
    s = 0.0
    for q in range(n):
        s += f[ring_index[q]]
    mean = s / n
    chi2 = 0.0
    if mean > 0:
        for q in range(n):
            d = f[ring_index[q]] - mean
            chi2 += d * d
        chi2 /= mean
    return total, chi2, negative


@numba.njit(cache=True, nogil=True)
def add_frame(acc, frame, sign):
    """``acc += sign * frame`` in float64 (``sign`` +1 or -1), pixel by pixel."""
    a = acc.ravel()
    f = frame.ravel()
    if sign > 0:
        for p in range(f.size):
            a[p] += f[p]
    else:
        for p in range(f.size):
            a[p] -= f[p]

