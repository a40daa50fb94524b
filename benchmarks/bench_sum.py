"""Stage 1 throughput: lensfree sum on every back end next to its limits.

20,000 frames of 256 x 256 uint16 in Blosc-zstd chunks of 64 frames. For each
configuration the median of several runs is reported as frames/s and GB/s of raw
(decompressed) data, next to
  (a) only reading and decompressing the same chunks (the I/O limit), and
  (b) numpy summing the same frames already in memory (the memory-bandwidth limit).
Prints a table and writes JSON.

    python benchmarks/bench_sum.py [--frames 20000] [--repeats 3] [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import zarr
from timing import median_time  # benchmarks/timing.py

from lensfree.engine.simulate import EnsembleParams
from lensfree.io.frames import open_frames
from lensfree.launch.backends import DaskBackend
from lensfree.launch.stage_simulate import simulate_ensemble


def read_only(path: str) -> None:
    a = zarr.open_array(os.path.join(path, "frames"), mode="r")
    k = a.chunks[0]
    for s in range(0, a.shape[0], k):
        a[s : s + k]


def sum_time(path: str, out: str, backend: str, workers: int) -> float:
    """Stage 1 through the CLI as a user runs it; the time it reports excludes start-up
    (interpreter, imports, cluster), so every back end is timed the same way."""
    cmd = [sys.executable, "-m", "lensfree", "sum", path, "--out", out, "--quiet",
           "--backend", backend]
    if backend == "mpi":
        mpiexec = os.path.join(os.path.dirname(sys.executable), "mpiexec")
        cmd = [mpiexec, "-n", str(workers), *cmd]
    else:
        cmd += ["--workers", str(workers), "--dashboard-address", ":0"]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return float(re.search(r"written in ([0-9.]+) s", proc.stdout).group(1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=20000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--store", help="reuse (or create) the frame store here")
    ap.add_argument("--out", default="benchmarks/results/bench_sum.json")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="lensfree-bench-")
    path = args.store or os.path.join(tmp, "frames.zarr")
    params = EnsembleParams(n_frames=args.frames, shape=(256, 256), dtype="uint16",
                            invalid_fraction=0.0, seed=1)
    if not os.path.exists(path):
        t0 = time.perf_counter()
        with DaskBackend(2, dashboard_address=":0", progress=False) as b:
            simulate_ensemble(b, params, path)
        print(f"simulated {args.frames} frames in {time.perf_counter() - t0:.1f} s")
    store = open_frames(path)
    nbytes = store.n_frames * np.prod(store.frame_shape) * store.dtype.itemsize
    out = os.path.join(tmp, "run.zarr")
    rows = {}
    rows["read + decompress (limit a)"] = median_time(lambda: read_only(path), args.repeats)
    in_memory = zarr.open_array(os.path.join(path, "frames"), mode="r")[...]
    rows["numpy sum in memory (limit b)"] = median_time(
        lambda: in_memory.sum(axis=0, dtype=np.float64), args.repeats)
    in_memory = None
    for backend, n in (("local", 1), ("dask", 1), ("dask", 2), ("mpi", 1), ("mpi", 2)):
        name = "lensfree local" if backend == "local" else f"lensfree {backend} {n} worker(s)"
        rows[name] = statistics.median(
            sum_time(path, out, backend, n) for _ in range(args.repeats))
    limit = rows["read + decompress (limit a)"]
    print(f"\n{store.n_frames} frames {store.frame_shape[0]}x{store.frame_shape[1]} "
          f"{store.dtype}, {nbytes / 1e9:.2f} GB raw, median of {args.repeats}")
    print(f"{'configuration':34s} {'time s':>8s} {'frames/s':>10s} {'GB/s':>7s} "
          f"{'vs read':>8s}")
    result = {"frames": store.n_frames, "shape": list(store.frame_shape),
              "dtype": str(store.dtype), "bytes": int(nbytes), "repeats": args.repeats,
              "rows": {}}
    for name, t in rows.items():
        print(f"{name:34s} {t:8.2f} {store.n_frames / t:10.0f} {nbytes / t / 1e9:7.2f} "
              f"{limit / t:8.2f}")
        result["rows"][name] = {"seconds": t, "frames_per_s": store.n_frames / t,
                                "gb_per_s": nbytes / t / 1e9, "ratio_to_read": limit / t}
    for kind in ("dask", "mpi"):
        one = [t for n, t in rows.items() if kind in n and " 1 " in n][0]
        two = [t for n, t in rows.items() if kind in n and " 2 " in n][0]
        result[f"{kind}_speedup_2_vs_1"] = one / two
        print(f"{kind}: 2 workers {one / two:.2f}x faster than 1")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
