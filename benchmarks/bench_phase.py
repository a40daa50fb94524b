"""Stage 2 speed: one HIO iteration against its FFT limit, population throughput, peers.

1. Time per HIO iteration at 256^2, 512^2 and 1024^2 (a letter) and 64^3 and 128^3 (a
   faceted crystal) next to the time of the two FFTW transforms every iteration must do
   (the limit of an FFT-bound iteration), with the errors recorded every iteration
   (``error_every=1``) and every 10th (the default). CPU time of this (single-threaded)
   process rather than wall time, and the fastest of several rounds (medians too), so
   that other processes on the machine disturb it as little as possible.
2. Population throughput (member-iterations per second) of ``lensfree phase`` on dask and
   mpi with 1 and 2 workers.
3. With ``--full`` (or ``--only full``): a 100-member, 10-generation, 200-iteration
   population at 256^2 end to end on ``mpiexec -n 2`` (median of ``--full-repeats``) and
   on 2 dask workers, against its FFT floor timed around each run.
4. 3D peers: lensfree, PyNX's CPU CDI and cohere (``cohere_core``, numpy) on one 64^3
   pattern, cohere's ``180*HIO+20*ER`` block from the same starts with a fixed support:
   time per iteration against the FFT limit, R_F and error against the truth. PyNX runs
   when ``pynx.cdi`` imports (``bash benchmarks/peers/install_pynx.sh`` unpacks it; see
   that script), cohere when ``cohere_core`` does (``pip install cohere-core``: a
   benchmark peer, not a lensfree dependency).
5. PyNX side by side with ``phasing.run`` in 2D (same pattern, support, start and HIO+ER
   iterations): time, final R_F and error against the truth.
Medians of several runs; prints tables and writes JSON. Runs with one BLAS thread.

    python benchmarks/bench_phase.py [--repeats 5] [--full] [--no-pynx] [--out results.json]
    python benchmarks/bench_phase.py --only iteration --sizes 256 --volumes 64   # quick
    python benchmarks/bench_phase.py --only peers3d --repeats 3
    python benchmarks/bench_phase.py --only full --out benchmarks/results/bench_phase_full.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy: one BLAS thread, as workers

import numpy as np  # noqa: E402
from scipy import ndimage  # noqa: E402
from timing import median_time  # noqa: E402  (benchmarks/timing.py)

from lensfree.engine import align, fft, ghio, phasing, shapes  # noqa: E402
from lensfree.launch.backends import DaskBackend  # noqa: E402
from lensfree.launch.stage_phase import PhaseParams, run_phase  # noqa: E402
from lensfree.launch.stage_simulate import simulate_object  # noqa: E402

PYNX_SITE = Path(__file__).resolve().parent / "peers/pynx/usr/lib/python3/dist-packages"
ERROR_EVERY = (1, 10)


def _cpu_once(fn) -> float:
    """CPU seconds of this process for one ``fn()``: the iteration timings run on one
    thread, and CPU time leaves out the moments other processes hold the core."""
    t0 = time.process_time()
    fn()
    return time.process_time() - t0


def volume_pattern(n: int, photons: float = 1e9, seed: int = 1):
    """The faceted crystal of :func:`lensfree.engine.shapes.crystal` on ``n^3`` and its
    Poisson far field (amplitude centred, every voxel measured)."""
    truth = shapes.crystal(n)
    intensity = np.abs(np.fft.fftshift(np.fft.fftn(truth.astype(np.complex128)))) ** 2
    counts = np.random.default_rng(seed).poisson(intensity * (photons / intensity.sum()))
    return truth, np.sqrt(counts).astype(np.float32), np.ones(truth.shape, bool)


def iteration_vs_fft(n: int, repeats: int, ndim: int = 2) -> dict:
    """HIO iteration time against two FFTW transforms of the same size, per round; a 2D
    ``n^2`` letter or a 3D ``n^3`` crystal."""
    shape = (n,) * ndim
    f = fft.get_fftn(shape)
    f.prepare()
    x = fft.empty_aligned(shape)
    x[...] = np.random.default_rng(0).standard_normal(shape)
    loops = max(5, int(2e7 / x.size))

    def two_ffts():
        for _ in range(loops):
            f.forward(x, x)
            f.inverse(x, x)

    if ndim == 2:
        rho = shapes.make_object("letter", n, 3.0)
        amp, valid = shapes.far_field(rho, 1e9, np.random.default_rng(1), 0.05 * n)
    else:
        _, amp, valid = volume_pattern(n)
    support = phasing.autocorrelation_support(amp, valid)
    rho0 = ghio.member_start(amp, valid, support, 0)
    every = ERROR_EVERY

    def hio(k: int, iterations: int):
        params = phasing.PhasingParams(error_every=k)
        return lambda: phasing.run(amp, valid, rho0, support, f"HIO:{iterations}", params)

    two_ffts(), hio(1, 5)()  # plans, wisdom, first-touch of the arrays
    t_fft, short, long = [], {k: [] for k in every}, {k: [] for k in every}
    for _ in range(repeats):  # rounds: both sides of a ratio see the same load
        t_fft.append(_cpu_once(two_ffts) / loops)
        for k in every:
            short[k].append(_cpu_once(hio(k, loops)) / loops)
            long[k].append(_cpu_once(hio(k, 2 * loops)) / loops)
    row = {"n": n, "ndim": ndim, "shape": list(shape), "loops": loops, "repeats": repeats,
           "two_ffts_ms": min(t_fft) * 1e3, "two_ffts_median_ms": statistics.median(t_fft) * 1e3}
    for k in every:
        # the difference of two run lengths removes the per-run setup; the fastest of
        # each (timeit's rule) is the least disturbed by other processes
        hio_min = min(long[k]) - min(short[k])  # both per `loops` iterations
        hio_med = statistics.median(long[k]) - statistics.median(short[k])
        row[f"hio_every{k}_ms"] = hio_min * 1e3
        row[f"ratio_every{k}"] = hio_min / min(t_fft)
        row[f"hio_every{k}_median_ms"] = hio_med * 1e3
        row[f"ratio_every{k}_median"] = hio_med / statistics.median(t_fft)
    row["hio_ms"], row["ratio"] = row["hio_every10_ms"], row["ratio_every10"]  # the default
    return row


def print_iteration_table(rows: list[dict]) -> None:
    every = [k for k in ERROR_EVERY if f"ratio_every{k}" in rows[0]]
    head = f"{'size':>6s} {'2 FFTs ms':>10s}"
    for k in every:
        head += f" {f'HIO ms e={k}':>12s} {'/ 2 FFTs':>9s} {'(median)':>9s}"
    print(head)
    for row in rows:
        size = f"{row['n']}^{row.get('ndim', 2)}"
        line = f"{size:>6s} {row['two_ffts_ms']:10.3f}"
        for k in every:
            line += (f" {row[f'hio_every{k}_ms']:12.3f} {row[f'ratio_every{k}']:9.2f}"
                     f" {row[f'ratio_every{k}_median']:9.2f}")
        print(line)
    print("(CPU time of one thread; e = PhasingParams.error_every; fastest of "
          f"{rows[0]['repeats']} rounds, and in brackets the ratio of medians)")


# ----------------------------------------------------------------------------- PyNX


def import_pynx():
    """``(pynx.cdi, None)`` or ``(None, why not)``; looks in benchmarks/peers/pynx too."""
    if PYNX_SITE.is_dir() and str(PYNX_SITE) not in sys.path:
        sys.path.append(str(PYNX_SITE))
    os.environ.setdefault("PYNX_PU", "cpu")
    try:
        import pynx.cdi
    except Exception as exc:  # ImportError, or a PyNX that breaks on this numpy/scipy
        where = ("benchmarks/peers/pynx holds no PyNX: run bash benchmarks/peers/"
                 "install_pynx.sh" if not PYNX_SITE.is_dir() else "PyNX found but")
        return None, f"{where}; import pynx.cdi failed: {type(exc).__name__}: {exc}"
    return pynx.cdi, None


def _truth_error(rho: np.ndarray, truth: np.ndarray) -> float:
    """``||a x - truth|| / ||truth||`` after alignment, ``a`` the optimal complex scalar."""
    aligned, _ = align.align(rho, truth)
    a = np.vdot(aligned, truth) / np.vdot(aligned, aligned)
    return float(np.linalg.norm(a * aligned - truth) / np.linalg.norm(truth))


def pynx_side_by_side(cdi, repeats: int, n: int = 256, n_hio: int = 400,
                      n_er: int = 100, starts: tuple[int, ...] = (0, 1, 2)) -> dict:
    """PyNX's CPU ``ER()**n_er * HIO()**n_hio`` and lensfree's ``"HIO:n_hio,ER:n_er"`` on
    one simulated pattern, from the same random starts, with one fixed support (no
    shrinkwrap: the two codes update supports by different rules). Times are medians of
    ``repeats`` runs from the first start, in CPU seconds of this process (both codes run
    on one thread here) and in wall seconds; errors are given for every start.

    The letter at oversampling 3, 1e9 photons, a missing central disk of radius 4 px,
    the support the letter dilated by 2 px, beta 0.9. PyNX wants arrays with the origin
    at [0, 0] and orthonormal FFTs, so its start is shifted and scaled by sqrt(N), and its
    result scaled back. R_F and the error against the truth are computed the same way
    for both, by lensfree.
    """
    truth = shapes.letter(n, 3.0)
    amp, valid = shapes.far_field(truth, 1e9, np.random.default_rng(1), 4.0)
    support = ndimage.binary_dilation(np.abs(truth) > 0.05, iterations=2)
    schedule = f"HIO:{n_hio},ER:{n_er}"
    shift, scale = np.fft.ifftshift, np.sqrt(amp.size)
    iobs = shift(amp.astype(np.float32) ** 2)
    mask = shift(~valid).astype(np.int8)  # PyNX: > 0 masked, the field floats there

    def run_pynx(rho0):
        c = cdi.CDI(iobs, support=shift(support).astype(np.int8), obj=shift(rho0) * scale,
                    mask=mask)
        c = cdi.ER() ** n_er * cdi.HIO(beta=0.9) ** n_hio * c
        return np.fft.fftshift(c.get_obj()) / scale

    def run_lensfree(every: int):
        params = phasing.PhasingParams(beta=0.9, error_every=every)
        return lambda rho0: phasing.run(amp, valid, rho0, support, schedule, params)[0]

    codes = {"lensfree": run_lensfree(1), "lensfree error_every=10": run_lensfree(10),
             "PyNX (CPU)": run_pynx}
    rho0s = [ghio.member_start(amp, valid, support, seed) for seed in starts]
    out = {"n": n, "schedule": schedule, "support": "letter dilated by 2 px, fixed",
           "missing_radius_px": 4.0, "starts": list(starts), "codes": {}}
    for name, fn in codes.items():
        rhos = [fn(rho0) for rho0 in rho0s]  # the first is also the warm-up
        t = statistics.median(_cpu_once(lambda fn=fn: fn(rho0s[0])) for _ in range(repeats))
        wall = median_time(lambda fn=fn: fn(rho0s[0]), repeats)
        r_f = [phasing.fourier_r_factor(rho, amp, valid) for rho in rhos]
        err = [_truth_error(rho, truth) for rho in rhos]
        out["codes"][name] = {
            "seconds": t, "wall_seconds": wall, "ms_per_iteration": t / (n_hio + n_er) * 1e3,
            "r_fourier": r_f, "error_vs_truth": err,
            "r_fourier_median": statistics.median(r_f),
            "error_vs_truth_median": statistics.median(err)}
    return out


def print_pynx_table(res: dict) -> None:
    print(f"\nPyNX vs lensfree: {res['schedule']} at {res['n']}^2, support "
          f"{res['support']}, one thread each; time: median CPU (and wall) seconds from "
          f"the first start; R_F and error against the truth: each of "
          f"{len(res['starts'])} starts")
    print(f"{'code':>24s} {'CPU s':>6s} {'wall s':>6s} {'ms/iter':>7s} {'R_F':>20s} "
          f"{'err vs truth':>20s}")
    for name, row in res["codes"].items():
        r_f = " ".join(f"{v:.4f}" for v in row["r_fourier"])
        err = " ".join(f"{v:.4f}" for v in row["error_vs_truth"])
        print(f"{name:>24s} {row['seconds']:6.3f} {row['wall_seconds']:6.3f} "
              f"{row['ms_per_iteration']:7.3f} {r_f:>20s} {err:>20s}")


def import_cohere():
    """``(cohere_core.controller.phasing, None)`` or ``(None, why not)``."""
    try:
        import cohere_core.controller.phasing as cohere
    except Exception as exc:
        return None, (f"import cohere_core failed: {type(exc).__name__}: {exc} (pip install "
                      "cohere-core: a benchmark peer, not a lensfree dependency)")
    return cohere, None


def _scaled_r_factor(rho: np.ndarray, amp: np.ndarray, valid: np.ndarray) -> float:
    """``R_F`` of ``rho`` after the least-squares scale of ``|F rho|`` to ``A`` (the codes
    normalise their objects differently)."""
    mag = np.abs(np.fft.fftshift(np.fft.fftn(rho.astype(np.complex128))))[valid]
    a = amp[valid].astype(np.float64)
    scale = np.dot(mag, a) / np.dot(mag, mag)
    return float(np.abs(scale * mag - a).sum() / a.sum())


def peers_3d(repeats: int, n: int = 64, n_hio: int = 180, n_er: int = 20,
             starts: tuple[int, ...] = (0, 1, 2)) -> dict:
    """lensfree, PyNX (CPU) and cohere (numpy) on one 3D pattern: cohere's block
    ``n_hio*HIO + n_er*ER`` (``"HIO:n_hio,ER:n_er"``) from the same random starts, with one
    fixed support (no shrinkwrap: the codes update supports by different rules).

    The crystal of :func:`volume_pattern` at ``n^3``, 1e9 photons, every voxel measured,
    the support the crystal dilated by 2 voxels, beta 0.9. Times: median CPU seconds of
    this process over ``repeats`` runs from the first start (each code on one thread:
    OPENBLAS_NUM_THREADS=1, FFTs single-threaded), per iteration and against the two
    FFTW complex64 transforms of lensfree's limit. ``R_F`` (after a least-squares scale:
    the codes normalise differently) and the error against the truth (after alignment,
    twin and phase) of each start, computed the same way for every code.

    Conventions: PyNX wants the origin at [0, 0] and orthonormal FFTs (its start is shifted
    and scaled by sqrt(N)); cohere takes the centred amplitude and propagates with
    ``ifftn`` unnormalised, so its start is ``conj(rho0)`` and its result is conjugated
    back.
    """
    truth, amp, valid = volume_pattern(n)
    support = ndimage.binary_dilation(np.abs(truth) > 0.05, iterations=2)
    schedule = f"HIO:{n_hio},ER:{n_er}"
    iterations = n_hio + n_er
    rho0s = [ghio.member_start(amp, valid, support, seed) for seed in starts]
    shape = amp.shape
    f = fft.get_fftn(shape).prepare()
    x, y = fft.empty_aligned(shape), fft.empty_aligned(shape)
    x[...] = 1

    def two_ffts():
        for _ in range(20):
            f.forward(x, y)
            f.inverse(y, y, normalise=False)

    codes = {"lensfree": lambda rho0: phasing.run(amp, valid, rho0, support, schedule,
                                                  phasing.PhasingParams(beta=0.9))[0]}
    skipped = {}
    cdi, why = import_pynx()
    if cdi is None:
        skipped["PyNX (CPU)"] = why
    else:
        shift, scale = np.fft.ifftshift, np.sqrt(amp.size)
        iobs = shift(amp.astype(np.float32) ** 2)

        def run_pynx(rho0):
            c = cdi.CDI(iobs, support=shift(support).astype(np.int8), obj=shift(rho0) * scale)
            c = cdi.ER() ** n_er * cdi.HIO(beta=0.9) ** n_hio * c
            return np.fft.fftshift(c.get_obj()) / scale

        codes["PyNX (CPU)"] = run_pynx
    cohere, why = import_cohere()
    if cohere is None:
        skipped["cohere"] = why
    else:
        tmp = tempfile.mkdtemp(prefix="lensfree-cohere-")
        data_file = os.path.join(tmp, "data.npy")
        np.save(data_file, amp)
        np.save(os.path.join(tmp, "support.npy"), support.astype(np.float32))

        def run_cohere(rho0):
            np.save(os.path.join(tmp, "image.npy"), np.conj(rho0).astype(np.complex64))
            params = {"algorithm_sequence": f"{n_hio}*HIO+{n_er}*ER", "hio_beta": 0.9,
                      "continue_dir": tmp}
            with open(os.devnull, "w") as null, contextlib.redirect_stdout(null):
                rec = cohere.create_rec(params, data_file, "np", -1, debug=True)
                rec.iterate()
            return np.conj(np.asarray(rec.ds_image))

        codes["cohere"] = run_cohere
    out = {"shape": list(shape), "schedule": schedule, "support": "crystal dilated by 2 px, "
           "fixed", "starts": list(starts), "codes": {}, "skipped": skipped}
    t_fft = [_cpu_once(two_ffts) / 20]
    for name, fn in codes.items():
        rhos = [fn(rho0) for rho0 in rho0s]  # the first is also the warm-up
        times = []
        for _ in range(repeats):
            times.append(_cpu_once(lambda fn=fn: fn(rho0s[0])))
            t_fft.append(_cpu_once(two_ffts) / 20)
        r_f = [_scaled_r_factor(rho, amp, valid) for rho in rhos]
        err = [_truth_error(rho, truth) for rho in rhos]
        out["codes"][name] = {
            "seconds": statistics.median(times),
            "ms_per_iteration": statistics.median(times) / iterations * 1e3,
            "r_fourier": r_f, "error_vs_truth": err,
            "r_fourier_median": statistics.median(r_f),
            "error_vs_truth_median": statistics.median(err)}
    out["two_ffts_ms"] = statistics.median(t_fft) * 1e3
    for row in out["codes"].values():
        row["ratio_to_two_ffts"] = row["ms_per_iteration"] / out["two_ffts_ms"]
    if cohere is not None:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def print_peers_3d_table(res: dict) -> None:
    shape = "x".join(str(s) for s in res["shape"])
    print(f"\n3D peers: {res['schedule']} at {shape}, support {res['support']}, one thread "
          f"each; median CPU time from the first start; two FFTW complex64 transforms "
          f"{res['two_ffts_ms']:.2f} ms; R_F (scaled) and error against the truth: each of "
          f"{len(res['starts'])} starts")
    print(f"{'code':>12s} {'s/run':>6s} {'ms/iter':>8s} {'/ 2 FFTs':>9s} {'R_F':>22s} "
          f"{'err vs truth':>22s}")
    for name, row in res["codes"].items():
        r_f = " ".join(f"{v:.4f}" for v in row["r_fourier"])
        err = " ".join(f"{v:.4f}" for v in row["error_vs_truth"])
        print(f"{name:>12s} {row['seconds']:6.2f} {row['ms_per_iteration']:8.2f} "
              f"{row['ratio_to_two_ffts']:9.2f} {r_f:>22s} {err:>22s}")
    for name, why in res["skipped"].items():
        print(f"{name:>12s} not run: {why}")


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


def population(args, result: dict) -> None:
    """Population throughput on dask and mpi, 1 and 2 workers; with --full the big run."""
    tmp = tempfile.mkdtemp(prefix="lensfree-bench-")
    try:
        _population(args, result, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _population(args, result: dict, tmp: str) -> None:
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


_FFT_LOOP = """
import sys, time
from lensfree.engine import fft
shape = (int(sys.argv[1]),) * 2
f = fft.get_fftn(shape).prepare()
x, y = fft.empty_aligned(shape), fft.empty_aligned(shape)
x[...] = 1
for _ in range(100):
    f.forward(x, y); f.inverse(y, y, normalise=False)
