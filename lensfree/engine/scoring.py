"""Scores of a reconstruction: PRTF and resolution, R-factor, SSIM, core-shell model fit.

SCIENCE.md section 4. Members are aligned to a reference with :func:`align.align` (twin,
sub-pixel shift, global phase) and summed block by block into :class:`AlignedSums`, so a
caller can stream hundreds of members through a few partial sums and fold them in a
fixed order. Everything here works on numpy arrays in the store's conventions: Fourier
arrays centred, zero frequency at ``(h // 2, w // 2)``; 3D volumes (``(d // 2, h // 2,
w // 2)``) too, the PRTF then over spherical shells (SSIM and the core-shell fit are 2D).

References
----------
H. N. Chapman et al., "High-resolution ab initio three-dimensional x-ray diffraction
microscopy", J. Opt. Soc. Am. A 23, 1179 (2006) (PRTF).
Z. Wang, A. C. Bovik, H. R. Sheikh and E. P. Simoncelli, "Image quality assessment: from
error visibility to structural similarity", IEEE Trans. Image Process. 13, 600 (2004).
P.-N. Chen et al., "X-ray ensemble diffraction microscopy", J. Appl. Cryst. (2024)
(1/e PRTF cut-off). The core-shell fit lives in :mod:`lensfree.engine.coreshell` and is
re-exported here.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from lensfree.engine import align as _align
from lensfree.engine import phasing
from lensfree.engine.coreshell import (
    core_shell_amplitude,
    core_shell_image,
    erf_percent,
    fit_core_shell,
    frequency_grid,
    least_squares_scale,
)

__all__ = ["AlignedSums", "Resolution", "align_members", "align_to_model", "combine",
           "core_shell_amplitude", "core_shell_image", "describe_resolution", "erf_percent",
           "fit_core_shell", "frequency_grid", "least_squares_scale", "prtf", "prtf_floor",
           "r_factor", "resolution", "shell_index", "spectrum", "ssim", "ssim_to_model",
           "unit_phasor"]

#: the PRTF cut-off of Chen et al. 2024 and Chapman et al. 2006
INV_E = float(np.exp(-1.0))


# ----------------------------------------------------------------------------- averaging


def spectrum(obj: np.ndarray) -> np.ndarray:
    """``G = F obj`` centred like the stored amplitude: ``fftshift(fftn(obj))``, complex128."""
    return np.fft.fftshift(np.fft.fftn(np.asarray(obj, dtype=np.complex128)))


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
        ``F object_sum`` to rounding.
    phasor_sum : (h, w) complex128
        ``sum_k G_k / |G_k|`` (0 where ``G_k = 0``): the unit phasors the PRTF averages.
    shifts, twins, phases, correlations : per member, in the order summed
        What :func:`align.align` did to each (see :class:`align.AlignInfo`).
    """

    n: int
    object_sum: np.ndarray
    spectrum_sum: np.ndarray
    phasor_sum: np.ndarray | None = None
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

    @property
    def mean_phasor(self) -> np.ndarray:
        """``<G / |G|>``, complex128, modulus at most 1: what :func:`prtf` takes."""
        if self.phasor_sum is None:
            raise ValueError("AlignedSums: no phasor sums (made without align_members)")
        return self.phasor_sum / self.n


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
    phasors = np.zeros(reference.shape, np.complex128)
    out = AlignedSums(0, obj_sum, spec_sum, phasors)
    for member in members:
        aligned, info = _align.align(np.asarray(member), reference, upsample)
        obj_sum += aligned
        g = spectrum(aligned)
        spec_sum += g
        phasors += unit_phasor(g)
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
    with_phasors = all(p.phasor_sum is not None for p in parts)
    if with_phasors:
        total.phasor_sum = np.zeros_like(parts[0].spectrum_sum)
    for p in parts:
        total.n += p.n
        total.object_sum += p.object_sum
        total.spectrum_sum += p.spectrum_sum
        if with_phasors:
            total.phasor_sum += p.phasor_sum
        for name in ("shifts", "twins", "phases", "correlations"):
            getattr(total, name).extend(getattr(p, name))
    if total.n == 0:
        raise ValueError("combine: the partial sums hold no member")
    return total


# ----------------------------------------------------------------------------- PRTF


