"""Stage 2 speed: one HIO iteration against its FFT limit, and population throughput.

1. Time per HIO iteration at 256^2, 512^2 and 1024^2 next to the time of the two FFTW
   transforms every iteration must do (the limit of an FFT-bound iteration).
2. Population throughput (member-iterations per second) of ``lensfree phase`` on dask and
   mpi with 1 and 2 workers.
3. With ``--full``: a 100-member, 10-generation, 200-iteration population at 256^2 end to
   end on 2 dask workers.
Medians of several runs; prints a table and writes JSON.

    python benchmarks/bench_phase.py [--repeats 5] [--full] [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
from timing import median_time  # benchmarks/timing.py

from lensfree.engine import fft, ghio, phasing, shapes
from lensfree.launch.backends import DaskBackend
from lensfree.launch.stage_phase import PhaseParams, run_phase
from lensfree.launch.stage_simulate import simulate_object


def iteration_vs_fft(n: int, repeats: int) -> dict:
    f = fft.get_fft2((n, n))
    f.prepare()
    x = fft.empty_aligned((n, n))
    x[...] = np.random.default_rng(0).standard_normal((n, n))
    loops = max(5, int(2e7 / (n * n)))

    def two_ffts():
        for _ in range(loops):
            f.forward(x, x)
            f.inverse(x, x)

    t_fft = median_time(two_ffts, repeats) / loops
    rho = shapes.make_object("letter", n, 3.0)
    amp, valid = shapes.far_field(rho, 1e9, np.random.default_rng(1), 0.05 * n)
    support = phasing.autocorrelation_support(amp, valid)
    rho0 = ghio.member_start(amp, valid, support, 0)
    # difference of two run lengths removes the per-run setup from the per-iteration time
    short = median_time(lambda: phasing.run(amp, valid, rho0, support, f"HIO:{loops}"), repeats)
    long = median_time(lambda: phasing.run(amp, valid, rho0, support, f"HIO:{2 * loops}"),
                     repeats)
    t_hio = (long - short) / loops
    return {"n": n, "two_ffts_ms": t_fft * 1e3, "hio_ms": t_hio * 1e3, "ratio": t_hio / t_fft}


def population_time(kind: str, workers: int, run: str, params: PhaseParams) -> float:
    if kind == "dask":
        with DaskBackend(workers, dashboard_address=":0", progress=False) as b:
            t0 = time.perf_counter()
            run_phase(b, run, params)
            return time.perf_counter() - t0
    mpiexec = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    cmd = [mpiexec, "-n", str(workers), sys.executable, "-m", "lensfree", "phase", run,
           "--backend", "mpi", "--quiet", "--population", str(params.population),
           "--generations", str(params.generations), "--schedule", params.schedule]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return float(re.search(r"written in ([0-9.]+) s", out).group(1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--full", action="store_true", help="also the 100 x 10 x 200 run at 256^2")
    ap.add_argument("--out", default="benchmarks/results/bench_phase.json")
    args = ap.parse_args()
    result = {"iteration": [], "population": {}}
    print(f"{'N':>6s} {'2 FFTs ms':>10s} {'HIO ms':>8s} {'HIO / 2 FFTs':>13s}")
    for n in (256, 512, 1024):
        row = iteration_vs_fft(n, args.repeats)
        result["iteration"].append(row)
        print(f"{n:6d} {row['two_ffts_ms']:10.3f} {row['hio_ms']:8.3f} {row['ratio']:13.2f}")

    tmp = tempfile.mkdtemp(prefix="lensfree-bench-")
    base = os.path.join(tmp, "base.zarr")
    simulate_object(base, size=128, photons=1e9, missing_radius=3)
    params = PhaseParams(population=16, generations=2, schedule="HIO:150,ER:50")
    member_iterations = params.population * params.generations * params.n_iterations
    print(f"\npopulation {params.population} x {params.generations} x {params.n_iterations} "
          f"at 128^2 (median of {max(1, args.repeats // 2)})")
    print(f"{'back end':>10s} {'workers':>8s} {'time s':>8s} {'member-it/s':>12s}")
    for kind in ("dask", "mpi"):
        times = {}
        for workers in (1, 2):
            runs = []
            for i in range(max(1, args.repeats // 2)):
                run = os.path.join(tmp, f"{kind}{workers}-{i}.zarr")
                shutil.copytree(base, run)
                runs.append(population_time(kind, workers, run, params))
            times[workers] = statistics.median(runs)
            print(f"{kind:>10s} {workers:8d} {times[workers]:8.2f} "
                  f"{member_iterations / times[workers]:12.0f}")
        result["population"][kind] = {
            "seconds": times, "member_iterations_per_s":
            {w: member_iterations / t for w, t in times.items()},
            "speedup_2_vs_1": times[1] / times[2]}
        print(f"{kind}: 2 workers {times[1] / times[2]:.2f}x faster than 1")
    if args.full:
        run = os.path.join(tmp, "full.zarr")
        simulate_object(run, size=256, photons=1e9, missing_radius=6)
        full = PhaseParams(population=100, generations=10, schedule="HIO:160,ER:40")
        t = population_time("dask", 2, run, full)
        result["full_100x10x200_256"] = t
        print(f"\n100 members x 10 generations x 200 iterations at 256^2, dask 2 workers: "
              f"{t:.1f} s")
    try:
        import pynx  # noqa: F401

        result["pynx"] = "available: not yet run side by side"
    except ImportError:
        result["pynx"] = "not installed (Debian python3-pynx; see NOTES)"
    print(f"PyNX peer: {result['pynx']}")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2, default=str)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
