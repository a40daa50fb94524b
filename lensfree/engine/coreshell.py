"""The core-shell model of Chen et al. 2024 fitted to a measured amplitude (``erf%``).

Split from :mod:`lensfree.engine.scoring`, which re-exports every name here.

References
----------
P.-N. Chen et al., "X-ray ensemble diffraction microscopy", J. Appl. Cryst. (2024)
(erf%, core-shell fit).
"""

from __future__ import annotations

import numpy as np

from lensfree.engine.simulate import core_shell_form_factor

__all__ = ["core_shell_amplitude", "core_shell_image", "erf_percent", "fit_core_shell",
           "frequency_grid", "least_squares_scale"]


def least_squares_scale(model: np.ndarray, data: np.ndarray,
                        region: np.ndarray | None = None) -> float:
    """``s`` minimising ``sum_region (data - s model)^2``: ``<model, data> / <model, model>``."""
    m = np.asarray(model, np.float64)
    d = np.asarray(data, np.float64)
    if region is not None:
        m, d = m[region], d[region]
    mm = float(np.dot(m.ravel(), m.ravel()))
    return float(np.dot(m.ravel(), d.ravel()) / mm) if mm > 0 else 0.0


def frequency_grid(shape: tuple[int, int], spacing, center=None) -> np.ndarray:
    """``|q|`` of every pixel of a centred Fourier array.

    Parameters
    ----------
    shape : (h, w)
    spacing : float or (float, float)
        Frequency step per pixel along each axis (cycles per metre with the geometry,
        ``pixel / (wavelength * distance)``; or ``(1 / h, 1 / w)`` cycles per pixel).
    center : (cy, cx), optional
        Zero frequency in pixels, sub-pixel allowed [``(h // 2, w // 2)``].
    """
    h, w = shape
    cy, cx = (h // 2, w // 2) if center is None else center
    dqy, dqx = np.broadcast_to(np.asarray(spacing, np.float64), (2,))
    return np.hypot(((np.arange(h) - cy) * dqy)[:, None], ((np.arange(w) - cx) * dqx)[None])


def core_shell_amplitude(q: np.ndarray, inner: float, outer: float, core_density: float = 3.0,
                         shell_density: float = 1.0) -> np.ndarray:
    """``|F(q)|`` of a projected core-shell sphere, normalised to 1 at ``q = 0``.

    ``F`` is :func:`simulate.core_shell_form_factor` (diameters in the units of ``1 / q``);
    the normalisation keeps fitted scales readable (the forward amplitude).
    """
    f = core_shell_form_factor(np.asarray(q, np.float64), inner, outer, core_density,
                               shell_density)
    f0 = core_shell_form_factor(np.zeros(1), inner, outer, core_density, shell_density)[0]
    return np.abs(f / f0) if f0 != 0 else np.abs(f)


def erf_percent(model: np.ndarray, measured: np.ndarray, region: np.ndarray) -> float:
    """``erf% = 100 sum_D |A - G| / sum_D A`` over the pixels ``D`` (Chen et al. 2024, eq. 2).

    ``A`` is the measured amplitude, ``G`` the model amplitude.
    """
    a = np.asarray(measured, np.float64)[region]
    g = np.asarray(model, np.float64)[region]
    total = a.sum()
    if not total > 0:
        raise ValueError("erf_percent: the measured amplitude sums to zero over the region")
    return float(100.0 * np.abs(a - g).sum() / total)


def fit_core_shell(q: np.ndarray, measured: np.ndarray, region: np.ndarray, inner: float,
                   outer: float, core_density: float = 3.0, shell_density: float = 1.0,
                   offset: bool = True) -> tuple[float, float, float]:
    """One point of the core-shell grid: the model fitted to the data, and its ``erf%``.

    The model amplitude ``G = s |F(q)| + c`` (:func:`core_shell_amplitude`) takes the
    least-squares scale ``s`` (and, with ``offset``, the constant ``c``) over ``region``,
    the valid pixels outside the central speckle. ``s`` stands for the square root of the
    number of particles times the flux (Chen et al. 2024 scale the form factor only:
    ``offset=False``). The offset soaks up a flat residual floor that a background
    subtraction leaves at high q, where the particle's signal is weakest; without it that
    floor, not the fringes, decides the fit.

    Returns
    -------
    erf : float
        ``erf%`` of the fitted model, percent; NaN when ``inner >= outer``.
    scale, offset : float
        ``s`` and ``c`` (0 without ``offset``).
    """
    if not 0 <= inner < outer:
        return float("nan"), float("nan"), float("nan")
    model = core_shell_amplitude(q, inner, outer, core_density, shell_density)
    if offset:
        f = model[region]
        design = np.stack([f, np.ones_like(f)], axis=1)
        (s, c), *_ = np.linalg.lstsq(design, np.asarray(measured, np.float64)[region],
                                     rcond=None)
    else:
        s, c = least_squares_scale(model, measured, region), 0.0
    return erf_percent(s * model + c, measured, region), float(s), float(c)


def core_shell_image(shape: tuple[int, int], spacing, inner: float, outer: float,
                     core_density: float = 3.0, shell_density: float = 1.0) -> np.ndarray:
    """Projected density of a core-shell sphere as seen through the data's aperture.

    The inverse transform of the form factor sampled on the Fourier grid (``spacing`` as
    in :func:`frequency_grid`): the band-limited image a perfect reconstruction would give,
    centred at ``(h // 2, w // 2)``, real, maximum 1. A model for :func:`ssim_to_model`.
    """
    f = core_shell_form_factor(frequency_grid(shape, spacing), inner, outer, core_density,
                               shell_density)
    img = np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(f))).real
    return img / np.abs(img).max()
