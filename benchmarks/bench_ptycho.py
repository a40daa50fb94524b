"""Ptychography: time per iteration per 1,000 positions at 128^2, against two FFTs per position.

Simulates a 1,000-position Fermat scan of 128x128 frames (1 px RMS position errors), then
times iterations of `lensfree ptycho --engine parallel --refine-positions` through
`run_ptycho` on 1 and 2 workers (local threads, and a 2-process Dask cluster), after a
warm-up iteration. The limit is two 128^2 complex64 FFTs per position and probe mode.

    python benchmarks/bench_ptycho.py [--positions 1000] [--iterations 5] [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from timing import median_time  # noqa: E402

from lensfree.engine import fft as fftlib  # noqa: E402
from lensfree.engine import simulate_ptycho as sp  # noqa: E402
from lensfree.engine.ptycho import PtychoParams  # noqa: E402
from lensfree.launch.backends import make_backend  # noqa: E402
from lensfree.launch.stage_ptycho import PtychoStageParams, run_ptycho, simulate_ptycho  # noqa: E402


def two_ffts_per_position(n: int, size: int) -> float:
    fft = fftlib.get_fft2((size, size)).prepare()
    a = fftlib.empty_aligned((size, size))
    a[...] = np.random.default_rng(0).normal(size=(size, size))
    b = fftlib.empty_aligned((size, size))

    def run():
        for _ in range(n):
            fft.forward(a, out=b)
            fft.inverse(b, out=a)
    return median_time(run, 3)


def iteration_time(frames: str, tmp: str, backend: str, workers: int, iterations: int,
                   subpixel: bool) -> float:
    def params(n):
        return PtychoStageParams(engine=PtychoParams(iterations=n, refine_positions=True,
                                                     refine_start=0),
                                 checkpoint_every=10_000)
    with make_backend(backend, workers=workers, progress=False,
                      dashboard_address=":0") as be:
        out = os.path.join(tmp, f"warm-{backend}-{workers}.zarr")
        run_ptycho(be, frames, out, params(1))  # warm: plans, frames cached on workers
        out = os.path.join(tmp, f"run-{backend}-{workers}.zarr")
        t0 = time.perf_counter()
        run_ptycho(be, frames, out, params(1 + iterations))
        return (time.perf_counter() - t0) / (1 + iterations)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--positions", type=int, default=1000)
    ap.add_argument("--iterations", type=int, default=5)
    ap.add_argument("--out", default="benchmarks/results/bench_ptycho.json")
    args = ap.parse_args()
    n, size = args.positions, 128
    per_k = 1000 / n
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        limit = two_ffts_per_position(n, size) * per_k
        rows.append(("two FFTs per position (limit)", 1, limit))
        for subpixel in (False, True):
            frames = os.path.join(tmp, f"scan-{subpixel}.zarr")
            simulate_ptycho(frames, sp.PtychoSimParams(
                n_positions=n, frame_size=size, position_error=1.0, subpixel=subpixel))
            kind = "sub-pixel positions" if subpixel else "whole-pixel positions"
            for backend, workers in (("local", 1), ("local", 2), ("dask", 2)):
                t = iteration_time(frames, tmp, backend, workers, args.iterations, subpixel)
                rows.append((f"parallel engine, {kind}, {backend}", workers, t * per_k))
    print(f"{'what':58s} {'workers':>7s} {'s/iter/1000 pos':>16s} {'ms/frame-iter':>14s}")
    for what, w, t in rows:
        print(f"{what:58s} {w:7d} {t:16.3f} {t:14.3f}")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as fh:
        json.dump([{"what": a, "workers": w, "seconds_per_iteration_per_1000": t}
                   for a, w, t in rows], fh, indent=1)


if __name__ == "__main__":
    main()
