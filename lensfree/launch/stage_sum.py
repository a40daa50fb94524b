"""Stage 1 across workers: screen every frame, sum the accepted ones, finish on the root.

Two passes over the frames, since the thresholds are set by all frames together:
pass 1 returns per-frame statistics of each shard; the root decides every frame's
status; pass 2 folds each shard's float64 partial sums in the back end's fixed tree
(`Backend.reduce`). The whole-pattern steps (`lensfree.engine.pattern.prepare_pattern`)
then run once on the root, which writes ``ensemble/``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np

from lensfree.engine import ensemble
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


def _chunks(shard: Shard, chunk_frames: int):
    for start in range(shard.start, shard.stop, chunk_frames):
        yield start, min(start + chunk_frames, shard.stop)


def screen_shard(shard: Shard, shared: _Shared):
    """Pass 1 on one shard: totals, chi-square, invalid flags, unreadable chunks."""
    n = shard.stop - shard.start
    total, chi2 = np.full(n, np.nan), np.full(n, np.nan)
    invalid = np.zeros(n, dtype=bool)
    unreadable = []
    clock = Clock()
    for start, stop in _chunks(shard, shared.chunk_frames):
        i, j = start - shard.start, stop - shard.start
        try:
            with clock("read"):
                block = frame_io.read_frames(shared.path, start, stop)
        except Exception as exc:  # a damaged chunk must not stop the run
            log.error("%s: frames %d-%d unreadable (%s); marked invalid",
                      shared.path, start, stop - 1, exc)
            invalid[i:j] = True
            unreadable.append([start, stop, f"{exc.__class__.__name__}: {exc}"])
            continue
        with clock("compute"):
            total[i:j], chi2[i:j], invalid[i:j] = ensemble.frame_stats(
                block, shared.mask, shared.annulus)
    return total, chi2, invalid, unreadable, clock.seconds


def sum_shard(task, shared: _Shared):
    """Pass 2 on one shard: float64 sums of its accepted and background frames."""
    shard, status = task
    h, w = shared.mask.shape
    accepted, background = np.zeros((h, w)), np.zeros((h, w))
    clock = Clock()
    for start, stop in _chunks(shard, shared.chunk_frames):
        part = status[start - shard.start : stop - shard.start]
        if not np.isin(part, (ensemble.ACCEPTED, ensemble.BACKGROUND)).any():
            continue
        with clock("read"):
            block = frame_io.read_frames(shared.path, start, stop)
        with clock("compute"):
            acc, bg = ensemble.partial_sums(block, part)
            accepted += acc
            background += bg
    return accepted, background, clock.seconds


def _add_sums(a, b):
    """Fold two shards' (accepted, background, seconds); the fold times itself."""
    t0 = time.perf_counter()
    accepted, background = a[0] + b[0], a[1] + b[1]
    seconds = dict(a[2])
    for part, s in b[2].items():
        seconds[part] = seconds.get(part, 0.0) + s
    seconds["reduce"] = seconds.get("reduce", 0.0) + time.perf_counter() - t0
    return accepted, background, seconds


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
        return {"frames": store.path, "n_frames": store.n_frames,
                "frame_shape": list(store.frame_shape), **store.geometry.as_attrs()}

    def execute(self, ctx: Context, opts, store) -> dict | None:
        params = opts.params
        mask = store.mask
        annulus = ensemble.edge_annulus(mask, params.screen.annulus_width)
        shared = _Shared(store.path, store.chunk_frames, mask, annulus)
        shards = frame_shards(store.n_frames, store.chunk_frames)
        stats = ctx.map(screen_shard, shards, shared,
                        names=[f"screen-{s.name}" for s in shards], desc="screen")
        decided = None
        if ctx.is_root:
            total = np.concatenate([s[0] for s in stats])
            chi2 = np.concatenate([s[1] for s in stats])
            invalid = np.concatenate([s[2] for s in stats])
            unreadable = [u for s in stats for u in s[3]]
            for s in stats:
                ctx.clock.merge(s[4])
            status, thresholds = ensemble.screen(total, chi2, invalid, params.screen)
            decided = status
        status = ctx.bcast(decided)
        tasks = [(s, status[s.start : s.stop]) for s in shards]
        accepted, background, seconds = ctx.reduce(
            sum_shard, tasks, shared, combine=_add_sums,
            names=[f"sum-{s.name}" for s in shards], desc="sum")
        if not ctx.is_root:
            return None
        ctx.clock.merge({"reduce": 0.0, **seconds})  # one shard: nothing to fold
        t_finish = time.perf_counter()
        counts = {name: int((status == code).sum())
                  for code, name in ensemble.STATUS_NAMES.items()}
        if counts["accepted"] == 0:
            raise LensfreeError(f"{store.path}: no frame was accepted ({counts}); check "
                                "thresholds")
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
