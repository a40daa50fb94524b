"""Stage 1 numerics: the ensemble-sum pipeline of Chen et al. 2024 (XEDM), step by step.

Per-frame screens and per-shard partial sums work on one block of frames at a time; the
whole-pattern steps (centre, patching, binning, central speckle) work on the final sum.
See SCIENCE.md section 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import fft as sp_fft
from scipy import ndimage

from lensfree.engine.params import at_least, check_fields, optional, param, positive, within

#: frame_status codes (DESIGN.md run store contract)
ACCEPTED, WEAK, CHI2, INVALID, BACKGROUND = 0, 1, 2, 3, 4
STATUS_NAMES = {ACCEPTED: "accepted", WEAK: "weak", CHI2: "chi2", INVALID: "invalid",
                BACKGROUND: "background"}


@dataclass(frozen=True)
class ScreenParams:
    """Thresholds of the frame screens; each has a robust data-driven default.

    weak_factor : a frame is weak when its total is below ``weak_factor`` times the median
        total (the paper: ten times weaker than the rest).
    chi2_max : edge-scatter chi-square above which a frame is rejected; None means
        ``median + chi2_mad * 1.4826 * MAD`` over the frames that passed the weak screen.
    background_fraction : share of the surviving frames, the weakest, summed as background.
    annulus_width : width in pixels of the ring ``D`` next to the beam stop.
    """

    weak_factor: float = param(0.1, "weak: total below this times the median total",
                               check=within(0, 1))
    chi2_max: float | None = param(None, "edge-scatter chi-square limit",
                                   check=optional(positive),
                                   default_help="median + 8 * 1.4826 MAD")
    chi2_mad: float = param(8.0, "MADs for the default chi-square limit", check=positive)
    background_fraction: float = param(
        0.01, "weakest share of surviving frames summed as background",
        check=within(0, 0.5, closed="lo"))
    annulus_width: int = param(4, "width of the edge-scatter ring next to the beam stop, px",
                               check=at_least(1))

    def __post_init__(self):
        check_fields(self)


def beamstop(mask: np.ndarray) -> np.ndarray | None:
    """The beam stop: the unmeasured region holding the detector's middle, or, when the
    middle is measured, the unmeasured region nearest to it (within 1/8 of the size).

    Returns a bool map, or None when there is no such region.
    """
    h, w = mask.shape
    labels, n = ndimage.label(~mask)
    if not n:
        return None
    label = labels[h // 2, w // 2]
    if label == 0:
        yy, xx = np.indices(mask.shape)
        dist = np.hypot(yy - h // 2, xx - w // 2)
        dist[labels == 0] = np.inf
        if dist.min() >= min(h, w) / 8:
            return None
        label = labels.flat[np.argmin(dist)]
    return labels == label


def beamstop_diameter(mask: np.ndarray) -> float:
    """Equivalent diameter (px) of the `beamstop` region; 0 without one."""
    stop = beamstop(mask)
    return 0.0 if stop is None else float(2 * np.sqrt(stop.sum() / np.pi))


def edge_annulus(mask: np.ndarray, width: int = 4) -> np.ndarray:
    """The ring ``D`` of measured pixels within ``width`` px of the `beamstop`.

    Without a beam stop the ring is taken at radii [2, 2 + width] around the middle.
    """
    stop = beamstop(mask)
    if stop is not None:
        ring = ndimage.binary_dilation(stop, iterations=width) & mask & ~stop
        if ring.any():
            return ring
    h, w = mask.shape
    yy, xx = np.indices(mask.shape)
    r = np.hypot(yy - h // 2, xx - w // 2)
    return mask & (r >= 2) & (r <= 2 + width)


#: bytes of frames one step of `frame_stats` works on (at least one frame): its temporaries
#: (ring values, per-frame reductions) stay small whatever the frame size
SUB_BLOCK_BYTES = 16 * 2**20


def frame_stats(frames: np.ndarray, mask: np.ndarray, annulus: np.ndarray, *,
                overwrite: bool = False):
    """Per-frame totals, edge-scatter chi-square and validity of a block of frames.

    ``T_k = sum_valid I_k``; ``chi2_k = sum_D (I_k - Ibar_k)^2 / Ibar_k`` (Pearson, over the
    annulus D). A frame with NaN, inf or a negative value on a measured pixel is invalid;
    its total and chi-square are NaN.

    The block is screened a few frames at a time: unmeasured pixels are set to 0 (then
    whole-frame reductions are reductions over measured pixels, with no fancy-index copy
    of the block); with ``overwrite`` in ``frames`` itself (a caller's decode buffer,
    which then holds frames ready to sum), else in a copy of a few frames.

    Returns
    -------
    total, chi2 : (k,) float64
    invalid : (k,) bool
    """
    k = frames.shape[0]
    total = np.full(k, np.nan)
    chi2 = np.full(k, np.nan)
    invalid = np.zeros(k, dtype=bool)
    unmeasured = ~mask
    ring_index = np.flatnonzero(annulus)
    kind = frames.dtype.kind
    # integer totals are exact in (u)int64; float64 for floats, NaN/inf showing through
    acc = np.float64 if kind == "f" else (np.uint64 if kind in "ub" else np.int64)
    step = max(1, SUB_BLOCK_BYTES // max(frames[0].nbytes, 1))
    for s in range(0, k, step):
        sub = frames[s : s + step]
        if not overwrite:
            sub = sub.copy()
        if unmeasured.any():
            np.copyto(sub, 0, where=unmeasured)
        flat = sub.reshape(len(sub), -1)
        t = flat.sum(axis=1, dtype=acc)
        bad = np.zeros(len(sub), dtype=bool)
        if kind == "f":
            bad |= ~np.isfinite(t)
        if kind in "fi":
            with np.errstate(invalid="ignore"):
                bad |= flat.min(axis=1) < 0
        invalid[s : s + len(sub)] = bad
        ring = flat[:, ring_index].astype(np.float64)
        for i in np.flatnonzero(~bad):
            total[s + i] = t[i]
            mean = ring[i].mean()
            chi2[s + i] = ((ring[i] - mean) ** 2).sum() / mean if mean > 0 else 0.0
    return total, chi2, invalid


def screen(total: np.ndarray, chi2: np.ndarray, invalid: np.ndarray, params: ScreenParams):
    """Decide every frame's status from the statistics of all frames.

    Returns
    -------
    status : (N,) int8 with codes ACCEPTED, WEAK, CHI2, INVALID, BACKGROUND
    thresholds : dict of the thresholds used
    """
    status = np.full(total.shape, ACCEPTED, dtype=np.int8)
    status[invalid] = INVALID
    ok = ~invalid
    if not ok.any():
        return status, {"weak_total": None, "chi2_max": None, "background_total": None}
    weak_total = params.weak_factor * float(np.median(total[ok]))
    weak = ok & (total < weak_total)
    status[weak] = WEAK
    ok &= ~weak
    if params.chi2_max is not None:
        chi2_max = params.chi2_max
    else:
        med = float(np.median(chi2[ok]))
        mad = float(np.median(np.abs(chi2[ok] - med)))
        chi2_max = med + params.chi2_mad * 1.4826 * max(mad, 1e-12 * max(med, 1.0))
    streak = ok & (chi2 > chi2_max)
    status[streak] = CHI2
    ok &= ~streak
    survivors = np.flatnonzero(ok)
    n_bg = int(round(params.background_fraction * survivors.size))
    if params.background_fraction > 0 and survivors.size >= 2:
        n_bg = min(max(n_bg, 1), survivors.size - 1)
    background_total = None
    if n_bg:
        # stable sort: ties broken by frame index, the same on every back end
        weakest = survivors[np.argsort(total[survivors], kind="stable")[:n_bg]]
        status[weakest] = BACKGROUND
        background_total = float(total[weakest].max())
    return status, {"weak_total": weak_total, "chi2_max": chi2_max,
                    "background_total": background_total}


def partial_sums(frames: np.ndarray, status: np.ndarray):
    """Float64 sums of the accepted and of the background frames of a block.

    Frames are added one at a time in index order, so a given block always gives the
    same bits. Unmeasured pixels are not zeroed here: the caller applies the mask once.
    """
    h, w = frames.shape[1:]
    accepted = np.zeros((h, w), dtype=np.float64)
    background = np.zeros((h, w), dtype=np.float64)
    for i, s in enumerate(status):
        if s == ACCEPTED:
            np.add(accepted, frames[i], out=accepted)
        elif s == BACKGROUND:
            np.add(background, frames[i], out=background)
    return accepted, background


def subtract_background(accepted, background, n_accepted: int, n_background: int, mask):
    """``S = sum_acc - (N_acc / N_bg) B`` on measured pixels (0 elsewhere)."""
    total = accepted.copy()
    if n_background:
        total -= (n_accepted / n_background) * background
    total[~mask] = 0.0
    return total


def find_center(pattern: np.ndarray, valid: np.ndarray, guess=None, radius: float | None = None):
    """Sub-pixel origin where the pattern best matches its own 180-degree rotation.

    For every candidate centre ``c`` (on the half-pixel grid ``t = 2c``) the mean squared
    difference between ``f(x)`` and ``f(t - x)`` over pixel pairs valid on both sides is
    computed with three FFT convolutions; ``f = sqrt(max(I, 0))`` tames the dynamic range.
    A parabola through the minimum and its neighbours gives the sub-pixel position.

    Returns
    -------
    (cy, cx) : float, in pixels of ``pattern``.
    """
    v = valid.astype(np.float64)
    f = np.sqrt(np.clip(pattern, 0, None)) * v
    h, w = pattern.shape
    # the three full convolutions as scipy.signal.fftconvolve computes them (the same FFT
    # sizes and products, so the same numbers), one transform alive at a time: at
    # 2048^2 each padded transform is 134 MB, and fftconvolve's three calls with their
    # temporaries peaked at 1.4 GB
    fshape = [sp_fft.next_fast_len(2 * n - 1, True) for n in (h, w)]
    full = (slice(0, 2 * h - 1), slice(0, 2 * w - 1))
    spec_v = sp_fft.rfftn(v, fshape)
    overlap = sp_fft.irfftn(spec_v * spec_v, fshape)[full]
    spec = sp_fft.rfftn(f * f, fshape)
    spec *= spec_v
    spec_v = None
    power = sp_fft.irfftn(spec, fshape)[full]
    spec = sp_fft.rfftn(f, fshape)
    spec *= spec
    cross = sp_fft.irfftn(spec, fshape)[full]
    spec = v = f = None
    min_overlap = 0.25 * overlap.max()
    # err = (2 power - 2 cross) / overlap where the overlap suffices, in place
    err = np.subtract(power, cross, out=power)
    cross = None
    err *= 2
    enough = overlap > min_overlap
    with np.errstate(divide="ignore", invalid="ignore"):
        np.divide(err, overlap, out=err, where=enough)
    err[~enough] = np.inf
    overlap = enough = None
    ty = np.arange(err.shape[0])[:, None]
    tx = np.arange(err.shape[1])[None, :]
    gy, gx = (h // 2, w // 2) if guess is None else guess
    reach = radius if radius is not None else min(h, w) / 4
    err[np.hypot(ty / 2 - gy, tx / 2 - gx) > reach] = np.inf
    iy, ix = np.unravel_index(np.argmin(err), err.shape)
    if not np.isfinite(err[iy, ix]):
        raise ValueError("no centre candidate has enough valid pixel pairs")
    return _subpixel(err, (iy, ix), 0) / 2, _subpixel(err, (iy, ix), 1) / 2


def _subpixel(err: np.ndarray, idx: tuple[int, int], axis: int) -> float:
    """Vertex of the parabola through the minimum ``idx`` and its neighbours along ``axis``."""
    centre = idx[axis]
    if centre == 0 or centre == err.shape[axis] - 1:
        return float(centre)
    lo, hi = list(idx), list(idx)
    lo[axis] -= 1
    hi[axis] += 1
    a, b, c = err[tuple(lo)], err[idx], err[tuple(hi)]
    denom = a - 2 * b + c
    if not np.isfinite(denom) or denom <= 0:
        return float(centre)
    return centre + 0.5 * (a - c) / denom


def mirror_index(shape: tuple[int, int], center) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices of every pixel's mirror ``-q`` about ``center`` (rounded to the half pixel).

    Returns mirror rows, mirror columns (each (H, W) int) and a bool map of pixels whose
    mirror lies on the detector.
    """
    ty, tx = (int(round(2 * c)) for c in center)
    yy, xx = np.indices(shape)
    my, mx = ty - yy, tx - xx
    inside = (my >= 0) & (my < shape[0]) & (mx >= 0) & (mx < shape[1])
    return np.clip(my, 0, shape[0] - 1), np.clip(mx, 0, shape[1] - 1), inside


