"""Stage 1 across workers: screen every frame, sum the accepted ones, finish on the root.

The thresholds are set by all frames together, yet each accepted frame is read once
(`lensfree.engine.sum_plan`): a pilot of a few chunks estimates the thresholds; pass 1
reads every frame once, returning each shard's per-frame statistics and its float64 sums
of the frames by predicted class, folded in the back end's fixed tree
(`Backend.reduce`); the root decides every frame's status; pass 2 re-reads only the
frames whose status differs from their class's (a fraction of the weak, chi-square and
background ones) and folds their corrections the same way. The whole-pattern steps
(`lensfree.engine.pattern.prepare_pattern`) then run once on the root, which writes
``ensemble/``. A task holds one decoded chunk and a few frame-sized float64 arrays.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass

import numpy as np

from lensfree.engine import ensemble, sum_plan
from lensfree.engine.params import at_least, check_fields, non_negative, optional, param
from lensfree.engine.pattern import prepare_pattern
from lensfree.errors import LensfreeError
from lensfree.io import frames as frame_io
from lensfree.io import runstore
from lensfree.launch.backends import Backend
from lensfree.launch.stage import Context, Execution, GeometryOptions, Stage, run_stage
from lensfree.launch.timing import Clock
from lensfree.partitioning import Shard, frame_shards

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SumParams:
    """Stage 1 parameters (see `ensemble.ScreenParams` for the screens).

    binning : bin factor b (the paper: 3); the phasing array is (H // b, W // b).
    speckle_diameter : diameter, in binned pixels, of the central disk set missing; None means
        the beam stop's own diameter plus 4 binned pixels.
    """

    screen: ensemble.ScreenParams = param(default_factory=ensemble.ScreenParams)
    binning: int = param(2, "bin factor", check=at_least(1), flag="bin")
    speckle_diameter: float | None = param(None, "central disk dropped, binned px",
                                           check=optional(non_negative),
                                           default_help="beam stop + 4")

    def __post_init__(self):
        check_fields(self)


@dataclass(frozen=True)
class SumOptions:
    """``lensfree sum FRAMES.zarr --out RUN.zarr [options]``."""

    frames: str = param(None, "frame store (X.zarr)", positional=True)
    out: str = param(None, "run store to write (RUN.zarr)", required=True)
    mask: str | None = param(None, "mask file (.npy/.npz/.tif/.h5), True or nonzero = measured",
                             default_help="the store's mask")
    mask_key: str | None = param(None, "array name inside the mask file", default_help="auto")
    params: SumParams = param(default_factory=SumParams)
    geometry: GeometryOptions = param(default_factory=GeometryOptions,
                                      group="geometry (overrides the store's attrs)")
    execution: Execution = param(default_factory=Execution, group="execution")


@dataclass(frozen=True)
class _Shared:
    path: str
    chunk_frames: int
    mask: np.ndarray
    annulus: np.ndarray
    prediction: sum_plan.Prediction | None = None  # None: the pilot (statistics only)


def _chunks(shard: Shard, chunk_frames: int):
    for start in range(shard.start, shard.stop, chunk_frames):
        yield start, min(start + chunk_frames, shard.stop)


def _present(start: int, stop: int, absent) -> list[tuple[int, int]]:
    """[start, stop) less the ``absent`` ranges (sorted, disjoint): the pieces to read."""
    pieces, lo = [], start
    for a, b in absent:
        if b <= lo or a >= stop:
            continue
        if a > lo:
            pieces.append((lo, a))
        lo = max(lo, b)
    if lo < stop:
        pieces.append((lo, stop))
    return pieces


def _add_frame(sums: np.ndarray, frame: np.ndarray, coef: int = 1) -> None:
    # frame by frame, in index order: a given shard always gives the same bits
    if coef > 0:
        np.add(sums, frame, out=sums)
    elif coef < 0:
        np.subtract(sums, frame, out=sums)


def screen_shard(shard: Shard, shared: _Shared) -> dict:
    """Pass 1 (or the pilot) on one shard: per-frame totals, chi-square, invalid flags
    and classes, the float64 sums of the frames by class, unreadable chunks, timings."""
    n = shard.stop - shard.start
    total, chi2 = np.full(n, np.nan), np.full(n, np.nan)
    invalid = np.zeros(n, dtype=bool)
    classes = np.full(n, -1, dtype=np.int16)
    prediction = shared.prediction
    sums = None
    if prediction is not None:
        sums = np.zeros((prediction.n_classes, *shared.mask.shape))
    unreadable = []
    clock = Clock()
    with clock("read"):
        reader = frame_io.chunk_reader(shared.path)
        absent = reader.absent(shard.start, shard.stop)  # one listing per shard
    for start, stop in absent:
        # Zarr would return the fill value for these frames: data lost, not zeros
        log.warning("%s: frames %d-%d: chunk absent from the store; marked invalid and "
                    "listed as unreadable", shared.path, start, stop - 1)
        invalid[start - shard.start : stop - shard.start] = True
        unreadable.append([start, stop, "absent: the chunk is not in the store"])
    for start, stop in _chunks(shard, shared.chunk_frames):
        pieces = _present(start, stop, absent)
        if not pieces:
            continue
        try:
            with clock("read"):
                block = reader.read(start, stop)
        except Exception as exc:  # a damaged chunk must not stop the run
            log.error("%s: frames %d-%d unreadable (%s); marked invalid",
                      shared.path, start, stop - 1, exc)
            invalid[start - shard.start : stop - shard.start] = True
            unreadable.append([start, stop, f"{exc.__class__.__name__}: {exc}"])
            continue
        for lo, hi in pieces:  # the frames of the chunk that the store holds
            i, j = lo - shard.start, hi - shard.start
            part = block[lo - start : hi - start]
            with clock("compute"):
                if prediction is None:  # the pilot: statistics only
                    # the block is ours (the reader's buffer or a fresh array): in place
                    t, c, bad = ensemble.frame_stats(part, shared.mask, shared.annulus,
                                                     overwrite=True)
                    cls = np.full(j - i, -1, dtype=np.int16)
                else:
                    t, c, bad, cls = sum_plan.screen_and_sum(part, shared.mask,
                                                             shared.annulus, prediction, sums)
                total[i:j], chi2[i:j], invalid[i:j], classes[i:j] = t, c, bad, cls
    unreadable.sort()
    return {"total": total, "chi2": chi2, "invalid": invalid, "classes": classes,
            "sums": sums, "unreadable": unreadable, "seconds": clock.seconds}


def correct_shard(task, shared: _Shared):
    """Pass 2 on one shard: read again the frames whose status differs from their class's
    and add (or subtract) them to float64 (accepted, background) corrections."""
    shard, coef = task
    h, w = shared.mask.shape
    acc, bg = np.zeros((h, w)), np.zeros((h, w))
    reader = frame_io.chunk_reader(shared.path)
    clock = Clock()
    n_frames = 0
    for start, stop in _chunks(shard, shared.chunk_frames):
        part = coef[start - shard.start : stop - shard.start]
        need = np.flatnonzero(part.any(axis=1))
        if not need.size:
            continue
        with clock("read"):
            block = reader.read(start, stop)
        with clock("compute"):
            for k in need:
                frame = block[k]
                np.copyto(frame, 0, where=~shared.mask)  # as pass 1 summed it
                _add_frame(acc, frame, part[k, 0])
                _add_frame(bg, frame, part[k, 1])
        n_frames += need.size
    return acc, bg, n_frames, clock.seconds


def _merge_seconds(a: dict, b: dict, t0: float) -> dict:
    seconds = dict(a)
    for part, s in b.items():
        seconds[part] = seconds.get(part, 0.0) + s
    seconds["reduce"] = seconds.get("reduce", 0.0) + time.perf_counter() - t0
    return seconds


def _fold_screens(a: dict, b: dict) -> dict:
    """Two adjacent shards' pass-1 results as one, ``a``'s frames first; times itself."""
    t0 = time.perf_counter()
    out = {k: np.concatenate((a[k], b[k])) for k in ("total", "chi2", "invalid", "classes")}
    out["sums"] = None if a["sums"] is None else a["sums"] + b["sums"]
    out["unreadable"] = a["unreadable"] + b["unreadable"]
    out["seconds"] = _merge_seconds(a["seconds"], b["seconds"], t0)
    return out


def _fold_corrections(a, b):
    """Fold two shards' (accepted, background, frames, seconds); the fold times itself."""
    t0 = time.perf_counter()
    return a[0] + b[0], a[1] + b[1], a[2] + b[2], _merge_seconds(a[3], b[3], t0)


class SumStage(Stage):
    name = "sum"
    help = "stage 1: screen, background, sum, centre, patch, bin"
    group = "ensemble"
    Options = SumOptions

    def run_path(self, opts) -> str:
        return opts.out

    def open(self, opts) -> frame_io.FrameStore:
        mask = None
        if opts.mask:
            from lensfree.io.images import load_image

            mask = np.asarray(load_image(opts.mask, opts.mask_key)) != 0
        return frame_io.open_frames(opts.frames, geometry=opts.geometry.geometry(),
                                    allow_pixels=opts.geometry.pixels, mask=mask)

    def inputs(self, opts, store) -> dict:
        return {"frames": store.path, "store_id": store.attrs.get("store_id"),
                "n_frames": store.n_frames, "frame_shape": list(store.frame_shape),
                **store.geometry.as_attrs()}

    def execute(self, ctx: Context, opts, store) -> dict | None:
        params = opts.params
        mask = store.mask
        annulus = ensemble.edge_annulus(mask, params.screen.annulus_width)
        shared = _Shared(store.path, store.chunk_frames, mask, annulus)
        frame_bytes = int(np.prod(store.frame_shape)) * store.dtype.itemsize
        shards = frame_shards(store.n_frames, store.chunk_frames, frame_bytes=frame_bytes)
        n_classes = sum_plan.n_classes_for(store.frame_shape, params.screen)

        # the pilot: statistics of a few chunks spread over the store
        pilot = [Shard(i, a, b) for i, (a, b) in
                 enumerate(sum_plan.pilot_chunks(store.n_frames, store.chunk_frames))]
        stats = ctx.map(screen_shard, pilot, shared, names=[f"pilot-{s.name}" for s in pilot],
                        desc="pilot")
        prediction = None
        if ctx.is_root:
            for s in stats:
                ctx.clock.merge(s["seconds"])
            prediction = sum_plan.predict(*(np.concatenate([s[k] for s in stats])
                                            for k in ("total", "chi2", "invalid")),
                                          params.screen, n_classes)
        shared = dataclasses.replace(shared, prediction=ctx.bcast(prediction))

        # pass 1: every frame read once, statistics and sums by class folded in the tree
        screened = ctx.reduce(screen_shard, shards, shared, combine=_fold_screens,
                              names=[f"screen-{s.name}" for s in shards], desc="screen")
        decided = None
        if ctx.is_root:
            total, chi2, invalid = (screened[k] for k in ("total", "chi2", "invalid"))
            ctx.clock.merge({"reduce": 0.0, **screened["seconds"]})
            status, thresholds = ensemble.screen(total, chi2, invalid, params.screen)
            labels, coef = sum_plan.resolve(screened["classes"], status,
                                            shared.prediction.n_classes)
            decided = status, coef
        status, coef = ctx.bcast(decided)

        # pass 2: only the frames whose status differs from their class's
        tasks = [(s, coef[s.start : s.stop]) for s in shards if coef[s.start : s.stop].any()]
        corrections = None
        if tasks:
            corrections = ctx.reduce(correct_shard, tasks, shared, combine=_fold_corrections,
                                     names=[f"correct-{t[0].name}" for t in tasks],
                                     desc="correct")
        frame_io.chunk_reader(store.path).release()
        if not ctx.is_root:
            return None
        sums, unreadable = screened.pop("sums"), screened["unreadable"]
        accepted, background = np.zeros(mask.shape), np.zeros(mask.shape)
        for c, label in enumerate(labels):  # class order: the same bits everywhere
            if label == ensemble.ACCEPTED:
                accepted += sums[c]
            elif label == ensemble.BACKGROUND:
                background += sums[c]
        sums = screened = None
        reread = 0
        if corrections is not None:
            accepted += corrections[0]
            background += corrections[1]
            reread = corrections[2]
            ctx.clock.merge(corrections[3])
            corrections = None
        t_finish = time.perf_counter()
        counts = {name: int((status == code).sum())
                  for code, name in ensemble.STATUS_NAMES.items()}
        if counts["invalid"] == len(status):
            raise LensfreeError(f"{store.path}: every one of the {len(status)} frames is "
                                "invalid (NaN, inf or negative on measured pixels, or "
                                "unreadable); nothing to sum")
        if counts["accepted"] == 0:
            raise LensfreeError(f"{store.path}: no frame was accepted ({counts}); check "
                                "thresholds (--weak-factor, --chi2-max, "
                                "--background-fraction)")
        background[~mask] = 0.0
        total_sum = ensemble.subtract_background(
            accepted, background, counts["accepted"], counts["background"], mask)
        pattern = prepare_pattern(total_sum, mask, binning=params.binning,
                                  speckle_diameter=params.speckle_diameter)
        ctx.clock.merge({"pattern": time.perf_counter() - t_finish})

        t_write = time.perf_counter()
        arrays = {"sum": total_sum, "background": background, "mask": mask,
                  "frame_status": status, "frame_total": total, "frame_chi2": chi2,
                  "patched": pattern.patched, "filled": pattern.filled,
                  "amplitude": pattern.amplitude, "valid": pattern.valid}
        for name, data in arrays.items():
            runstore.write_array(ctx.group, name, data)
        b, geometry = params.binning, store.geometry
        attrs = {
            "counts": counts,
            "thresholds": thresholds,
            "center": list(pattern.center),
            "center_binned": list(pattern.center_binned),
            "binning": b,
            "window_origin": list(pattern.origin),
            "speckle_diameter": pattern.speckle_diameter,
            "unreadable": unreadable,
            # how often frames were read: the pilot's, every frame once, the second reads
            "reads": {"pilot_frames": int(sum(s.stop - s.start for s in pilot)),
                      "frames": int(store.n_frames), "reread_frames": int(reread),
                      "classes": int(len(labels))},
            "n_patched": int(pattern.filled.sum()),
            "n_valid": int(pattern.valid.sum()),
            **geometry.as_attrs(),
        }
        if geometry.known:
            attrs["binned_pixel_size_m"] = geometry.pixel_size_m * b
            attrs["real_space_pixel_m"] = geometry.real_space_pixel(pattern.amplitude.shape[0], b)
        ctx.clock.merge({"write": time.perf_counter() - t_write})
        return attrs

    def summary(self, attrs: dict, opts, seconds: float) -> list[str]:
        c = attrs["counts"]
        cy, cx = attrs["center"]
        lines = [f"{opts.out}: ensemble/ written in {seconds:.1f} s",
                 f"  frames  accepted {c['accepted']}, background {c['background']}, weak "
                 f"{c['weak']}, chi2 {c['chi2']}, invalid {c['invalid']}"]
        if attrs["unreadable"]:
            lines.append(f"  unreadable chunks: {len(attrs['unreadable'])} (frames marked "
                         "invalid)")
        lines.append(f"  centre  ({cy:.2f}, {cx:.2f}) px; {attrs['n_patched']} pixels patched "
                     f"from mirrors; binned x{attrs['binning']}, {attrs['n_valid']} valid pixels")
        return lines


STAGE = SumStage()


def run_sum(backend: Backend, store: frame_io.FrameStore, out: str,
            params: SumParams = SumParams()) -> dict:
    """Run stage 1 on an opened frame store; every process returns ``ensemble``'s attrs.

    The attr ``timing_s`` splits the time: ``read`` and ``compute`` are worker-seconds
    summed over all tasks of both passes, ``pattern`` (centre to amplitude) and ``write``
    the root's, ``wall`` the whole stage.
    """
    return run_stage(STAGE, backend, SumOptions(frames=store.path, out=out, params=params),
                     inp=store)