c0, t0 = time.process_time(), time.perf_counter()
for _ in range(int(sys.argv[2])):
    f.forward(x, y); f.inverse(y, y, normalise=False)
print((time.process_time() - c0) / int(sys.argv[2]), (time.perf_counter() - t0) / int(sys.argv[2]))
"""


def two_ffts_seconds(n: int, processes: int, loops: int = 3000) -> tuple[float, float]:
    """(CPU, wall) seconds of two ``n^2`` complex64 FFTW transforms, medians over
    ``processes`` processes running the same loop at once (2: as the two ranks run them,
    sharing the machine's caches and memory bus)."""
    procs = [subprocess.Popen([sys.executable, "-c", _FFT_LOOP, str(n), str(loops)],
                              stdout=subprocess.PIPE, text=True) for _ in range(processes)]
    rows = [tuple(map(float, p.communicate()[0].split())) for p in procs]
    return tuple(statistics.median(column) for column in zip(*rows))


def full_population(args, result: dict) -> None:
    """The 100 x 10 x 200 population at 256^2 on ``mpiexec -n 2`` (``--full-repeats`` runs)
    and once on 2 dask workers (not with ``--only full``), against its FFT floor
    ``members x generations x iterations x two FFTs / 2``. The two FFTs are timed before
    and after every run, in one process (CPU time: the floor of an idle machine) and in
    two at once (wall time: the floor under the load the run saw); the ratios take the
    mean of the two timings around their run. ``wall`` is the stage's time as lensfree
    prints it, ``job`` the whole command's, imports and MPI start-up included."""
    tmp = tempfile.mkdtemp(prefix="lensfree-bench-")
    try:
        base = os.path.join(tmp, "full.zarr")
        simulate_object(base, size=256, photons=1e9, missing_radius=6)
        full = PhaseParams(population=100, generations=10, schedule="HIO:160,ER:40")
        count = full.population * full.generations * full.n_iterations / 2
        out = result["full_100x10x200_256"] = {"runs": []}
        print("\n100 members x 10 generations x 200 iterations at 256^2 on 2 workers; "
              "floor = members x generations x iterations x 2 FFTs / 2")
        print(f"{'back end':>10s} {'wall s':>7s} {'job s':>6s} {'floor s':>8s} {'ratio':>6s} "
              f"{'floor, 2 at once':>17s} {'ratio':>6s} {'load':>5s}")
        kinds = ["mpi"] * args.full_repeats + ([] if args.only == "full" else ["dask"])
        for i, kind in enumerate(kinds):
            before = two_ffts_seconds(256, 1)[0], two_ffts_seconds(256, 2)[1]
            run = os.path.join(tmp, f"full-{kind}-{i}.zarr")
            shutil.copytree(base, run)
            t0 = time.perf_counter()
            t = population_time(kind, 2, run, full)
            job = time.perf_counter() - t0  # mpiexec to exit: start-up and imports too
            after = two_ffts_seconds(256, 1)[0], two_ffts_seconds(256, 2)[1]
            floor, floor2 = ((a + b) / 2 * count for a, b in zip(before, after))
            row = {"kind": kind, "seconds": t, "job_seconds": job,
                   "floor_s": floor, "ratio_to_floor": t / floor,
                   "floor_two_at_once_s": floor2, "ratio_to_floor_two_at_once": t / floor2,
                   "load": os.getloadavg()[0]}
            out["runs"].append(row)
            print(f"{kind:>10s} {t:7.1f} {job:6.1f} {floor:8.1f} {t / floor:6.2f} {floor2:17.1f} "
                  f"{t / floor2:6.2f} {row['load']:5.1f}")
            shutil.rmtree(run, ignore_errors=True)
        mpi = [r for r in out["runs"] if r["kind"] == "mpi"]
        for key in ("seconds", "job_seconds", "floor_s", "ratio_to_floor",
                    "ratio_to_floor_two_at_once"):
            out[f"mpi_median_{key}"] = statistics.median(r[key] for r in mpi)
        print(f"mpi, median of {len(mpi)}: {out['mpi_median_seconds']:.1f} s, "
              f"{out['mpi_median_ratio_to_floor']:.2f}x the floor "
              f"({out['mpi_median_ratio_to_floor_two_at_once']:.2f}x the floor of two at once)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--full", action="store_true", help="also the 100 x 10 x 200 run at 256^2")
    ap.add_argument("--full-repeats", type=int, default=3,
                    help="mpiexec -n 2 runs of the 100 x 10 x 200 population")
    ap.add_argument("--no-pynx", action="store_true",
                    help="skip the comparisons with PyNX and cohere")
    ap.add_argument("--only", choices=("iteration", "pynx", "peers3d", "full"),
                    help="run only this part (quick checks)")
    ap.add_argument("--sizes", type=int, nargs="+", default=(256, 512, 1024),
                    help="2D pattern sizes of the iteration timings")
    ap.add_argument("--volumes", type=int, nargs="*", default=(64, 128),
                    help="3D volume sizes of the iteration timings")
    ap.add_argument("--peers3d-size", type=int, default=64,
                    help="volume size of the 3D side by side (PyNX, cohere)")
    ap.add_argument("--out", default="benchmarks/results/bench_phase.json")
    args = ap.parse_args()
    t_start = time.perf_counter()
    result = {"iteration": [], "population": {}, "load_average": os.getloadavg()}
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())} "
          f"({os.cpu_count()} cores)")
    if args.only in (None, "iteration"):
        for n in args.sizes:
            result["iteration"].append(iteration_vs_fft(n, args.repeats))
        for n in args.volumes:
            result["iteration"].append(iteration_vs_fft(n, args.repeats, ndim=3))
        print_iteration_table(result["iteration"])
    if args.only is None:
        population(args, result)
    if args.full or args.only == "full":
        full_population(args, result)
    if not args.no_pynx and args.only in (None, "peers3d"):
        result["peers_3d"] = peers_3d(args.repeats, args.peers3d_size)
        print_peers_3d_table(result["peers_3d"])
    if not args.no_pynx and args.only in (None, "pynx"):
        cdi, why = import_pynx()
        if cdi is None:
            result["pynx"] = f"not run: {why}"
            print(f"\nPyNX peer: {result['pynx']}")
        else:
            result["pynx"] = pynx_side_by_side(cdi, args.repeats)
            print_pynx_table(result["pynx"])
    result["load_average_end"] = os.getloadavg()
    result["bench_seconds"] = time.perf_counter() - t_start
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2, default=str)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
