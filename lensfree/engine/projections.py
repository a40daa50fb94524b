"""Constraints of phase retrieval: the modulus and support projections, support estimates.

SCIENCE.md section 2. Notation as :mod:`lensfree.engine.phasing`: ``rho`` object, ``F``
the DFT over every axis, ``A`` measured Fourier amplitude, ``V`` valid (measured) pixels,
``S`` support; arrays are 2D patterns or 3D volumes alike (a pixel is a voxel in 3D). The
functions here work on arrays in any layout unless they say otherwise; the in-place
kernels (:func:`modulus_inplace`, compiled, and :func:`constrain`) are what every phasing
iteration runs, on the preallocated arrays of :mod:`lensfree.engine.phasing`.
:mod:`lensfree.engine.phasing` re-exports the public names.

References
----------
S. Marchesini et al., Phys. Rev. B 68, 140101 (2003) (shrinkwrap). W. J. Huang, J. M. Zuo
et al., Nature Physics 5, 129 (2009) (G/B/M regions).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from . import kernels

__all__ = ["autocorrelation_support", "constrain", "fourier_r_factor", "huang_regions",
           "modulus_inplace", "shrinkwrap", "support_projection"]

_TINY = np.float32(1e-30)  # floor for |F rho| where it is exactly zero


def huang_regions(amplitude: np.ndarray, valid: np.ndarray, sigma: float) -> np.ndarray:
    """Huang's region B: measured pixels whose intensity is below the noise level.

    The intensity ``A^2`` is smoothed over measured pixels (normalised Gaussian, 1 pixel)
    and thresholded at ``sigma``, the background standard deviation, giving a region
    rather than isolated pixels. ``G = V & ~B``; ``M = ~V``. Any layout (periodic).
    """
    weight = valid.astype(np.float64)
    smooth = ndimage.gaussian_filter(amplitude.astype(np.float64) ** 2 * weight, 1, mode="wrap")
    norm = ndimage.gaussian_filter(weight, 1, mode="wrap")
    return valid & (smooth <= sigma * np.maximum(norm, 1e-12))


def modulus_inplace(psi, target, valid, scale, guard, measured=None, terms=None
                    ) -> tuple[float, float]:
    """``psi <- P_M psi`` in place, ``P_M`` scaled by ``scale``, in one compiled pass
    (:func:`lensfree.engine.kernels.modulus`); returns ``(sum_V ||psi| - A|,
    sum_missing (scale |psi|)^2)`` of the field it projects when given ``measured``
    (``A``) and ``terms`` (two float32 scratch arrays of ``psi``'s size), else NaNs.

    ``target`` holds ``scale`` times the modulus target on measured pixels (other values
    are not read: there the field floats, ``psi`` keeps its modulus times ``scale``),
    ``valid`` is V (bool), ``measured`` float32; all C-contiguous, of ``psi``'s shape.
    ``guard`` floors ``|psi|`` to avoid 0/0 (callers retry with it when a NaN shows up).
    """
    record = measured is not None
    if record:
        r_terms, f_terms = (t.reshape(-1) for t in terms)
        measured = measured.reshape(-1)
    else:
        r_terms = f_terms = measured = target.reshape(-1)  # not touched
    kernels.modulus(psi.reshape(-1), target.reshape(-1), valid.reshape(-1), np.float32(scale),
                    _TINY if guard else np.float32(0), measured, r_terms, f_terms, record)
    if not record:
        return math.nan, math.nan
    return float(r_terms.sum()), float(f_terms.sum())


def support_projection(rho: np.ndarray, support: np.ndarray, positivity: str = "none"):
    """``P_S``: zero outside ``support``; with positivity, clip the real part at 0
    (``"real"``) or also drop the imaginary part (``"real-nonneg"``). Returns a new array."""
    out = np.array(rho, dtype=np.complex64)
    constrain(out, ~support, positivity)
    return out


def constrain(x: np.ndarray, outside: np.ndarray, positivity: str) -> None:
    """:func:`support_projection` in place, given the complement ``outside`` of ``S``."""
    if positivity == "real-nonneg":
        x.imag[...] = 0
    if positivity != "none":
        np.maximum(x.real, 0, out=x.real)
    np.copyto(x, 0, where=outside)


def shrinkwrap(rho: np.ndarray, sigma: float, threshold: float, opening: bool = False):
    """New support: ``|rho|`` blurred by a Gaussian of ``sigma`` pixels (periodic), above
    ``threshold`` times its maximum (Marchesini 2003); optionally morphologically opened."""
    blurred = ndimage.gaussian_filter(np.abs(rho), sigma, mode="wrap")
    support = blurred > threshold * blurred.max()
    if opening:
        opened = ndimage.binary_opening(support)
        support = opened if opened.any() else support  # never open a support away
    return support


def autocorrelation_support(
    amplitude: np.ndarray, valid: np.ndarray, threshold: float = 0.1, sigma: float = 1.0
) -> np.ndarray:
    """Initial support: the thresholded object autocorrelation ``|F^-1 I|``.

    The autocorrelation of ``rho`` is ``F^-1 |F rho|^2``; its support is twice the object's
    extent, a safe loose start for shrinkwrap. Missing pixels contribute 0. The result is
    centred at ``(h // 2, w // 2)`` (``(d // 2, h // 2, w // 2)`` in 3D), blurred by
    ``sigma`` pixels and thresholded at ``threshold`` times its maximum.

    Parameters
    ----------
    amplitude, valid : (h, w) or (d, h, w) arrays, centred
        Measured amplitude and valid mask.
    """
    intensity = np.where(valid, amplitude.astype(np.float64) ** 2, 0)
    ac = np.abs(np.fft.fftshift(np.fft.ifftn(np.fft.ifftshift(intensity))))
    if sigma > 0:
        ac = ndimage.gaussian_filter(ac, sigma, mode="wrap")
    return ac > threshold * ac.max()


def fourier_r_factor(rho: np.ndarray, amplitude: np.ndarray, valid: np.ndarray) -> float:
    """``R_F = sum_V ||F rho| - A| / sum_V A`` for centred ``amplitude`` and ``valid``."""
    mag = np.abs(np.fft.fftshift(np.fft.fftn(rho)))
    return float(np.abs(mag - amplitude)[valid].sum() / amplitude[valid].sum())
