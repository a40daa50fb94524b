"""Scores of a reconstruction against a known truth: object and position errors."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from lensfree.engine.align import fourier_shift, register_translation
from lensfree.engine.ptycho.geometry import corners, illumination, in_frame


class Score(NamedTuple):
    """A run against its truth: :func:`object_error` over the well-lit pixels and the RMS
    :func:`position_error` of the initial and of the final positions (px)."""

    object_error: float
    position_error_before: float
    position_error_after: float


def score(obj: np.ndarray, probe: np.ndarray, positions: np.ndarray,
          positions_initial: np.ndarray, origin, true_object: np.ndarray,
          true_positions: np.ndarray, *, true_origin=(0.0, 0.0)) -> Score:
    """Score a reconstruction against the truth it was simulated from.

    Parameters
    ----------
    obj, probe : the reconstructed (oy, ox) object, whose pixel (0, 0) is at ``origin``
        of the position frame, and (M, h, w) probe modes.
    positions, positions_initial : (N, 2) final and initial positions (px).
    true_object, true_positions : the truth; its object's pixel (0, 0) is at
        ``true_origin`` of the same frame, its positions in px.

    The object error counts the pixels lit by at least 10% of the brightest
    (:func:`illumination` of ``probe`` at the final positions).
    """
    origin = np.asarray(origin, float)
    truth = in_frame(true_object, origin - np.asarray(true_origin, float), obj.shape)
    crops, _ = corners(positions, origin, obj.shape, probe.shape[-2:])
    lit = illumination(crops, probe, obj.shape)
    return Score(object_error(obj, truth, lit > 0.1 * lit.max()),
                 position_error(positions_initial, true_positions),
                 position_error(positions, true_positions))


def position_error(estimate: np.ndarray, truth: np.ndarray) -> float:
    """RMS length of ``estimate - truth`` after removing their mean offset (unobservable)."""
    d = np.asarray(estimate, float) - np.asarray(truth, float)
    d -= d.mean(axis=0)
    return float(np.sqrt(np.mean(np.sum(d**2, axis=1))))


def _phase_ramp(g: np.ndarray) -> np.ndarray:
    """Frequency ``q`` (cycles/px) maximising ``|sum g exp(-2 pi i q.r)|``: the linear phase
    of ``g``, from an 8x zero-padded FFT peak refined by Nelder-Mead."""
    from scipy.optimize import minimize

    pad = [8 * s for s in g.shape]
    spec = np.abs(np.fft.fft2(g, pad))
    peak = np.array(np.unravel_index(int(np.argmax(spec)), spec.shape), float)
    q0 = np.where(peak > np.array(pad) / 2, peak - pad, peak) / pad
    yy, xx = np.indices(g.shape)

    def cost(q):
        return -abs(np.sum(g * np.exp(-2j * np.pi * (q[0] * yy + q[1] * xx))))

    return minimize(cost, q0, method="Nelder-Mead",
                    options={"xatol": 1e-6, "fatol": 1e-12 * abs(cost(q0))}).x


def object_error(obj: np.ndarray, truth: np.ndarray, weight: np.ndarray, *,
                 ramp: bool = True) -> float:
    """``min ||c T(obj) - truth|| / ||truth||`` over pixels where ``weight`` is True.

    ``T``: a sub-pixel shift and (``ramp``) a linear phase ramp, ``c`` a complex factor
    (global phase and scale). The ramp is an exact ambiguity when the probe is
    reconstructed too: ``O exp(i a.r)``, ``P exp(-i a.r)`` give the same frames. The shift
    starts from the cross-correlation peak and, with the ramp, is refined by Nelder-Mead
    on the masked misfit (a hard mask biases the plain cross-correlation).
    """
    from scipy.optimize import minimize

    weight = np.asarray(weight, bool)
    ref = truth[weight]
    spectrum = np.fft.fft2(obj)
    qy = np.fft.fftfreq(obj.shape[0])[:, None]
    qx = np.fft.fftfreq(obj.shape[1])[None, :]
    yy, xx = np.indices(obj.shape)

    def transformed(v):
        moved = np.fft.ifft2(spectrum * np.exp(-2j * np.pi * (qy * v[0] + qx * v[1])))
        if ramp:
            moved = moved * np.exp(-2j * np.pi * (v[2] * yy + v[3] * xx))
        return moved[weight]

    def misfit(v):
        m = transformed(v)
        c = np.vdot(m, ref) / np.vdot(m, m)
        return float(np.linalg.norm(c * m - ref) / np.linalg.norm(ref))

    start = list(register_translation(obj * weight, truth * weight))
    if ramp:
        moved = fourier_shift(obj, start)
        start += list(_phase_ramp(moved * np.conj(truth) * weight))
    best = minimize(misfit, np.asarray(start), method="Nelder-Mead",
                    options={"xatol": 1e-5, "fatol": 1e-7, "maxiter": 400})
    return min(misfit(best.x), misfit(np.asarray(start)))
