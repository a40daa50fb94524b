"""Stage 2 across workers: GHIO populations of phase-retrieval members.

Each generation is one ``backend.map`` over its members. A member's task is small
(generation, member index); the amplitude, mask, starting support and the previous
generation's best object (the guide) travel once per generation as the shared value.
Only the guide moves between generations, never the population: every member reads its
own previous object from the store (or keeps it, where the same process ran it last) and
writes its new one there itself.

Store layout and resuming (``phasing/``):
- ``population`` (2, M, h, w) complex64 and ``population_support`` (2, M, h, w) bool
  ((2, M, d, h, w) for a 3D ``ensemble/amplitude``: every array here takes the pattern's
  shape, 2D or 3D), one chunk per member: generation g (all but the last) writes slot
  ``g % 2`` and reads slot ``(g - 1) % 2``, so recomputing an unfinished member reads
  exactly what it read the first time. The last generation writes ``objects`` and
  ``supports`` (M, h, w).
- ``member_errors`` (G, M), one chunk per entry, NaN until the member's worker has
  written its object: its final R_F is that member's completion marker, written last.
- ``errors`` (G, M): final R_F of every member, written by the root at the end of each
  generation, and the attr ``generations_complete`` counts finished generations.
- ``r_fourier`` and ``e_support`` (G, M, n_iter): the errors of every
  ``--error-every``-th iteration and of each step's last (NaN between).
A rerun with the same parameters skips finished generations and finished members.
"""

from __future__ import annotations

import functools
import logging
import threading
from dataclasses import dataclass

import numpy as np
import zarr
from zarr.codecs import ZstdCodec

from lensfree.engine import ghio, phasing
from lensfree.engine.cdip import CdipParams
from lensfree.engine.params import at_least, check_fields, param, within
from lensfree.engine.schedule import parse_schedule
from lensfree.errors import LensfreeError
from lensfree.io import runstore
from lensfree.launch import stage_phase_cdip
from lensfree.launch.backends import Backend
from lensfree.launch.options import Together
from lensfree.launch.stage import Context, Execution, Stage, run_stage
from lensfree.launch.timing import Clock

log = logging.getLogger(__name__)


def _schedule_error(text) -> str | None:
    try:
        parse_schedule(text)
    except ValueError as exc:
        return str(exc)
    return None


@dataclass(frozen=True)
class PhaseParams:
    """Stage 2 parameters.

    population, generations : GHIO members and generations (the paper: 100 and 10).
    schedule : phasing steps of every member in every generation, see
        `schedule.parse_schedule`.
    support_threshold : starting support from the autocorrelation thresholded at this
        fraction of its maximum, when the run store holds no ``ensemble/support``.
    phasing : algorithm parameters (beta, shrinkwrap, positivity, Huang's mode).
    engine : ``ghio`` (the default) or ``cdip``, neural fields without a support
        (`lensfree.engine.cdip`, parameters in ``cdip``); CDIP members do not breed, so
        its population is one generation (``generations`` becomes 1) and ``schedule``,
        ``support_threshold`` and ``phasing`` are not used.
    """

    engine: str = param("ghio", "phasing engine: GHIO populations, or CDIP neural fields "
                        "without a support (needs the cdip extra)", choices=("ghio", "cdip"))

    population: int = param(100, "members M", check=at_least(1))
    generations: int = param(10, "generations G", check=at_least(1))
    schedule: str = param("HIO:400,ER:100;shrinkwrap=50", "steps of every member per "
                          "generation", check=_schedule_error)
    support_threshold: float = param(
        0.1, "starting support: autocorrelation above this fraction of its maximum, when "
        "ensemble/ has no support", check=within(0, 1))
    seed: int = param(0, "run seed", execution="seed")
    phasing: phasing.PhasingParams = param(default_factory=phasing.PhasingParams)
    cdip: CdipParams = param(default_factory=CdipParams, group="cdip engine")

    def __post_init__(self):
        check_fields(self)
        if self.engine == "cdip":
            object.__setattr__(self, "generations", 1)  # independent members, no breeding

    @functools.cached_property
    def steps(self) -> tuple:
        """The schedule parsed once into step objects."""
        return parse_schedule(self.schedule)

    @property
    def n_iterations(self) -> int:
        return sum(s.iterations for s in self.steps)


