"""Far-field ptychography: exit waves, object/probe updates and position refinement.

Conventions: a position ``(y, x)`` is where the probe array's pixel ``(0, 0)`` falls on the
object, in object pixels of the position frame; the object array starts at ``origin`` of
that frame (see :func:`object_frame`), so position ``j`` crops
``O[c_y:c_y+h, c_x:c_x+w]`` with ``c = round(r_j - origin)`` (whole pixels; the positions
themselves are refined continuously). Amplitudes handed to the engine are unshifted
(zero frequency at ``[0, 0]``), see :func:`prepare_amplitudes`.

Model (SCIENCE.md section 5): ``psi_jm = P_m O_j``, ``I_j = sum_m |F psi_jm|^2``; the
Fourier projection ``psi'_jm = F^-1[A_j F psi_jm / sqrt(I_j)]`` on measured pixels.

- ePIE (Maiden & Rodenburg 2009) and rPIE (Maiden, Johnson & Li 2017): positions one at a
  time in a seeded random order, :func:`pie_iteration`.
- Parallel form: every block of positions returns ``sum conj(P) psi'`` and ``sum |P|^2``
  over its own bounding box (and ``sum conj(O) (psi' - psi)``, ``sum |O|^2`` for the
  probe), :func:`block_update`; the root sums the blocks in block order and sets
  ``O = num / den`` (regularised) and ``P += pnum / pden``, :func:`apply_update`. This
  is the alternating-projection / least-squares step that ptypy distributes over MPI.
- Position refinement, gradient form (Dwivedi et al. 2018; Zhang et al. 2013):
  ``dr_j = Re sum conj(P dO/dr)(psi' - psi) / sum |P dO/dr|^2``, every position on its
  own, bounded, with the mean correction held at zero (:func:`refine_positions`).

References
----------
A. M. Maiden and J. M. Rodenburg, Ultramicroscopy 109, 1256 (2009).
A. M. Maiden, D. Johnson and P. Li, Optica 4, 736 (2017).
P. Thibault and A. Menzel, Nature 494, 68 (2013) (mixed states).
P. Dwivedi et al., Ultramicroscopy 192, 29 (2018) (gradient position correction).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lensfree.engine import fft as fftlib
from lensfree.engine.align import fourier_shift, register_translation

__all__ = ["BlockResult", "ENGINES", "PtychoParams", "apply_update", "block_update",
           "corners", "illumination", "in_frame", "initial_probe", "object_error",
           "object_frame", "orthogonalise_modes",
           "pie_iteration", "position_error", "prepare_amplitudes", "refine_positions"]

ENGINES = ("epie", "rpie", "parallel")


@dataclass(frozen=True)
class PtychoParams:
    """Reconstruction parameters.

    engine : ``epie``, ``rpie`` (serial) or ``parallel`` (blocks reduced every iteration).
    alpha : object step. ePIE: ``alpha conj(P) dpsi / max|P|^2`` (1.0); rPIE: the
        regularisation weight of its denominator (0.1 is Maiden 2017's choice).
    beta : probe step of ePIE/rPIE (1.0).
    probe_start : first iteration that updates the probe (the object settles first).
    regularisation : parallel form: ``O = (num + r O_old) / (den + r)``, ``r`` this
        fraction of ``max(den)``; keeps weakly lit pixels from blowing up.
    refine_positions, refine_start, refine_every : refine every position every
        ``refine_every`` iterations from iteration ``refine_start``.
    refine_gain, max_step : ``dr <- clip(gain * dr, -max_step, max_step)`` px per update.
    """

    engine: str = "parallel"
    iterations: int = 100
    probe_modes: int = 1
    alpha: float | None = None
    beta: float = 1.0
    probe_start: int = 2
    regularisation: float = 1e-3
    refine_positions: bool = False
    refine_start: int = 10
    refine_every: int = 1
    refine_gain: float = 1.0
    max_step: float = 0.5
    seed: int = 0

    def __post_init__(self):
        if self.engine not in ENGINES:
            raise ValueError(f"engine={self.engine!r}: choose one of {', '.join(ENGINES)}")
        if self.iterations < 1:
            raise ValueError(f"iterations={self.iterations} must be at least 1")
        if not 1 <= self.probe_modes <= 16:
            raise ValueError(f"probe_modes={self.probe_modes} must lie in 1..16")
        if self.alpha is not None and not 0 < self.alpha <= 2:
            raise ValueError(f"alpha={self.alpha} must lie in (0, 2]")
        if not 0 <= self.beta <= 2:
            raise ValueError(f"beta={self.beta} must lie in [0, 2]")
        if self.refine_every < 1:
            raise ValueError(f"refine_every={self.refine_every} must be at least 1")
        if not self.max_step > 0:
            raise ValueError(f"max_step={self.max_step} must be positive")

    @property
    def object_step(self) -> float:
        if self.alpha is not None:
            return self.alpha
        return 0.1 if self.engine == "rpie" else 1.0

    def refines_at(self, iteration: int) -> bool:
        return (self.refine_positions and iteration >= self.refine_start
                and (iteration - self.refine_start) % self.refine_every == 0)


# ----------------------------------------------------------------------------- geometry


def object_frame(positions: np.ndarray, probe_shape, margin: int = 8):
    """``(origin, shape)`` of an object array holding every probe position plus ``margin``.

    ``origin`` (2,) float, the position-frame coordinate of object pixel ``(0, 0)``.
    """
    positions = np.asarray(positions, float)
    origin = np.floor(positions.min(axis=0)) - margin
    extent = np.ceil(positions.max(axis=0) - origin).astype(int)
    shape = tuple(int(e + s + margin) for e, s in zip(extent, probe_shape))
    return origin, shape


def corners(positions: np.ndarray, origin: np.ndarray, object_shape, probe_shape):
    """``(crops, fractions)``: (N, 2) int top-left pixels of each crop, clipped inside the
    object array, and the (N, 2) float rest ``positions - origin - crops``, which the
    engine applies as a sub-pixel shift of the probe."""
    rel = np.asarray(positions, float) - origin
    hi = np.asarray(object_shape) - np.asarray(probe_shape)
    crops = np.clip(np.rint(rel).astype(np.int64), 0, hi)
    return crops, np.clip(rel - crops, -1.0, 1.0)


def prepare_amplitudes(frames: np.ndarray, mask: np.ndarray | None = None):
    """``(amplitude, valid)`` for the engine: sqrt of counts, zero frequency moved to [0, 0].

    ``frames`` (N, h, w) centred as stored; NaN, inf and negative pixels, and pixels the
    mask marks unmeasured, become invalid (left free in the Fourier projection).
    """
    frames = np.asarray(frames, dtype=np.float32)
    valid = np.isfinite(frames) & (frames >= 0)
    if mask is not None:
        valid &= np.asarray(mask, bool)[None]
    amp = np.sqrt(np.where(valid, frames, 0), dtype=np.float32)
    axes = (-2, -1)
    return np.fft.ifftshift(amp, axes=axes), np.fft.ifftshift(valid, axes=axes)


def initial_probe(probe: np.ndarray | None, amplitude: np.ndarray, n_modes: int) -> np.ndarray:
    """(n_modes, h, w) complex64 start: ``probe`` (or ``F^-1`` of the mean amplitude),
    extra modes made as in `orthogonal_modes` at 5% power, scaled so that the model's total
    counts match the data's mean (with a unit object)."""
    from lensfree.engine.simulate_ptycho import orthogonal_modes

    h, w = amplitude.shape[-2:]
    mean_counts = float(np.mean(np.sum(amplitude.astype(np.float64) ** 2, axis=(-2, -1))))
    if probe is None:
        mean_amp = np.mean(amplitude, axis=0)
        probe = np.fft.fftshift(np.fft.ifft2(mean_amp))[None]
    probe = np.asarray(probe, np.complex128).reshape(-1, h, w)
    modes = probe[:n_modes]
    if len(modes) < n_modes:
        weights = np.r_[1.0, np.full(n_modes - 1, 0.05)]
        extra = orthogonal_modes(modes[0], n_modes, weights)[len(modes):]
        scale = np.linalg.norm(modes[0])
        modes = np.concatenate([modes, extra * scale / np.linalg.norm(extra[:1])
                                * np.sqrt(0.05)])
    power = np.sum(np.abs(modes) ** 2) * h * w  # Parseval: sum |F psi|^2 = hw sum |psi|^2
    return (modes * np.sqrt(mean_counts / power)).astype(np.complex64)


def orthogonalise_modes(probe: np.ndarray) -> np.ndarray:
    """Probe modes made orthogonal (SVD), strongest first; the incoherent sum is unchanged."""
    m = probe.shape[0]
    if m == 1:
        return probe
    flat = probe.reshape(m, -1).astype(np.complex128)
    u, s, vh = np.linalg.svd(flat, full_matrices=False)
    return (s[:, None] * vh).reshape(probe.shape).astype(probe.dtype)


# ----------------------------------------------------------------------------- projection


def _fourier_project(psi: np.ndarray, amp: np.ndarray, valid: np.ndarray):
    """``(psi', err)`` for exit waves ``psi`` (B, M, h, w) of B positions.

    ``err`` (B,): ``sum_valid (sqrt(I) - A)^2`` per position.
    """
    b, m, h, w = psi.shape
    fft = fftlib.get_fft2((h, w), psi.dtype)
    spec = fftlib.empty_aligned(psi.shape, psi.dtype)
    for i in range(b):
        for k in range(m):
            fft.forward(psi[i, k], out=spec[i, k])
    intensity = np.einsum("bmhw,bmhw->bhw", spec.real, spec.real)
    intensity += np.einsum("bmhw,bmhw->bhw", spec.imag, spec.imag)
    model = np.sqrt(intensity)
    err = np.sum(np.where(valid, (model - amp) ** 2, 0), axis=(1, 2), dtype=np.float64)
    factor = np.where(valid, amp / np.maximum(model, 1e-20), 1).astype(np.float32)
    spec *= factor[:, None]
    for i in range(b):
        for k in range(m):
            fft.inverse(spec[i, k], out=spec[i, k])
    return spec, err


def _position_steps(obj_patches, probes, psi, psi_new):
    """Gradient-form shifts (B, 2) that best explain ``psi' - psi`` as a probe move.

    ``probes`` (B, M, h, w): each position's (shifted) probe modes.
    """
    gy, gx = np.gradient(obj_patches, axis=(1, 2))
    dpsi = psi_new - psi
    out = np.empty((len(obj_patches), 2))
    for a, g in enumerate((gy, gx)):
        pg = probes * g[:, None]
        num = np.sum((np.conj(pg) * dpsi).real, axis=(1, 2, 3), dtype=np.float64)
        den = np.sum(np.abs(pg) ** 2, axis=(1, 2, 3), dtype=np.float64)
        out[:, a] = num / np.maximum(den, 1e-30)
    return out


# ----------------------------------------------------------------------------- parallel form


@dataclass
class BlockResult:
    """One block's contribution: sums over its positions, in its object bounding box."""

    start: tuple[int, int]      # bounding box corner in the object array
    obj_num: np.ndarray         # (by, bx) complex64: sum conj(P) psi'
    obj_den: np.ndarray         # (by, bx) float32: sum |P|^2
    probe_num: np.ndarray       # (M, h, w) complex64: sum conj(O_j) (psi' - psi)
    probe_den: np.ndarray       # (h, w) float32: sum |O_j|^2
    error: np.ndarray           # (B,) per-position sum (|F psi| - A)^2
    steps: np.ndarray | None    # (B, 2) position steps, when refining


def _ramps(fractions: np.ndarray, shape) -> np.ndarray:
    """(B, h, w) ``exp(-2 pi i q.f_j)``: multiplying a spectrum shifts its image by ``f_j``."""
    ry, rx = _ramp_factors(fractions, shape)
    return ry[:, :, None] * rx[:, None, :]


def _ramp_factors(fractions: np.ndarray, shape):
    """``(ry (B, h), rx (B, w))`` complex64, the separable factors of :func:`_ramps`."""
    qy = np.fft.fftfreq(shape[0])
    qx = np.fft.fftfreq(shape[1])
    ry = np.exp(-2j * np.pi * fractions[:, :1] * qy[None])
    rx = np.exp(-2j * np.pi * fractions[:, 1:] * qx[None])
    return ry.astype(np.complex64), rx.astype(np.complex64)


def _shifted_probes(probe, probe_spec, fractions, shifted):
    """(B, M, h, w) probes, moved by ``fractions`` where ``shifted`` (else as they are)."""
    b = len(fractions)
    out = fftlib.empty_aligned((b, *probe.shape), probe.dtype)
    out[...] = probe[None]
    if shifted.any():
        fft = fftlib.get_fft2(probe.shape[-2:], probe.dtype)
        ramps = _ramps(fractions, probe.shape[-2:])
        for i in np.flatnonzero(shifted):
            for k in range(probe.shape[0]):
                np.multiply(probe_spec[k], ramps[i], out=out[i, k])
                fft.inverse(out[i, k], out=out[i, k])
    return out


def _probe_spectrum(probe):
    fft = fftlib.get_fft2(probe.shape[-2:], probe.dtype)
    return np.stack([fft.forward(p).copy() for p in probe])


#: added to |F psi| before dividing by it: a zero spectrum pixel stays zero (not 0/0)
_TINY = np.float32(1e-30)


def block_update(obj: np.ndarray, probe: np.ndarray, crops: np.ndarray,
                 fractions: np.ndarray, amp: np.ndarray, valid: np.ndarray | None, *,
                 refine: bool = False) -> BlockResult:
    """Exit-wave updates of one block of positions against the shared object and probe.

    Parameters
    ----------
    obj : (oy, ox) complex64 object. probe : (M, h, w) complex64 modes.
    crops, fractions : (B, 2) whole-pixel crops and sub-pixel rests (:func:`corners`);
        a position with a rest shifts the probe by it (one more FFT per mode).
    amp, valid : (B, h, w) unshifted amplitudes and measured pixels (None: all measured).
    refine : also return the gradient-form position step of every position.

    Position by position, on buffers reused throughout (each is small enough to stay in
    cache): ``psi = P_j O_j`` with ``P_j`` the probe moved by the sub-pixel rest,
    ``psi' = F^-1[A F psi / |F psi|]``, then ``conj(P_j) psi'`` and ``|P_j|^2`` into the
    block's object box, and ``conj(O_j) (psi' - psi)`` and ``|O_j|^2`` into the probe sums.
    The probe increment is placed at the whole-pixel crop: moving it back by the rest as
    well would cost another FFT per position, and the increment vanishes at the fixed
    point either way, so only the update direction (by at most half a pixel), not the
    model, is approximate.
    """
    m, h, w = probe.shape
    size = h * w
    dtype = probe.dtype
    lo = crops.min(axis=0)
    hi = crops.max(axis=0) + (h, w)
    box = obj[lo[0]:hi[0], lo[1]:hi[1]]
    rel = crops - lo
    obj_num = np.zeros(box.shape, dtype)
    obj_den = np.zeros(box.shape, np.float32)
    probe_num = np.zeros(probe.shape, dtype)
    probe_den = np.zeros((h, w), np.float32)
    box_conj = np.conj(box)
    box_power = np.square(np.abs(box))
    grads = np.gradient(box) if refine else ()
    shifted = np.any(np.abs(fractions) > 1e-4, axis=1)
    fft = fftlib.get_fft2((h, w), dtype)
    if shifted.any():  # the unnormalised inverse FFT's 1/(h w) goes into the spectrum
        probe_spec = _probe_spectrum(probe) / np.float32(size)
        ry, rx = _ramp_factors(fractions, (h, w))
    amp_scaled = np.multiply(amp, np.float32(1 / size), dtype=np.float32)
    invalid = None if valid is None or valid.all() else ~valid

    def buffer(*shape, dt=dtype):
        return fftlib.empty_aligned(shape, dt)

    shifted_probe, shifted_conj, psi, spec = (buffer(m, h, w) for _ in range(4))
    ramp, factor, work = (buffer(h, w) for _ in range(3))
    model, diff = buffer(h, w, dt=np.float32), buffer(h, w, dt=np.float32)
    # conj(P) and sum |P|^2 of the unshifted probe, for the positions without a rest
    probe_conj = np.conj(probe)
    probe_power = np.sum(np.square(np.abs(probe)), axis=0)
    errors = np.empty(len(crops))
    steps = np.empty((len(crops), 2)) if refine else None
    for i, (y, x) in enumerate(rel):
        patch = box[y:y + h, x:x + w]
        probe_j, cprobe = probe, probe_conj
        if shifted[i]:
            np.multiply(ry[i][:, None], rx[i][None, :], out=ramp)
            for k in range(m):
                np.multiply(probe_spec[k], ramp, out=shifted_probe[k])
                fft.inverse(shifted_probe[k], out=shifted_probe[k], normalise=False)
            probe_j, cprobe = shifted_probe, np.conjugate(shifted_probe, out=shifted_conj)
        for k in range(m):
            np.multiply(probe_j[k], patch, out=psi[k])
            fft.forward(psi[k], out=spec[k])
        # model amplitude |F psi| (summed incoherently over modes)
        if m == 1:
            np.abs(spec[0], out=model)
        else:
            model[...] = 0
            for k in range(m):
                np.abs(spec[k], out=diff)
                model += np.square(diff, out=diff)
            np.sqrt(model, out=model)
        np.subtract(model, amp[i], out=diff)
        if invalid is not None:
            np.copyto(diff, 0, where=invalid[i])
        flat = diff.reshape(-1)
        errors[i] = np.dot(flat, flat)
        # Fourier projection, with the inverse FFT's 1/(h w) in the factor
        model += _TINY
        np.divide(amp_scaled[i], model, out=factor)
        if invalid is not None:
            np.copyto(factor, np.float32(1 / size), where=invalid[i])
        for k in range(m):
            np.multiply(spec[k], factor, out=spec[k])
            fft.inverse(spec[k], out=spec[k], normalise=False)
        # spec now holds psi'. Object sums, in the block's box
        num = obj_num[y:y + h, x:x + w]
        den = obj_den[y:y + h, x:x + w]
        for k in range(m):
            num += np.multiply(cprobe[k], spec[k], out=work)
            if shifted[i]:
                den += np.multiply(cprobe[k], probe_j[k], out=work).real
        if not shifted[i]:
            den += probe_power
        # probe sums: conj(O_j) (psi' - psi); psi becomes psi' - psi
        dpsi = np.subtract(spec, psi, out=psi)
        cpatch = box_conj[y:y + h, x:x + w]
        for k in range(m):
            probe_num[k] += np.multiply(cpatch, dpsi[k], out=work)
        probe_den += box_power[y:y + h, x:x + w]
        if refine:  # dr = Re sum conj(P dO/dr) (psi' - psi) / sum |P dO/dr|^2
            for a, g in enumerate(grads):
                num_a = den_a = 0.0
                for k in range(m):
                    np.multiply(probe_j[k], g[y:y + h, x:x + w], out=work)
                    num_a += float(np.vdot(work, dpsi[k]).real)
                    den_a += float(np.vdot(work, work).real)
                steps[i, a] = num_a / max(den_a, 1e-30)
    return BlockResult(start=(int(lo[0]), int(lo[1])), obj_num=obj_num, obj_den=obj_den,
                       probe_num=probe_num, probe_den=probe_den, error=errors, steps=steps)


def apply_update(obj: np.ndarray, probe: np.ndarray, results, *, update_probe: bool,
                 regularisation: float = 1e-3):
    """New ``(object, probe)`` from block results folded in the order given.

    ``O = (sum num + r O_old) / (sum den + r)`` with ``r = regularisation * max(den)``;
    ``P = P_old + sum pnum / (sum pden + r_P)`` (the blocks' ``pnum`` are increments,
    ``sum conj(O_j) (psi' - psi)``; with whole-pixel positions this is the same as
    ``(sum conj(O_j) psi' + r_P P_old) / (sum pden + r_P)``).
    """
    num = np.zeros(obj.shape, np.complex128)
    den = np.zeros(obj.shape, np.float64)
    pnum = np.zeros(probe.shape, np.complex128)
    pden = np.zeros(probe.shape[-2:], np.float64)
    for r in results:
        (y, x), (by, bx) = r.start, r.obj_num.shape
        num[y:y + by, x:x + bx] += r.obj_num
        den[y:y + by, x:x + bx] += r.obj_den
        pnum += r.probe_num
        pden += r.probe_den
    reg = regularisation * den.max()
    new_obj = ((num + reg * obj) / (den + reg)).astype(obj.dtype)
    new_probe = probe
    if update_probe:
        preg = regularisation * pden.max()
        new_probe = orthogonalise_modes((probe + pnum / (pden + preg)).astype(probe.dtype))
    return new_obj, new_probe


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


# ----------------------------------------------------------------------------- ePIE / rPIE


def pie_iteration(obj: np.ndarray, probe: np.ndarray, crops: np.ndarray,
                  fractions: np.ndarray, amp: np.ndarray, valid: np.ndarray,
                  order: np.ndarray, *, engine: str = "epie", alpha: float = 1.0,
                  beta: float = 1.0, update_probe: bool = True, refine: bool = False):
    """One serial ePIE/rPIE sweep over positions in ``order``, updating ``obj`` and
    ``probe`` in place. Returns ``(errors (N,), steps (N, 2) or None)``.

    ePIE: ``O += alpha conj(P) dpsi / max|P|^2``; rPIE: denominator
    ``(1 - alpha)|P|^2 + alpha max|P|^2``. Probe: ``P += beta conj(O) dpsi / max|O|^2``
    (moved back by the position's sub-pixel rest).
    """
    m, h, w = probe.shape
    fft = fftlib.get_fft2((h, w), probe.dtype)
    errors = np.zeros(len(crops))
    steps = np.zeros((len(crops), 2)) if refine else None
    for j in order:
        y, x = crops[j]
        frac = fractions[j:j + 1]
        shifted = bool(np.any(np.abs(frac) > 1e-4))
        spec = _probe_spectrum(probe) if shifted else None
        probe_j = _shifted_probes(probe, spec, frac, np.array([shifted]))[0]
        patch = obj[y:y + h, x:x + w]
        psi = probe_j * patch
        psi_new, err = _fourier_project(psi[None].copy(), amp[j:j + 1], valid[j:j + 1])
        psi_new = psi_new[0]
        errors[j] = err[0]
        if refine:
            steps[j] = _position_steps(patch[None], probe_j[None], psi[None], psi_new[None])[0]
        dpsi = psi_new - psi
        power = np.sum(np.abs(probe_j) ** 2, axis=0)
        if engine == "rpie":
            den = (1 - alpha) * power + alpha * power.max()
            step = np.sum(np.conj(probe_j) * dpsi, axis=0) / den
        else:
            step = alpha * np.sum(np.conj(probe_j) * dpsi, axis=0) / power.max()
        old = patch.copy()
        patch += step.astype(obj.dtype)
        if update_probe:
            delta = (beta * np.conj(old) * dpsi / np.max(np.abs(old) ** 2)).astype(probe.dtype)
            if shifted:
                back = np.conj(_ramps(frac, (h, w)))[0]
                for k in range(m):
                    delta[k] = fft.inverse(fft.forward(delta[k]) * back)
            probe += delta
    return errors, steps


# ----------------------------------------------------------------------------- scores


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
