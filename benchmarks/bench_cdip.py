"""CDIP (neural fields, no support) against GHIO with and without a support.

On the built-in simulated objects (``letter``, ``blobs``, ``cell``) and two compact objects
made here that the engine was not tuned on (``smooth``: a smooth lobed blob with a phase
ramp; ``particle``: an off-centre projected sphere with a denser inclusion, the kind of
particle ``simulate ensemble`` images): error of the best member (lowest R_F) against the
truth after alignment and twin, the lowest error of any member, and R_F; and on the measured ESRF
logo (``esrf_logo_cdi/logo5mu_20sec.npz`` from the project's shared data: R_F only, no
truth), every engine runs through ``lensfree phase`` on one local worker:
- ``cdip``: ``--engine cdip`` with the given epochs, no support at all;
- ``ghio+support``: the default schedule (HIO + ER + shrinkwrap) from the autocorrelation
  support (or the logo's own support), the paper's baseline;
- ``ghio-nosupport``: the same HIO + ER without shrinkwrap from a support that is the
  whole field (what GHIO does when it knows nothing of the object).
Reported: error, R_F, seconds per member and, for CDIP, per epoch (compute seconds of
the stage over members x epochs; medians over members). Prints a table and writes JSON.

    python benchmarks/bench_cdip.py [--size 64] [--members 4] [--epochs 800]
        [--logo-epochs 200] [--no-logo] [--out benchmarks/results/bench_cdip.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy: one BLAS thread, as workers

import numpy as np  # noqa: E402
import zarr  # noqa: E402
from scipy import ndimage  # noqa: E402

from lensfree.engine import shapes  # noqa: E402
from lensfree.engine.align import align  # noqa: E402
from lensfree.io import runstore  # noqa: E402
from lensfree.launch.cli import main  # noqa: E402

LOGO = Path(__file__).resolve().parents[2] / "shared" / "data" / "esrf_logo_cdi" / \
    "logo5mu_20sec.npz"
SHAPES = ("letter", "blobs", "cell", "smooth", "particle")


def smooth(n: int, oversampling: float = 3.0) -> np.ndarray:
    """A smooth three-lobed blob with a gentle magnitude modulation and a phase ramp."""
    y, x = np.mgrid[0:n, 0:n] - n // 2
    h = n / oversampling / 2
    angle, r = np.arctan2(y, x), np.hypot(y, x)
    edge = h * (0.75 + 0.15 * np.cos(2 * angle + 0.7) + 0.1 * np.cos(3 * angle + 2.1))
    mag = ndimage.gaussian_filter((r < edge).astype(float), 1.0)
    mag *= 1 + 0.3 * np.cos(2 * x / h + 1) * np.sin(1.5 * y / h)
    return (mag * np.exp(1.2j * (x + 0.5 * y) / h)).astype(np.complex64)


def particle(n: int, oversampling: float = 3.0) -> np.ndarray:
    """An off-centre projected sphere with a denser spherical inclusion (a weak phase object)."""
    y, x = np.mgrid[0:n, 0:n] - n // 2
    big = n / oversampling / 2
    cy, cx = 1.5, -2.0
    t = np.sqrt(np.clip(big**2 - (y - cy) ** 2 - (x - cx) ** 2, 0, None)) / big
    small = 0.4 * big
    t = t + 0.5 * np.sqrt(np.clip(small**2 - (y - cy + 3) ** 2 - (x - cx - 3) ** 2, 0,
                                  None)) / big
    return (t * np.exp(0.8j * t)).astype(np.complex64)


MADE = {"smooth": smooth, "particle": particle}


def simulate_made(out: str, name: str, size: int, seed: int) -> None:
    """The store ``simulate object`` writes, for one of :data:`MADE` (default noise)."""
    rho = MADE[name](size)
    amplitude, valid = shapes.far_field(rho, 1e9, np.random.default_rng([seed, 4]), 3.0)
    run = runstore.open_run(out, mode="w")
    params = {"object": name, "size": size, "photons": 1e9, "missing_radius": 3.0,
              "seed": seed}
    truth = runstore.begin_stage(run, "truth", params=params, inputs={})
    runstore.write_array(truth, "object", rho)
    runstore.write_array(truth, "support", np.abs(rho) > 0)
    runstore.finish_stage(truth)
    group = runstore.begin_stage(run, "ensemble", params=params, inputs={"simulated": name})
    runstore.write_array(group, "amplitude", amplitude)
    runstore.write_array(group, "valid", valid)
    runstore.finish_stage(group, n_valid=int(valid.sum()),
                          missing_fraction=float(1 - valid.mean()))


def error_after_alignment(obj, truth) -> float:
    aligned, _ = align(obj, truth)
    scale = np.vdot(aligned, truth) / np.vdot(aligned, aligned)
    return float(np.linalg.norm(scale * aligned - truth) / np.linalg.norm(truth))


def _phase(run: str, args: list[str]) -> dict:
    if main(["phase", run, *args, "--quiet"]) != 0:
        raise SystemExit(f"lensfree phase {run} {' '.join(args)} failed")
    group = zarr.open_group(run, mode="r")
    ph = group["phasing"]
    final = np.asarray(ph["errors"][-1])
    best = int(np.argmin(final))
    timing = ph.attrs["timing_s"]
    members = final.size * int(ph.attrs["parameters"]["generations"])
    out = {"best_r_fourier": float(final[best]), "median_r_fourier": float(np.median(final)),
           "seconds_per_member": timing["compute"] / members, "wall_s": timing["wall"]}
    if "truth" in group:
        truth = np.asarray(group["truth/object"][...])
        errors = [error_after_alignment(np.asarray(o), truth) for o in ph["objects"]]
        out.update(best_error=errors[best], min_error=float(min(errors)),
                   median_error=float(np.median(errors)))
    return out


def _whole_field_support(run: str) -> None:
    ens = zarr.open_group(run, mode="r+")["ensemble"]
    shape = ens["amplitude"].shape
    ens.create_array("support", data=np.ones(shape, bool), overwrite=True)


def bench_case(name: str, source: str, work: str, a) -> list[dict]:
    epochs = a.logo_epochs if name == "logo" else a.epochs
    members = 1 if name == "logo" else a.members
    cases = {
        "cdip": ["--engine", "cdip", "--population", str(members), "--epochs", str(epochs)],
        "ghio+support": ["--population", str(members), "--generations", str(a.generations)],
        "ghio-nosupport": ["--population", str(members), "--generations", str(a.generations),
                           "--schedule", "HIO:400,ER:100"],
    }
    rows = []
    for engine, args in cases.items():
        run = os.path.join(work, f"{name}-{engine}.zarr")
        shutil.copytree(source, run)
        if engine == "ghio-nosupport":
            _whole_field_support(run)
        row = {"object": name, "engine": engine, "members": members, **_phase(run, args)}
        if engine == "cdip":
            row["epochs"] = epochs
            row["seconds_per_epoch"] = row["seconds_per_member"] / epochs
        rows.append(row)
        print(_line(row), flush=True)
    return rows


def _line(r: dict) -> str:
    err = f"{r['best_error']:.3f}" if "best_error" in r else "  -  "
    low = f"{r['min_error']:.3f}" if "min_error" in r else "  -  "
    per_epoch = f"{1e3 * r['seconds_per_epoch']:.2f}" if "seconds_per_epoch" in r else "  -"
    return (f"{r['object']:<8} {r['engine']:<15} {err:>6} {low:>6} {r['best_r_fourier']:>8.4f} "
            f"{r['seconds_per_member']:>9.2f} {per_epoch:>9}")


def main_(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--members", type=int, default=4)
    ap.add_argument("--epochs", type=int, default=None, help="CDIP epochs [the default]")
    ap.add_argument("--generations", type=int, default=2, help="GHIO generations")
    ap.add_argument("--logo-epochs", type=int, default=200)
    ap.add_argument("--no-logo", action="store_true")
    ap.add_argument("--shapes", nargs="*", default=list(SHAPES))
    ap.add_argument("--out", default="benchmarks/results/bench_cdip.json")
    a = ap.parse_args(argv)
    if a.epochs is None:
        from lensfree.engine.cdip import CdipParams

        a.epochs = CdipParams().epochs
    rows = []
    print(f"{'object':<8} {'engine':<15} {'error':>6} {'min':>6} {'R_F':>8} {'s/member':>9} "
          f"{'ms/epoch':>9}")
    with tempfile.TemporaryDirectory() as work:
        for shape in a.shapes:
            source = os.path.join(work, f"{shape}.zarr")
            if shape in MADE:
                simulate_made(source, shape, a.size, 2)
            else:
                assert main(["simulate", "object", "--out", source, "--shape", shape,
                             "--size", str(a.size), "--seed", "2"]) == 0
            rows += bench_case(shape, source, work, a)
        if not a.no_logo and LOGO.exists():
            source = os.path.join(work, "logo.zarr")
            assert main(["ingest", str(LOGO), "--pattern", "--out", source, "--quiet"]) == 0
            rows += bench_case("logo", source, work, a)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    meta = {"size": a.size, "members": a.members, "epochs": a.epochs,
            "logo_epochs": a.logo_epochs, "ghio_generations": a.generations,
            "python": sys.version.split()[0], "machine": platform.machine(),
            "cpus": os.cpu_count()}
    Path(a.out).write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main_())
