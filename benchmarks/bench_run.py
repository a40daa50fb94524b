"""Throughput at scale: a 20,000-frame sum and a 200-member population through
``lensfree run`` on a 2-worker Dask cluster, with each stage's time split into read,
compute, reduce and write, so the slowest part is visible.

    python benchmarks/bench_run.py [--frames 20000] [--population 200] [--store X.zarr]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import zarr


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=20000)
    ap.add_argument("--population", type=int, default=200)
    ap.add_argument("--generations", type=int, default=2)
    ap.add_argument("--schedule", default="HIO:160,ER:40")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--store", help="reuse (or create) the frame store here")
    ap.add_argument("--out", default="benchmarks/results/bench_run.json")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="lensfree-bench-")
    frames = args.store or os.path.join(tmp, "frames.zarr")
    run = os.path.join(tmp, "run.zarr")
    config = os.path.join(tmp, "run.toml")
    simulate = "" if os.path.exists(frames) else (
        f'[simulate.ensemble]\nout = "{frames}"\nframes = {args.frames}\n'
        'dtype = "uint16"\ninvalid_fraction = 0.0\n\n')
    with open(config, "w") as f:
        f.write(f'[execution]\nbackend = "dask"\nworkers = {args.workers}\nquiet = true\n'
                f'dashboard_address = ":0"\n\n{simulate}'
                f'[sum]\nframes = "{frames}"\nout = "{run}"\n\n'
                f'[phase]\npopulation = {args.population}\ngenerations = {args.generations}\n'
                f'schedule = "{args.schedule}"\n')
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "lensfree", "run", config], check=True)
    total = time.perf_counter() - t0
    group = zarr.open_group(run, mode="r")
    result = {"frames": zarr.open_array(os.path.join(frames, "frames"), mode="r").shape[0],
              "population": args.population, "generations": args.generations,
              "schedule": args.schedule, "workers": args.workers, "total_s": total,
              "stages": {}}
    print(f"\nlensfree run on dask with {args.workers} workers: {total:.1f} s in all")
    print(f"{'stage':8s} {'wall s':>8s}  split (read, compute, reduce, pattern, write; "
          "worker-seconds for read/compute)")
    for name in ("ensemble", "phasing"):
        timing = dict(group[name].attrs["timing_s"])
        result["stages"][name] = timing
        wall = timing.pop("wall")
        parts = ", ".join(f"{k} {v:.2f}" for k, v in sorted(timing.items(), key=lambda kv:
                                                            -kv[1]))
        print(f"{name:8s} {wall:8.2f}  {parts}")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
