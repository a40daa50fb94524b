"""Guided HIO populations: seeds, random starts, breeding, members, scores.

SCIENCE.md section 3 (Chen, Miao, Wang & Lee, PRB 76, 064113 (2007); chen2024 2.2).

Generation 0: every member starts from the measured amplitudes with its own uniformly
random phases and runs the phasing schedule. The best member (lowest :func:`score`)
becomes the *guide*. In generation ``g > 0`` member ``k`` starts from
``breed(parent_k, guide)``: its parent aligned to the guide (translation, twin, global
phase), then the geometric mean of the magnitudes with the mean of the phases.

What travels between generations: member ``k`` of generation ``g`` is defined by its own
previous object (the paper's rule; the caller reads it from the member's own chunk of
``phasing/objects``, which that member's task wrote), the guide and its seed. Only the
guide (one object plus its support) is shared by all members. With ``previous=None`` the
parent is instead a fresh random start from the member's seed, so that a member needs
nothing but the guide; both are deterministic functions of their inputs.

Seeds come from :func:`member_seed` (run seed, generation, member index), never from which
worker runs a member, so a population is the same on 1 worker or 100.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from . import kernels, phasing
from .align import align

__all__ = ["breed", "member_seed", "member_start", "run_member", "run_population", "score"]


def member_seed(run_seed: int, generation: int, member: int) -> int:
    """The seed of one member: ``SeedSequence(run_seed, spawn_key=(generation, member))``.

    Independent streams for every (generation, member), reproducible from the run seed
    alone. Returns a 64-bit unsigned integer for :func:`numpy.random.default_rng`.
    """
    if min(run_seed, generation, member) < 0:
        raise ValueError(f"seeds and indices must be >= 0: {run_seed}, {generation}, {member}")
    sequence = np.random.SeedSequence(entropy=int(run_seed), spawn_key=(generation, member))
    return int(sequence.generate_state(1, dtype=np.uint64)[0])


def member_start(
    amplitude: np.ndarray, valid: np.ndarray, support: np.ndarray, seed: int
) -> np.ndarray:
    """Random start: ``P_S F^-1[A exp(i phi)]``, ``phi`` uniform in ``[0, 2 pi)``.

    Parameters
    ----------
    amplitude, valid : (h, w) or (d, h, w) arrays, centred
        Measured amplitude and valid mask (missing pixels start at 0).
    support : (h, w) bool
        Support the start is restricted to.
    seed : int
        Seed of :func:`numpy.random.default_rng` (see :func:`member_seed`).

    Returns
    -------
    (h, w) complex64
    """
    rng = np.random.default_rng(seed)
    phase = rng.uniform(0.0, 2 * np.pi, size=np.shape(amplitude))
    field = np.where(valid, amplitude, 0) * np.exp(1j * phase)
    rho = np.fft.ifftn(np.fft.ifftshift(field))  # ifft2 in 2D, the same bits
    return np.where(support, rho, 0).astype(np.complex64)


def breed(member: np.ndarray, best: np.ndarray, upsample: int = 20) -> np.ndarray:
    """GHIO offspring of ``member`` and the guide ``best``.

    ``member`` is aligned to ``best`` (:func:`lensfree.engine.align.align`), then
    ``g' = sqrt(|g_k| |g_best|) exp(i (phi_k + phi_best) / 2)``. The mean phase is taken
    from the sum of the unit phasors, ``u_k + u_best = 2 cos(d / 2) exp(i (phi_best +
    d / 2))`` with ``d`` the phase difference wrapped to ``(-pi, pi]``, so it lies on the
    short arc between the two and never jumps by ``pi`` at the wrap; where the phases are
    exactly opposite (or a magnitude is 0) the guide's phase is kept. For real positive
    objects this is the paper's ``sqrt(g_k g_best)``.
    """
    aligned, _ = align(member, best, upsample=upsample)
    # one compiled pass (float32, |g| as sqrt(re^2 + im^2)) where numpy took eight
    aligned = np.ascontiguousarray(aligned, np.complex64)
    best = np.ascontiguousarray(best, np.complex64)
    out = np.empty(aligned.shape, np.complex64)
    kernels.breed_mean(aligned.reshape(-1), best.reshape(-1), out.reshape(-1))
    return out


def run_member(
    amplitude: np.ndarray, valid: np.ndarray, support: np.ndarray,
    schedule: str | Sequence[phasing.Step], params: phasing.PhasingParams | None,
    seed: int, guide: np.ndarray | None = None, previous: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, phasing.PhasingErrors]:
    """Run one population member.

    Parameters
    ----------
    amplitude, valid : (h, w) arrays, centred
        Measured amplitude and valid mask.
    support : (h, w) bool
        Starting support: the initial (autocorrelation) support in generation 0, the
        guide's final support afterwards (the bred start is aligned to the guide).
    schedule : str or tuple of Step
        The phasing steps, a string or already parsed
        (:func:`lensfree.engine.schedule.as_schedule`): parse once, then pass the steps to
        every member. Passed to :func:`lensfree.engine.phasing.run` with ``params``.
    params : PhasingParams or None
        Algorithm parameters; None takes the defaults.
    seed : int
        The member's seed, :func:`member_seed` ``(run_seed, generation, member)``.
    guide : (h, w) complex, optional
        Best object of the previous generation; None in generation 0 (random start).
    previous : (h, w) complex, optional
        This member's own object from the previous generation (the paper's parent); None
        breeds a fresh random start from ``seed`` with the guide instead.

    Returns
    -------
    rho, support, errors
        As :func:`lensfree.engine.phasing.run`.
    """
    if guide is None:
        rho0 = member_start(amplitude, valid, support, seed)
    else:
        parent = previous if previous is not None else member_start(
            amplitude, valid, support, seed)
        rho0 = breed(parent, guide)
    return phasing.run(amplitude, valid, rho0, support, schedule, params)


def score(errors: phasing.PhasingErrors) -> float:
    """A member's score, lower is better: the Fourier R-factor of its final object."""
    return float(errors.final_r_fourier)


def run_population(
    amplitude: np.ndarray, valid: np.ndarray, support: np.ndarray,
    schedule: str | Sequence[phasing.Step], params: phasing.PhasingParams | None = None,
    run_seed: int = 0, members: int = 8, generations: int = 3, parents: str = "previous",
) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray]:
    """The whole GHIO population in one process, member after member (the reference the
    distributed back ends must reproduce).

    ``parents="previous"`` uses each member's own previous object (the paper),
    ``"random"`` a fresh random start bred with the guide. Returns the last generation's
    objects and supports, and the ``(generations, members)`` scores.
    """
    if parents not in ("previous", "random"):
        raise ValueError(f"parents must be 'previous' or 'random', got {parents!r}")
    steps = phasing.as_schedule(schedule)  # parsed once for every member and generation
    scores = np.empty((generations, members))
    objects: list[np.ndarray] = []
    supports: list[np.ndarray] = []
    guide = guide_support = None
    for g in range(generations):
        start_support = support if guide is None else guide_support
        results = []
        for k in range(members):
            previous = objects[k] if (guide is not None and parents == "previous") else None
            results.append(run_member(amplitude, valid, start_support, steps, params,
                                      member_seed(run_seed, g, k), guide, previous))
        objects = [r[0] for r in results]
        supports = [r[1] for r in results]
        scores[g] = [score(r[2]) for r in results]
        best = int(np.argmin(scores[g]))
        guide, guide_support = objects[best], supports[best]
    return objects, supports, scores
