"""The per-position kernel that the serial and the parallel engines share.

For one position ``j``: the exit waves ``psi_m = P_m O_j`` (``P`` moved by the position's
sub-pixel rest), their Fourier projection onto the measured amplitude
``psi'_m = F^-1[A_j F psi_m / sqrt(I_j)]``, ``I_j = sum_m |F psi_m|^2`` (unmeasured pixels
keep the model's own amplitude), the Fourier error ``sum_valid (sqrt(I_j) - A_j)^2`` and the
gradient-form position step. What an engine does with ``psi'`` (ePIE's step, or the
parallel form's sums) is the engine's.
"""

from __future__ import annotations

import numpy as np

from lensfree.engine import fft as fftlib
from lensfree.engine.ptycho.propagate import Propagator

#: added to |F psi| before dividing by it: a zero spectrum pixel stays zero (not 0/0)
_TINY = np.float32(1e-30)


def prepare_amplitudes(frames: np.ndarray, mask: np.ndarray | None = None, *,
                       centred: bool = True):
    """``(amplitude, valid)`` for the engine: sqrt of counts, zero frequency moved to [0, 0].

    ``frames`` (N, h, w) as stored: far-field frames ``centred`` (moved), near-field ones
    (``centred=False``, :attr:`Propagator.centred_frames`) are images and stay. NaN, inf and
    negative pixels, and pixels the mask marks unmeasured, become invalid (left free in the
    Fourier projection).
    """
    frames = np.asarray(frames, dtype=np.float32)
    valid = np.isfinite(frames) & (frames >= 0)
    if mask is not None:
        valid &= np.asarray(mask, bool)[None]
    amp = np.sqrt(np.where(valid, frames, 0), dtype=np.float32)
    if not centred:
        return amp, valid
    axes = (-2, -1)
    return np.fft.ifftshift(amp, axes=axes), np.fft.ifftshift(valid, axes=axes)


def scaled_amplitudes(amp: np.ndarray) -> np.ndarray:
    """``A / (h w)`` float32: the amplitude the projection multiplies by, with the
    unnormalised inverse FFT's scale folded in (one pass per block, not per position)."""
    return np.multiply(amp, np.float32(1 / (amp.shape[-2] * amp.shape[-1])), dtype=np.float32)


