"""Stage 1 across workers: screen every frame, sum the accepted ones, finish on the root.

Two passes over the frames, since the thresholds are set by all frames together:
pass 1 returns per-frame statistics of each shard; the root decides every frame's
status; pass 2 returns each shard's float64 partial sums, which the root folds in shard
order. The whole-pattern steps then run once on the root, which writes ``ensemble/``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass

import numpy as np

from lensfree.engine import ensemble
from lensfree.io import frames as frame_io
from lensfree.io import runstore
from lensfree.launch.backends import Backend
from lensfree.launch.timing import Clock
from lensfree.partitioning import Shard, frame_shards

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SumParams:
    """Stage 1 parameters (see `ensemble.ScreenParams` for the screens).

    binning : bin factor b (the paper: 3); the phasing array is (H // b, W // b).
    speckle_diameter : diameter, in binned pixels, of the central disk set missing; None
        means the beam stop's own diameter plus 4 binned pixels.
    """

    screen: ensemble.ScreenParams = ensemble.ScreenParams()
    binning: int = 2
    speckle_diameter: float | None = None

    def __post_init__(self):
        if self.binning < 1:
            raise ValueError(f"binning={self.binning} must be at least 1")
        if self.speckle_diameter is not None and self.speckle_diameter < 0:
            raise ValueError(f"speckle_diameter={self.speckle_diameter} must be >= 0")


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


def run_sum(backend: Backend, store: frame_io.FrameStore, out: str,
            params: SumParams = SumParams()) -> dict | None:
    """Run stage 1 on ``backend``; the root writes ``out/ensemble``; every process returns
    its attrs once it is complete.

    The attr ``timing_s`` splits the time: ``read`` and ``compute`` are worker-seconds
    summed over all tasks of both passes, ``reduce`` (folding partial sums), ``pattern``
    (centre to amplitude) and ``write`` are the root's, ``wall`` the whole stage.
    """
    t_start = time.perf_counter()
    mask = store.mask
    annulus = ensemble.edge_annulus(mask, params.screen.annulus_width)
    shared = _Shared(store.path, store.chunk_frames, mask, annulus)
    shards = frame_shards(store.n_frames, store.chunk_frames)
    group = None
    if backend.is_root:
        run = runstore.open_run(out)
        group = runstore.begin_stage(
            run, "ensemble", params=_params_attrs(params),
            inputs={"frames": store.path, "n_frames": store.n_frames,
                    "frame_shape": list(store.frame_shape), **store.geometry.as_attrs()})

    stats = backend.map(screen_shard, shards, shared,
                        names=[f"screen-{s.name}" for s in shards], desc="screen")
    decided = None
    if backend.is_root:
        total = np.concatenate([s[0] for s in stats])
        chi2 = np.concatenate([s[1] for s in stats])
        invalid = np.concatenate([s[2] for s in stats])
        unreadable = [u for s in stats for u in s[3]]
        clock = Clock()
        for s in stats:
            clock.merge(s[4])
        status, thresholds = ensemble.screen(total, chi2, invalid, params.screen)
        decided = status
    status = backend.bcast(decided)
    tasks = [(s, status[s.start : s.stop]) for s in shards]
    partials = backend.map(sum_shard, tasks, shared,
                           names=[f"sum-{s.name}" for s in shards], desc="sum")
    if not backend.is_root:
        return backend.bcast(None)  # back only once the root has finished the stage

    accepted = np.zeros(store.frame_shape)
    background = np.zeros(store.frame_shape)
    with clock("reduce"):
        for acc, bg, seconds in partials:  # shard order: the same bits on every back end
            accepted += acc
            background += bg
            clock.merge(seconds)
    t_finish = time.perf_counter()
    counts = {name: int((status == code).sum()) for code, name in ensemble.STATUS_NAMES.items()}
    if counts["accepted"] == 0:
        raise ValueError(f"{store.path}: no frame was accepted ({counts}); check thresholds")
    background[~mask] = 0.0
    total_sum = ensemble.subtract_background(
        accepted, background, counts["accepted"], counts["background"], mask)
    center = ensemble.find_center(total_sum, mask)
    patched, valid_patched, filled = ensemble.centro_patch(total_sum, mask, center)
    b = params.binning
    # negative values (noise after background subtraction) are binned with the rest and
    # a pixel is dropped only if its binned value is negative: dropping them before
    # binning would keep only upward fluctuations and lift a floor under the pattern
    binned, valid_b, origin = ensemble.bin_pattern(patched, valid_patched, center, b)
    valid_b &= binned >= 0
    speckle = params.speckle_diameter
    if speckle is None:
        speckle = ensemble.beamstop_diameter(mask) / b + 4
    valid_b &= ~ensemble.central_disk(valid_b.shape, speckle)
    amplitude = ensemble.to_amplitude(binned, valid_b)
    clock.merge({"pattern": time.perf_counter() - t_finish})

    t_write = time.perf_counter()
    w = runstore.write_array
    w(group, "sum", total_sum)
    w(group, "background", background)
    w(group, "mask", mask)
    w(group, "frame_status", status)
    w(group, "frame_total", total)
    w(group, "frame_chi2", chi2)
    w(group, "patched", patched)
    w(group, "filled", filled)
    w(group, "amplitude", amplitude)
    w(group, "valid", valid_b)
    geometry = store.geometry
    attrs = {
        "counts": counts,
        "thresholds": thresholds,
        "center": list(center),
        "center_binned": [(c - o - (b - 1) / 2) / b for c, o in zip(center, origin)],
        "binning": b,
        "window_origin": list(origin),
        "speckle_diameter": speckle,
        "unreadable": unreadable,
        "n_patched": int(filled.sum()),
        "n_valid": int(valid_b.sum()),
        **geometry.as_attrs(),
    }
    if geometry.known:
        attrs["binned_pixel_size_m"] = geometry.pixel_size_m * b
        attrs["real_space_pixel_m"] = geometry.real_space_pixel(amplitude.shape[0], b)
    clock.merge({"write": time.perf_counter() - t_write, "wall": time.perf_counter() - t_start})
    attrs["timing_s"] = clock.as_attrs()
    runstore.finish_stage(group, **attrs)
    return backend.bcast(attrs)


def _params_attrs(params: SumParams) -> dict:
    return runstore.jsonable(asdict(params))
