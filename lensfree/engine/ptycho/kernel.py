"""The per-position kernel that the serial and the parallel engines share.

For one position ``j``: the exit waves ``psi_m = P_m O_j`` (``P`` moved by the position's
sub-pixel rest), their Fourier projection onto the measured amplitude
``psi'_m = F^-1[A_j F psi_m / sqrt(I_j)]``, ``I_j = sum_m |F psi_m|^2`` (unmeasured pixels
keep the model's own amplitude), the Fourier error ``sum_valid (sqrt(I_j) - A_j)^2`` and the
gradient-form position step. What an engine does with ``psi'`` (ePIE's step, or the
parallel form's sums) is the engine's.
"""

from __future__ import annotations

import threading

import numpy as np

from lensfree.engine import fft as fftlib
from lensfree.engine.ptycho import compiled
from lensfree.engine.ptycho.probe import probe_spectrum
from lensfree.engine.ptycho.propagate import Propagator

_kernels = threading.local()
#: bytes of moved probes a kernel keeps (`PositionKernel.shift_probe`): at 128^2, one
#: mode, every rest of the 1/16-pixel grid
MOVED_BYTES = 96 * 2**20


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
    (each small enough to stay in cache; complex64 throughout, the FFTs bound to the
    buffers once, the passes between them compiled, :mod:`.compiled`).

    Parameters
    ----------
    shape : (M, h, w) of the probe modes.
    dtype : complex dtype of probe and object.
    propagator : sample plane to detector (:class:`Propagator`; None: the far field).

    Per position: :meth:`shift_probe` when it has a sub-pixel rest, then :meth:`project`,
    after which :attr:`psi` holds ``psi``, :attr:`psi_new` ``psi'`` and :attr:`dpsi`
    ``psi' - psi``, then :meth:`object_gradient` and (when refining) :meth:`position_step`
    (:attr:`model` is the difference map's ``P O_j``, beside the field it projects).
    The arrays returned or left in the attributes are the kernel's buffers: valid until
    the next call. :meth:`cached` gives the calling thread's kernel of a shape, so that
    the binding is paid once per thread, not once per block.
    """

    def __init__(self, shape, dtype=np.complex64, propagator: Propagator | None = None):
        m, h, w = shape
        self.size = h * w
        self.fft = fftlib.get_fft2((h, w), dtype)
        self.prop = (propagator or Propagator()).bind((h, w), dtype)
        buffer = fftlib.empty_aligned
        self.shifted, self.psi, self.dpsi, self.psi_new, self.model = (
            buffer((m, h, w), dtype) for _ in range(5))
        self.ramp, self.work, self.chi_p = (buffer((h, w), dtype) for _ in range(3))
        self._diff, self._power = buffer((h, w), np.float32), buffer((h, w), np.float32)
        self._none = np.zeros((1, 1), bool)
        self._spectrum = self._spectrum_of = None
        self._moved, self._moved_bytes = {}, 0   # shift_probe's probes kept by rest
        self.ramp_now = self.ramp  # the ramp of the last probe shift_probe gave
        # scratch rows of compiled.accumulate
        self.chi_row, self.power_row = np.zeros(w, dtype), np.zeros(w, np.float32)
        bind = self.fft.bind
        self._shift = [bind(self.shifted[k], self.shifted[k], "inverse") for k in range(m)]
        self._forward = [bind(self.psi[k], self.psi_new[k], "forward") for k in range(m)]
        self._inverse = [bind(self.psi_new[k], self.psi_new[k], "inverse") for k in range(m)]

    @classmethod
    def cached(cls, shape, dtype=np.complex64, propagator: Propagator | None = None
               ) -> PositionKernel:
        """The calling thread's kernel for ``(shape, dtype, propagator)`` (made once)."""
        key = (tuple(int(s) for s in shape), np.dtype(dtype).str, propagator or Propagator())
        cache = _kernels.__dict__.setdefault("cache", {})
        kernel = cache.get(key)
        if kernel is None:
            kernel = cache[key] = cls(key[0], dtype, key[2])
        return kernel

    def spectrum(self, probe: np.ndarray) -> np.ndarray:
        """:func:`probe_spectrum` of ``probe``, kept for the next call with an equal probe
        (every block of a batch shares one; a comparison costs less than the FFTs)."""
        if self._spectrum_of is None or not np.array_equal(probe, self._spectrum_of):
            self._spectrum = probe_spectrum(probe)
            self._spectrum_of = probe.copy()
            self._moved, self._moved_bytes = {}, 0
        return self._spectrum

    def shift_probe(self, spectrum: np.ndarray, ry: np.ndarray, rx: np.ndarray,
                    rest: tuple | None = None) -> np.ndarray:
        """``P_j`` (M, h, w): the probe moved by a sub-pixel rest (read only).

        ``spectrum`` is :func:`probe_spectrum` of the probe, ``ry`` (h,) and ``rx`` (w,)
        the rest's ramp factors (:func:`ramp_factors`); the ramp stays in :attr:`ramp_now`
        (an engine moving an increment back by the rest multiplies by its conjugate).
        With ``rest`` (the rest itself, on the grid of `geometry.SUBPIXEL_STEPS`) and the
        spectrum this kernel's own (:meth:`spectrum`), the moved probe is kept for the
        next position with the same rest (up to `MOVED_BYTES`, until the probe changes):
        a scan's rests take a few hundred values, so most positions of a batch skip the
        shift's FFT.
        """
        keep = rest is not None and spectrum is self._spectrum
        if keep:
            hit = self._moved.get(rest)
            if hit is not None:
                self.ramp_now = hit[1]
                return hit[0]
        compiled.shift_spectrum(spectrum, ry, rx, self.shifted, self.ramp)
        for run in self._shift:
            run()
        self.ramp_now = self.ramp
        if keep and self._moved_bytes < MOVED_BYTES:
            self._moved[rest] = (self.shifted.copy(), self.ramp.copy())
            self._moved_bytes += self.shifted.nbytes + self.ramp.nbytes
        return self.shifted

    def project(self, probe: np.ndarray, obj: np.ndarray, y: int, x: int, amp: np.ndarray,
                amp_scaled: np.ndarray, invalid: np.ndarray | None, *,
                shifted: bool = False, residual: bool = True) -> float:
        """Fourier error of ``psi = probe * obj[y:y+h, x:x+w]`` (``|D psi|`` against
        ``amp``, ``D`` the propagator); ``psi`` to :attr:`psi`, ``psi'`` to
        :attr:`psi_new` and (with ``residual``) ``psi' - psi`` to :attr:`dpsi`.

        Parameters
        ----------
        probe : (M, h, w) the position's probe modes. obj, y, x : the object (whole: its
            rows run at unit stride in the compiled pass) and the position's crop.
        amp : (h, w) unshifted amplitude. amp_scaled : ``amp / (h w)``
            (:func:`scaled_amplitudes`). invalid : (h, w) unmeasured pixels, or None.
        shifted : ``probe`` was moved by :meth:`shift_probe` (its ramp in :attr:`ramp`):
            in the near field the exit wave goes to the detector moved back by the rest.
        residual : also write :attr:`dpsi` (a caller that takes ``psi' - psi`` in its own
            pass, :func:`compiled.accumulate`, saves one).
        """
        compiled.exit_waves(probe, obj, y, x, self.psi)
        return self.project_field(amp, amp_scaled, invalid, shifted=shifted,
                                  residual=residual)

    def project_field(self, amp: np.ndarray, amp_scaled: np.ndarray,
                      invalid: np.ndarray | None, *, shifted: bool = False,
                      residual: bool = True, bound: float | None = None) -> float:
        """:meth:`project` of the field already in :attr:`psi` (the difference map
        projects ``2 P O_j - psi_j``, not the exit waves themselves); with ``bound``, onto
        the power bound (:func:`compiled.fourier_project_bounded`) instead."""
        psi, spec = self.psi, self.psi_new
        near = self.prop.near
        if near:
            h_fwd, h_back = self.prop.transfers(self.ramp_now if shifted else None)
            for k in range(len(psi)):
                self.prop.forward(psi[k], spec[k], h_fwd)
        else:
            for run in self._forward:
                run()
        masked = invalid is not None
        # Fourier projection, with the inverse FFT's 1/(h w) in the factor
        if bound is None:
            error = compiled.fourier_project(spec, amp, amp_scaled,
                                             invalid if masked else self._none, masked,
                                             np.float32(1 / self.size), self._power)
        else:
            error = compiled.fourier_project_bounded(spec, amp, invalid if masked
                                                     else self._none, masked,
                                                     np.float32(1 / self.size),
                                                     self._power, float(bound))
        if near:
            for k in range(len(spec)):
                self.prop.backward(spec[k], spec[k], h_back)
        else:
            for run in self._inverse:
                run()
        if residual:
            np.subtract(spec, psi, out=self.dpsi)
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
