"""LSQML (Odstrcil, Menzel & Guizar-Sicairos, Opt. Express 26, 3108 (2018)), in blocks.

Two passes over the blocks per iteration, each a fold of plain sums:

1. :func:`block_update` (the parallel form's pass) gives ``sum conj(P_j) chi_j``,
   ``sum |P_j|^2``, ``sum conj(O_j) chi_j`` and ``sum |O_j|^2`` with the exit-wave residual
   ``chi_j = psi'_j - psi_j``; :func:`directions` turns them into the preconditioned
   steepest directions ``dO = sum conj(P_j) chi_j / (sum |P_j|^2 + d)`` and
   ``dP = sum conj(O_j) chi_j / (sum |O_j|^2 + d)``.
2. :func:`step_block`: for every position the step lengths ``(a_O, a_P)`` minimising
   ``|| chi_j - a_O P_j dO_j - a_P dP O_j ||^2`` (the paper's 2x2 least squares, its
   eq. 23, with a little Tikhonov damping), and the sums ``sum a_O,j conj(P_j) chi_j`` and
   ``sum a_P,j conj(O_j) chi_j``; :func:`apply_steps` sets
   ``O += sum a_O conj(P) chi / (sum |P|^2 + d)``, ``P += sum a_P conj(O) chi / (sum |O|^2 + d)``
   (with every step 1 this is the parallel form's update: LSQML is its optimal-step form).

The residual is the amplitude model's (Gaussian noise on amplitudes): the same Fourier
projection as every other engine, through the shared :class:`PositionKernel`, so the
near-field propagator and position refinement (steps from pass 1) come for free.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lensfree.engine.ptycho.geometry import is_shifted, ramp_factors
from lensfree.engine.ptycho.kernel import PositionKernel, scaled_amplitudes
from lensfree.engine.ptycho.parallel import Sums, add_box
from lensfree.engine.ptycho.probe import orthogonalise_modes, probe_spectrum

#: Tikhonov damping of the 2x2 step system, relative to its diagonal (Odstrcil's 0.1 is
#: for minibatches; the full-scan directions here are smoother and take 0.01)
DAMPING = 0.01
#: the step lengths are kept in [0, MAX_STEP]: a negative step climbs, a huge one comes
#: from a position the direction barely touches
MAX_STEP = 2.0


@dataclass
class StepResult:
    """One block's pass-2 sums, in its object bounding box."""

    start: tuple[int, int]
    obj_num: np.ndarray      # (by, bx) sum a_O conj(P) chi
    probe_num: np.ndarray    # (M, h, w) sum a_P conj(O) chi
    steps: np.ndarray        # (B, 2) the positions' (a_O, a_P)

    def add_into(self, num: np.ndarray, den: np.ndarray | None = None) -> None:
        add_box(self, num, None)


def directions(obj, probe, sums: Sums, *, update_probe: bool, regularisation: float = 1e-3):
    """``(dO (oy, ox), dP (M, h, w))`` complex64, the preconditioned directions (``dP`` is
    zero while the probe is held)."""
    reg = regularisation * sums.den.max()
    dobj = (sums.num / (sums.den + reg)).astype(obj.dtype)
    dprobe = np.zeros_like(probe)
    if update_probe:
        preg = regularisation * sums.pden.max()
        dprobe = (sums.pnum / (sums.pden + preg)).astype(probe.dtype)
    return dobj, dprobe


def step_block(obj, probe, dobj, dprobe, crops, fractions, amp, valid, *,
               propagator=None) -> StepResult:
    """Pass 2 on one block: each position's optimal steps and the step-weighted sums.

    ``obj, probe``: the state pass 1 saw; ``dobj, dprobe``: :func:`directions`; the rest as
    :func:`block_update`. A position with a sub-pixel rest shifts ``dP`` with the probe.
    """
    m, h, w = probe.shape
    dtype = probe.dtype
    lo = crops.min(axis=0)
    hi = crops.max(axis=0) + (h, w)
    box, dbox = obj[lo[0]:hi[0], lo[1]:hi[1]], dobj[lo[0]:hi[0], lo[1]:hi[1]]
    rel = crops - lo
    obj_num = np.zeros(box.shape, dtype)
    probe_num = np.zeros(probe.shape, dtype)
    kernel = PositionKernel.cached(probe.shape, dtype, propagator)
    shifted = is_shifted(fractions)
    if shifted.any():
        spectrum, dspectrum = probe_spectrum(probe), probe_spectrum(dprobe)
        ry, rx = ramp_factors(fractions, (h, w))
    amp_scaled = scaled_amplitudes(amp)
    invalid = None if valid is None or valid.all() else ~valid
    hold_probe = not np.any(dprobe)
    steps = np.zeros((len(crops), 2))
    for i, (y, x) in enumerate(rel):
        probe_j, dprobe_j = probe, dprobe
        if shifted[i]:
            probe_j = kernel.shift_probe(spectrum, ry[i], rx[i]).copy()
            dprobe_j = kernel.shift_probe(dspectrum, ry[i], rx[i]).copy()
        patch, dpatch = box[y:y + h, x:x + w], dbox[y:y + h, x:x + w]
        kernel.project(probe_j, box, y, x, amp[i], amp_scaled[i],
                       None if invalid is None else invalid[i], shifted=bool(shifted[i]))
        chi = kernel.dpsi.reshape(m, -1)
        a = (probe_j * dpatch).reshape(m, -1)
        b = (dprobe_j * patch).reshape(m, -1)
        aa, ac = float(np.vdot(a, a).real), float(np.vdot(a, chi).real)
        if hold_probe:
            alpha = np.array([ac / (aa * (1 + DAMPING) + 1e-30), 0.0])
        else:
            bb, ab = float(np.vdot(b, b).real), float(np.vdot(a, b).real)
            bc = float(np.vdot(b, chi).real)
            lhs = np.array([[aa * (1 + DAMPING), ab], [ab, bb * (1 + DAMPING)]]) + 1e-30
            alpha = np.linalg.solve(lhs, [ac, bc])
        alpha = np.clip(alpha, 0.0, MAX_STEP)
        steps[i] = alpha
        cprobe = np.conj(probe_j)
        obj_num[y:y + h, x:x + w] += (alpha[0] * np.sum(cprobe * kernel.dpsi, axis=0)
                                      ).astype(dtype)
        if not hold_probe:
            probe_num += (alpha[1] * np.conj(patch) * kernel.dpsi).astype(dtype)
    return StepResult((int(lo[0]), int(lo[1])), obj_num, probe_num, steps)


def apply_steps(obj, probe, sums: Sums, results, *, update_probe: bool,
                regularisation: float = 1e-3):
    """New ``(object, probe)`` from pass 2's block results folded in the order given."""
    num = np.zeros(obj.shape, np.complex128)
    pnum = np.zeros(probe.shape, np.complex128)
    for r in results:
        r.add_into(num)
        pnum += r.probe_num
    reg = regularisation * sums.den.max()
    new_obj = (obj + num / (sums.den + reg)).astype(obj.dtype)
    new_probe = probe
    if update_probe:
        preg = regularisation * sums.pden.max()
        new_probe = orthogonalise_modes((probe + pnum / (sums.pden + preg)).astype(probe.dtype))
    return new_obj, new_probe