@dataclass(frozen=True)
class PhaseOptions:
    """``lensfree phase RUN.zarr [options]``."""

    run: str = param(None, "run store with a finished ensemble/ group (RUN.zarr)",
                     positional=True)
    params: PhaseParams = param(default_factory=PhaseParams)
    execution: Execution = param(default_factory=Execution, group="execution")

    option_groups = {"shrinkwrap_sigma": Together(
        ("shrinkwrap_sigma_start", "shrinkwrap_sigma_end"),
        "shrinkwrap blur at the start and the end of the run (linear between), px",
        ("START", "END"))}


@dataclass(frozen=True)
class _Shared:
    run: str
    amplitude: np.ndarray
    valid: np.ndarray
    support: np.ndarray
    guide: np.ndarray | None
    guide_support: np.ndarray | None
    params: PhaseParams
    stamp: str  # the phasing group's run_id: which incarnation of the group


_ARRAYS = ("objects", "supports", "population", "population_support", "r_fourier",
           "e_support", "member_errors")


@functools.lru_cache(maxsize=4)
def _arrays(run: str, stamp: str) -> dict:
    """The phasing group's arrays, opened once per worker process and group incarnation
    (opening them for every member cost ~15% of a small member's time).

    They write every chunk, even one that equals the fill value: zarr otherwise compares
    each chunk with it first, a pass over the chunk (~1 ms for a 256^2 object) that only
    saves storing an all-zero object. Reading gives the same values either way.
    """
    group = zarr.open_group(run, mode="r+")["phasing"]
    return {name: group[name].with_config({"write_empty_chunks": True}) for name in _ARRAYS}


#: this process's members of the generation it ran last, as stored: (run, stamp,
#: generation, member) -> object. A rank (or worker) that runs member m again in the next
#: generation starts from it instead of reading its chunk back (the same values).
_RECENT: dict = {}
_RECENT_BYTES = 256 * 2**20  # beyond this a member's object is read from the store
_RECENT_LOCK = threading.Lock()  # the local back end runs members on threads


def _remember(key: tuple, rho: np.ndarray) -> None:
    with _RECENT_LOCK:
        for old in [k for k in _RECENT if k[:2] != key[:2] or k[2] < key[2] - 1]:
            del _RECENT[old]  # another run or group, or a generation no longer read
        if sum(v.nbytes for v in _RECENT.values()) + rho.nbytes <= _RECENT_BYTES:
            _RECENT[key] = rho


def _recall(key: tuple) -> np.ndarray | None:
    with _RECENT_LOCK:
        return _RECENT.pop(key, None)


def _slot(group, generation: int, n_generations: int):
    """(objects array, supports array, index prefix) where ``generation`` writes."""
    if generation == n_generations - 1:
        return group["objects"], group["supports"], ()
    return group["population"], group["population_support"], (generation % 2,)


def phase_member(task: tuple[int, int], shared: _Shared) -> tuple[float, dict]:
    """Run member ``m`` of generation ``g`` and store its object.

    Returns its final R_F and the seconds it spent reading, computing and writing.
    """
    g, m = task
    p = shared.params
    clock = Clock()
    with clock("read"):
        group = _arrays(shared.run, shared.stamp)
        previous = None
        if g > 0:
            previous = _recall((shared.run, shared.stamp, g - 1, m))
            if previous is None:
                objs, _, prefix = _slot(group, g - 1, p.generations)
                previous = objs[(*prefix, m)]
    # the bred start is aligned to the guide, so it starts from the guide's support
    support = shared.support if shared.guide is None else shared.guide_support
    with clock("compute"):
        rho, support, errors = ghio.run_member(
            shared.amplitude, shared.valid, support, p.steps, p.phasing,
            seed=ghio.member_seed(p.seed, g, m), previous=previous, guide=shared.guide)
    with clock("write"):
        rho = rho.astype(np.complex64, copy=False)
        objs, sups, prefix = _slot(group, g, p.generations)
        runstore.write_together([(objs, (*prefix, m), rho), (sups, (*prefix, m), support),
                                 (group["r_fourier"], (g, m), errors.r_fourier),
                                 (group["e_support"], (g, m), errors.e_support)],
                                # the completion marker, after all the others
                                last=(group["member_errors"], (g, m),
                                      errors.final_r_fourier))
        if g < p.generations - 1:
            _remember((shared.run, shared.stamp, g, m), rho)
    return float(errors.final_r_fourier), clock.seconds


