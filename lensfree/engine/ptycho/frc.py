"""Fourier ring correlation of two independent reconstructions, and its half-bit resolution.

``FRC(r) = Re sum_ring F1 conj(F2) / sqrt(sum_ring |F1|^2 sum_ring |F2|^2)`` over rings of
width one frequency pixel; the resolution is the first frequency where it falls below the
half-bit threshold ``(0.2071 + 1.9102 / sqrt(n)) / (1.2071 + 0.9102 / sqrt(n))``
(``n`` pixels in the ring; M. van Heel and M. Schatz, J. Struct. Biol. 151, 250 (2005)).
Before correlating, the second object is registered to the first (sub-pixel shift, then a
global complex factor: the ambiguities two runs do not share) and both are apodised by a
Hann-edged window over the pixels both lit, so the crop's edge adds no correlation.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from lensfree.engine.align import fourier_shift, register_translation


class FRC(NamedTuple):
    frequency: np.ndarray   # (R,) ring centres, cycles per pixel (0 .. 0.5)
    frc: np.ndarray         # (R,) correlation
    threshold: np.ndarray   # (R,) half-bit threshold
    resolution_px: float    # 1 / the crossing frequency, px (full period); 2: never crosses


def half_bit(n: np.ndarray) -> np.ndarray:
    """Half-bit threshold of rings holding ``n`` pixels (van Heel & Schatz 2005, eq. 17)."""
    root = np.sqrt(np.maximum(n, 1))
    return (0.2071 + 1.9102 / root) / (1.2071 + 0.9102 / root)


def window(weight: np.ndarray, edge: int = 8) -> np.ndarray:
    """``weight`` (bool) eroded into a soft window: 1 inside, a Hann fall over ``edge`` px."""
    from scipy.ndimage import distance_transform_edt

    depth = distance_transform_edt(np.pad(weight, 1))[1:-1, 1:-1]
    return np.where(depth >= edge, 1.0, 0.5 - 0.5 * np.cos(np.pi * np.minimum(depth, edge)
                                                             / edge))


def fourier_ring_correlation(a: np.ndarray, b: np.ndarray, weight: np.ndarray | None = None,
                             *, register: bool = True) -> FRC:
    """FRC of two (h, w) complex images of one object; ``weight`` (bool) the pixels to
    compare (None: all, no apodisation)."""
    a = np.asarray(a, np.complex128)
    b = np.asarray(b, np.complex128)
    if a.shape != b.shape:
        raise ValueError(f"FRC of images of shapes {a.shape} and {b.shape}")
    win = np.ones(a.shape) if weight is None else window(np.asarray(weight, bool))
    if register:
        b = fourier_shift(b, register_translation(a * win, b * win))
        c = np.vdot(b * win, a * win)
        b = b * (c / abs(c) if abs(c) > 0 else 1)
    # the mean of the window's support carries no resolution and leaks into low rings
    a = (a - np.sum(a * win) / win.sum()) * win
    b = (b - np.sum(b * win) / win.sum()) * win
    fa, fb = np.fft.fft2(a), np.fft.fft2(b)
    fy = np.fft.fftfreq(a.shape[0])[:, None]
    fx = np.fft.fftfreq(a.shape[1])[None, :]
    side = min(a.shape)
    ring = np.rint(np.hypot(fy, fx) * side).astype(int).ravel()
    rings = side // 2
    keep = ring < rings
    ring = ring[keep]
    cross = np.bincount(ring, (fa * np.conj(fb)).real.ravel()[keep], rings)
    pa = np.bincount(ring, (np.abs(fa) ** 2).ravel()[keep], rings)
    pb = np.bincount(ring, (np.abs(fb) ** 2).ravel()[keep], rings)
    n = np.bincount(ring, minlength=rings)
    frc = cross / np.sqrt(np.maximum(pa * pb, 1e-300))
    threshold = half_bit(n)
    frequency = np.arange(rings) / side
    below = np.flatnonzero((frc < threshold) & (frequency > 0))
    resolution = 1.0 / frequency[below[0]] if len(below) else 2.0  # the pixel's limit
    return FRC(frequency, frc, threshold, float(resolution))