class PositionKernel:
    """One position at a time, on buffers reused for every position of a sweep or block
    (each small enough to stay in cache; complex64 throughout, BLAS dots).

    Parameters
    ----------
    shape : (M, h, w) of the probe modes.
    dtype : complex dtype of probe and object.
    propagator : sample plane to detector (:class:`Propagator`; None: the far field).

    Per position: :meth:`shift_probe` when it has a sub-pixel rest, then :meth:`project`,
    after which :attr:`psi_new` holds ``psi'`` and :attr:`dpsi` holds ``psi' - psi``, then
    :meth:`object_gradient` and (when refining) :meth:`position_step`. The arrays returned
    or left in the attributes are the kernel's buffers: valid until the next call.
    """

    def __init__(self, shape, dtype=np.complex64, propagator: Propagator | None = None):
        m, h, w = shape
        self.size = h * w
        self.fft = fftlib.get_fft2((h, w), dtype)
        self.prop = (propagator or Propagator()).bind((h, w), dtype)
        buffer = fftlib.empty_aligned
        self.shifted, self.shifted_conj, self.dpsi, self.psi_new = (
            buffer((m, h, w), dtype) for _ in range(4))
        self.ramp, self.work, self.chi_p, self._factor = (buffer((h, w), dtype)
                                                          for _ in range(4))
        self._model, self._diff = buffer((h, w), np.float32), buffer((h, w), np.float32)
        self._power = buffer((h, w), np.float32)

    def shift_probe(self, spectrum: np.ndarray, ry: np.ndarray, rx: np.ndarray):
        """``(P_j, conj(P_j))``: the probe moved by a sub-pixel rest.

        ``spectrum`` is :func:`probe_spectrum` of the probe, ``ry`` (h,) and ``rx`` (w,)
        the rest's ramp factors (:func:`ramp_factors`); the ramp stays in :attr:`ramp`
        (an engine moving an increment back by the rest multiplies by its conjugate).
        """
        np.multiply(ry[:, None], rx[None, :], out=self.ramp)
        for k in range(len(spectrum)):
            np.multiply(spectrum[k], self.ramp, out=self.shifted[k])
            self.fft.inverse(self.shifted[k], out=self.shifted[k], normalise=False)
        return self.shifted, np.conjugate(self.shifted, out=self.shifted_conj)

    def project(self, probe: np.ndarray, patch: np.ndarray, amp: np.ndarray,
                amp_scaled: np.ndarray, invalid: np.ndarray | None, *,
                shifted: bool = False) -> np.float32:
        """Fourier error of ``psi = probe * patch`` (``|D psi|`` against ``amp``, ``D`` the
        propagator); ``psi'`` to :attr:`psi_new` and
        ``psi' - psi`` to :attr:`dpsi`.

        Parameters
        ----------
        probe : (M, h, w) the position's probe modes. patch : (h, w) its object crop.
        amp : (h, w) unshifted amplitude. amp_scaled : ``amp / (h w)``
            (:func:`scaled_amplitudes`). invalid : (h, w) unmeasured pixels, or None.
        shifted : ``probe`` was moved by :meth:`shift_probe` (its ramp in :attr:`ramp`):
            in the near field the exit wave goes to the detector moved back by the rest.
        """
        psi, spec = self.dpsi, self.psi_new  # psi becomes psi' - psi at the end
        model, diff, factor = self._model, self._diff, self._factor
        m = len(probe)
        h_fwd = h_back = None
        if self.prop.near:
            h_fwd, h_back = self.prop.transfers(self.ramp if shifted else None)
        for k in range(m):
            np.multiply(probe[k], patch, out=psi[k])
            self.prop.forward(psi[k], spec[k], h_fwd)
        # model amplitude |F psi| (summed incoherently over modes)
        if m == 1:
            np.abs(spec[0], out=model)
        else:
            model[...] = 0
            for k in range(m):
                np.abs(spec[k], out=diff)
                model += np.square(diff, out=diff)
            np.sqrt(model, out=model)
        np.subtract(model, amp, out=diff)
        if invalid is not None:
            np.copyto(diff, 0, where=invalid)
        flat = diff.reshape(-1)
        error = np.dot(flat, flat)
        # Fourier projection, with the inverse FFT's 1/(h w) in the factor
        model += _TINY
        np.divide(amp_scaled, model, out=factor)
        if invalid is not None:
            np.copyto(factor, np.float32(1 / self.size), where=invalid)
        for k in range(m):
            np.multiply(spec[k], factor, out=spec[k])
            self.prop.backward(spec[k], spec[k], h_back)
        np.subtract(spec, psi, out=psi)
        return error

    def probe_power(self, probe: np.ndarray) -> np.ndarray:
        """``sum_m |P_m|^2`` (h, w) float32, into a buffer."""
        power, tmp = self._power, self._diff
        np.abs(probe[0], out=power)
        np.square(power, out=power)
        for k in range(1, len(probe)):
            np.abs(probe[k], out=tmp)
            power += np.square(tmp, out=tmp)
        return power

    def object_gradient(self, probe_conj: np.ndarray) -> np.ndarray:
        """``sum_m conj(P_m) (psi'_m - psi_m)`` into :attr:`chi_p` (after :meth:`project`):
        the object's update direction at this position, and what :meth:`position_step`
        correlates with the object's gradient."""
        np.multiply(probe_conj[0], self.dpsi[0], out=self.chi_p)
        for k in range(1, len(probe_conj)):
            self.chi_p += np.multiply(probe_conj[k], self.dpsi[k], out=self.work)
        return self.chi_p

    def position_step(self, power: np.ndarray, gradients, gradient_powers
                      ) -> tuple[float, float]:
        """Gradient-form step ``(dy, dx)`` that best explains :attr:`dpsi` as a probe move
        (Dwivedi et al. 2018): ``dr = Re sum conj(P dO/dr) dpsi / sum |P dO/dr|^2``, summed
        over modes, which is ``Re sum conj(dO/dr) chi_p / sum |dO/dr|^2 sum_m |P_m|^2``
        with ``chi_p`` from :meth:`object_gradient` (two dot products, no new array).

        ``power``: ``sum_m |P_m|^2``; ``gradients``: ``(dO/dy, dO/dx)`` on the position's
        crop (h, w) each, ``gradient_powers`` their ``|.|^2``.
        """
        out = []
        for g, g2 in zip(gradients, gradient_powers):
            num = float(np.vdot(g, self.chi_p).real)
            den = float(np.vdot(g2, power))
            out.append(num / max(den, 1e-30))
        return out[0], out[1]
