"""Stage 1 at detector scale: lensfree sum on every back end next to reading alone.

For each frame size and dtype a store of simulated frames (detector gaps, a beam stop,
weak and streak frames) is written, then timed:
  (a) reading and decompressing every chunk through Zarr (the I/O limit), and through
      lensfree's own reader (`lensfree.io.frames.ChunkReader`, one reused buffer);
  (b) ``lensfree sum`` through the CLI on each configuration (local, dask 1/2, mpi 1/2/4),
      its own "written in" time (start-up excluded, the same for every back end), on the
      store and on a store of a quarter of its frames: the difference gives the marginal
      rate, in which fixed costs (cluster warm-up, imports on workers, the run store,
      the whole-pattern steps) cancel.
Per configuration: frames/s, the fraction of the Zarr read rate, the marginal compute
(screening and summing, worker-seconds from the stage's ``timing_s``) per frame, the peak
RSS (VmHWM) of the root and of each worker process, and the 2-vs-1 scaling. Medians of --repeats
runs. The frames are copies of a few dozen simulated ones in a shuffled order: realistic
statistics and compression at any size without hours of simulation.

    python benchmarks/bench_sum.py [--sizes 256 1024 2048 4096] [--repeats 3]
        [--quick] [--out benchmarks/results/bench_sum.json]
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
import threading
import time

import numpy as np
import zarr
from timing import median_time  # benchmarks/timing.py

from lensfree.engine import simulate
from lensfree.engine.simulate import EnsembleParams
from lensfree.io.frames import chunk_reader, create_frame_store

#: (size, dtype, frames, frames per chunk): chunks of 64 frames as NOTES.md advises for
#: small frames and as the memory check asks at 2048^2; the 4096^2 case in the ~32 MB
#: chunks (one frame) that ingest chooses
CASES = [
    (256, "uint16", 6000, 64), (256, "uint32", 6000, 64),
    (1024, "uint16", 384, 64), (1024, "uint32", 384, 64),
    (2048, "uint16", 256, 64), (2048, "uint32", 128, 32),
    (4096, "uint16", 128, 1),
]
CONFIGS = [("local", 1), ("dask", 1), ("dask", 2), ("mpi", 1), ("mpi", 2), ("mpi", 4)]


def make_store(path: str, n: int, size: int, dtype: str, chunk: int, n_base: int = 40):
    """``n`` frames: shuffled copies of ``n_base`` simulated frames (2 weak, 2 streak),
    each with its own faint Poisson background (every frame distinct, totals spread)."""
    params = EnsembleParams(n_frames=n_base, shape=(size, size), dtype=dtype,
                            weak_fraction=0.05, streak_fraction=0.05, invalid_fraction=0.0,
                            photons_per_particle=3000.0 * (size / 256) ** 2, seed=1)
    base = simulate.simulate_frames(params, 0, n_base)
    order = np.random.default_rng(2).integers(0, n_base, n)
    frames = create_frame_store(path, n, (size, size), dtype, chunk_frames=chunk,
                                mask=simulate.detector_mask(params),
                                attrs={"wavelength_m": params.wavelength_m,
                                       "distance_m": params.distance_m,
                                       "pixel_size_m": params.pixel_size_m})
    rng = np.random.default_rng(3)
    for start in range(0, n, chunk):
        block = base[order[start : start + chunk]]
        for frame in block:
            frame += rng.poisson(rng.uniform(0.005, 0.05), frame.shape).astype(dtype)
        frames[start : start + chunk] = block


def read_zarr(path: str) -> None:
    a = zarr.open_array(os.path.join(path, "frames"), mode="r")
    k = a.chunks[0]
    for s in range(0, a.shape[0], k):
        a[s : s + k]


def read_direct(path: str) -> None:
    reader = chunk_reader(path)
    k = reader.array.chunks[0]
    for s in range(0, reader.array.shape[0], k):
        reader.read(s, min(s + k, reader.array.shape[0]))
    reader.release()


def _timed_reads(path: str, repeats: int) -> tuple[float, float]:
    """Median seconds of reading the store through Zarr and through lensfree's reader, in
    whichever process runs this (a Dask worker: see `worker_reads`)."""
    import time as _time

    def once(fn):
        t0 = _time.perf_counter()
        fn(path)
        return _time.perf_counter() - t0

    read_zarr(path)
    return (statistics.median(once(read_zarr) for _ in range(repeats)),
            statistics.median(once(read_direct) for _ in range(repeats)))


def worker_reads(path: str, repeats: int) -> dict:
    """Reading alone inside one Dask worker: as lensfree starts its LocalCluster, and with
    the environment distributed's nanny gives workers by default (MALLOC_TRIM_THRESHOLD_)."""
    import dask
    from distributed import Client, LocalCluster

    from lensfree.launch.backends.dask import DaskBackend

    out = {}
    backend = DaskBackend(1, dashboard_address=":0", progress=False)
    try:
        out["lensfree cluster"] = backend.client.submit(_timed_reads, path, repeats).result()
    finally:
        backend.close()
    with dask.config.set({"distributed.logging.distributed": "error"}):
        with LocalCluster(n_workers=1, threads_per_worker=1, dashboard_address=":0") as c, \
                Client(c) as client:
            out["nanny default env"] = client.submit(_timed_reads, path, repeats).result()
    return out


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:  # children are listed per thread: the nanny spawns from its own
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo += [int(c) for c in f.read().split()]
        except OSError:
            pass
    return out


