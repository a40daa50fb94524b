"""Forward models that make test and demo data: ensembles of identical particles.

A frame is the far-field pattern of a few identical core-shell spheres at random places
in the beam, plus diffuse background, drawn with Poisson statistics. Some frames are
spoiled on purpose (weak: beam missed; streak: scatter off the beam-stop edge;
invalid: NaN, inf or negative values) so the screens of stage 1 can be checked.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lensfree.engine.geometry import frequency_spacing

GOOD, WEAK, STREAK, INVALID = "good", "weak", "streak", "invalid"


@dataclass(frozen=True)
class EnsembleParams:
    """Parameters of a simulated ensemble (SI units; sizes of the paper's silica-gold spheres).

    With the default geometry a real-space pixel of the full detector is
    ``lambda z / (H p)`` = 2.6 nm at H = 256, so the 55 nm shell spans ~21 px.
    """

    n_frames: int = 2000
    shape: tuple[int, int] = (256, 256)
    inner_diameter_m: float = 19e-9
    outer_diameter_m: float = 55e-9
    core_density: float = 3.0
    shell_density: float = 1.0
    particles_per_frame: float = 2.0
    photons_per_particle: float = 3000.0
    background_per_pixel: float = 0.01
    beam_size_m: float = 1e-6
    wavelength_m: float = 2.0e-10
    distance_m: float = 0.25
    pixel_size_m: float = 75e-6
    center_offset: tuple[float, float] | None = None
    beamstop_radius: float = 8.0
    gap_width: int = 3
    weak_fraction: float = 0.02
    streak_fraction: float = 0.02
    invalid_fraction: float = 0.01
    streak_counts: float = 300.0
    streak_length: float = 20.0
    dtype: str = "float32"
    seed: int = 0

    def __post_init__(self):
        if self.n_frames < 1:
            raise ValueError(f"n_frames={self.n_frames} must be at least 1")
        if min(self.shape) < 16:
            raise ValueError(f"shape={self.shape}: frames must be at least 16 x 16")
        if not 0 < self.inner_diameter_m < self.outer_diameter_m:
            raise ValueError("need 0 < inner_diameter < outer_diameter")
        bad = self.weak_fraction + self.streak_fraction + self.invalid_fraction
        if min(self.weak_fraction, self.streak_fraction, self.invalid_fraction) < 0 or bad >= 0.5:
            raise ValueError("bad-frame fractions must be >= 0 and add up to less than 0.5")
        if np.dtype(self.dtype).kind not in "fiu":
            raise ValueError(f"dtype={self.dtype}: use an integer or float dtype")
        if self.invalid_fraction > 0 and np.dtype(self.dtype).kind == "u":
            raise ValueError(f"dtype={self.dtype} cannot hold invalid values: "
                             "set invalid_fraction=0 or use float32")


def center(params: EnsembleParams) -> tuple[float, float]:
    """True position of zero frequency on the detector, in pixels (y, x)."""
    h, w = params.shape
    if params.center_offset is None:
        rng = np.random.default_rng([params.seed, 1])
        offset = rng.uniform(-3, 3, size=2)
    else:
        offset = params.center_offset
    return (h // 2 + float(offset[0]), w // 2 + float(offset[1]))


def detector_mask(params: EnsembleParams) -> np.ndarray:
    """True = measured: a round beam stop at the centre and one gap row and column band."""
    h, w = params.shape
    cy, cx = center(params)
    yy, xx = np.indices((h, w))
    mask = np.hypot(yy - cy, xx - cx) > params.beamstop_radius
    g = params.gap_width
    if g:
        mask[3 * h // 8 : 3 * h // 8 + g, :] = False
        mask[:, 5 * w // 8 : 5 * w // 8 + g] = False
    return mask


def sphere_form_factor(q: np.ndarray, radius: float) -> np.ndarray:
    """3D transform of a uniform sphere at spatial frequency ``q`` (cycles per metre).

    ``F(k) = 4 pi (sin kR - kR cos kR) / k^3`` with ``k = 2 pi q``; the projection-slice
    theorem makes it also the 2D transform of the projected sphere.
    """
    k = 2 * np.pi * np.asarray(q, dtype=np.float64)
    kr = k * radius
    out = np.full(k.shape, 4 * np.pi * radius**3 / 3)
    big = kr > 1e-3
    out[big] = 4 * np.pi * (np.sin(kr[big]) - kr[big] * np.cos(kr[big])) / k[big] ** 3
    return out


def core_shell_form_factor(q, inner_diameter, outer_diameter, core_density=1.0,
                           shell_density=1.0):
    """Projected form factor of a core-shell sphere (diameters in the units of 1 / q)."""
    return (shell_density * sphere_form_factor(q, outer_diameter / 2)
            + (core_density - shell_density) * sphere_form_factor(q, inner_diameter / 2))


def frequencies(params: EnsembleParams):
    """Spatial frequencies (cycles per metre) of every detector row and column."""
    h, w = params.shape
    cy, cx = center(params)
    dq = frequency_spacing(params.pixel_size_m, params.wavelength_m, params.distance_m)
    return (np.arange(h) - cy) * dq, (np.arange(w) - cx) * dq


def particle_intensity(params: EnsembleParams) -> np.ndarray:
    """Mean counts of one particle, ``|F(q)|^2`` scaled to ``photons_per_particle`` in all."""
    qy, qx = frequencies(params)
    q = np.hypot(qy[:, None], qx[None, :])
    f = core_shell_form_factor(q, params.inner_diameter_m, params.outer_diameter_m,
                               params.core_density, params.shell_density)
    f2 = f * f
    return f2 * (params.photons_per_particle / f2.sum())


def background_level(params: EnsembleParams) -> np.ndarray:
    """Mean diffuse background counts per pixel: flat plus a low-q halo."""
    h, w = params.shape
    cy, cx = center(params)
    yy, xx = np.indices((h, w))
    r2 = (yy - cy) ** 2 + (xx - cx) ** 2
    return params.background_per_pixel * (1 + 4 * np.exp(-r2 / (2 * (0.1 * min(h, w)) ** 2)))


def plant(params: EnsembleParams) -> np.ndarray:
    """Kind of every frame (GOOD, WEAK, STREAK or INVALID), fixed by the seed."""
    rng = np.random.default_rng([params.seed, 2])
    n = params.n_frames
    kinds = np.full(n, GOOD, dtype=object)
    order = rng.permutation(n)
    start = 0
    for kind, frac in ((WEAK, params.weak_fraction), (STREAK, params.streak_fraction),
                       (INVALID, params.invalid_fraction)):
        count = int(round(frac * n))
        kinds[order[start : start + count]] = kind
        start += count
    return kinds.astype(str)


def simulate_frames(params: EnsembleParams, start: int, stop: int, kinds=None) -> np.ndarray:
    """Frames [start, stop) of the ensemble; frame i depends only on (seed, i)."""
    kinds = plant(params) if kinds is None else kinds
    single = particle_intensity(params)
    amp = np.sqrt(single)
    bg = background_level(params)
    qy, qx = frequencies(params)
    mask = detector_mask(params)
    h, w = params.shape
    cy, cx = center(params)
    yy, xx = np.indices((h, w))
    dtype = np.dtype(params.dtype)
    out = np.empty((stop - start, h, w), dtype=dtype)
    for j, i in enumerate(range(start, stop)):
        rng = np.random.default_rng([params.seed, 3, i])
        n = rng.poisson(params.particles_per_frame)
        pos = rng.uniform(-params.beam_size_m / 2, params.beam_size_m / 2, size=(n, 2))
        ey = np.exp(-2j * np.pi * np.outer(qy, pos[:, 0]))
        ex = np.exp(-2j * np.pi * np.outer(pos[:, 1], qx))
        field = amp * (ey @ ex) if n else np.zeros((h, w))
        mean = np.abs(field) ** 2 + bg
        kind = kinds[i]
        if kind == WEAK:
            mean = 0.02 * mean
        elif kind == STREAK:
            angle = rng.uniform(0, 2 * np.pi)
            along = (yy - cy) * np.sin(angle) + (xx - cx) * np.cos(angle)
            across = -(yy - cy) * np.cos(angle) + (xx - cx) * np.sin(angle)
            # edge scatter: brightest at the beam-stop edge, fading outwards
            fall = np.exp(-np.clip(along - params.beamstop_radius, 0, None) / params.streak_length)
            line = (along > params.beamstop_radius) * fall * np.exp(-(across**2) / 2)
            mean = mean + params.streak_counts * line
        frame = rng.poisson(mean).astype(dtype)
        if kind == INVALID:
            bad = rng.choice(np.flatnonzero(mask.ravel()), size=rng.integers(1, 20))
            frame.flat[bad] = rng.choice([np.nan, np.inf, -1.0])
        # unmeasured pixels hold junk, as real detectors do: the mask must be honoured
        frame[~mask] = np.iinfo(dtype).max if dtype.kind in "iu" else -1
        out[j] = frame
    return out
