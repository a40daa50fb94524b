"""Scores of a reconstruction: PRTF and resolution, R-factor, SSIM, core-shell model fit.

SCIENCE.md section 4. Members are aligned to a reference with :func:`align.align` (twin,
sub-pixel shift, global phase) and summed block by block into :class:`AlignedSums`, so a
caller can stream hundreds of members through a few partial sums and fold them in a
fixed order. Everything here works on numpy arrays in the store's conventions: Fourier
arrays centred, zero frequency at ``(h // 2, w // 2)``.

References
----------
H. N. Chapman et al., "High-resolution ab initio three-dimensional x-ray diffraction
microscopy", J. Opt. Soc. Am. A 23, 1179 (2006) (PRTF).
Z. Wang, A. C. Bovik, H. R. Sheikh and E. P. Simoncelli, "Image quality assessment: from
error visibility to structural similarity", IEEE Trans. Image Process. 13, 600 (2004).
P.-N. Chen et al., "X-ray ensemble diffraction microscopy", J. Appl. Cryst. (2024)
(erf%, core-shell fit, 1/e PRTF cut-off).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from lensfree.engine import align as _align
from lensfree.engine import phasing
from lensfree.engine.simulate import core_shell_form_factor

__all__ = ["AlignedSums", "Resolution", "align_members", "align_to_model", "combine",
           "core_shell_amplitude", "core_shell_image", "erf_percent", "fit_core_shell",
           "frequency_grid", "least_squares_scale", "prtf", "prtf_floor", "r_factor", "resolution",
           "shell_index", "spectrum", "ssim", "ssim_to_model"]

#: the PRTF cut-off of Chen et al. 2024 and Chapman et al. 2006
INV_E = float(np.exp(-1.0))


# ----------------------------------------------------------------------------- averaging


def spectrum(obj: np.ndarray) -> np.ndarray:
    """``G = F obj`` centred like the stored amplitude: ``fftshift(fft2(obj))``, complex128."""
    return np.fft.fftshift(np.fft.fft2(np.asarray(obj, dtype=np.complex128)))


@dataclass
class AlignedSums:
    """Partial sums of aligned members: what one block of members contributes.

    Attributes
    ----------
    n : int
        Members summed.
    object_sum : (h, w) complex128
        ``sum_k g_k`` of the aligned members.
    spectrum_sum : (h, w) complex128
        ``sum_k G_k``, ``G_k = F g_k`` centred (:func:`spectrum`). By linearity it equals
        ``F object_sum`` to rounding; it is kept as the PRTF's own numerator.
    shifts, twins, phases, correlations : per member, in the order summed
        What :func:`align.align` did to each (see :class:`align.AlignInfo`).
    """

    n: int
    object_sum: np.ndarray
    spectrum_sum: np.ndarray
    shifts: list = field(default_factory=list)
    twins: list = field(default_factory=list)
    phases: list = field(default_factory=list)
    correlations: list = field(default_factory=list)

    @property
    def average(self) -> np.ndarray:
        """``<g>``, complex128."""
        return self.object_sum / self.n

    @property
    def mean_spectrum(self) -> np.ndarray:
        """``<G>``, complex128."""
        return self.spectrum_sum / self.n


def align_members(members: Iterable[np.ndarray], reference: np.ndarray,
                  upsample: int = 20) -> AlignedSums:
    """Align every member to ``reference`` and sum the aligned objects and their transforms.

    Members are consumed one at a time (pass a generator to keep one in memory). Each is
    replaced by itself or its twin, shifted and rid of its global phase by
    :func:`align.align`.

    Parameters
    ----------
    members : iterable of (h, w) complex arrays
    reference : (h, w) complex array
        Usually the best member.
    upsample : int
        Registration precision, ``1 / upsample`` pixel.

    Returns
    -------
    AlignedSums
    """
    reference = np.asarray(reference)
    obj_sum = np.zeros(reference.shape, np.complex128)
    spec_sum = np.zeros(reference.shape, np.complex128)
    out = AlignedSums(0, obj_sum, spec_sum)
    for member in members:
        aligned, info = _align.align(np.asarray(member), reference, upsample)
        obj_sum += aligned
        spec_sum += spectrum(aligned)
        out.n += 1
        out.shifts.append(list(info.shift))
        out.twins.append(info.twin)
        out.phases.append(info.phase)
        out.correlations.append(info.correlation)
    return out


def combine(parts: Sequence[AlignedSums]) -> AlignedSums:
    """Fold partial sums left to right (a fixed order: the same bits on every back end)."""
    if not parts:
        raise ValueError("combine: no partial sums")
    total = AlignedSums(0, np.zeros_like(parts[0].object_sum),
                        np.zeros_like(parts[0].spectrum_sum))
    for p in parts:
        total.n += p.n
        total.object_sum += p.object_sum
        total.spectrum_sum += p.spectrum_sum
        for name in ("shifts", "twins", "phases", "correlations"):
            getattr(total, name).extend(getattr(p, name))
    if total.n == 0:
        raise ValueError("combine: the partial sums hold no member")
    return total


# ----------------------------------------------------------------------------- PRTF


def shell_index(shape: tuple[int, int]) -> np.ndarray:
    """Shell of every pixel: its distance from ``(h // 2, w // 2)`` rounded to an integer.

    Shells run from 0 to ``min(h, w) // 2`` (full rings only); corner pixels beyond get -1.
    """
    h, w = shape
    yy, xx = np.indices(shape)
    k = np.rint(np.hypot(yy - h // 2, xx - w // 2)).astype(np.int64)
    k[k > min(h, w) // 2] = -1
    return k


def prtf(mean_spectrum: np.ndarray, amplitude: np.ndarray,
         valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Phase-retrieval transfer function, shell-averaged over valid pixels.

    ``PRTF(q) = sum_shell |<G(q)>| / sum_shell A(q)`` over the valid pixels of each shell
    (the ratio of shell means, which stays finite where single pixels hold zero counts).
    ``<G>`` is the mean transform of the aligned members (phase offsets removed), ``A`` the
    measured amplitude; both centred. Identical members that fit the data exactly give 1;
    members that disagree at some ``q`` average out there (Chapman et al. 2006).

    Returns
    -------
    q : (K + 1,) float64
        Shell frequency in cycles per real-space pixel, ``k / h`` for shell ``k`` (pixels
        along the first axis when the array is not square).
    prtf : (K + 1,) float64
        NaN for shells without a valid pixel (the missing centre).
    """
    if not (mean_spectrum.shape == amplitude.shape == valid.shape):
        raise ValueError(f"prtf: shapes differ: {mean_spectrum.shape}, {amplitude.shape}, "
                         f"{valid.shape}")
    shells = shell_index(amplitude.shape)
    use = valid & (shells >= 0) & np.isfinite(amplitude)
    n = int(shells.max()) + 1
    num = np.bincount(shells[use], weights=np.abs(mean_spectrum)[use], minlength=n)
    den = np.bincount(shells[use], weights=np.asarray(amplitude, np.float64)[use], minlength=n)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(den > 0, num / den, np.nan)
    return np.arange(n) / amplitude.shape[0], out


def prtf_floor(n: int) -> float:
    """PRTF that ``n`` members with unrelated phases give by chance: ``sqrt(pi / (4 n))``.

    The mean length of the average of ``n`` random unit phasors (the Rayleigh mean, large
    ``n``; 1 for one member). Below about 6 members it exceeds ``1/e``, so the 1/e cut-off
    says nothing about resolution.
    """
    return 1.0 if n <= 1 else min(1.0, float(np.sqrt(np.pi / (4 * n))))


@dataclass(frozen=True)
class Resolution:
    """Where a PRTF first falls below its threshold.

    q_cut : float
        Cut-off frequency, cycles per pixel (linear interpolation between shells).
    half_period_px : float
        ``1 / (2 q_cut)``: the half-period resolution in real-space pixels.
    reached : bool
        False when the PRTF never falls below the threshold: ``q_cut`` is then the last
        shell, and the resolution is limited by the edge of the data.
    """

    q_cut: float
    half_period_px: float
    reached: bool


def resolution(q: np.ndarray, curve: np.ndarray, threshold: float = INV_E) -> Resolution:
    """Half-period resolution ``1 / (2 q_cut)`` where ``curve`` first falls below ``threshold``.

    Shells without data (NaN) are skipped; the search starts at the first shell with data.
    """
    q = np.asarray(q, np.float64)
    curve = np.asarray(curve, np.float64)
    ok = np.flatnonzero(np.isfinite(curve) & (q > 0))
    if ok.size == 0:
        raise ValueError("resolution: the PRTF has no finite shell")
    below = ok[curve[ok] < threshold]
    if below.size == 0:
        q_cut, reached = float(q[ok[-1]]), False
    else:
        k = int(below[0])
        before = ok[ok < k]
        if before.size == 0:
            q_cut = float(q[k])
        else:
            j = int(before[-1])
            t = (curve[j] - threshold) / (curve[j] - curve[k])
            q_cut = float(q[j] + t * (q[k] - q[j]))
        reached = True
    return Resolution(q_cut=q_cut, half_period_px=1.0 / (2.0 * q_cut), reached=reached)


def r_factor(obj: np.ndarray, amplitude: np.ndarray, valid: np.ndarray) -> float:
    """Fourier R-factor ``sum_V ||F obj| - A| / sum_V A`` (as phasing scores members)."""
    return phasing.fourier_r_factor(obj, amplitude, valid)


# ----------------------------------------------------------------------------- SSIM


def ssim(image: np.ndarray, model: np.ndarray, *, data_range: float | None = None) -> float:
    """SSIM (Wang et al. 2004) between ``|image|`` and ``|model|``, as is.

    ``skimage.metrics.structural_similarity`` with a 7 x 7 window; ``data_range``
    defaults to the range of ``|model|``. 1 for identical images.
    """
    from skimage.metrics import structural_similarity

    a = np.abs(np.asarray(image)).astype(np.float64)
    b = np.abs(np.asarray(model)).astype(np.float64)
    if a.shape != b.shape:
        raise ValueError(f"ssim: shapes differ, {a.shape} vs {b.shape}")
    if min(a.shape) < 7:
        raise ValueError(f"ssim: images of {a.shape} are smaller than the 7 x 7 window")
    if data_range is None:
        data_range = float(b.max() - b.min()) or 1.0
    return float(structural_similarity(a, b, data_range=data_range))


def least_squares_scale(model: np.ndarray, data: np.ndarray,
                        region: np.ndarray | None = None) -> float:
    """``s`` minimising ``sum_region (data - s model)^2``: ``<model, data> / <model, model>``."""
    m = np.asarray(model, np.float64)
    d = np.asarray(data, np.float64)
    if region is not None:
        m, d = m[region], d[region]
    mm = float(np.dot(m.ravel(), m.ravel()))
    return float(np.dot(m.ravel(), d.ravel()) / mm) if mm > 0 else 0.0


def align_to_model(image: np.ndarray, model: np.ndarray, upsample: int = 20) -> np.ndarray:
    """``|image|`` registered to ``|model|`` (twin, sub-pixel shift) and scaled to it.

    Magnitudes are aligned, not the complex fields: a model is often a magnitude image,
    and SSIM compares magnitudes. The scale is the least-squares one.
    """
    mag = np.abs(np.asarray(image)).astype(np.float64)
    ref = np.abs(np.asarray(model)).astype(np.float64)
    aligned, _ = _align.align(mag, ref, upsample)
    aligned = np.abs(aligned)
    return least_squares_scale(aligned, ref) * aligned


def ssim_to_model(image: np.ndarray, model: np.ndarray, *, upsample: int = 20,
                  margin: int | None = 4, level: float = 0.05) -> float:
    """SSIM of a reconstruction against a model, after aligning and scaling it to the model.

    The comparison is cropped to the box where ``|model|`` exceeds ``level`` of its
    maximum, widened by ``margin`` pixels (``margin=None``: the whole field), so that empty
    field around an isolated object does not inflate the score.
    """
    if np.shape(image) != np.shape(model):
        raise ValueError(f"ssim_to_model: shapes differ, {np.shape(image)} vs {np.shape(model)}")
    ref = np.abs(np.asarray(model)).astype(np.float64)
    aligned = align_to_model(image, ref, upsample)
    if margin is not None and ref.max() > 0:
        rows = np.flatnonzero((ref > level * ref.max()).any(axis=1))
        cols = np.flatnonzero((ref > level * ref.max()).any(axis=0))
        box = tuple(_widen(idx[0], idx[-1] + 1, margin, n)
                    for idx, n in zip((rows, cols), ref.shape))
        aligned, ref = aligned[box], ref[box]
    return ssim(aligned, ref)


def _widen(start: int, stop: int, margin: int, n: int, least: int = 7) -> slice:
    start, stop = max(0, start - margin), min(n, stop + margin)
    while stop - start < least and (start > 0 or stop < n):
        start, stop = max(0, start - 1), min(n, stop + 1)
    return slice(start, stop)


# ----------------------------------------------------------------------------- model fit


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
