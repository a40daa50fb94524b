"""ePIE (Maiden & Rodenburg 2009) and rPIE (Maiden, Johnson & Li 2017): positions one at a
time in a seeded random order, each updating the object and probe the next one sees."""

from __future__ import annotations

import numpy as np

from lensfree.engine.ptycho.geometry import is_shifted, ramp_factors
from lensfree.engine.ptycho.kernel import PositionKernel, scaled_amplitudes
from lensfree.engine.ptycho.probe import probe_spectrum


def pie_iteration(obj: np.ndarray, probe: np.ndarray, crops: np.ndarray,
                  fractions: np.ndarray, amp: np.ndarray, valid: np.ndarray | None,
                  order: np.ndarray, *, engine: str = "epie", alpha: float = 1.0,
                  beta: float = 1.0, update_probe: bool = True, refine: bool = False,
                  propagator=None):
    """One serial ePIE/rPIE sweep over positions in ``order``.

    ePIE: ``O += alpha conj(P) dpsi / max|P|^2``; rPIE: denominator
    ``(1 - alpha)|P|^2 + alpha max|P|^2``. Probe: ``P += beta conj(O) dpsi / max|O|^2``
    (moved back by the position's sub-pixel rest). ``dpsi = psi' - psi`` and the position
    steps come from the :class:`PositionKernel` the parallel engine uses too.

    Parameters
    ----------
    obj, probe : (oy, ox) object and (M, h, w) probe modes, left untouched.
    crops, fractions : (N, 2) whole-pixel crops and sub-pixel rests (:func:`corners`).
    amp, valid : (N, h, w) unshifted amplitudes and measured pixels (None: all measured).
    order : the positions' order in this sweep.
    propagator : :class:`Propagator` to the detector (None: the far field).

    Returns
    -------
    ``(obj, probe, errors (N,), steps (N, 2) or None)``: the updated object and probe
    (new arrays), each position's Fourier error and, with ``refine``, its position step
    (both against the object and probe as the sweep reached it).
    """
    obj, probe = obj.copy(), probe.copy()
    m, h, w = probe.shape
    kernel = PositionKernel.cached(probe.shape, probe.dtype, propagator)
    fft = kernel.fft
    shifted = is_shifted(fractions)
    ry, rx = ramp_factors(fractions, (h, w))
    amp_scaled = scaled_amplitudes(amp)
    invalid = None if valid is None or valid.all() else ~valid
    errors = np.zeros(len(crops))
    steps = np.zeros((len(crops), 2)) if refine else None
    for j in order:
        y, x = crops[j]
        patch = obj[y:y + h, x:x + w]
        probe_j = probe
        if shifted[j]:  # the probe changed at the last position: its spectrum too
            probe_j = kernel.shift_probe(probe_spectrum(probe), ry[j], rx[j])
        errors[j] = kernel.project(probe_j, obj, y, x, amp[j], amp_scaled[j],
                                   None if invalid is None else invalid[j],
                                   shifted=bool(shifted[j]))
        dpsi = kernel.dpsi
        chi_p = kernel.object_gradient(np.conj(probe_j))
        power = kernel.probe_power(probe_j)
        if refine:
            grads = np.gradient(patch)
            steps[j] = kernel.position_step(power, grads, [np.abs(g) ** 2 for g in grads])
        if engine == "rpie":
            den = (1 - alpha) * power + alpha * power.max()
            step = chi_p / den
        else:
            step = alpha * chi_p / power.max()
        old = patch.copy()
        patch += step.astype(obj.dtype)
        if update_probe:
            delta = (beta * np.conj(old) * dpsi / np.max(np.abs(old) ** 2)).astype(probe.dtype)
            if shifted[j]:
                back = np.conj(kernel.ramp_now)
                for k in range(m):
                    delta[k] = fft.inverse(fft.forward(delta[k]) * back)
            probe += delta
    return obj, probe, errors, steps
