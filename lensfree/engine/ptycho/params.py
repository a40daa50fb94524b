"""Ptychography reconstruction parameters: the engines and their steps."""

from __future__ import annotations

from dataclasses import dataclass

from lensfree.engine.params import (
    at_least,
    check_fields,
    non_negative,
    one_of,
    optional,
    param,
    positive,
    within,
)

ENGINES = ("epie", "rpie", "parallel", "lsqml", "dm")


@dataclass(frozen=True)
class PtychoParams:
    """Reconstruction parameters.

    engine : ``epie``, ``rpie`` (serial), ``parallel`` (blocks reduced every iteration),
        ``lsqml`` (the parallel form with each position's optimal step, two passes) or
        ``dm`` (the difference map: every position's exit waves kept between iterations,
        the overlap projection from the blocks' sums, one batch).
    alpha : object step. ePIE: ``alpha conj(P) dpsi / max|P|^2`` (1.0); rPIE: the
        regularisation weight of its denominator (0.1 is Maiden 2017's choice); DM:
        ptypy's ``alpha``, the field projected being ``(1 + alpha) P O_j - alpha psi_j``
        (1.0: the standard difference map).
    beta : probe step of ePIE/rPIE (1.0).
    probe_start : first iteration that updates the probe (the object settles first).
    batches : parallel and LSQML: every block's positions dealt into this many interleaved
        batches, each one reduction updating object and probe in turn (None: about three
        positions per pixel in each, from the scan's overlap, :mod:`.batches`).
    regularisation : parallel form: ``O = (num + r O_old) / (den + r)``, ``r`` this
        fraction of the batch's ``max(den)``; keeps weakly lit pixels from blowing up
        (as rPIE's denominator does). DM: the same in its overlap projection (ptypy's
        object and probe inertia).
    fourier_relax : DM: ptypy's ``fourier_relax_factor``, the Fourier projection stopping
        at a Fourier error of ``fourier_relax^2 / 4`` times the frame's counts, about
        its Poisson noise at 0.05 (ptypy's default): noisy data are not forced to fit
        their noise, which otherwise carries the difference map away from the solution
        (0: the plain projection).
    momentum : parallel and LSQML: after every iteration from ``probe_start`` the object
        and probe move on by this gain times their velocity, the iteration's change plus
        0.7 times the last velocity (mPIE's momentum, Maiden, Johnson & Li 2017, taken
        once an iteration, with mPIE's gain 0.3 and friction 0.7; 0 turns it off). At 50
        iterations of 200 positions of 128^2 it lowers the object error by 3-10% on every
        one of four simulated scans (median 0.0412 -> 0.0389) and costs ~2% at 200.
    refine_positions, refine_start, refine_every : refine every position every
        ``refine_every`` iterations from iteration ``refine_start`` (1: after the first
        iteration's object, as PtyLab's pcPIE starts; on 200 positions of 128^2 2 px RMS
        off, from 1 instead of 10 lowers the object error at 50 iterations by 0-11% on
        each of four scans, and changes nothing at 200 on 289 of 64^2). The difference
        map's default is 10: its exit waves must settle first (from 1 its object error
        there is 0.097-0.101 at 50 iterations, from 10 0.074-0.079, and the same 0.037
        at 200 on 289 of 64^2; from 20 that one falls back to 0.062).
    refine_gain, max_step : ``dr <- clip(gain * dr, -max_step, max_step)`` px per update.
    refine_affine : for this many iterations from ``refine_start`` the corrections lose
        their affine part (scale, shear, rotation), which creeps while object and probe
        are still poor; after that it is kept, as random position errors have one of
        their own. Always removed in the near field, where it trades against the
        propagation.
    """

    engine: str = param("parallel", "serial ePIE/rPIE, or blocks reduced every iteration "
                        "(parallel, LSQML with optimal steps, the difference map)",
                        choices=ENGINES, check=one_of(*ENGINES))
    iterations: int = param(100, "iterations", check=at_least(1))
    probe_modes: int = param(1, "incoherent probe modes", check=within(1, 16, closed="both"))
    alpha: float | None = param(None, "object step (DM: ptypy's alpha)",
                                check=optional(within(0, 2, closed="hi")),
                                default_help="ePIE 1, rPIE 0.1, DM 1")
    beta: float = param(1.0, "ePIE/rPIE probe step", check=within(0, 2, closed="both"))
    probe_start: int = param(2, "first iteration updating the probe", check=at_least(0))
    batches: int | None = param(None, "parallel/LSQML: batches of interleaved positions "
                                "per iteration, each updating object and probe",
                                check=optional(within(1, 256, closed="both")),
                                default_help="from the overlap, 1-16")
    regularisation: float = param(0.05, "parallel/LSQML: weight of the old object, as a "
                                  "fraction of the batch's largest illumination",
                                  check=non_negative)
    fourier_relax: float = param(0.05, "DM: the Fourier projection's power bound, as "
                                 "ptypy's fourier_relax_factor (0: none)",
                                 check=within(0, 1, closed="lo"))
    momentum: float = param(0.3, "parallel/LSQML: gain of mPIE's momentum on each iteration's "
                            "change of object and probe (0: none)",
                            check=within(0, 1, closed="both"))
    refine_positions: bool = param(False, "refine every position", action="store_true")
    refine_start: int | None = param(None, "refine positions from this iteration",
                                     check=optional(at_least(0)), default_help="1, DM 10")
    refine_every: int = param(1, "refine positions every k iterations", check=at_least(1))
    refine_gain: float = param(1.0, "gain of the position step", check=positive)
    max_step: float = param(0.5, "px per position update and axis", check=positive)
    refine_affine: int = param(20, "iterations from --refine-start whose corrections lose "
                               "their affine part (always in the near field)",
                               check=at_least(0))
    seed: int = param(0, "seed of the serial engines' position order", execution="seed")

    def __post_init__(self):
        check_fields(self)
        if self.engine == "dm" and self.batches not in (None, 1):
            raise ValueError(f"batches={self.batches}: the difference map projects every "
                             f"exit wave at once (one batch)")

    @property
    def object_step(self) -> float:
        if self.alpha is not None:
            return self.alpha
        return 0.1 if self.engine == "rpie" else 1.0

    @property
    def first_refinement(self) -> int:
        """``refine_start``, or the engine's default when it is None."""
        if self.refine_start is not None:
            return self.refine_start
        return 10 if self.engine == "dm" else 1

    def refines_at(self, iteration: int) -> bool:
        start = self.first_refinement
        return (self.refine_positions and iteration >= start
                and (iteration - start) % self.refine_every == 0)
