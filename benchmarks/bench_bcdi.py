"""lensfree against cohere on the real Bragg CDI scan 54 (APS 34-ID-C), on identical data.

The scan is prepared once by ``lensfree ingest --bragg`` (dark field subtracted, white field
divided where valid, hot/dead pixels and aliens unmeasured, counts <= 2 set to 0, a cube of
``--size`` cropped with the maximum at its centre). Both codes then phase that one
``ensemble/amplitude``:

- cohere (``cohere_core``, numpy, one thread): its scan54 recipe
  ``3*(20*ER+180*HIO)+20*ER``, beta 0.9, Gaussian shrinkwrap every iteration (sigma 1,
  threshold 0.1), twin trigger at iteration 2, random starts. cohere has no detector mask:
  it gets the amplitude with the unmeasured voxels at 0.
- lensfree through ``lensfree phase`` (one worker): the same recipe
  ``(ER:20,HIO:180)*3,ER:20`` with shrinkwrap every 10 iterations, as independent starts,
  then a GHIO population (members x generations), and ``lensfree gather``.

Every object is scored the same way: ``R_F = sum |s |F obj| - A| / sum A`` over the valid
voxels with ``A > 0`` (``s`` the least-squares scale, since the codes normalise their
objects differently), the largest body of ``|obj| > 0.1 max`` (voxels, extent) and the
phase spread over it. Time per iteration: wall and CPU seconds of this process (one thread
each) over the iterations run; on a loaded machine the CPU seconds are the fair measure.

    python benchmarks/bench_bcdi.py [--size 144] [--cohere-starts 2] [--lensfree-starts 3]
        [--ghio 8 3] [--codes lensfree,cohere]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import zarr
from scipy import ndimage

from lensfree.launch.cli import main as cli

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "shared" / "data" / "cohere_bcdi_scan54" / "scan54_raw_frames.npz"
SCHEDULE = "(ER:20,HIO:180)*3,ER:20;shrinkwrap=10"
COHERE_SEQUENCE = "3*(20*ER+180*HIO)+20*ER"
ITERATIONS = 3 * 200 + 20


def ingest(source: Path, run: str, size: int) -> None:
    assert cli(["ingest", str(source), "--bragg", "--out", run, "--dark-key", "darkfield",
                "--white-key", "whitefield", "--roi", "0", "0", "--floor", "2",
                "--size", str(size), "--quiet"]) == 0


def score(obj: np.ndarray, amp: np.ndarray, valid: np.ndarray) -> dict:
    """R_F over the nonzero valid voxels (least-squares scale), and the crystal's body."""
    nonzero = valid & (amp > 0)
    mag = np.abs(np.fft.fftshift(np.fft.fftn(obj.astype(np.complex128))))[nonzero]
    a = amp[nonzero].astype(np.float64)
    s = np.dot(mag, a) / np.dot(mag, mag)
    body = np.abs(obj) > 0.1 * np.abs(obj).max()
    labels, _ = ndimage.label(body)
    sizes = np.bincount(labels.ravel())[1:]
    largest = labels == 1 + int(np.argmax(sizes))
    extent = [int(np.ptp(ix)) + 1 for ix in np.nonzero(largest)]
    phase = np.angle(obj[largest] * np.exp(-1j * np.angle(obj[largest].sum())))
    return {"r_f": float(np.abs(s * mag - a).sum() / a.sum()),
            "body_voxels": int(largest.sum()), "body_fraction": float(sizes.max() / sizes.sum()),
            "extent": extent, "phase_p90_rad": float(np.percentile(np.abs(phase), 90))}


def run_lensfree(base: str, tmp: str, name: str, population: int, generations: int,
                 seed: int = 0) -> dict:
    """``lensfree phase`` + ``gather`` on a copy of the ingested store; every member scored."""
    run = os.path.join(tmp, f"{name}.zarr")
    shutil.copytree(base, run)
    t0, c0 = time.perf_counter(), time.process_time()
    assert cli(["phase", run, "--population", str(population), "--generations",
                str(generations), "--schedule", SCHEDULE, "--shrinkwrap-sigma", "1", "1",
                "--shrinkwrap-threshold", "0.1", "--workers", "1", "--fft-threads", "1",
                "--error-every", "10", "--seed", str(seed), "--quiet"]) == 0
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    assert cli(["gather", run, "--fraction", "1", "--quiet"]) == 0
    g = zarr.open_group(run, mode="r")
    amp, valid = g["ensemble/amplitude"][...], g["ensemble/valid"][...]
    scores = [score(obj, amp, valid) for obj in g["phasing/objects"][...]]
    supports = [int(s.sum()) for s in g["phasing/supports"][...]]
    best = int(np.argmin([s["r_f"] for s in scores]))
    shutil.rmtree(run, ignore_errors=True)
    iterations = population * generations * ITERATIONS
    return {"population": population, "generations": generations, "seconds": seconds,
            "cpu_seconds": cpu, "s_per_iteration": seconds / iterations,
            "cpu_s_per_iteration": cpu / iterations,
            "r_f": [s["r_f"] for s in scores], "support_voxels": supports,
            "best": {**scores[best], "support_voxels": supports[best]}}