def read_phasing_input(run_path: str, support_threshold: float):
    """amplitude, valid and starting support from a finished ``ensemble/`` group."""
    group = runstore.require_complete(run_path, "ensemble")
    for name in ("amplitude", "valid"):
        if name not in group:
            raise LensfreeError(f"{run_path}: ensemble/ has no '{name}' array")
    amplitude = np.asarray(group["amplitude"][...], dtype=np.float32)
    valid = np.asarray(group["valid"][...], dtype=bool)
    if amplitude.ndim not in (2, 3):
        raise LensfreeError(f"{run_path}: ensemble/amplitude is {amplitude.ndim}D, expected "
                            "2D or 3D")
    if valid.shape != amplitude.shape:
        raise LensfreeError(f"{run_path}: ensemble/valid has shape {valid.shape}, "
                            f"amplitude {amplitude.shape}")
    bad = ~np.isfinite(amplitude) | (amplitude < 0)
    if (bad & valid).any():
        raise LensfreeError(f"{run_path}: ensemble/amplitude has {int((bad & valid).sum())} "
                            "NaN, inf or negative values on valid pixels")
    if not valid.any():
        raise LensfreeError(f"{run_path}: ensemble/valid marks no pixel as measured")
    if "support" in group:
        support = np.asarray(group["support"][...], dtype=bool)
        if support.shape != amplitude.shape:
            raise LensfreeError(f"{run_path}: ensemble/support has shape {support.shape}, "
                                f"amplitude {amplitude.shape}")
    else:
        support = phasing.autocorrelation_support(amplitude, valid, support_threshold)
    return amplitude, valid, support


