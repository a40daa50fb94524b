"""Alignment of reconstructions: sub-pixel translation, twin image, global phase.

A CDI reconstruction is unique only up to a translation, the twin ``conj(rho(-r))``
(same Fourier modulus) and a constant phase factor (SCIENCE.md section 4). :func:`align`
removes all three against a reference, so that members can be bred, averaged and compared.
Every function takes 2D images and 3D volumes alike: the translation is then sub-voxel
``(dz, dy, dx)`` and the twin the point inversion through the array centre, conjugated.

References
----------
M. Guizar-Sicairos, S. T. Thurman and J. R. Fienup, "Efficient subpixel image
registration algorithms", Opt. Lett. 33, 156 (2008).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from . import kernels
from .fft import get_fftn

__all__ = ["AlignInfo", "align", "centre_inversion", "fourier_shift", "register_translation",
           "twin"]


@dataclass(frozen=True)
class AlignInfo:
    """What :func:`align` did to its input.

    Attributes
    ----------
    shift : tuple of float
        Translation ``(dy, dx)`` (``(dz, dy, dx)`` in 3D) in pixels applied (after the
        twin flip, if any).
    twin : bool
        Whether the input was replaced by its twin ``conj(g(-r))`` first.
    phase : float
        Global phase in radians that was removed (multiplied by ``exp(-i phase)``).
    correlation : float
        ``|<ref, aligned>| / (||ref|| ||aligned||)`` after alignment, in [0, 1].
    """

    shift: tuple[float, ...]
    twin: bool
    phase: float
    correlation: float


def _upsampled_dft(spectrum: np.ndarray, size: int, upsample: int, offsets) -> np.ndarray:
    """The inverse DFT of ``spectrum`` on a ``size x size`` grid of step ``1 / upsample``
    pixel starting at ``-offsets``: a matrix product per axis (Guizar-Sicairos 2008).

    A compiled loop (:func:`lensfree.engine.kernels.contract_last`, the bits of numpy's
    ``einsum`` in a third of its time) rather than a BLAS product: these matrices are
    small, and a threaded BLAS call can stall for milliseconds on a busy machine.
    """
    out = np.ascontiguousarray(spectrum, np.complex128)
    # contracts the last axis and puts it first, so after every axis the order is back
    for axis in reversed(range(spectrum.ndim)):
        n = spectrum.shape[axis]
        kernel = _dft_kernel(n, size, upsample, float(offsets[axis]))
        lead = out.shape[:-1]
        out = kernels.contract_last(kernel, out.reshape(-1, n)).reshape(size, *lead)
    return out


@functools.lru_cache(maxsize=64)
def _dft_kernel(n: int, size: int, upsample: int, offset: float) -> np.ndarray:
    """``exp(2 pi i (k - offset) f)`` for ``k < size`` and the ``n`` frequencies ``f`` at
    ``1 / upsample`` pixel (read-only). Kept: aligned members share a few peak offsets,
    and these exponentials cost as much as a third of a refinement."""
    grid = (np.arange(size) - offset)[:, None] * np.fft.fftfreq(n, upsample)[None]
    kernel = np.exp(2j * np.pi * grid)
    kernel.flags.writeable = False
    return kernel


def _register(img: np.ndarray, ref: np.ndarray, upsample: int) -> tuple[np.ndarray, float]:
    """Shift moving ``img`` onto ``ref`` and the cross-correlation peak magnitude there."""
    # Kept rather than skimage's phase_cross_correlation(ref, img, upsample_factor=upsample,
    # normalization=None): the same shifts (to 1e-9 px), but its refinement is a BLAS
    # product (tensordot) where ours is einsum. Gather's workload, align() of 32 complex64
    # members and their twins at upsample 20, wall ms per member, medians of 7-9 runs on
    # 2 cores, ours / skimage:
    #                                         128^2            256^2
    #   2-thread pool, default BLAS threads   5.2 / 34         12 / 22
    #   2 processes, default BLAS threads     10-15 / 76-81    34-45 / 141-147
    #   one BLAS thread per worker            4.1-5.7 / 4.7-6  21-30 / 16-31
    # Ours is 1.9-8x faster where BLAS keeps its default threads (the local and MPI back
    # ends) and level with skimage, within the noise, with one BLAS thread (dask workers).
    # (align() since goes through FFTW plans at the members' precision, from spectra.)
    product = np.fft.fftn(ref.astype(np.complex128)) * np.conj(np.fft.fftn(img))
    return _peak(product, np.abs(np.fft.ifftn(product)), upsample)


def _peak(product: np.ndarray, cc: np.ndarray, upsample: int) -> tuple[np.ndarray, float]:
    """The shift at the peak of the cross-correlation ``cc = |F^-1 product|`` (``product =
    F ref conj(F img)``), refined to ``1 / upsample`` pixel, and the peak's magnitude."""
    shape = np.array(cc.shape)
    peak = np.array(np.unravel_index(int(np.argmax(cc)), cc.shape), dtype=np.float64)
    peak[peak > shape // 2] -= shape[peak > shape // 2]
    value = float(cc.max()) / cc.size
    if upsample > 1:
        peak = np.round(peak * upsample) / upsample
        size = int(np.ceil(upsample * 1.5))
        centre = np.fix(size / 2.0)
        local = np.abs(_upsampled_dft(product, size, upsample, centre - peak * upsample))
        fine = np.array(np.unravel_index(int(np.argmax(local)), local.shape)) - centre
        peak = peak + fine / upsample
        value = float(local.max()) / cc.size
    return peak, value


def register_translation(
    img: np.ndarray, ref: np.ndarray, upsample: int = 20
) -> tuple[float, ...]:
    """Shift ``(dy, dx)`` (``(dz, dy, dx)`` for volumes) that moves ``img`` onto ``ref``,
    to ``1 / upsample`` pixel.

    The peak of the cross-correlation ``F^-1[F ref conj(F img)]`` located on the pixel
    grid, then refined by an upsampled DFT over a 1.5-pixel window around it
    (Guizar-Sicairos 2008; the algorithm of
    :func:`skimage.registration.phase_cross_correlation` without phase normalisation,
    which is the more robust with noise). ``fourier_shift(img, shift)`` then matches ``ref``.
    """
    if img.shape != ref.shape or img.ndim not in (2, 3):
        raise ValueError(f"register_translation: need two 2D or 3D arrays of one shape, got "
                         f"{img.shape} and {ref.shape}")
    shift, _ = _register(img, ref, int(upsample))
    return tuple(float(s) for s in shift)


def fourier_shift(img: np.ndarray, shift: tuple[float, ...]) -> np.ndarray:
    """``img`` translated by ``shift = (dy, dx)`` (or ``(dz, dy, dx)``) pixels,
    periodically, via its transform.

    ``out(r) = F^-1[ F img(q) exp(-2 pi i q . shift) ]``; positive shifts move the content
    towards larger indices, as :func:`numpy.roll`. Integer shifts are exact rolls (to
    rounding). The result has the dtype of ``img`` (complex).
    """
    dtype = np.result_type(img.dtype, np.complex64)
    spectrum = ndimage.fourier_shift(np.fft.fftn(img), shift)
    return np.fft.ifftn(spectrum).astype(dtype, copy=False)


def _shift_spectrum(spectrum: np.ndarray, shift: tuple[float, ...]) -> np.ndarray:
    """``spectrum exp(-2 pi i q . shift)`` (``ndimage.fourier_shift`` of a full complex
    spectrum), one phase ramp per axis, in the spectrum's precision."""
    out = spectrum.copy()
    for axis, (n, d) in enumerate(zip(spectrum.shape, shift)):
        ramp = np.exp(-2j * np.pi * d * np.fft.fftfreq(n)).astype(spectrum.dtype)
        out *= ramp.reshape([-1 if a == axis else 1 for a in range(spectrum.ndim)])
    return out


def centre_inversion(img: np.ndarray) -> np.ndarray:
    """``g(-r)`` with the origin at ``(h // 2, w // 2)``: ``out[i, j] = img[2c_y - i, 2c_x - j]``;
    for a volume the point inversion through ``(d // 2, h // 2, w // 2)``.

    Indices are taken modulo the shape. For even ``n``, ``2 (n // 2) = n``, so the map is
    ``i -> (n - i) mod n``: the flipped array rolled by one. For odd ``n`` it is the plain
    flip ``i -> n - 1 - i``.
    """
    out = img[(slice(None, None, -1),) * img.ndim]
    rolls = tuple(1 - s % 2 for s in img.shape)  # 1 for even, 0 for odd
    return np.roll(out, rolls, axis=tuple(range(img.ndim)))


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
    img, ref : (h, w) or (d, h, w) complex arrays
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
    dtype = np.result_type(img.dtype, np.complex64)
    f = get_fftn(img.shape, dtype)
    spectrum, ref_spectrum = f.forward(np.asarray(img, dtype)), f.forward(np.asarray(ref, dtype))
    # the twin's spectrum from img's: F[conj(g(-r))] = conj(G) about the origin, which is
    # the centre for even sizes; an odd axis adds a ramp (its inversion is a flip, -r - 1)
    twin_spectrum = np.conj(spectrum)
    for axis, n in enumerate(img.shape):
        if n % 2:
            ramp = np.exp(2j * np.pi * np.fft.fftfreq(n)).astype(dtype)
            twin_spectrum *= ramp.reshape([-1 if a == axis else 1 for a in range(img.ndim)])
    products = [ref_spectrum * np.conj(c) for c in (spectrum, twin_spectrum)]
    ccs = [np.abs(f.inverse(p)) for p in products]
    coarse = [float(cc.max()) for cc in ccs]
    # The larger (sub-pixel) correlation peak wins. Refining a peak raises it by about 1%
    # at most (0.9% in GHIO populations at 256^2), so with the grid peaks more than 10%
    # apart only the larger is refined: the refinement could not change which wins.
    close = min(coarse) > 0.9 * max(coarse)
    fits = {k: _peak(products[k].astype(np.complex128), ccs[k], int(upsample))
            for k in (0, 1) if close or coarse[k] == max(coarse)}
    is_twin = fits[1][1] > fits[0][1] if close else coarse[1] > coarse[0]
    shift = tuple(float(s) for s in fits[is_twin][0])
    chosen = twin_spectrum if is_twin else spectrum
    moved = f.inverse(_shift_spectrum(chosen, shift))
    overlap, corr = _correlation(moved, ref)
    phase = float(np.angle(overlap))
    moved *= np.exp(-1j * phase).astype(moved.dtype)
    return moved, AlignInfo(shift=shift, twin=bool(is_twin), phase=phase,
                            correlation=min(corr, 1.0))
