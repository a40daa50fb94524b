"""Alignment of reconstructions: sub-pixel translation, twin image, global phase.

A CDI reconstruction is unique only up to a translation, the twin ``conj(rho(-r))``
(same Fourier modulus) and a constant phase factor (SCIENCE.md section 4). :func:`align`
removes all three against a reference, so that members can be bred, averaged and compared.

References
----------
M. Guizar-Sicairos, S. T. Thurman and J. R. Fienup, "Efficient subpixel image
registration algorithms", Opt. Lett. 33, 156 (2008).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from skimage.registration import phase_cross_correlation

__all__ = ["AlignInfo", "align", "centre_inversion", "fourier_shift", "register_translation",
           "twin"]


@dataclass(frozen=True)
class AlignInfo:
    """What :func:`align` did to its input.

    Attributes
    ----------
    shift : (float, float)
        Translation ``(dy, dx)`` in pixels applied (after the twin flip, if any).
    twin : bool
        Whether the input was replaced by its twin ``conj(g(-r))`` first.
    phase : float
        Global phase in radians that was removed (multiplied by ``exp(-i phase)``).
    correlation : float
        ``|<ref, aligned>| / (||ref|| ||aligned||)`` after alignment, in [0, 1].
    """

    shift: tuple[float, float]
    twin: bool
    phase: float
    correlation: float


def _register(img: np.ndarray, ref: np.ndarray, upsample: int) -> tuple[np.ndarray, float]:
    """Shift moving ``img`` onto ``ref`` and the registration error there (lower: better).

    :func:`skimage.registration.phase_cross_correlation` without phase normalisation; its
    error ``sqrt(1 - |<ref, g>|^2 / (||ref||^2 ||g||^2))`` at the refined peak falls as the
    correlation peak rises. ``ref`` in complex128 keeps the correlation in double precision.
    """
    # Measured against the hand-written upsampled DFT this replaced (gather's workload: 8
    # complex64 members and their twins, upsample 20, median CPU time of 9 runs, one
    # thread): 128^2 2.24 ms per registration against 2.43 ms, 256^2 8.9 ms against
    # 9.8 ms (scipy.fft rather than numpy.fft); the shifts agree to 1e-9 px.
    shift, error, _ = phase_cross_correlation(ref.astype(np.complex128), img,
                                              upsample_factor=upsample, normalization=None)
    return shift, float(error)


def register_translation(
    img: np.ndarray, ref: np.ndarray, upsample: int = 20
) -> tuple[float, float]:
    """Shift ``(dy, dx)`` that moves ``img`` onto ``ref``, to ``1 / upsample`` pixel.

    The peak of the cross-correlation ``F^-1[F ref conj(F img)]`` located on the pixel
    grid, then refined by an upsampled DFT over a 1.5-pixel window around it
    (Guizar-Sicairos 2008): :func:`skimage.registration.phase_cross_correlation` without
    phase normalisation, which is the more robust with noise. ``fourier_shift(img, shift)``
    then matches ``ref``.
    """
    if img.shape != ref.shape or img.ndim != 2:
        raise ValueError(f"register_translation: need two 2D arrays of one shape, got "
                         f"{img.shape} and {ref.shape}")
    shift, _ = _register(img, ref, int(upsample))
    return float(shift[0]), float(shift[1])


def fourier_shift(img: np.ndarray, shift: tuple[float, float]) -> np.ndarray:
    """``img`` translated by ``shift = (dy, dx)`` pixels, periodically, via its transform.

    ``out(r) = F^-1[ F img(q) exp(-2 pi i q . shift) ]``; positive shifts move the content
    towards larger indices, as :func:`numpy.roll`. Integer shifts are exact rolls (to
    rounding). The result has the dtype of ``img`` (complex).
    """
    dtype = np.result_type(img.dtype, np.complex64)
    spectrum = ndimage.fourier_shift(np.fft.fft2(img), shift)
    return np.fft.ifft2(spectrum).astype(dtype, copy=False)


def centre_inversion(img: np.ndarray) -> np.ndarray:
    """``g(-r)`` with the origin at ``(h // 2, w // 2)``: ``out[i, j] = img[2c_y - i, 2c_x - j]``.

    Indices are taken modulo the shape. For even ``n``, ``2 (n // 2) = n``, so the map is
    ``i -> (n - i) mod n``: the flipped array rolled by one. For odd ``n`` it is the plain
    flip ``i -> n - 1 - i``.
    """
    out = img[::-1, ::-1]
    rolls = tuple(1 - s % 2 for s in img.shape)  # 1 for even, 0 for odd
    return np.roll(out, rolls, axis=(0, 1))


def twin(img: np.ndarray) -> np.ndarray:
    """The twin image ``conj(g(-r))``, about the array centre; it has the same ``|F g|``."""
    return np.conj(centre_inversion(img))


def _correlation(a: np.ndarray, ref: np.ndarray) -> tuple[complex, float]:
    overlap = np.vdot(ref, a)  # sum conj(ref) a
    norm = np.linalg.norm(a) * np.linalg.norm(ref)
    return overlap, float(abs(overlap) / norm) if norm > 0 else 0.0


def align(img: np.ndarray, ref: np.ndarray, upsample: int = 20) -> tuple[np.ndarray, AlignInfo]:
    """Align ``img`` to ``ref``: twin choice, sub-pixel translation, global phase.

    Both ``g(r)`` and its twin ``conj(g(-r))`` are registered to ``ref``; the one with the
    higher (sub-pixel) cross-correlation peak, i.e. the larger overlap ``|<ref, g>|`` once
    shifted, is kept and shifted onto ``ref``, and its global phase is removed:
    ``g <- g exp(-i angle(sum g conj(ref)))``.

    Parameters
    ----------
    img, ref : (h, w) complex arrays
        Reconstruction and reference, same shape.
    upsample : int
        Sub-pixel precision of the registration, ``1 / upsample`` pixel.

    Returns
    -------
    aligned : (h, w) complex array
        ``img`` aligned to ``ref``, same dtype as ``img`` (complex).
    info : AlignInfo
        Shift, twin flag, removed phase and final correlation.
    """
    if img.shape != ref.shape:
        raise ValueError(f"align: shapes differ, {img.shape} vs {ref.shape}")
    candidates = (img, twin(img))
    fits = [_register(c, ref, int(upsample)) for c in candidates]
    is_twin = fits[1][1] < fits[0][1]  # the smaller error (larger correlation peak) wins
    shift = (float(fits[is_twin][0][0]), float(fits[is_twin][0][1]))
    moved = fourier_shift(candidates[is_twin], shift)
    overlap, corr = _correlation(moved, ref)
    phase = float(np.angle(overlap))
    moved *= np.exp(-1j * phase).astype(moved.dtype)
    return moved, AlignInfo(shift=shift, twin=bool(is_twin), phase=phase,
                            correlation=min(corr, 1.0))
