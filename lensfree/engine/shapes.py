"""Built-in test objects and their far-field diffraction patterns.

Every object is a complex exit wave on an ``n x n`` grid, centred at ``(n // 2, n // 2)``,
with an extent of about ``n / oversampling`` pixels in each dimension (so
``oversampling >= 2`` satisfies the sampling condition of SCIENCE.md section 0). All of
them lack a centre of symmetry, so a reconstruction and its twin ``conj(rho(-r))`` can be
told apart.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["OBJECTS", "blobs", "cell", "crystal", "far_field", "letter", "make_object"]


def _grid(n: int, oversampling: float) -> tuple[np.ndarray, np.ndarray, float]:
    """Pixel coordinates relative to the centre, and the object's half-extent in pixels."""
    if n < 8:
        raise ValueError(f"object grid must be at least 8 pixels, got {n}")
    if oversampling < 1:
        raise ValueError(f"oversampling must be >= 1, got {oversampling}")
    y, x = np.mgrid[0:n, 0:n].astype(np.float64)
    return y - n // 2, x - n // 2, n / oversampling / 2.0


def letter(n: int, oversampling: float = 3.0, phase_ramp: float = 1.5) -> np.ndarray:
    """A letter "F" of uniform magnitude with a linear phase ramp across it.

    Parameters
    ----------
    n : int
        Grid size.
    oversampling : float
        Grid size over object extent, per dimension.
    phase_ramp : float
        Phase difference in radians between the left and right edges of the letter.
    """
    y, x, h = _grid(n, oversampling)
    u, v = y / h, x / h  # -1..1 across the extent
    stem = (np.abs(v + 0.55) <= 0.25) & (np.abs(u) <= 0.95)
    top = (np.abs(u + 0.75) <= 0.2) & (v >= -0.8) & (v <= 0.9)
    mid = (np.abs(u - 0.0) <= 0.17) & (v >= -0.8) & (v <= 0.45)
    shape = (stem | top | mid).astype(np.float64)
    shape = ndimage.gaussian_filter(shape, 0.5)  # soften aliasing of the hard edges
    phase = phase_ramp * (x / (2 * h))
    return (shape * np.exp(1j * phase)).astype(np.complex64)


def blobs(n: int, oversampling: float = 3.0, count: int = 5, seed: int = 0) -> np.ndarray:
    """A few Gaussian blobs of different size, height and phase, placed at random.

    Parameters
    ----------
    n, oversampling
        As for :func:`letter`.
    count : int
        Number of blobs.
    seed : int
        Seed of the :func:`numpy.random.default_rng` that places them.
    """
    rng = np.random.default_rng(seed)
    y, x, h = _grid(n, oversampling)
    rho = np.zeros((n, n), dtype=np.complex128)
    for _ in range(count):
        width = h * rng.uniform(0.12, 0.3)
        cy, cx = rng.uniform(-h + width, h - width, size=2)
        height = rng.uniform(0.4, 1.0)
        phase = rng.uniform(-np.pi, np.pi)
        r2 = ((y - cy) ** 2 + (x - cx) ** 2) / (2 * width**2)
        rho += height * np.exp(-r2) * np.exp(1j * phase)
    # Cut the tails so the object has a finite support.
    rho[np.abs(y) > h] = 0
    rho[np.abs(x) > h] = 0
    return rho.astype(np.complex64)


def cell(n: int, oversampling: float = 3.0, phase_per_thickness: float = 1.2) -> np.ndarray:
    """An off-centre "cell": an ellipse whose thickness grows towards a dense nucleus.

    The exit wave is ``t(r) exp(i k t(r))`` with ``t`` the projected thickness (maximum 1):
    magnitude and phase both follow the thickness, as for a weak absorber.
    """
    y, x, h = _grid(n, oversampling)
    u, v = y / h, x / h
    body = 1.0 - (u / 0.95) ** 2 - ((v - 0.1) / 0.75) ** 2
    t = np.sqrt(np.clip(body, 0, None))
    nucleus = 1.0 - ((u + 0.3) / 0.3) ** 2 - ((v - 0.3) / 0.25) ** 2
    t = t + 0.8 * np.sqrt(np.clip(nucleus, 0, None))
    t /= t.max()
    return (t * np.exp(1j * phase_per_thickness * t)).astype(np.complex64)


OBJECTS = {"letter": letter, "blobs": blobs, "cell": cell}


def crystal(n: int, oversampling: float = 2.3) -> np.ndarray:
    """A 3D faceted crystal on an ``n^3`` grid: a box rotated about z, cut by octahedral
    planes, about ``n / oversampling`` voxels across, with a smooth strain-like phase of
    about +-1 rad (the phase of a Bragg reconstruction). No centre of symmetry in its
    phase. complex64."""
    if n < 8:
        raise ValueError(f"object grid must be at least 8 voxels, got {n}")
    z, y, x = (np.indices((n, n, n)) - n // 2).astype(np.float64)
    c, s = np.cos(0.3), np.sin(0.3)
    xr, yr = c * x - s * y, s * x + c * y
    size = n / oversampling
    half = size / 2
    inside = (np.abs(xr) <= half) & (np.abs(yr) <= 0.8 * half) & (np.abs(z) <= 0.7 * half)
    inside &= np.abs(xr) + np.abs(yr) + np.abs(z) <= 1.25 * half
    phase = 0.8 * np.sin(2 * np.pi * (0.6 * xr + 0.3 * yr + 0.4 * z) / (2 * size))
    phase += 0.5 * ((xr / half) ** 2 - (z / half) ** 2)
    return (inside * np.exp(1j * phase)).astype(np.complex64)


def make_object(name: str, n: int, oversampling: float = 3.0, **kwargs) -> np.ndarray:
    """The built-in object ``name`` (one of :data:`OBJECTS`) on an ``n x n`` grid."""
    try:
        factory = OBJECTS[name]
    except KeyError:
        raise ValueError(f"unknown object {name!r}; choose one of {sorted(OBJECTS)}") from None
    return factory(n, oversampling, **kwargs)


def far_field(
    rho: np.ndarray,
    photons: float,
    rng: np.random.Generator,
    missing_center_radius: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Noisy far-field amplitude of ``rho`` and its valid-pixel mask, centred.

    ``I(q) = |F rho|^2`` scaled so that the expected total count is ``photons``, drawn as
    Poisson counts, ``A = sqrt(counts)``. Zero frequency is at ``(h // 2, w // 2)`` as on
    disk. A disk of ``missing_center_radius`` pixels around it is marked missing (``valid``
    False, amplitude 0), as after central-speckle removal or behind a beam stop.

    Parameters
    ----------
    rho : (h, w) complex array
        The object.
    photons : float
        Expected total photon count; ``np.inf`` gives noise-free amplitudes.
    rng : numpy.random.Generator
        Source of the Poisson noise.
    missing_center_radius : float
        Radius in pixels of the missing disk (0: everything measured).

    Returns
    -------
    amplitude : (h, w) float32
    valid : (h, w) bool
    """
    intensity = np.abs(np.fft.fftshift(np.fft.fft2(rho.astype(np.complex128)))) ** 2
    if np.isfinite(photons):
        intensity = rng.poisson(intensity * (photons / intensity.sum())).astype(np.float64)
    amplitude = np.sqrt(intensity).astype(np.float32)
    h, w = rho.shape
    yy, xx = np.mgrid[0:h, 0:w]
    valid = (yy - h // 2) ** 2 + (xx - w // 2) ** 2 > missing_center_radius**2
    if missing_center_radius <= 0:
        valid[...] = True
    amplitude[~valid] = 0
    return amplitude, valid