def _status(pid: int) -> tuple[int, str, str | None]:
    """(VmHWM in bytes, command line, MPI rank) of a live process, else (0, '', None)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            hwm = next((int(line.split()[1]) * 1024 for line in f
                        if line.startswith("VmHWM")), 0)
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmd = f.read().replace(b"\0", b" ").decode()
        with open(f"/proc/{pid}/environ", "rb") as f:
            env = dict(e.split(b"=", 1) for e in f.read().split(b"\0") if b"=" in e)
        rank = env.get(b"PMI_RANK")
        return hwm, cmd, None if rank is None else rank.decode()
    except (OSError, StopIteration, ValueError):
        return 0, "", None


def run_sum(path: str, out: str, backend: str, workers: int) -> dict:
    """One ``lensfree sum`` as a user runs it: its own time, and the peak RSS of every
    Python process under it, sampled every 50 ms (VmHWM only grows)."""
    cmd = [sys.executable, "-m", "lensfree", "sum", path, "--out", out, "--quiet",
           "--backend", backend]
    if backend == "mpi":
        mpiexec = os.path.join(os.path.dirname(sys.executable), "mpiexec")
        cmd = [mpiexec, "-n", str(workers), *cmd]
    else:
        cmd += ["--workers", str(workers), "--dashboard-address", ":0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peaks: dict[int, tuple[int, str, str | None]] = {}
    done = threading.Event()

    def watch():
        while not done.is_set():
            for p in _tree(proc.pid):
                hwm, line, rank = _status(p)
                if "python" in line and hwm >= peaks.get(p, (0,))[0]:
                    peaks[p] = (hwm, line, rank)
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    stdout, stderr = proc.communicate()
    done.set()
    watcher.join()
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{stderr}")
    # the stage's own wall time (start-up and imports excluded), to the 0.1 ms
    assert re.search(r"written in ([0-9.]+) s", stdout), stdout
    if backend == "mpi":
        ranks = {r: h for h, _, r in peaks.values() if r is not None}
        root = ranks.get("0", 0)
        workers_rss = [ranks[r] for r in sorted(ranks, key=int) if r != "0"]
    else:
        root = peaks.get(proc.pid, (0,))[0]
        workers_rss = sorted(h for p, (h, line, _) in peaks.items()
                             if p != proc.pid and "spawn" in line)
    attrs = zarr.open_group(out, mode="r")["ensemble"].attrs
    reads, seconds = attrs["reads"], float(attrs["timing_s"]["wall"])
    # worker-seconds of screening and summing (no reading), over every process
    compute = float(attrs["timing_s"].get("compute", np.nan))
    return {"seconds": seconds, "compute_seconds": compute, "root_rss": root,
            "worker_rss": workers_rss,
            "reread_frames": reads["reread_frames"], "pilot_frames": reads["pilot_frames"]}


def bench_case(tmp: str, size: int, dtype: str, n: int, chunk: int, configs, repeats: int):
    path = os.path.join(tmp, f"frames-{size}-{dtype}.zarr")
    small = os.path.join(tmp, f"small-{size}-{dtype}.zarr")
    n_small = max(chunk, (n // 4) // chunk * chunk)
    t0 = time.perf_counter()
    make_store(path, n, size, dtype, chunk)
    make_store(small, n_small, size, dtype, chunk)
    nbytes = n * size * size * np.dtype(dtype).itemsize
    stored = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)
    print(f"\n== {n} frames {size}x{size} {dtype}, chunks of {chunk}: {nbytes / 1e9:.2f} GB "
          f"raw, {stored / 1e9:.2f} GB stored (written in {time.perf_counter() - t0:.0f} s)",
          flush=True)
    read_zarr(path)  # warm the page cache: every row then reads from memory
    limit = median_time(lambda: read_zarr(path), repeats)
    direct = median_time(lambda: read_direct(path), repeats)
    in_worker = worker_reads(path, repeats) if any(b == "dask" for b, _ in configs) else {}
    rows = {}
    for backend, workers in configs:
        runs = [run_sum(path, os.path.join(tmp, "run.zarr"), backend, workers)
                for _ in range(repeats)]
        smalls = [run_sum(small, os.path.join(tmp, "run.zarr"), backend, workers)
                  for _ in range(repeats)]
        t_small = statistics.median(r["seconds"] for r in smalls)
        t_large = statistics.median(r["seconds"] for r in runs)
        # screening and summing alone, per frame: the difference cancels Numba's first use
        # and the pilot, as the marginal rate cancels start-up
        compute = (statistics.median(r["compute_seconds"] for r in runs)
                   - statistics.median(r["compute_seconds"] for r in smalls)) / (n - n_small)
        marginal = (n - n_small) / (t_large - t_small) if t_large > t_small else np.nan
        rows[f"{backend} {workers}"] = {
            "seconds": t_large, "small_seconds": t_small, "small_frames": n_small,
            "marginal_frames_per_s": marginal,
            "marginal_fraction_of_read": marginal / (n / limit),
            "compute_us_per_frame": 1e6 * compute,
            "root_rss": max(r["root_rss"] for r in runs),
            "worker_rss": [max(w) for w in zip(*[r["worker_rss"] for r in runs])]
            if all(r["worker_rss"] for r in runs) else [],
            "reread_frames": runs[0]["reread_frames"], "pilot_frames": runs[0]["pilot_frames"]}
    print(f"{'configuration':14s} {'time s':>7s} {'frames/s':>9s} {'GB/s':>6s} "
          f"{'of read':>7s} {'marginal':>9s} {'of read':>7s} {'us/frame':>8s} {'root RSS':>9s}  "
          f"worker RSS (GB)")
    print(f"{'zarr read':14s} {limit:7.2f} {n / limit:9.0f} {nbytes / limit / 1e9:6.2f} "
          f"{1.0:7.2f}")
    print(f"{'lensfree read':14s} {direct:7.2f} {n / direct:9.0f} "
          f"{nbytes / direct / 1e9:6.2f} {limit / direct:7.2f}")
    for where, (z, d) in in_worker.items():  # reading alone inside a Dask worker
        print(f"  in a Dask worker ({where}): zarr read {z:.2f} s ({limit / z:.2f} of this "
              f"process's), lensfree read {d:.2f} s ({direct / d:.2f})")
    for name, r in rows.items():
        t = r["seconds"]
        r.update(frames_per_s=n / t, gb_per_s=nbytes / t / 1e9, fraction_of_read=limit / t)
        workers = " ".join(f"{w / 1e9:.2f}" for w in r["worker_rss"])
        print(f"{name:14s} {t:7.2f} {n / t:9.0f} {nbytes / t / 1e9:6.2f} {limit / t:7.2f} "
              f"{r['marginal_frames_per_s']:9.0f} {r['marginal_fraction_of_read']:7.2f} "
              f"{r['compute_us_per_frame']:8.1f} {r['root_rss'] / 1e9:9.2f}  {workers}")
    scaling = {}
    for kind in ("dask", "mpi"):
        if f"{kind} 1" in rows and f"{kind} 2" in rows:
            one, two = rows[f"{kind} 1"], rows[f"{kind} 2"]
            scaling[kind] = {"total": one["seconds"] / two["seconds"],
                             "marginal": two["marginal_frames_per_s"]
                             / one["marginal_frames_per_s"]}
            print(f"{kind}: 2 workers {scaling[kind]['total']:.2f}x one "
                  f"(marginal {scaling[kind]['marginal']:.2f}x)", end="; ")
    any_row = next(iter(rows.values()))
    print(f"pilot {any_row['pilot_frames']} frames, read twice {any_row['reread_frames']}")
    import shutil

    shutil.rmtree(path)
    shutil.rmtree(small)
    return {"size": size, "dtype": dtype, "frames": n, "chunk_frames": chunk,
            "raw_bytes": nbytes, "stored_bytes": stored, "zarr_read_s": limit,
            "lensfree_read_s": direct,
            "dask_worker_read_s": {k: {"zarr": z, "lensfree": d}
                                   for k, (z, d) in in_worker.items()},
            "rows": rows, "scaling_2_vs_1": scaling}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 1024, 2048, 4096])
    ap.add_argument("--dtypes", nargs="+", default=["uint16", "uint32"])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--configs", nargs="+", default=[f"{b}-{n}" for b, n in CONFIGS],
                    help="backend-workers, e.g. local-1 dask-2 mpi-4")
    ap.add_argument("--scale", type=float, default=1.0, help="multiply frame counts")
    ap.add_argument("--out", default="benchmarks/results/bench_sum.json")
    args = ap.parse_args()
    configs = [(c.split("-")[0], int(c.split("-")[1])) for c in args.configs]
    tmp = tempfile.mkdtemp(prefix="lensfree-bench-sum-")
    results = {"repeats": args.repeats, "cpus": os.cpu_count(), "cases": []}
    for size, dtype, n, chunk in CASES:
        if size in args.sizes and dtype in args.dtypes:
            n = max(chunk, int(n * args.scale))
            results["cases"].append(bench_case(tmp, size, dtype, n, chunk, configs,
                                               args.repeats))
            os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
            with open(args.out, "w") as f:
                json.dump(results, f, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