def run_cohere(amp: np.ndarray, valid: np.ndarray, tmp: str, starts: int) -> dict | None:
    """cohere's scan54 recipe from ``starts`` random starts on the same amplitude."""
    try:
        import cohere_core.controller.phasing as cohere
    except Exception as exc:  # a benchmark peer, not a lensfree dependency
        print(f"cohere skipped: import cohere_core failed ({type(exc).__name__}: {exc}); "
              "pip install cohere-core")
        return None
    data_file = os.path.join(tmp, "cohere_data.npy")
    np.save(data_file, np.where(valid, amp, 0).astype(np.float32))
    params = {"algorithm_sequence": COHERE_SEQUENCE, "hio_beta": 0.9,
              "shrink_wrap_trigger": [1, 1], "shrink_wrap_type": "GAUSS",
              "shrink_wrap_threshold": 0.1, "shrink_wrap_gauss_sigma": 1.0,
              "initial_support_area": [0.5, 0.5, 0.5], "twin_trigger": [2],
              "twin_halves": [0, 0]}
    rows = []
    for _ in range(starts):
        with contextlib.redirect_stdout(io.StringIO()):
            rec = cohere.create_rec(dict(params), data_file, "np", -1, debug=True)
            t0, c0 = time.perf_counter(), time.process_time()
            rec.iterate()
            seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
        obj = np.conj(np.asarray(rec.ds_image))  # cohere propagates with ifftn
        rows.append({**score(obj, amp, valid), "seconds": seconds, "cpu_seconds": cpu,
                     "support_voxels": int(np.asarray(rec.support).sum())})
    best = min(rows, key=lambda r: r["r_f"])
    return {"starts": starts, "s_per_iteration": float(np.median(
        [r["seconds"] for r in rows])) / ITERATIONS, "cpu_s_per_iteration": float(np.median(
        [r["cpu_seconds"] for r in rows])) / ITERATIONS, "r_f": [r["r_f"] for r in rows],
        "support_voxels": [r["support_voxels"] for r in rows], "best": best}


def print_table(res: dict) -> None:
    print(f"scan54 at {res['size']}^3, {res['nonzero_voxels']} nonzero valid voxels; "
          f"R_F over them (least-squares scale)")
    print(f"{'code':>28s} {'cpu s/it':>8s} {'best R_F':>8s} {'all R_F':>30s} {'body':>7s} "
          f"{'support':>7s} {'extent':>12s} {'phase90':>7s}")
    for name, row in res["codes"].items():
        b = row["best"]
        allr = " ".join(f"{v:.3f}" for v in sorted(row["r_f"]))
        if len(allr) > 30:
            allr = allr[:27] + "..."
        ext = "x".join(str(e) for e in b["extent"])
        print(f"{name:>28s} {row['cpu_s_per_iteration']:8.3f} {b['r_f']:8.4f} {allr:>30s} "
              f"{b['body_voxels']:7d} {b['support_voxels']:7d} {ext:>12s} "
              f"{b['phase_p90_rad']:7.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--size", type=int, default=144)
    ap.add_argument("--cohere-starts", type=int, default=2)
    ap.add_argument("--lensfree-starts", type=int, default=3)
    ap.add_argument("--ghio", type=int, nargs=2, default=(8, 3), metavar=("MEMBERS", "GENS"))
    ap.add_argument("--codes", default="lensfree,cohere")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "bench_bcdi.json")
    args = ap.parse_args()
    if not args.data.exists():
        raise SystemExit(f"--data {args.data}: not found")
    codes = args.codes.split(",")
    tmp = tempfile.mkdtemp(prefix="lensfree-bcdi-")
    try:
        base = os.path.join(tmp, "scan54.zarr")
        ingest(args.data, base, args.size)
        g = zarr.open_group(base, mode="r")
        amp, valid = g["ensemble/amplitude"][...], g["ensemble/valid"][...]
        res = {"size": args.size, "schedule": SCHEDULE, "cohere_sequence": COHERE_SEQUENCE,
               "nonzero_voxels": int((valid & (amp > 0)).sum()),
               "invalid_voxels": int((~valid).sum()), "codes": {}}
        args.out.parent.mkdir(parents=True, exist_ok=True)

        def record(name, row):  # every row as it comes: a long run keeps what it has
            if row is not None:
                res["codes"][name] = row
                args.out.write_text(json.dumps(res, indent=1))

        m, gens = args.ghio
        if "cohere" in codes:
            record(f"cohere x{args.cohere_starts}", run_cohere(amp, valid, tmp,
                                                               args.cohere_starts))
        if "lensfree" in codes and m:
            record(f"lensfree GHIO {m}x{gens}", run_lensfree(base, tmp, "ghio", m, gens))
        if "lensfree" in codes and args.lensfree_starts:
            record(f"lensfree x{args.lensfree_starts}", run_lensfree(
                base, tmp, "starts", args.lensfree_starts, 1))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print_table(res)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
