"""Simulated ptychography, far and near field: test objects, probes, scans, noisy frames.

Conventions (shared with :mod:`lensfree.engine.ptycho`): a position ``(y, x)`` says where
the probe array's pixel ``(0, 0)`` falls on the object, in object pixels, up to one common
offset; frame ``j`` is ``I_j = sum_m |F(P_m O[y_j:y_j+h, x_j:x_j+w])|^2`` with zero
frequency at ``(h // 2, w // 2)`` (centred, as a detector sees it, never fft-shifted). A
near-field scan's frame is the hologram ``I_j = sum_m |D(P_m O_j)|^2`` (``D`` the angular
spectrum, :class:`lensfree.engine.ptycho.Propagator`), an image, not moved; there the beam
and detector stay and the sample moves, so a sub-pixel position shifts the object, not the
probe.

References
----------
A. M. Maiden and J. M. Rodenburg, "An improved ptychographical phase retrieval
algorithm for diffractive imaging", Ultramicroscopy 109, 1256 (2009).
X. Huang et al., "Optimization of overlap uniformness for ptychography", Opt. Express 22,
12634 (2014) (Fermat-spiral scans).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["PtychoSimParams", "SimulatedScan", "fermat_scan", "make_probe", "orthogonal_modes",
           "raster_scan", "simulate_scan", "test_object"]

SCANS = ("fermat", "raster")
PROBES = ("focused", "pinhole", "diffuser")
PROPAGATIONS = ("far-field", "near-field")


def _resize(img: np.ndarray, shape) -> np.ndarray:
    from skimage.transform import resize

    return resize(img.astype(np.float64), shape, order=1, anti_aliasing=True, mode="reflect")


def _normalise(img: np.ndarray) -> np.ndarray:
    lo, hi = float(img.min()), float(img.max())
    return (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)


def test_object(shape: tuple[int, int], *, amplitude_range: tuple[float, float] = (0.4, 1.0),
                phase_range: float = 1.5) -> np.ndarray:
    """A complex test object whose amplitude and phase show different pictures.

    Amplitude: scikit-image's ``camera`` scaled to ``amplitude_range``; phase: the grey
    ``astronaut`` scaled to ``[-phase_range / 2, phase_range / 2]`` radians. Both images
    ship with scikit-image (nothing is downloaded).
    """
    from skimage import data
    from skimage.color import rgb2gray

    lo, hi = amplitude_range
    if not 0 <= lo < hi:
        raise ValueError(f"amplitude_range={amplitude_range} must satisfy 0 <= low < high")
    amp = lo + (hi - lo) * _normalise(_resize(data.camera(), shape))
    phase = phase_range * (_normalise(_resize(rgb2gray(data.astronaut()), shape)) - 0.5)
    return (amp * np.exp(1j * phase)).astype(np.complex64)


def make_probe(shape: tuple[int, int], kind: str = "focused", diameter: float = 24.0,
               seed: int = 0) -> np.ndarray:
    """One coherent probe mode of roughly ``diameter`` pixels, centred in ``shape``.

    ``focused``: a lens aperture (disk of radius 0.15 cycles/px in the pupil) defocused so
    that its geometric spot is ``diameter`` wide, with the Fresnel fringes that come with
    it. ``pinhole``: a disk of that diameter with 1-px soft edges and a weak curvature.
    ``diffuser`` (near field): a wide Gaussian (``diameter`` its FWHM, seldom under the
    frame) through a smooth random phase screen of about 2 rad (``seed``), the structured
    beam near-field ptychography needs. Normalised to ``sum |P|^2 = 1``.
    """
    h, w = shape
    if kind not in PROBES:
        raise ValueError(f"probe kind {kind!r}: choose one of {', '.join(PROBES)}")
    if kind == "diffuser":
        return _diffuser((h, w), diameter, seed)
    if not 2 <= diameter <= min(h, w) / 1.5:
        raise ValueError(f"probe diameter {diameter}: must lie in [2, {min(h, w) / 1.5:.0f}] "
                         f"px for {h}x{w} frames (the frames must oversample it)")
    y = np.arange(h) - h // 2
    x = np.arange(w) - w // 2
    if kind == "focused":
        qy = np.fft.fftshift(np.fft.fftfreq(h))[:, None]
        qx = np.fft.fftshift(np.fft.fftfreq(w))[None, :]
        q2 = qy**2 + qx**2
        q_aperture = 0.15
        defocus = diameter / (2 * q_aperture)  # rays at q land at defocus * q
        pupil = (q2 <= q_aperture**2) * np.exp(1j * np.pi * defocus * q2)
        probe = np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(pupil)))
    else:
        from scipy import ndimage

        r2 = y[:, None] ** 2 + x[None, :] ** 2
        disk = ndimage.gaussian_filter((r2 <= (diameter / 2) ** 2).astype(float), 1.0)
        probe = disk * np.exp(1j * np.pi * r2 / (4 * diameter**2 / 4))
    probe = probe / np.sqrt(np.sum(np.abs(probe) ** 2))
    return probe.astype(np.complex64)


def _diffuser(shape, diameter: float, seed: int) -> np.ndarray:
    h, w = shape
    rng = np.random.default_rng([seed, 11])
    q2 = np.fft.fftfreq(h)[:, None] ** 2 + np.fft.fftfreq(w)[None] ** 2
    screen = np.fft.ifft2(np.fft.fft2(rng.normal(size=shape)) * np.exp(-q2 / 0.01)).real
    yy, xx = np.indices(shape)
    r2 = (yy - h / 2) ** 2 + (xx - w / 2) ** 2
    sigma = diameter / 2.355
    probe = np.exp(-r2 / (2 * sigma**2)) * np.exp(2j * screen / np.abs(screen).max())
    return (probe / np.sqrt(np.sum(np.abs(probe) ** 2))).astype(np.complex64)


def orthogonal_modes(probe: np.ndarray, n_modes: int, weights=None) -> np.ndarray:
    """(n_modes, h, w) incoherent modes: ``probe`` and Hermite-like variants of it.

    Mode k > 0 is ``probe`` times a low-order polynomial in (y, x) (y, x, xy, y^2 - x^2,
    ...), orthogonalised (Gram-Schmidt); mode k carries power ``weights[k]`` (default
    ``0.6**k``, normalised to 1).
    """
    h, w = probe.shape[-2:]
    probe = probe.reshape(h, w)
    if n_modes < 1:
        raise ValueError(f"probe modes {n_modes}: must be at least 1")
    power = np.abs(probe) ** 2
    total = power.sum()
    cy = (power.sum(1) * np.arange(h)).sum() / total
    cx = (power.sum(0) * np.arange(w)).sum() / total
    yy = (np.arange(h)[:, None] - cy) * np.ones((1, w))
    xx = (np.arange(w)[None, :] - cx) * np.ones((h, 1))
    polys = [np.ones((h, w)), yy, xx, yy * xx, yy**2 - xx**2, yy**2 + xx**2]
    modes = []
    for k in range(n_modes):
        m = probe.astype(np.complex128) * polys[k % len(polys)] * (1 + k // len(polys))
        for prev in modes:
            m = m - np.vdot(prev, m) * prev
        m = m / np.linalg.norm(m)
        modes.append(m)
    if weights is None:
        weights = 0.6 ** np.arange(n_modes)
    weights = np.asarray(weights, float) / np.sum(weights)
    return (np.stack(modes) * np.sqrt(weights)[:, None, None]).astype(np.complex64)


def raster_scan(n: int, step: float) -> np.ndarray:
    """(n, 2) raster positions (y, x) on a square grid of pitch ``step``, row by row."""
    side = int(np.ceil(np.sqrt(n)))
    j = np.arange(n)
    return np.stack([(j // side) * step, (j % side) * step], axis=1).astype(np.float64)


def fermat_scan(n: int, step: float) -> np.ndarray:
    """(n, 2) Fermat-spiral positions with the point density of a raster of pitch ``step``.

    ``r_k = c sqrt(k)``, ``theta_k = k * 137.508 deg`` with ``pi c^2 = step^2`` (Huang 2014).
    """
    k = np.arange(n)
    c = step / np.sqrt(np.pi)
    r = c * np.sqrt(k)
    theta = np.deg2rad(137.508) * k
    return np.stack([r * np.sin(theta), r * np.cos(theta)], axis=1)


@dataclass(frozen=True)
class PtychoSimParams:
    """A simulated scan.

    n_positions, frame_size : scan points and (square) frame size in pixels.
    scan : ``fermat`` or ``raster``. overlap : 1 - step / probe diameter (0.6-0.8 is usual).
    probe : ``focused`` or ``pinhole``; probe_diameter in px (default frame_size / 4).
    probe_modes : incoherent probe modes in the data (powers 1, 0.6, 0.36, ... normalised).
    photons : mean counts per frame (Poisson); None: noise-free.
    position_error : RMS length (px) of the error vector of the recorded positions.
    drift : (dy, dx) px added to the recorded positions linearly over the scan.
    subpixel : keep the true positions off the pixel grid; by default they are rounded to
        whole pixels (the engine crops whole pixels; its positions are refined continuously).
    phase_range : peak-to-peak object phase, rad.
    propagation : ``far-field`` or ``near-field`` (holograms through the angular spectrum
        at ``distance_m``, ``wavelength_m``, sample pixel ``pixel_size_m``; the probe
        should then be a ``diffuser`` filling the frame, whose diameter defaults to
        0.8 frame_size and whose first guess is none: the engine starts from the mean
        hologram propagated back).
    """

    n_positions: int = 100
    frame_size: int = 64
    scan: str = "fermat"
    overlap: float = 0.7
    probe: str = "focused"
    probe_diameter: float | None = None
    probe_modes: int = 1
    photons: float | None = 1e6
    position_error: float = 0.0
    drift: tuple[float, float] = (0.0, 0.0)
    subpixel: bool = False
    phase_range: float = 1.5
    margin: int = 4
    seed: int = 0
    propagation: str = "far-field"
    wavelength_m: float = 1e-10
    distance_m: float = 8e-3
    pixel_size_m: float = 2e-7

    def __post_init__(self):
        if self.n_positions < 1:
            raise ValueError(f"n_positions={self.n_positions} must be at least 1")
        if self.frame_size < 8:
            raise ValueError(f"frame_size={self.frame_size} must be at least 8")
        if self.scan not in SCANS:
            raise ValueError(f"scan={self.scan!r}: choose one of {', '.join(SCANS)}")
        if not 0 <= self.overlap < 1:
            raise ValueError(f"overlap={self.overlap} must lie in [0, 1)")
        if self.photons is not None and not self.photons > 0:
            raise ValueError(f"photons={self.photons} must be positive")
        if self.position_error < 0:
            raise ValueError(f"position_error={self.position_error} must be >= 0")
        if self.probe_modes < 1:
            raise ValueError(f"probe_modes={self.probe_modes} must be at least 1")
        if self.propagation not in PROPAGATIONS:
            raise ValueError(f"propagation={self.propagation!r}: choose one of "
                             f"{', '.join(PROPAGATIONS)}")
        self.propagator.check((self.frame_size, self.frame_size))

    @property
    def propagator(self):
        """The :class:`Propagator` of the frames."""
        from lensfree.engine.ptycho.propagate import Propagator

        if self.propagation == "far-field":
            return Propagator()
        return Propagator("near-field", self.wavelength_m, self.distance_m, self.pixel_size_m)

    @property
    def diameter(self) -> float:
        if self.probe_diameter:
            return self.probe_diameter
        return self.frame_size * (0.8 if self.probe == "diffuser" else 0.25)


@dataclass(frozen=True)
class SimulatedScan:
    """What `simulate_scan` makes. Positions share the object's pixel frame."""

    frames: np.ndarray            # (N, h, w) float32 counts, centred
    positions: np.ndarray         # (N, 2) recorded (true + error + drift)
    true_positions: np.ndarray    # (N, 2)
    object: np.ndarray            # (oy, ox) complex64
    probe: np.ndarray             # (modes, h, w) complex64, true
    probe_guess: np.ndarray | None  # (1, h, w) complex64, a rough initial guess (far field)


