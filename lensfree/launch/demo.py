"""``lensfree demo``: the pipeline on a small built-in simulated ensemble."""

from __future__ import annotations

import os
import time

import numpy as np

from lensfree.engine.phasing import PhasingParams
from lensfree.engine.simulate import EnsembleParams
from lensfree.io.frames import open_frames
from lensfree.io.report import plot_ensemble, plot_phasing
from lensfree.launch.stage_phase import PhaseParams, run_phase
from lensfree.launch.stage_simulate import simulate_ensemble
from lensfree.launch.stage_sum import SumParams, run_sum

#: a small population, enough to show GHIO at work in seconds; the particles' projected
#: density is real and non-negative, so the real part is kept non-negative
DEMO_PHASING = PhaseParams(
    population=16, generations=3, schedule="HIO:250,ER:50;shrinkwrap=50",
    phasing=PhasingParams(positivity="real", shrinkwrap_threshold=0.2, shrinkwrap_sigma_end=1.0))


def run_demo(args, make_backend, announce) -> int:
    out = args.out
    frames_path = os.path.join(out, "frames.zarr")
    run_path = os.path.join(out, "run.zarr")
    params = EnsembleParams(n_frames=args.frames, shape=(256, 256), seed=args.seed)
    with make_backend(args) as backend:
        announce(backend)
        if backend.is_root:
            os.makedirs(out, exist_ok=True)
        t0 = time.perf_counter()
        truth = simulate_ensemble(backend, params, frames_path)
        t1 = time.perf_counter()
        attrs = run_sum(backend, open_frames(frames_path), run_path, SumParams())
        t2 = time.perf_counter()
        phase = run_phase(backend, run_path, DEMO_PHASING)
        t3 = time.perf_counter()
        if not backend.is_root:
            return 0
        png = plot_ensemble(run_path, os.path.join(out, "ensemble.png"))
        png_phase = plot_phasing(run_path, os.path.join(out, "phasing.png"))
        t = truth["truth"]
        status = _status(run_path)
        planted = {k: set(t[k]) for k in ("weak", "streak", "invalid")}
        c = attrs["counts"]
        print(f"simulated {params.n_frames} frames of 256x256 in {t1 - t0:.1f} s "
              f"-> {frames_path}")
        print(f"stage 1 (sum) in {t2 - t1:.1f} s -> {run_path}")
        print(f"  accepted {c['accepted']}, background {c['background']}, weak {c['weak']} "
              f"(planted {len(planted['weak'])}), chi2 {c['chi2']} "
              f"(planted streaks {len(planted['streak'])}), invalid {c['invalid']} "
              f"(planted {len(planted['invalid'])})")
        caught = len(planted["streak"] & set(np.flatnonzero(status == 2)))
        print(f"  streak frames caught {caught}/{len(planted['streak'])}")
        (cy, cx), (ty, tx) = attrs["center"], t["center"]
        print(f"  centre ({cy:.2f}, {cx:.2f}) px, true ({ty:.2f}, {tx:.2f}): "
              f"off by {np.hypot(cy - ty, cx - tx):.2f} px")
        print(f"  figure: {png}")
        p = DEMO_PHASING
        print(f"stage 2 (phase) in {t3 - t2:.1f} s: {p.population} members x {p.generations} "
              f"generations x {p.n_iterations} iterations")
        print(f"  best R_F {phase['best_error']:.4f} (median {phase['median_error']:.4f}); "
              f"best R_F per generation: {_best_per_generation(run_path)}")
        print(f"  figure: {png_phase}")
    return 0


def _status(run_path: str) -> np.ndarray:
    import zarr

    return np.asarray(zarr.open_group(run_path, mode="r")["ensemble/frame_status"][...])


def _best_per_generation(run_path: str) -> str:
    import zarr

    errors = zarr.open_group(run_path, mode="r")["phasing/errors"][...]
    return ", ".join(f"{e:.4f}" for e in np.nanmin(errors, axis=1))
