"""Scan geometry: the object frame, each position's crop and sub-pixel rest, illumination.

(Detector geometry, ``p / (lambda z)``, is :mod:`lensfree.engine.geometry`.)
"""

from __future__ import annotations

import numpy as np


def object_frame(positions: np.ndarray, probe_shape, margin: int = 8):
    """``(origin, shape)`` of an object array holding every probe position plus ``margin``.

    ``origin`` (2,) float, the position-frame coordinate of object pixel ``(0, 0)``.
    """
    positions = np.asarray(positions, float)
    origin = np.floor(positions.min(axis=0)) - margin
    extent = np.ceil(positions.max(axis=0) - origin).astype(int)
    shape = tuple(int(e + s + margin) for e, s in zip(extent, probe_shape))
    return origin, shape


#: sub-pixel rests are rounded to 1 / SUBPIXEL_STEPS of a pixel (at most 1/32 pixel off,
#: far below what refinement resolves): a scan's rests then take a few hundred values,
#: and a block engine moves the probe once per value and batch, not once per position
SUBPIXEL_STEPS = 16


def corners(positions: np.ndarray, origin: np.ndarray, object_shape, probe_shape):
    """``(crops, fractions)``: (N, 2) int top-left pixels of each crop, clipped inside the
    object array, and the (N, 2) float rest ``positions - origin - crops`` rounded to
    `SUBPIXEL_STEPS`, which the engine applies as a sub-pixel shift of the probe."""
    rel = np.asarray(positions, float) - origin
    hi = np.asarray(object_shape) - np.asarray(probe_shape)
    crops = np.clip(np.rint(rel).astype(np.int64), 0, hi)
    rest = np.rint(np.clip(rel - crops, -1.0, 1.0) * SUBPIXEL_STEPS) / SUBPIXEL_STEPS
    return crops, rest


def is_shifted(fractions: np.ndarray) -> np.ndarray:
    """(N,) bool: the positions whose sub-pixel rest is worth a shift of the probe."""
    return np.any(np.abs(fractions) > 1e-4, axis=1)


def ramp_factors(fractions: np.ndarray, shape):
    """``(ry (N, h), rx (N, w))`` complex64 with ``ry[j] (x) rx[j] = exp(-2 pi i q.f_j)``:
    multiplying a spectrum by that ramp shifts its image by ``f_j`` (separable, so a
    position's ramp costs one outer product)."""
    qy = np.fft.fftfreq(shape[0])
    qx = np.fft.fftfreq(shape[1])
    ry = np.exp(-2j * np.pi * fractions[:, :1] * qy[None])
    rx = np.exp(-2j * np.pi * fractions[:, 1:] * qx[None])
    return ry.astype(np.complex64), rx.astype(np.complex64)


def in_frame(image: np.ndarray, origin, shape) -> np.ndarray:
    """``image`` (whose pixel (0, 0) sits at position-frame (0, 0)) on the object frame
    that starts at ``origin`` (whole pixels), zero where it does not reach."""
    out = np.zeros(shape, image.dtype)
    oy, ox = (int(round(o)) for o in origin)
    ys, xs = max(0, -oy), max(0, -ox)
    ye = min(shape[0], image.shape[0] - oy)
    xe = min(shape[1], image.shape[1] - ox)
    if ye > ys and xe > xs:
        out[ys:ye, xs:xe] = image[ys + oy:ye + oy, xs + ox:xe + ox]
    return out


def illumination(crops: np.ndarray, probe: np.ndarray, shape) -> np.ndarray:
    """``sum_j sum_m |P_m(r - c_j)|^2`` on the object array: how well each pixel is lit."""
    h, w = probe.shape[-2:]
    power = np.sum(np.abs(probe) ** 2, axis=0, dtype=np.float64)
    out = np.zeros(shape)
    for y, x in crops:
        out[y:y + h, x:x + w] += power
    return out
