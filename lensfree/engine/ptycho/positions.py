"""Position refinement: the kernel's gradient-form steps applied, bounded, with the
unobservable global part of the correction removed (Dwivedi et al. 2018; Zhang et al.
2013)."""

from __future__ import annotations

import numpy as np


def refine_positions(positions: np.ndarray, steps: np.ndarray, initial: np.ndarray, *,
                     gain: float = 1.0, max_step: float = 0.5,
                     affine: bool = True) -> np.ndarray:
    """Positions moved by their bounded steps, with the global part of the correction removed.

    ``positions + clip(gain * steps, -max_step, max_step)``; then the mean of the
    correction ``positions - initial`` is subtracted (a common shift is not observable),
    and with ``affine`` also its linear part in the initial positions (a global scale,
    shear or rotation of the scan trades off against the probe and object and otherwise
    grows slowly, iteration after iteration).
    """
    moved = positions + np.clip(gain * steps, -max_step, max_step)
    correction = moved - initial
    centred = initial - initial.mean(axis=0)
    if affine and len(initial) > 6:
        basis = np.c_[centred, np.ones(len(initial))]
        coef, *_ = np.linalg.lstsq(basis, correction, rcond=None)
        return moved - basis @ coef
    return moved - correction.mean(axis=0)
