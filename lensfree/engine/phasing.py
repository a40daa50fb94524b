"""Iterative phase retrieval: parameters, the state of one run, error metrics, ``run``.

SCIENCE.md section 2. Notation: ``rho`` object (exit wave), ``F`` the DFT over every
axis (2D patterns and 3D volumes alike), ``A`` measured Fourier amplitude, ``V`` valid
(measured) pixels, ``S`` support, ``rho_m = F^-1 P_M F rho`` the object after the modulus
projection.

Layouts: ``amplitude`` and ``valid`` come centred (zero frequency at ``(h // 2, w // 2)``,
as stored) and are shifted once at set-up; inside the loop the transform has zero
frequency at ``[0, 0]``. Real-space arrays (``rho``, ``support``) are used as given.

The algorithms are the schedule's steps (:class:`Step`, :class:`ER`, :class:`HIO`,
:class:`RAAR`, :func:`parse_schedule`, :func:`as_schedule`, :func:`n_iterations`, in
:mod:`lensfree.engine.schedule`); each applies itself to the run's state. The projections
and support estimates (:func:`modulus_projection` aside) live in
:mod:`lensfree.engine.projections`. Both modules' names are re-exported here.

Memory and speed: one run works in place on two complex64 and five float32 arrays of
its size (plus boolean masks), about 40 bytes a pixel (a third complex array for RAAR and
positivity); an iteration allocates nothing. The ``1 / N`` of the inverse transform and
the algorithm's scalar (``-beta`` for HIO) ride on the modulus factor, ``||rho_m||^2``
comes from Parseval and the measured pixels' part of it is computed once, and each run
transforms through plans of its own bound to its arrays (no per-call checks). An HIO or
ER iteration is two FFTs plus two compiled passes (:mod:`lensfree.engine.kernels`): the
modulus projection, missing pixels included, and the support update. One whose errors
are recorded (every :attr:`PhasingParams.error_every`-th) runs the same two passes, which
also write the terms of ``R_F`` and ``E_S`` for numpy to sum, and computes the same
iterate. RAAR and positivity update ``rho`` in numpy passes.

References
----------
J. R. Fienup, Appl. Opt. 21, 2758 (1982) (ER, HIO). D. R. Luke, Inverse Problems 21, 37
(2005) (RAAR). S. Marchesini et al., Phys. Rev. B 68, 140101 (2003) (shrinkwrap).
W. J. Huang, J. M. Zuo et al., Nature Physics 5, 129 (2009) (G/B/M regions).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .fft import empty_aligned, get_fftn
from .params import check_fields, non_negative, one_of, param, within
from .projections import (
    autocorrelation_support,
    fourier_r_factor,
    huang_regions,
    modulus_inplace,
    shrinkwrap,
    support_projection,
)
from .schedule import (
    ER,
    HIO,
    RAAR,
    PhasingState,
    Step,
    as_schedule,
    n_iterations,
    parse_schedule,
)

log = logging.getLogger(__name__)

__all__ = [
    "ER", "HIO", "RAAR", "PhasingErrors", "PhasingParams", "PhasingState", "Step",
    "as_schedule", "autocorrelation_support", "fourier_r_factor", "huang_regions",
    "modulus_projection", "n_iterations", "parse_schedule", "run", "shrinkwrap",
    "support_projection",
]

POSITIVITY = ("none", "real", "real-nonneg")


def _positive_integer(value) -> str | None:
    return None if int(value) == value and value >= 1 else "must be a positive integer"


# ----------------------------------------------------------------------------- parameters


@dataclass(frozen=True)
class PhasingParams:
    """Phasing parameters (SCIENCE.md section 2), with their defaults.

    Each field is a :func:`lensfree.engine.params.param`: its default, a one-line
    ``metadata["help"]`` and a ``"check"`` (``"choices"`` too where the values are a fixed
    set), from which the command line and run configs are made.

    Attributes
    ----------
    beta : float
        HIO / RAAR feedback, 0.9.
    shrinkwrap_sigma_start, shrinkwrap_sigma_end : float
        Gaussian blur (pixels) of the support update, interpolated linearly over the run
        from 3 to 1.
    shrinkwrap_threshold : float
        New support: blurred ``|rho|`` above this fraction of its maximum, 0.2. (0.15 with
        the blur ending at 1.5, the earlier defaults, recovered none of 20 starts at 64^2.)
    shrinkwrap_opening : bool
        Apply a morphological opening to the new support (the hu2025 baseline), False.
    positivity : {"none", "real", "real-nonneg"}
        ``"real"``: non-negative real part inside the support (hu2025); ``"real-nonneg"``:
        the object is real and non-negative. Default ``"none"``.
    huang_mode : bool
        Use Huang's G/B/M reciprocal-space regions (see :func:`huang_regions`), False.
    huang_alpha : float
        Weight of the capped amplitude in region B, 0.3.
    huang_sigma : float
        Standard deviation of the background intensity, in counts (required > 0 when
        ``huang_mode``). Region B is capped at amplitude ``alpha min(A, sqrt(3 sigma))``:
        "an upper limit of three times the background noise on the intensity" (Huang
        2009, Methods); SCIENCE.md's ``sqrt(3) sigma`` reads sigma as an amplitude.
    fft_threads : int
        FFTW threads per transform, 1.
    error_every : int
        Record ``R_F`` and ``E_S`` every ``error_every``-th iteration (iterations 0, k,
        2k, ... of the whole schedule) and in the last iteration of every step; the other
        entries of :class:`PhasingErrors` are NaN. The iterates do not depend on it, and
        ``final_r_fourier`` (a member's score) is always computed. 10; 1 records every
        iteration, at about a tenth more time per HIO iteration (the error passes).
    """

    beta: float = param(0.9, "HIO/RAAR feedback", check=within(0, 1.5, closed="hi"))
    shrinkwrap_sigma_start: float = param(
        3.0, "shrinkwrap blur, px, at the start of the run (linear to the end)",
        check=non_negative)
    shrinkwrap_sigma_end: float = param(1.0, "shrinkwrap blur, px, at the end of the run",
                                        check=non_negative)
    shrinkwrap_threshold: float = param(
        0.2, "shrinkwrap: blurred |rho| above this fraction of its maximum", check=within(0, 1))
    shrinkwrap_opening: bool = param(False, "morphological opening of every new support")
    positivity: str = param("none", "object constraint inside the support",
                            check=one_of(*POSITIVITY), choices=POSITIVITY)
    huang_mode: bool = param(False, "Huang's G/B/M regions in reciprocal space")
    huang_alpha: float = param(0.3, "weight of the capped amplitude in Huang's region B")
    huang_sigma: float = param(
        0.0, "background intensity std for Huang's regions, counts (> 0 with huang_mode)")
    fft_threads: int = param(1, "FFTW threads per transform")
    error_every: int = param(
        10, "record R_F and E_S every K-th iteration (and each step's last); 1 records "
        "every iteration, ~10 percent slower", check=_positive_integer)

    def __post_init__(self):
        check_fields(self)
        if self.huang_mode and self.huang_sigma <= 0:
            raise ValueError("huang_mode needs huang_sigma > 0 (background std, counts)")


@dataclass(frozen=True, eq=False)
class PhasingErrors:
    """Error metrics of a run.

    Attributes
    ----------
    r_fourier : (n_iter,) float64
        ``R_F = sum_V ||F rho| - A| / sum_V A`` of the iterate entering each iteration;
        NaN in iterations not recorded (:attr:`PhasingParams.error_every`).
    e_support : (n_iter,) float64
        ``E_S = sqrt(sum_{r not in S} |rho_m|^2 / sum |rho_m|^2)`` in each iteration; NaN
        where not recorded.
    final_r_fourier : float
        ``R_F`` of the returned object.
    """

    r_fourier: np.ndarray = field(repr=False)
    e_support: np.ndarray = field(repr=False)
    final_r_fourier: float = math.nan


# ----------------------------------------------------------------------------- projections


def _targets(amplitude, valid, params) -> tuple[np.ndarray, np.ndarray]:
    """(measured A with 0 where missing, modulus target) as float32; the same array
    unless Huang mode caps region B at ``alpha min(A, sqrt(3 sigma))``."""
    measured = np.where(valid, amplitude, 0).astype(np.float32)
    if not params.huang_mode:
        return measured, measured
    b = huang_regions(amplitude, valid, params.huang_sigma)
    capped = params.huang_alpha * np.minimum(measured, np.sqrt(3 * params.huang_sigma))
    return measured, np.where(b, capped, measured).astype(np.float32)


def modulus_projection(
    psi: np.ndarray, amplitude: np.ndarray, valid: np.ndarray,
    params: PhasingParams | None = None,
) -> tuple[np.ndarray, float]:
    """Modulus projection ``P_M`` of a Fourier field, and its ``R_F``.

    ``psi' = A psi / |psi|`` where measured, ``psi' = psi`` where missing; with
    ``params.huang_mode``, ``psi' = alpha min(A, sqrt(3 sigma)) psi / |psi|`` in region B
    (Huang 2009). Elementwise, so any layout works as long as all three agree.

    Returns
    -------
    psi_projected : complex64 array (a new array)
    r_fourier : float
        ``sum_V ||psi| - A| / sum_V A``.
    """
    params = params or PhasingParams()
    out = np.array(psi, dtype=np.complex64)
    measured, target = _targets(amplitude, valid, params)
    a_sum = float(measured.sum(dtype=np.float64))
    terms = (np.empty(out.shape, np.float32), np.empty(out.shape, np.float32))
    r_sum, _ = modulus_inplace(out, target, np.ascontiguousarray(valid, bool), 1.0, True,
                               measured, terms)
    return out, r_sum / a_sum if a_sum > 0 else math.nan


# ----------------------------------------------------------------------------- state


class _State:
    """The preallocated state of one run (a :class:`PhasingState`); the steps of the
    schedule work in place on it."""

    def __init__(self, amplitude, valid, rho0, support, params: PhasingParams):
        shape = amplitude.shape
        self.beta, self.positivity, self.size = params.beta, params.positivity, amplitude.size
        fft = get_fftn(shape, np.complex64, params.fft_threads)
        self.fft = fft
        measured, target = _targets(amplitude, valid, params)
        self.a_sum = float(measured.sum(dtype=np.float64))
        self.measured = np.fft.ifftshift(measured)
        self.base = self.measured if target is measured else np.fft.ifftshift(target)
        self.base_energy = float(np.dot(self.base.ravel().astype(np.float64),
                                        self.base.ravel().astype(np.float64)))
        self.target = np.empty(shape, np.float32)  # scale * base (not read where missing)
        self.scale = math.nan
        self.valid = np.ascontiguousarray(np.fft.ifftshift(valid))
        self.rho, self.psi = (empty_aligned(shape, np.complex64) for _ in range(2))
        self.w = self.psi  # the inverse FFT runs in place: w = scale rho_m
        # plans of their own on rho and psi, made before they are filled
        self._forward = fft.bind(self.rho, self.psi, "forward")
        self._inverse = fft.bind(self.psi, self.psi, "inverse")
        self._scratch = None
        self.terms = tuple(np.empty(shape, np.float32) for _ in range(2))  # of the sums
        self.rho[...] = rho0
        self.inside = np.empty(shape, bool)
        self.outside = np.empty(shape, bool)
        self.inside_f = np.empty(shape, np.float32)
        self.good = np.empty(shape, bool)
        self.set_support(support)

    def set_support(self, support: np.ndarray) -> None:
        np.copyto(self.inside, support)
        np.logical_not(support, out=self.outside)
        np.copyto(self.inside_f, support)

    def fourier(self, scale: float, record: bool = True) -> tuple[float, float]:
        """``w <- scale rho_m = scale F^-1 P_M F rho``; returns ``(R_F, ||w||^2)`` (NaNs
        unless ``record``).

        ``scale / N`` rides on the modulus factor, so the inverse FFT is left unnormalised.
        """
        if scale != self.scale:
            np.multiply(self.base, np.float32(scale / self.size), out=self.target)
            self.scale = scale
        r_sum, energy = self._project(scale, False, record)
        w00 = self.w[(0,) * self.w.ndim]
        if w00 != w00 or abs(w00) == math.inf:  # a 0/0 in psi reaches every pixel of w
            r_sum, energy = self._project(scale, True, record)
        return r_sum / self.a_sum, energy * self.size  # Parseval, unnormalised inverse

    def _project(self, scale, guard, record):
        self._forward()
        factor = scale / self.size
        r_sum, floating = modulus_inplace(self.psi, self.target, self.valid, factor, guard,
                                          self.measured if record else None, self.terms)
        self._inverse()
        return r_sum, self.base_energy * float(np.float32(factor)) ** 2 + floating

    @property
    def scratch(self) -> np.ndarray:
        """A third complex array, only for the general (positivity, RAAR) forms."""
        if self._scratch is None:
            self._scratch = empty_aligned(self.rho.shape, np.complex64)
        return self._scratch

    def outside_energy(self) -> float:
        """``||w outside S||^2``."""
        np.multiply(self.w, self.inside_f, out=self.scratch)
        np.subtract(self.w, self.scratch, out=self.scratch)
        return float(np.vdot(self.scratch, self.scratch).real)

    def r_factor(self) -> float:
        """``R_F`` of ``rho`` (``psi`` is left projected: scratch from here on)."""
        self._forward()
        r_sum, _ = modulus_inplace(self.psi, self.target, self.valid, 1.0, False,
                                   self.measured, self.terms)
        return r_sum / self.a_sum


def run(
    amplitude: np.ndarray, valid: np.ndarray, rho0: np.ndarray, support: np.ndarray,
    schedule: str | Sequence[Step], params: PhasingParams | None = None,
) -> tuple[np.ndarray, np.ndarray, PhasingErrors]:
    """Run a phasing schedule from ``rho0``.

    Parameters
    ----------
    amplitude : (h, w) or (d, h, w) float array, centred
        Measured ``A = sqrt(I)``, zero frequency at ``(h // 2, w // 2)`` (``(d // 2, h //
        2, w // 2)``); every other array has the same shape.
    valid : (h, w) bool array, centred
        True where measured; elsewhere the Fourier field floats.
    rho0 : (h, w) complex array
        Starting object (real space, as the support).
    support : (h, w) bool array
        Starting support ``S``.
    schedule : str or sequence of Step
        A schedule string (:func:`parse_schedule`, e.g. ``"HIO:400,ER:100;shrinkwrap=50"``)
        or the steps it parses to: parse once and pass the steps to many runs.
    params : PhasingParams, optional
        Algorithm parameters; defaults of :class:`PhasingParams`.

    Returns
    -------
    rho : (h, w) complex64
        Final object (the iterate after the last step; end with ER for a clean support).
    support : (h, w) bool
        Final support (changed only by shrinkwrap).
    errors : PhasingErrors
        ``R_F`` and ``E_S`` per iteration (NaN where ``params.error_every`` skipped them),
        and ``R_F`` of ``rho``.
    """
    params = params or PhasingParams()
    steps = as_schedule(schedule)
    shape = np.shape(amplitude)
    if len(shape) not in (2, 3) or any(np.shape(a) != shape for a in (valid, rho0, support)):
        raise ValueError("amplitude, valid, rho0 and support must be 2D or 3D arrays of one "
                         "shape: "
                         f"{[np.shape(a) for a in (amplitude, valid, rho0, support)]}")
    valid = np.asarray(valid, dtype=bool)
    if not valid.any():
        raise ValueError("no valid pixel in the diffraction pattern")
    state = _State(np.asarray(amplitude), valid, rho0, np.asarray(support, bool), params)
    n_total = sum(step.iterations for step in steps)
    r_fourier, e_support = np.full(n_total, math.nan), np.full(n_total, math.nan)
    with np.errstate(divide="ignore", invalid="ignore"):  # 0/0 is caught and redone
        _iterate(state, steps, params, r_fourier, e_support)
    errors = PhasingErrors(r_fourier, e_support, state.r_factor())
    return state.rho, state.inside.copy(), errors


def _iterate(state, steps, p, r_fourier, e_support) -> None:
    n_total, it, every = len(r_fourier), 0, int(p.error_every)
    for step in steps:
        iterate = step.iterate
        last = it + step.iterations - 1
        log.debug("%s x %d from iteration %d", step.name, step.iterations, it)
        for _ in range(step.iterations):
            record = it % every == 0 or it == last
            r_fourier[it], e_support[it] = iterate(state, record)
            it += 1
            if step.shrinkwrap and it % step.shrinkwrap == 0 and it < n_total:
                frac = (it - 1) / max(n_total - 1, 1)
                sigma = p.shrinkwrap_sigma_start + frac * (
                    p.shrinkwrap_sigma_end - p.shrinkwrap_sigma_start)
                state.set_support(shrinkwrap(state.rho, sigma, p.shrinkwrap_threshold,
                                             p.shrinkwrap_opening))