class PhaseStage(Stage):
    name = "phase"
    help = "stage 2: phase-retrieval populations (GHIO, or CDIP neural fields)"
    group = "phasing"
    reads = ("ensemble",)
    resumable = True
    Options = PhaseOptions

    def open(self, opts):
        if opts.params.engine == "cdip":
            stage_phase_cdip.require(opts.params.cdip)
        inp = read_phasing_input(opts.run, opts.params.support_threshold)
        if opts.params.engine == "cdip" and inp[0].ndim != 2:
            raise LensfreeError(f"{opts.run}: the cdip engine phases 2D patterns only; "
                                f"ensemble/amplitude is {inp[0].shape} (use --engine ghio)")
        return inp

    def inputs(self, opts, inp) -> dict:
        return {"run": opts.run, "amplitude_shape": list(inp[0].shape)}

    def begin(self, group, opts, inp) -> None:
        p = opts.params
        if p.engine == "cdip":
            stage_phase_cdip.begin(group, p, inp[0].shape)
            return
        m, g, n = p.population, p.generations, p.n_iterations
        shape = tuple(inp[0].shape)  # (h, w) or (d, h, w): one chunk per member either way
        # zstd level 1: the ratio of zarr's default level (objects are 0 off the support)
        # at two thirds of its CPU per member
        fast = [ZstdCodec(level=1)]
        for name, dtype in (("population", np.complex64), ("population_support", bool)):
            runstore.create_array(group, name, shape=(2, m, *shape), chunks=(1, 1, *shape),
                                  dtype=dtype, compressors=fast)
        runstore.create_array(group, "objects", shape=(m, *shape), chunks=(1, *shape),
                              dtype=np.complex64, compressors=fast)
        runstore.create_array(group, "supports", shape=(m, *shape), chunks=(1, *shape),
                              dtype=bool, compressors=fast)
        # the arrays every member writes a small chunk of are not compressed: a write
        # costs a member less CPU (zarr's codecs), and the chunks are bytes
        runstore.create_array(group, "member_errors", shape=(g, m), chunks=(1, 1),
                              dtype=np.float64, fill_value=np.nan, compressors=None)
        runstore.create_array(group, "errors", shape=(g, m), chunks=(g, m), dtype=np.float64,
                              fill_value=np.nan)
        for name in ("r_fourier", "e_support"):
            runstore.create_array(group, name, shape=(g, m, n), chunks=(1, 1, n), dtype=np.float32,
                                  fill_value=np.nan, compressors=None)
        group.attrs.update({"schedule": p.schedule, "seed": p.seed,
                            "generations_complete": 0, "best": []})

    def execute(self, ctx: Context, opts, inp) -> dict | None:
        params = opts.params
        amplitude, valid, support = inp
        if params.engine == "cdip":
            return stage_phase_cdip.execute(ctx, params, amplitude, valid)
        group, start = ctx.group, None
        if ctx.is_root:
            start = int(group.attrs["generations_complete"])
            if ctx.resumed:
                log.info("resuming %s at generation %d", ctx.run_path, start)
            _warm_fft(amplitude.shape)
        start = ctx.bcast(start)
        guide = guide_support = errors = None
        for g in range(start, params.generations):
            todo = stored = None
            if ctx.is_root:
                if g > 0:
                    if errors is None:  # resuming: the finished generation's, from the store
                        errors = group["errors"][g - 1, :]
                    guide, guide_support = _member(group, int(np.argmin(errors)), g - 1,
                                                   params.generations)
                # only the first generation of a run can hold members an earlier one
                # finished; reading a generation's markers is a file per member
                stored = (group["member_errors"][g, :] if g == start
                          else np.full(params.population, np.nan))
                todo = [(g, m) for m in range(params.population) if not np.isfinite(stored[m])]
            todo, guide, guide_support = ctx.bcast((todo, guide, guide_support))
            shared = _Shared(ctx.run_path, amplitude, valid, support, guide, guide_support,
                             params, ctx.run_id)
            results = ctx.map(phase_member, todo, shared,
                              names=[f"ghio-g{g:02d}-m{m:03d}" for _, m in todo],
                              desc=f"generation {g + 1}/{params.generations}")
            if ctx.is_root:
                for _, seconds in results:
                    ctx.clock.merge(seconds)
                # each member has stored its R_F (its marker) before returning it
                errors = stored.copy()
                errors[[m for _, m in todo]] = [r for r, _ in results]
                if not np.isfinite(errors).all():
                    raise RuntimeError(f"generation {g}: members without a result")
                group["errors"][g, :] = errors
                best = group.attrs["best"][:g] + [int(np.argmin(errors))]
                group.attrs.update({"best": best, "generations_complete": g + 1})
        if not ctx.is_root:
            return None
        final = group["errors"][-1]
        order = np.argsort(final, kind="stable")
        return {"best_member": int(order[0]), "best_error": float(final[order[0]]),
                "median_error": float(np.median(final)), "n_members": params.population}

    def summary(self, attrs: dict, opts, seconds: float) -> list[str]:
        p = opts.params
        verb = ("already complete, nothing recomputed" if attrs.get("resumed_complete")
                else "written")
        if p.engine == "cdip":
            return [f"{opts.run}: phasing/ {verb} in {seconds:.1f} s; {p.population} CDIP "
                    f"members x {p.cdip.epochs} epochs",
                    f"  best member {attrs['best_member']}: R_F {attrs['best_error']:.4f} "
                    f"(median {attrs['median_error']:.4f})"]
        return [f"{opts.run}: phasing/ {verb} in {seconds:.1f} s; {p.population} members x "
                f"{p.generations} generations x {p.n_iterations} iterations",
                f"  best member {attrs['best_member']}: R_F {attrs['best_error']:.4f} "
                f"(median {attrs['median_error']:.4f})"]


STAGE = PhaseStage()


def run_phase(backend: Backend, run_path: str, params: PhaseParams) -> dict:
    """Run (or resume) stage 2 on ``backend``; every process returns the ``phasing`` attrs
    once the root has completed the group.

    The attr ``timing_s`` splits this run's time: ``read``, ``compute`` and ``write`` are
    worker-seconds summed over its members, ``wall`` the whole stage.
    """
    return run_stage(STAGE, backend, PhaseOptions(run=run_path, params=params))


def _member(group: zarr.Group, member: int, generation: int, n_generations: int):
    """Object and support of ``member`` of ``generation`` (the best: the next one's guide)."""
    objs, sups, prefix = _slot(group, generation, n_generations)
    return np.asarray(objs[(*prefix, member)]), np.asarray(sups[(*prefix, member)])


def _warm_fft(shape) -> None:
    """Plan once on the root so every worker loads the same FFTW wisdom (same bits)."""
    from lensfree.engine import fft

    fft.get_fftn(shape).prepare()