def simulate_scan(params: PtychoSimParams) -> SimulatedScan:
    """Frames, positions and truth of one simulated scan (deterministic in ``params.seed``)."""
    p = params
    rng = np.random.default_rng([p.seed, 5])
    h = w = p.frame_size
    step = (1 - p.overlap) * p.diameter
    scan = fermat_scan if p.scan == "fermat" else raster_scan
    true = scan(p.n_positions, step)
    true = true - true.min(axis=0) + p.margin + p.position_error * 3 + np.abs(p.drift)
    if not p.subpixel:
        true = np.round(true)
    extent = np.ceil(true.max(axis=0)).astype(int) + np.array([h, w]) + p.margin
    extent = extent + int(np.ceil(p.position_error * 3 + max(np.abs(p.drift))))
    obj = test_object(tuple(extent), phase_range=p.phase_range)
    probe = orthogonal_modes(make_probe((h, w), p.probe, p.diameter, p.seed), p.probe_modes)
    near = p.propagation == "near-field"
    prop = p.propagator
    frames = np.empty((p.n_positions, h, w), np.float32)
    qy = np.fft.fftfreq(h)[:, None]
    qx = np.fft.fftfreq(w)[None, :]
    fprobe = np.fft.fft2(probe)
    pad = 4  # the object is shifted on a wider crop, so that its wrap falls outside
    qpy = np.fft.fftfreq(h + 2 * pad)[:, None]
    qpx = np.fft.fftfreq(w + 2 * pad)[None, :]
    for j, (y, x) in enumerate(true):
        iy, ix = int(np.floor(y)), int(np.floor(x))
        fy, fx = y - iy, x - ix
        modes, patch = probe, obj[iy:iy + h, ix:ix + w]
        if (fy or fx) and near:  # the sample moves under the beam: shift the object
            wide = np.pad(obj, pad, mode="edge")[iy:iy + h + 2 * pad, ix:ix + w + 2 * pad]
            wide = np.fft.ifft2(np.fft.fft2(wide) * np.exp(2j * np.pi * (qpy * fy + qpx * fx)))
            patch = wide[pad:pad + h, pad:pad + w]
        elif fy or fx:  # sub-pixel part: shift the probe exactly, in Fourier space
            modes = np.fft.ifft2(fprobe * np.exp(-2j * np.pi * (qy * fy + qx * fx)))
        psi = modes * patch
        if near:
            frames[j] = np.sum(np.abs(prop.to_detector(psi)) ** 2, axis=0)
        else:
            frames[j] = np.fft.fftshift(np.sum(np.abs(np.fft.fft2(psi)) ** 2, axis=0))
    if p.photons is not None:
        frames *= p.photons / frames.sum(axis=(1, 2)).mean()
        frames = rng.poisson(frames).astype(np.float32)
    error = rng.normal(0.0, p.position_error / np.sqrt(2), size=true.shape)
    drift = np.linspace(0, 1, p.n_positions)[:, None] * np.asarray(p.drift, float)[None, :]
    recorded = true + error + drift
    guess = None
    if not near:
        guess = make_probe((h, w), p.probe, min(p.diameter * 1.25, h / 1.5))[None]
    return SimulatedScan(frames=frames, positions=recorded, true_positions=true, object=obj,
                         probe=probe, probe_guess=guess)
