"""The parallel form: blocks of positions return sums, the root folds them in block order.

Every block returns ``sum conj(P) (psi' - psi)`` and ``sum |P|^2`` over its own bounding
box of the object (and ``sum conj(O) (psi' - psi)``, ``sum |O|^2`` for the probe),
:func:`block_update`; the root sums the blocks in block order and sets
``O += num / den`` (regularised; the same as ``O = sum conj(P) psi' / sum |P|^2``) and
``P += pnum / pden``, :func:`apply_update`. This is the
alternating-projection / least-squares step that ptypy distributes over MPI.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lensfree.engine.ptycho import compiled
from lensfree.engine.ptycho.geometry import is_shifted, ramp_factors
from lensfree.engine.ptycho.kernel import PositionKernel, scaled_amplitudes
from lensfree.engine.ptycho.probe import orthogonalise_modes
from lensfree.engine.ptycho.sums import Partial, combine


@dataclass
class BlockResult:
    """One block's contribution: sums over its positions, in its object bounding box."""

    start: tuple[int, int]      # bounding box corner in the object array
    obj_num: np.ndarray         # (by, bx) complex64: sum conj(P) (psi' - psi)
    obj_den: np.ndarray         # (by, bx) float32: sum |P|^2
    probe_num: np.ndarray       # (M, h, w) complex64: sum conj(O_j) (psi' - psi)
    probe_den: np.ndarray       # (h, w) float32: sum |O_j|^2
    error: np.ndarray           # (B,) per-position sum (|F psi| - A)^2
    steps: np.ndarray | None    # (B, 2) position steps, when refining

    def add_into(self, num: np.ndarray, den: np.ndarray | None = None) -> None:
        """Add the object sums into object-sized ``num`` (and ``den``)."""
        add_box(self, num, den)


def add_box(result, num: np.ndarray, den: np.ndarray | None) -> None:
    """A block result's boxed ``obj_num`` (and ``obj_den``) added into object-sized arrays."""
    (y, x), (by, bx) = result.start, result.obj_num.shape
    num[y:y + by, x:x + bx] += result.obj_num
    if den is not None and getattr(result, "obj_den", None) is not None:
        den[y:y + by, x:x + bx] += result.obj_den


class BlockSetup:
    """What every block engine sets up for one block of positions: its object box
    (``lo``, ``hi``) and zeroed sums (:meth:`zero_sums`), the calling thread's kernel,
    each position's probe moved by its sub-pixel rest (:meth:`probe_at`), the scaled
    amplitudes and the unmeasured pixels (:meth:`invalid_at`)."""

    def __init__(self, probe, crops, fractions, amp=None, valid=None, propagator=None):
        m, h, w = probe.shape
        self.probe, self.fractions = probe, fractions
        self.lo = crops.min(axis=0)
        self.hi = crops.max(axis=0) + (h, w)
        self.kernel = PositionKernel.cached(probe.shape, probe.dtype, propagator)
        self.shifted = is_shifted(fractions)
        if self.shifted.any():
            self._spectrum = self.kernel.spectrum(probe)
            self._ry, self._rx = ramp_factors(fractions, (h, w))
        self.amp_scaled = None if amp is None else scaled_amplitudes(amp)
        self._invalid = None if valid is None or valid.all() else ~valid

    def probe_at(self, i: int) -> np.ndarray:
        """Position ``i``'s probe: moved by its rest (kept for the next equal rest,
        :meth:`PositionKernel.shift_probe`), or the probe itself. Read only."""
        if not self.shifted[i]:
            return self.probe
        return self.kernel.shift_probe(self._spectrum, self._ry[i], self._rx[i],
                                       rest=(float(self.fractions[i, 0]),
                                             float(self.fractions[i, 1])))

    def invalid_at(self, i: int) -> np.ndarray | None:
        return None if self._invalid is None else self._invalid[i]

    def zero_sums(self):
        """``(obj_num, obj_den)`` over the box and ``(probe_num, probe_den)``, zeroed."""
        m, h, w = self.probe.shape
        box = tuple(int(v) for v in self.hi - self.lo)
        return (np.zeros(box, self.probe.dtype), np.zeros(box, np.float32),
                np.zeros(self.probe.shape, self.probe.dtype), np.zeros((h, w), np.float32))