def shell_index(shape: tuple[int, ...]) -> np.ndarray:
    """Shell of every pixel: its distance from ``(h // 2, w // 2)`` rounded to an integer;
    for a 3D shape the spherical shell about ``(d // 2, h // 2, w // 2)``.

    Shells run from 0 to ``min(shape) // 2`` (full rings or spheres only); corner pixels
    beyond get -1.
    """
    if len(shape) == 2:
        h, w = shape
        yy, xx = np.indices(shape)
        radius = np.hypot(yy - h // 2, xx - w // 2)
    else:
        grids = np.indices(shape)
        radius = np.sqrt(sum((g - n // 2).astype(np.float64) ** 2
                             for g, n in zip(grids, shape)))
    k = np.rint(radius).astype(np.int64)
    k[k > min(shape) // 2] = -1
    return k


def unit_phasor(g: np.ndarray) -> np.ndarray:
    """``g / |g|``, and 0 where ``g = 0`` (no phase to count)."""
    mag = np.abs(g)
    return np.divide(g, mag, out=np.zeros_like(g, dtype=np.complex128), where=mag > 0)


def prtf(mean_phasor: np.ndarray, amplitude: np.ndarray,
         valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Phase-retrieval transfer function: the phase-only PRTF, shell-averaged over valid pixels.

    Per pixel ``|<G_k(q) / |G_k(q)|>|``, the length of the mean unit phasor of the aligned
    members' transforms; per shell its mean over the valid pixels. This is the PRTF of
    Chapman et al. 2006, ``|<G(q)>| / A(q)``, with each member's modulus set to the
    measured one (a member that fits the data has ``|G| = A``), so it is at most 1 by
    construction, in every pixel and every shell, whatever the counts. Identical members
    give 1; members whose phases disagree at ``q`` average out there, down to about
    :func:`prtf_floor` for unrelated phases. (The ratio of shell sums
    ``sum |<G>| / sum A`` that this replaces is unbounded where most pixels count no
    photon: about 6 at high q on the real NADIA pattern.) Every valid pixel counts
    equally, measured zeros too: where the data hold no photon the members' phases are
    free, and the PRTF says so.

    Parameters
    ----------
    mean_phasor : (h, w) complex, ``|.| <= 1``
        :attr:`AlignedSums.mean_phasor`, centred.
    amplitude : (h, w) float
        The measured amplitude; pixels where it is not finite are left out.
    valid : (h, w) bool
        Measured pixels.

    Returns
    -------
    q : (K + 1,) float64
        Shell frequency in cycles per real-space pixel, ``k / h`` for shell ``k`` (pixels
        along the first axis when the array is not square).
    prtf : (K + 1,) float64
        In [0, 1]; NaN for shells without a valid pixel (the missing centre).
    """
    if not (mean_phasor.shape == amplitude.shape == valid.shape):
        raise ValueError(f"prtf: shapes differ: {mean_phasor.shape}, {amplitude.shape}, "
                         f"{valid.shape}")
    length = np.abs(mean_phasor)
    if np.nanmax(length, initial=0.0) > 1.0 + 1e-6:
        raise ValueError("prtf: takes the mean unit phasor (AlignedSums.mean_phasor), got "
                         f"values up to {np.nanmax(length):.3g}")
    shells = shell_index(amplitude.shape)
    use = valid & (shells >= 0) & np.isfinite(amplitude) & np.isfinite(length)
    n = int(shells.max()) + 1
    num = np.bincount(shells[use], weights=np.minimum(length[use], 1.0), minlength=n)
    count = np.bincount(shells[use], minlength=n)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(count > 0, num / count, np.nan)
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
        shell, and the resolution is better than ``half_period_px``, which the edge of the
        data limits (:func:`describe_resolution` says it that way).
    edge : float
        The PRTF at the last shell with data: how far above the threshold the curve ends.
    """

    q_cut: float
    half_period_px: float
    reached: bool
    edge: float = float("nan")


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
    return Resolution(q_cut=q_cut, half_period_px=1.0 / (2.0 * q_cut), reached=reached,
                      edge=float(curve[ok[-1]]))


def describe_resolution(half_period_px: float, reached: bool, pixel_m: float | None = None,
                        edge: float | None = None) -> str:
    """The resolution as a reader should take it: ``"1.42 px (3.69 nm)"`` where the PRTF
    crosses the threshold; ``"better than 1.00 px (2.60 nm) (the data edge; PRTF 0.81
    there)"`` where it never does, since the curve then says only that the data end first.
    """
    text = f"{half_period_px:.2f} px"
    if pixel_m:
        text += f" ({half_period_px * pixel_m * 1e9:.2f} nm)"
    if reached:
        return text
    at_edge = "" if edge is None or not np.isfinite(edge) else f"; PRTF {edge:.2f} there"
    return f"better than {text} (the data edge{at_edge})"


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
        above = ref > level * ref.max()
        # the indices along each axis where the model shows (rows, columns; planes in 3D)
        spans = [np.flatnonzero(above.any(axis=tuple(j for j in range(ref.ndim) if j != i)))
                 for i in range(ref.ndim)]
        box = tuple(_widen(idx[0], idx[-1] + 1, margin, n)
                    for idx, n in zip(spans, ref.shape))
        aligned, ref = aligned[box], ref[box]
    return ssim(aligned, ref)


def _widen(start: int, stop: int, margin: int, n: int, least: int = 7) -> slice:
    start, stop = max(0, start - margin), min(n, stop + margin)
    while stop - start < least and (start > 0 or stop < n):
        start, stop = max(0, start - 1), min(n, stop + 1)
    return slice(start, stop)
