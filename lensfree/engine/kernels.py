"""Compiled loops (Numba): one pass over an array where numpy needs several. Stage 1's
per-frame loops, then the phasing iteration's elementwise passes.

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
Numba's import only where stage 1 or phasing needs it.
"""

from __future__ import annotations

import math

import numba
import numpy as np

__all__ = ["add_frame", "breed_mean", "contract_last", "er_update", "frame_stats",
           "hio_update", "modulus"]


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



# ----------------------------------------------------------------------------- phasing
#
# One HIO or ER iteration of :mod:`lensfree.engine.phasing` is two FFTs, the modulus
# projection between them and the support update after them. In numpy the projection is
# three passes over the Fourier field (|psi|, target / |psi|, psi times that) and the
# update two; here each is one. The arrays are flat views (2D and 3D alike: one compiled
# signature). The loops vectorise: ``error_model="numpy"`` (Python's model tests every
# division for zero), both sides of a select computed before it (a branch with loads in
# it stays scalar), and no sums: an iteration that records its errors writes each pixel's
# term into scratch arrays that numpy then sums (pairwise), in the same loop with the
# same arithmetic, so the iterate does not depend on whether errors are recorded.

_PHASING = dict(cache=True, nogil=True, fastmath=False, error_model="numpy")


@numba.njit(**_PHASING)
def modulus(psi, target, valid, scale, tiny, measured, r_terms, f_terms, record):
    """``psi <- (t / |psi|) psi`` in place, ``t = target`` where ``valid`` and ``t = scale
    |psi|`` elsewhere (the field floats); ``|psi|`` floored at ``tiny`` (0: no floor).

    With ``record``, ``r_terms <- ||psi| - A|`` on ``valid`` pixels (0 elsewhere, ``A =
    measured``) and ``f_terms <- t^2`` elsewhere (0 on ``valid``), of the field entering;
    without, ``measured`` and the terms are not touched. ``psi`` complex64, the others
    float32 but ``valid`` (bool), all 1D and C-contiguous; ``target`` is not read off
    ``valid``; ``scale``, ``tiny`` float32."""
    zero = numba.float32(0)
    if record:
        for p in range(psi.size):
            z = psi[p]
            mag = max(math.sqrt(z.real * z.real + z.imag * z.imag), tiny)
            on = valid[p]
            floating = mag * scale
            t = target[p] if on else floating
            r_terms[p] = abs(measured[p] - mag) if on else zero
            f_terms[p] = zero if on else floating * floating
            psi[p] = z * (t / mag)
        return
    for p in range(psi.size):
        z = psi[p]
        mag = max(math.sqrt(z.real * z.real + z.imag * z.imag), tiny)
        floating = mag * scale
        t = target[p] if valid[p] else floating
        psi[p] = z * (t / mag)


@numba.njit(**_PHASING)
def hio_update(rho, w, inside, factor, terms, record):
    """HIO from ``w = -beta rho_m``: ``rho <- factor w`` inside the support (``factor =
    -1 / beta``, float32), ``rho <- rho + w`` outside, in place; with ``record``,
    ``terms <- |w|^2`` outside (0 inside). 1D, C-contiguous; ``inside`` bool."""
    zero = numba.float32(0)
    for p in range(rho.size):
        z = w[p]
        fed = z * factor
        kept = rho[p] + z
        rho[p] = fed if inside[p] else kept
        if record:
            terms[p] = zero if inside[p] else z.real * z.real + z.imag * z.imag


@numba.njit(**_PHASING)
def er_update(rho, w, inside_f, terms, record):
    """Error reduction from ``w = rho_m``: ``rho <- w S``, ``S`` the support as 1.0 / 0.0
    (``inside_f``, float32: numpy's product, bit for bit), in place; with ``record``,
    ``terms <- |w - rho|^2`` (non-zero outside the support only)."""
    for p in range(rho.size):
        z = w[p]
        kept = z * inside_f[p]
        rho[p] = kept
        if record:
            d = z - kept
            terms[p] = d.real * d.real + d.imag * d.imag


@numba.njit(**_PHASING)
def contract_last(kernel, rows):
    """``out[i, r] = sum_j kernel[i, j] rows[r, j]``, complex128 (the per-axis matrix
    product of :func:`lensfree.engine.align`'s upsampled DFT; numpy's ``einsum`` of it,
    bit for bit, in about a third of the time: the innermost loop runs over ``i``,
    independent sums that vectorise, in ``einsum``'s order over ``j``)."""
    m = kernel.shape[0]
    transposed = np.ascontiguousarray(kernel.T)
    out = np.zeros((rows.shape[0], m), np.complex128)
    for r in range(rows.shape[0]):
        for j in range(rows.shape[1]):
            value = rows[r, j]
            for i in range(m):
                out[r, i] += transposed[j, i] * value
    return np.ascontiguousarray(out.T)


@numba.njit(**_PHASING)
def breed_mean(member, best, out):
    """GHIO's offspring pixel by pixel (:func:`lensfree.engine.ghio.breed`): ``out <-
    sqrt(|g_k| |g_b|) p``, ``p`` the unit sum of the two unit phasors ``u_k + u_b``, or
    ``u_b`` where that sum is below 1e-6 (``u = g / |g|``, 0 for a zero ``g_k``, 1 for a
    zero ``g_b``). complex64, 1D, C-contiguous; float32 arithmetic throughout."""
    zero, one, tiny = numba.float32(0), numba.float32(1), numba.float32(1e-6)
    for p in range(out.size):
        a, b = member[p], best[p]
        mag_k = math.sqrt(a.real * a.real + a.imag * a.imag)
        mag_b = math.sqrt(b.real * b.real + b.imag * b.imag)
        on_k = mag_k > zero
        on_b = mag_b > zero
        ukr = a.real / mag_k if on_k else zero
        uki = a.imag / mag_k if on_k else zero
        ubr = b.real / mag_b if on_b else one
        ubi = b.imag / mag_b if on_b else zero
        sr, si = ukr + ubr, uki + ubi
        norm = math.sqrt(sr * sr + si * si)
        wide = norm > tiny
        pr = sr / norm if wide else ubr
        pi = si / norm if wide else ubi
        mag = math.sqrt(mag_k * mag_b)
        out[p] = complex(mag * pr, mag * pi)