def block_update(obj: np.ndarray, probe: np.ndarray, crops: np.ndarray,
                 fractions: np.ndarray, amp: np.ndarray, valid: np.ndarray | None, *,
                 refine: bool = False, propagator=None) -> BlockResult:
    """Exit-wave updates of one block of positions against the shared object and probe.

    Parameters
    ----------
    obj : (oy, ox) complex64 object. probe : (M, h, w) complex64 modes.
    crops, fractions : (B, 2) whole-pixel crops and sub-pixel rests (:func:`corners`);
        a position with a rest shifts the probe by it (one more FFT per mode, unless an
        earlier position of the batch had the same rest).
    amp, valid : (B, h, w) unshifted amplitudes and measured pixels (None: all measured).
    refine : also return the gradient-form position step of every position.
    propagator : :class:`Propagator` to the detector (None: the far field).

    Position by position through the shared :class:`PositionKernel` (``psi = P_j O_j``
    with ``P_j`` the probe moved by the sub-pixel rest, ``psi' = F^-1[A F psi / |F psi|]``),
    then ``conj(P_j) (psi' - psi)`` and ``|P_j|^2`` into the block's object box, and
    ``conj(O_j) (psi' - psi)`` and ``|O_j|^2`` into the probe sums. The probe increment is
    placed at the whole-pixel crop: moving it back by the rest as well would cost another
    FFT per position, and the increment vanishes at the fixed point either way, so only
    the update direction (by at most half a pixel), not the model, is approximate.
    """
    block = BlockSetup(probe, crops, fractions, amp, valid, propagator)
    kernel, lo, hi = block.kernel, block.lo, block.hi
    obj_num, obj_den, probe_num, probe_den = block.zero_sums()
    errors = np.empty(len(crops))
    steps = np.empty((len(crops), 2)) if refine else None
    for i, (y, x) in enumerate(crops):
        probe_j = block.probe_at(i)
        errors[i] = kernel.project(probe_j, obj, y, x, amp[i], block.amp_scaled[i],
                                   block.invalid_at(i), shifted=bool(block.shifted[i]),
                                   residual=False)
        # conj(P_j) chi and |P_j|^2 into the box, conj(O_j) chi and |O_j|^2 into the
        # probe's sums, and the position step: one pass
        step = compiled.accumulate(kernel.psi, kernel.psi_new, probe_j, obj, y, x, lo[0],
                                   lo[1], hi[0], hi[1], obj_num, obj_den, probe_num,
                                   probe_den, refine, kernel.chi_row,
                                   kernel.power_row)
        if refine:
            steps[i] = step
    return BlockResult(start=(int(lo[0]), int(lo[1])), obj_num=obj_num, obj_den=obj_den,
                       probe_num=probe_num, probe_den=probe_den, error=errors, steps=steps)


@dataclass
class Sums:
    """The blocks' sums folded over the whole object and probe (`fold`)."""

    num: np.ndarray     # (oy, ox) sum conj(P) chi
    den: np.ndarray     # (oy, ox) sum |P|^2
    pnum: np.ndarray    # (M, h, w) sum conj(O) chi
    pden: np.ndarray    # (h, w) sum |O|^2


def fold(obj_shape, probe_shape, results) -> Sums:
    """Pass-1 block results (:class:`BlockResult`) folded in the order given."""
    num = np.zeros(obj_shape, np.complex128)
    den = np.zeros(obj_shape, np.float64)
    pnum = np.zeros(probe_shape, np.complex128)
    pden = np.zeros(probe_shape[-2:], np.float64)
    for r in results:
        r.add_into(num, den)
        pnum += r.probe_num
        pden += r.probe_den
    return Sums(num, den, pnum, pden)


def apply_update(obj: np.ndarray, probe: np.ndarray, results, *, update_probe: bool,
                 regularisation: float = 1e-3):
    """New ``(object, probe)`` from block results (:class:`BlockResult`, or folded
    partials, :class:`Partial`) folded in the order given.

    ``O = O_old + sum num / (sum den + r)`` with ``r = regularisation * max(den)`` (the
    blocks' ``num`` are ``sum conj(P_j) (psi' - psi)``: this is
    ``(sum conj(P_j) psi' + r O_old) / (sum den + r)``);
    ``P = P_old + sum pnum / (sum pden + r_P)`` (the blocks' ``pnum`` are increments,
    ``sum conj(O_j) (psi' - psi)``; with whole-pixel positions this is the same as
    ``(sum conj(O_j) psi' + r_P P_old) / (sum pden + r_P)``). The object is updated tile
    by tile where the blocks' sums lie (:meth:`Partial.stepped`): no object-sized sums.
    """
    total = None
    for r in results:
        if not isinstance(r, Partial):
            r = Partial.of(r, np.arange(len(r.error)))
        total = r if total is None else combine(total, r)
    new_obj = total.stepped(obj, regularisation * total.den_max())
    new_probe = probe
    if update_probe:
        preg = regularisation * total.probe_den.max()
        new_probe = orthogonalise_modes(
            (probe + total.probe_num / (total.probe_den + preg)).astype(probe.dtype))
    return new_obj, new_probe


#: the momentum's memory (mPIE's friction, Maiden, Johnson & Li 2017)
FRICTION = 0.7


def momentum_step(obj, probe, before, velocity, gain: float, update_probe: bool):
    """mPIE's momentum on a whole iteration of the block engines: ``v = (X - X_0) +
    FRICTION v`` and ``X += gain v`` for the object (and the probe while it is updated),
    ``X_0`` the state the iteration started from (``before``). Returns
    ``(object, probe, velocity)``, new arrays."""
    v_obj = (obj - before[0]) + np.float32(FRICTION) * velocity[0]
    obj = obj + np.float32(gain) * v_obj
    v_probe = velocity[1]
    if update_probe:
        v_probe = (probe - before[1]) + np.float32(FRICTION) * velocity[1]
        probe = orthogonalise_modes(probe + np.float32(gain) * v_probe)
    return obj, probe, (v_obj, v_probe)
