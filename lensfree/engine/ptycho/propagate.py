"""Propagators from the sample plane to the detector: far-field FFT or angular spectrum.

The kernel sees one interface, :meth:`Propagator.bind`: ``forward(psi, out)`` gives the
detector-plane field and ``backward(d, out)`` returns ``h w`` times the sample-plane field
(the unnormalised inverse FFT's scale stays folded into the kernel's Fourier factor, as it
always was for the far field).

- ``far-field``: ``D psi = F psi`` (zero frequency at ``[0, 0]``; the measured frames are
  centred, so their amplitudes are moved there, :attr:`Propagator.centred_frames`).
- ``near-field``: the angular spectrum ``D psi = F^-1[H F psi]``,
  ``H = exp(2 pi i z sqrt(1/lambda^2 - f^2))`` (evanescent frequencies dropped), the
  detector pixel being the sample pixel (in the Fresnel-scaling geometry both are the
  effective ones of :func:`fresnel_scaling`). Unitary: ``sum |D psi|^2 = sum |psi|^2``.

References: J. W. Goodman, Introduction to Fourier Optics, 3rd ed., sec. 3.10 and 4.2;
D. Paganin, Coherent X-ray Optics (2006), sec. 1.4 and appendix B (Fresnel scaling);
M. Stockmar et al., Sci. Rep. 3, 1927 (2013) (near-field ptychography).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from lensfree.engine import fft as fftlib

PROPAGATIONS = ("far-field", "near-field")


def fresnel_scaling(focus_distance_m: float, detector_distance_m: float,
                    detector_pixel_m: float) -> dict:
    """Effective geometry of a point-source (diverging beam) near-field setup.

    With the focus a distance ``z1`` before the sample and the detector ``z2`` behind it,
    the magnification is ``M = (z1 + z2) / z1``; the measured hologram equals a
    plane-wave one at the effective distance ``z2 / M`` sampled at ``p / M`` on the
    sample (the Fresnel scaling theorem; the beam's curvature goes into the probe).
    """
    z1, z2, p = float(focus_distance_m), float(detector_distance_m), float(detector_pixel_m)
    if not (z1 > 0 and z2 > 0 and p > 0):
        raise ValueError(f"Fresnel scaling needs positive distances and pixel (focus {z1} m, "
                         f"detector {z2} m, pixel {p} m)")
    m = (z1 + z2) / z1
    return {"magnification": m, "distance_m": z2 / m, "pixel_size_m": p / m}


@dataclass(frozen=True)
class Propagator:
    """A propagation and its geometry (SI units, sample-plane pixel for the near field)."""

    kind: str = "far-field"
    wavelength_m: float | None = None
    distance_m: float | None = None
    pixel_size_m: float | None = None

    def __post_init__(self):
        if self.kind not in PROPAGATIONS:
            raise ValueError(f"propagation {self.kind!r}: expected one of "
                             f"{', '.join(PROPAGATIONS)}")
        if self.kind == "near-field":
            given = (self.wavelength_m, self.distance_m, self.pixel_size_m)
            if any(v is None or not np.isfinite(v) or v <= 0 for v in given):
                raise ValueError("near-field propagation needs a positive wavelength, "
                                 "distance and sample-plane pixel size (have "
                                 f"{self.wavelength_m}, {self.distance_m}, "
                                 f"{self.pixel_size_m} m)")

    @property
    def centred_frames(self) -> bool:
        """Stored frames have zero frequency at the centre (far field): move it to [0, 0]."""
        return self.kind == "far-field"

    def power_gain(self, shape) -> float:
        """``sum |D psi|^2 / sum |psi|^2``: ``h w`` for the unnormalised FFT, 1 otherwise."""
        return float(shape[0] * shape[1]) if self.kind == "far-field" else 1.0

    def check(self, shape) -> None:
        """ValueError when the angular spectrum's transfer function aliases on ``shape``:
        its phase must change by less than pi per frequency step at the frame's edge,
        ``z <= n dx^2 / lambda`` (critical sampling; beyond it the detector is in the
        far field of a frame-sized patch)."""
        if self.kind != "near-field":
            return
        n = min(shape)
        limit = n * self.pixel_size_m ** 2 / self.wavelength_m
        if self.distance_m > limit:
            raise ValueError(f"near-field distance {self.distance_m:.4g} m exceeds the "
                             f"angular spectrum's sampling limit n dx^2 / lambda = "
                             f"{limit:.4g} m for {n} pixels of {self.pixel_size_m:.4g} m: "
                             "the far field, or a wrong pixel size")

    def transfer(self, shape) -> np.ndarray:
        """(h, w) complex64 ``H / (h w)`` (the forward's unnormalised inverse FFT's scale
        folded in); only for the near field."""
        return _transfer(tuple(int(s) for s in shape), self.wavelength_m, self.distance_m,
                         self.pixel_size_m)

    def bind(self, shape, dtype=np.complex64) -> _Bound:
        """The kernel's ``forward`` / ``backward`` on (h, w) arrays of ``dtype``."""
        return _Bound(self, tuple(int(s) for s in shape), dtype)

    def to_detector(self, psi: np.ndarray) -> np.ndarray:
        """``D psi`` of one (h, w) or a stack (..., h, w) of fields (numpy, complex128)."""
        if self.kind == "far-field":
            return np.fft.fft2(psi)
        h = self.transfer(psi.shape[-2:]) * (psi.shape[-2] * psi.shape[-1])
        return np.fft.ifft2(np.fft.fft2(psi) * h)

    def to_sample(self, d: np.ndarray) -> np.ndarray:
        """``D^-1 d``, the inverse of :meth:`to_detector`."""
        if self.kind == "far-field":
            return np.fft.ifft2(d)
        h = self.transfer(d.shape[-2:]) * (d.shape[-2] * d.shape[-1])
        return np.fft.ifft2(np.fft.fft2(d) * np.conj(h))


@functools.lru_cache(maxsize=8)
def _transfer(shape, wavelength, distance, pixel) -> np.ndarray:
    fy = np.fft.fftfreq(shape[0], pixel)[:, None]
    fx = np.fft.fftfreq(shape[1], pixel)[None, :]
    arg = 1.0 / wavelength ** 2 - fy ** 2 - fx ** 2
    # the phase relative to the plane wave's 2 pi z / lambda (a constant, unobservable)
    kz = np.sqrt(np.maximum(arg, 0.0)) - 1.0 / wavelength
    h = np.where(arg > 0, np.exp(2j * np.pi * distance * kz), 0)
    out = (h / (shape[0] * shape[1])).astype(np.complex64)
    out.setflags(write=False)
    return out


class _Bound:
    """A propagator on fixed-shape buffers (the kernel's).

    ``ramp`` (h, w), when given: the spectrum factor that moved the probe by a position's
    sub-pixel rest ``f`` (:func:`ramp_factors`). In the far field the detector does not see
    where the exit wave sits, so it is ignored; in the near field the hologram moves with
    it, so the exit wave ``P(r - f) O(r + c)`` is moved back by ``f`` on its way to the
    detector (the transfer times ``conj(ramp)``, and the way back times ``ramp``): the
    sample moves under a beam fixed on the detector, as it does in the experiment.
    """

    def __init__(self, prop: Propagator, shape, dtype):
        self.fft = fftlib.get_fft2(shape, dtype)
        self.near = prop.kind == "near-field"
        if self.near:
            self.h = prop.transfer(shape).astype(dtype)
            self.h_back = np.conj(self.h) * np.asarray(shape[0] * shape[1], np.float32)
            self._h_ramp = fftlib.empty_aligned(shape, dtype)
            self._h_back_ramp = fftlib.empty_aligned(shape, dtype)

    def transfers(self, ramp: np.ndarray | None):
        """``(forward, backward)`` transfer functions of a position (near field only)."""
        if ramp is None:
            return self.h, self.h_back
        np.multiply(self.h, np.conj(ramp), out=self._h_ramp)
        np.multiply(self.h_back, ramp, out=self._h_back_ramp)
        return self._h_ramp, self._h_back_ramp

    def forward(self, psi: np.ndarray, out: np.ndarray, h: np.ndarray | None = None
                ) -> np.ndarray:
        """``D psi`` (``h``: the forward transfer, :meth:`transfers`; default unshifted)."""
        self.fft.forward(psi, out=out)
        if self.near:
            np.multiply(out, self.h if h is None else h, out=out)
            self.fft.inverse(out, out=out, normalise=False)
        return out

    def backward(self, d: np.ndarray, out: np.ndarray, h_back: np.ndarray | None = None
                 ) -> np.ndarray:
        """``h w D^-1 d`` (unnormalised, as the kernel folds ``1/(h w)`` elsewhere)."""
        if self.near:
            self.fft.forward(d, out=out)
            np.multiply(out, self.h_back if h_back is None else h_back, out=out)
            d = out
        return self.fft.inverse(d, out=out, normalise=False)
