"""``lensfree demo``: the pipeline on a small built-in simulated ensemble."""

from __future__ import annotations

import os
import time

import numpy as np

from lensfree.engine.simulate import EnsembleParams
from lensfree.io.frames import open_frames
from lensfree.io.report import plot_ensemble
from lensfree.launch.stage_simulate import simulate_ensemble
from lensfree.launch.stage_sum import SumParams, run_sum


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
        if not backend.is_root:
            return 0
        png = plot_ensemble(run_path, os.path.join(out, "ensemble.png"))
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
    return 0


def _status(run_path: str) -> np.ndarray:
    import zarr

    return np.asarray(zarr.open_group(run_path, mode="r")["ensemble/frame_status"][...])