def centro_patch(pattern: np.ndarray, valid: np.ndarray, center):
    """Fill missing pixels whose centrosymmetric mirror is measured with the mirror's value.

    Returns
    -------
    patched : copy of ``pattern`` with those pixels filled
    valid_out : ``valid`` plus the filled pixels
    filled : bool map of the filled pixels
    """
    my, mx, inside = mirror_index(pattern.shape, center)
    filled = ~valid & inside & valid[my, mx]
    patched = pattern.copy()
    patched[filled] = pattern[my[filled], mx[filled]]
    return patched, valid | filled, filled


def bin_pattern(pattern: np.ndarray, valid: np.ndarray, center, factor: int,
                out_shape: tuple[int, int] | None = None, min_valid: float = 0.5):
    """Bin ``factor x factor`` onto a grid whose pixel (h // 2, w // 2) holds the centre.

    The window may reach past the detector: pixels there are missing. A binned pixel is the
    sum over its valid sub-pixels scaled by ``factor**2 / n_valid``, and is valid when at
    least ``min_valid`` of its sub-pixels are.

    Returns
    -------
    binned : (h, w) float64
    valid_b : (h, w) bool
    origin : (oy, ox) detector pixel of the window's first corner
    """
    b = int(factor)
    h, w = out_shape or (pattern.shape[0] // b, pattern.shape[1] // b)
    origin = tuple(int(round(c - (n // 2) * b - (b - 1) / 2)) for c, n in zip(center, (h, w)))
    window = np.zeros((h * b, w * b))
    wvalid = np.zeros((h * b, w * b), dtype=bool)
    src = [slice(max(o, 0), min(o + n * b, size)) for o, n, size in
           zip(origin, (h, w), pattern.shape)]
    dst = [slice(s.start - o, s.stop - o) for s, o in zip(src, origin)]
    window[dst[0], dst[1]] = np.where(valid[src[0], src[1]], pattern[src[0], src[1]], 0.0)
    wvalid[dst[0], dst[1]] = valid[src[0], src[1]]
    sums = window.reshape(h, b, w, b).sum(axis=(1, 3))
    counts = wvalid.reshape(h, b, w, b).sum(axis=(1, 3))
    valid_b = counts >= min_valid * b * b
    binned = np.zeros((h, w))
    binned[valid_b] = sums[valid_b] * (b * b) / counts[valid_b]
    return binned, valid_b, origin


def central_disk(shape: tuple[int, int], diameter: float) -> np.ndarray:
    """Pixels within ``diameter / 2`` of (h // 2, w // 2): the central speckle to drop."""
    yy, xx = np.indices(shape)
    return np.hypot(yy - shape[0] // 2, xx - shape[1] // 2) <= diameter / 2


def to_amplitude(binned: np.ndarray, valid: np.ndarray):
    """``A = sqrt(max(S, 0))`` as float32, zero on missing pixels."""
    amp = np.sqrt(np.clip(binned, 0, None)).astype(np.float32)
    amp[~valid] = 0
    return amp
