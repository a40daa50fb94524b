"""Ptychography: time per iteration per 1,000 positions at 128^2, against two FFTs per position.

Simulates a 1,000-position Fermat scan of 128x128 frames and times iterations of
`lensfree ptycho --engine parallel` (or ``--engine``) on 1 and 2 workers of every back
end: local (threads), Dask (a LocalCluster of processes) and MPI (`mpiexec -n k python -m
lensfree`). Two cases:

- ``refine``: true positions off the pixel grid, recorded ones 1 px RMS off, position
  refinement every iteration: every position shifts its probe by a sub-pixel rest (four
  FFTs per position and mode: shift, forward, inverse, and the probe gradient moved back).
- ``fixed``: whole-pixel positions, known exactly, no refinement (two FFTs per position).

The time of an iteration is the median over the iterations of a run (``ptycho`` attrs
``seconds_per_iteration``, taken on the root: blocks on the workers, the reduction, the
update and the broadcast), after a warm-up run on the same workers (FFT plans made, frames
cached in the workers). The limit is two 128^2 complex64 FFTs per position and mode.
With ``--engine dm`` the local rows come twice: as run (each block's exit waves stay in
the process that wrote them, stored only for the iterations a checkpoint names) and with
them stored every iteration, as on Dask; and a row times those stores alone (each block's
exit waves written into a ``ptycho/exit_waves`` array as the stage writes them, median of
three passes over every block): what the store costs of an iteration.

Then a side-by-side scan (``--peer-positions`` of ``--peer-size``^2, 2 px RMS position
errors, sub-pixel truth) goes through lensfree's engines (``--peer-engines``: parallel,
LSQML, ePIE, the difference map; refinement from the default iteration, 1), PtyLab's
mPIE with position correction and Pty-chi's LSQML with gradient position correction, when
installed (``pip install ptylab``; ``pip install --no-deps ptychi`` plus pydantic: not
lensfree dependencies): time per iteration, final object error and position error.

    python benchmarks/bench_ptycho.py [--positions 1000] [--iterations 5] [--out results.json]
    python benchmarks/bench_ptycho.py --backends "" --peer-positions 289 --peer-size 64 \
        --peer-iterations 50      # the issue's Pty-chi comparison only
    python benchmarks/bench_ptycho.py --positions 10000 --iterations 3 \
        --backends local:1,mpi:1,mpi:2,mpi:4 --peer-iterations 0   # the scale case
    python benchmarks/bench_ptycho.py --positions 2500 --engine dm --backends local:1 \
        --cases refine --peer-iterations 0   # the difference map's exit-wave store

The timing rows also give the root process's peak memory and, beside it, the frames'
amplitudes that process keeps itself (all of them on local, its share on MPI): the rest
is bounded, whatever the number of positions (one object-sized partial sum).

The machine is shared: medians of the iterations, and the spread is printed; a run next to
other jobs can be off by tens of percent.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
import zarr

sys.path.insert(0, os.path.dirname(__file__))
from timing import median_time  # noqa: E402

from lensfree.engine import fft as fftlib  # noqa: E402
from lensfree.engine import ptycho as pt  # noqa: E402
from lensfree.engine import simulate_ptycho as sp  # noqa: E402
from lensfree.io.scan import score_run, simulate_ptycho  # noqa: E402
from lensfree.launch import ptycho_dm  # noqa: E402
from lensfree.launch.backends import make_backend  # noqa: E402
from lensfree.launch.stage_ptycho import PtychoStageParams, run_ptycho  # noqa: E402

#: ptypy's difference map on one core of this kind of machine (issue 5), ms/frame-iteration
PTYPY_MS = 0.8


def two_ffts_per_position(n: int, size: int) -> float:
    fft = fftlib.get_fft2((size, size)).prepare()
    a = fftlib.empty_aligned((size, size))
    a[...] = np.random.default_rng(0).normal(size=(size, size))
    b = fftlib.empty_aligned((size, size))

    def run():
        for _ in range(n):
            fft.forward(a, out=b)
            fft.inverse(b, out=a)
    return median_time(run, 5)


def _engine(case: str, iterations: int, engine: str = "parallel") -> PtychoStageParams:
    refine = case == "refine"
    return PtychoStageParams(engine=pt.PtychoParams(engine=engine, iterations=iterations,
                                                    refine_positions=refine, refine_start=0),
                             checkpoint_every=10_000)


def _cli_args(case: str, iterations: int, engine: str = "parallel") -> list[str]:
    args = ["--engine", engine, "--iterations", str(iterations), "--checkpoint-every",
            "10000", "--quiet"]
    return args + (["--refine-positions", "--refine-start", "0"] if case == "refine" else [])


def exit_store_time(frames: str, tmp: str, n_blocks: int | None = None) -> float:
    """Seconds to store every block's exit waves once (one mode), as the difference map
    stores them in an iteration: one chunk per block into a fresh run store's
    ``ptycho/exit_waves`` (median of three passes)."""
    from lensfree.launch import ptycho_workers as pw
    from lensfree.partitioning import position_blocks

    src = zarr.open_group(frames, mode="r")
    n, h, w = src["frames"].shape
    blocks = position_blocks(np.asarray(src["positions"][...]),
                             n_blocks or max(1, int(np.ceil(n / 64))))
    group = zarr.open_group(os.path.join(tmp, "exits.zarr"), mode="w").create_group("ptycho")
    ptycho_dm.exit_waves_array(group, blocks, (1, h, w))
    size = max(len(b) for b in blocks)
    rng = np.random.default_rng(0)
    exits = (rng.normal(size=(size, 1, h, w)) + 0j).astype(np.complex64)
    waves = pw.ExitWaves(os.path.join(tmp, "exits.zarr", "ptycho", "exit_waves"), "bench",
                         None, 0, 0)

    def run():
        for b in range(len(blocks)):
            pw.store_exits(waves, b, 1, exits)
    return median_time(run, 3)


def _mpiexec() -> str | None:
    here = shutil.which("mpiexec", path=os.path.dirname(sys.executable))
    return here or shutil.which("mpiexec")


def iteration_time(frames: str, tmp: str, case: str, backend: str, workers: int,
                   iterations: int, engine: str = "parallel", note: str = ""
                   ) -> tuple[float, float, float]:
    """Median seconds per iteration of a run of ``iterations`` (after a warm-up run), the
    root's peak memory (MB) and the seconds of the first iteration (on MPI the job's
    first, which reads the frames; elsewhere the timed run's, after the warm-up read
    them); ``note`` tells runs of the same case apart."""
    tag = f"{engine}-{case}-{backend}-{workers}{note.replace(' ', '-')}"
    if backend == "mpi":
        mpiexec = _mpiexec()
        if mpiexec is None:
            raise RuntimeError("no mpiexec (pip install 'lensfree[mpi]')")
        out = os.path.join(tmp, f"run-{tag}.zarr")
        # one job: its first iteration reads the frames and plans; the median skips it
        cmd = [mpiexec, "-n", str(workers), sys.executable, "-m", "lensfree", "ptycho",
               frames, "--out", out, "--backend", "mpi",
               *_cli_args(case, iterations + 2, engine)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
        if proc.returncode:
            raise RuntimeError(proc.stderr.strip().splitlines()[-1])
        attrs = zarr.open_group(out, mode="r")["ptycho"].attrs
        return (attrs["seconds_per_iteration"], attrs["root_max_rss_mb"],
                attrs["seconds_first_iteration"])
    with make_backend(backend, workers=workers, progress=False, dashboard_address=":0") as be:
        if note:  # as on Dask: no task known to stay in its process, stored every iteration
            be.placement = lambda n_tasks: None
        run_ptycho(be, frames, os.path.join(tmp, f"warm-{tag}.zarr"), _engine(case, 2, engine))
        attrs = run_ptycho(be, frames, os.path.join(tmp, f"run-{tag}.zarr"),
                           _engine(case, iterations, engine))
        return (attrs["seconds_per_iteration"], attrs["root_max_rss_mb"],
                attrs["seconds_first_iteration"])


def _ptylab_run(frames: str, tmp: str, iterations: int) -> dict:
    """PtyLab's mPIE with position correction (pcPIE) on the scan in ``frames``.

    PtyLab reads an HDF5 file in metres: the geometry is chosen so that one object pixel
    is ``DXO`` and positions are the recorded ones (centred). It rounds positions to
    whole pixels, as it always does.
    """
    import contextlib
    import io
    import logging

    import h5py
    from PtyLab import Engines, ExperimentalData, Params, Reconstruction
    from PtyLab.Monitor.Monitor import DummyMonitor

    src = zarr.open_group(frames, mode="r")
    data = np.asarray(src["frames"][...], np.float32)
    recorded = np.asarray(src["positions"][...])
    n, h, w = data.shape
    dxo, wavelength, dxd = 1e-8, 1e-9, 1e-5
    path = os.path.join(tmp, "ptylab.h5")
    with h5py.File(path, "w") as f:
        f["ptychogram"] = data
        f["encoder"] = (recorded - recorded.mean(axis=0)) * dxo
        f["wavelength"] = wavelength
        f["dxd"] = dxd
        f["zo"] = h * dxd * dxo / wavelength  # dxo = wavelength zo / (h dxd)
        f["entrancePupilDiameter"] = h / 4 * dxo
    logging.getLogger("PtyLab").setLevel(logging.WARNING)
    quiet = io.StringIO()
    with contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):
        exp = ExperimentalData(path, "CPM")
        params = Params()
        params.positionCorrectionSwitch = True
        params.propagatorType = "Fraunhofer"
        params.gpuSwitch = False
        rec = Reconstruction(exp, params)
        rec.initializeObjectProbe()
        guess = np.asarray(src["probe"][0], np.complex64)  # the same start as lensfree's
        power = np.mean(np.sum(data, axis=(1, 2))) / np.sum(np.abs(guess) ** 2)
        rec.probe = (guess * np.sqrt(power)).reshape(rec.probe.shape).astype(rec.probe.dtype)
        engine = Engines.mPIE(rec, exp, params, DummyMonitor())
        engine.numIterations = iterations
        t0 = time.perf_counter()
        engine.reconstruct()
        seconds = (time.perf_counter() - t0) / iterations
    obj = np.asarray(rec.object).reshape(rec.No, rec.No)
    probe = np.asarray(rec.probe).reshape(-1, h, w)
    origin = np.round(recorded.mean(axis=0)) - (rec.No // 2 - rec.Np // 2)
    truth = pt.in_frame(src["truth/object"][...], origin, obj.shape)
    crops = np.asarray(rec.positions, int)
    lit = pt.illumination(crops, probe, obj.shape)
    corrected = np.asarray(rec.encoder_corrected) / dxo
    true_pos = src["truth/positions"][...]
    return {"seconds_per_iteration": seconds,
            "object_error": pt.object_error(obj, truth, lit > 0.1 * lit.max()),
            "position_error_before": pt.position_error(recorded, true_pos),
            "position_error_after": pt.position_error(corrected, true_pos)}


def _ptychi_run(frames: str, iterations: int, engine: str = "lsqml", batch: int = 32,
                position_step: float = 2.0) -> dict:
    """Pty-chi's LSQML (or ePIE) with gradient position correction on the scan in ``frames``
    (PyTorch on the CPU, every thread it is given). Positions go in as recorded (object
    pixels; Pty-chi places the probe's centre there, relative to its object's centre),
    the probe guess is the store's, scaled to the data's counts as for PtyLab. Tuned as the
    issue's measurement asks (batch 16-32, position step 1-2 px, update limit 0.5 px): on
    the 289-frame 64^2 scan at 50 epochs batch 32 with a 2 px step did best (object error
    0.083, position error cut 38%, against 0.101 and 23% with a 1 px step)."""
    import sys
    import types

    if "torchvision" not in sys.modules:  # Pty-chi imports only GaussianBlur from it, and
        # the torchvision wheels here do not load against the CPU torch (an ABI mismatch)
        tv, tr = types.ModuleType("torchvision"), types.ModuleType("torchvision.transforms")

        class GaussianBlur:  # noqa: D401  (never used by the options below)
            def __init__(self, *a, **k):
                raise NotImplementedError("torchvision stub")

        tr.GaussianBlur, tv.transforms = GaussianBlur, tr
        sys.modules.update({"torchvision": tv, "torchvision.transforms": tr})
    import logging

    import ptychi.api as api
    import torch
    from ptychi.api.task import PtychographyTask
    from ptychi.utils import get_suggested_object_size

    logging.getLogger("ptychi").setLevel(logging.WARNING)
    src = zarr.open_group(frames, mode="r")
    data = np.asarray(src["frames"][...], np.float32)
    recorded = np.asarray(src["positions"][...])
    n, h, w = data.shape
    guess = np.asarray(src["probe"][0], np.complex64)
    power = np.mean(np.sum(data, axis=(1, 2))) / (np.sum(np.abs(guess) ** 2) * h * w)
    probe = torch.tensor((guess * np.sqrt(power * h * w))[None, None])
    centred = recorded - recorded.mean(axis=0)
    options = api.LSQMLOptions() if engine == "lsqml" else api.EPIEOptions()
    options.data_options.data = torch.tensor(data)
    shape = get_suggested_object_size(centred, (h, w), extra=16)
    options.object_options.initial_guess = torch.ones([1, *shape], dtype=torch.complex64)
    options.object_options.pixel_size_m = 1e-8
    options.object_options.optimizable = True
    options.object_options.step_size = 1
    options.probe_options.initial_guess = probe
    options.probe_options.optimizable = True
    options.probe_options.step_size = 1
    pos = options.probe_position_options
    pos.position_x_px, pos.position_y_px = centred[:, 1], centred[:, 0]
    pos.optimizable = True
    pos.optimization_plan.start = 10
    pos.step_size = position_step
    pos.correction_options.update_magnitude_limit = 0.5
    options.reconstructor_options.batch_size = batch
    options.reconstructor_options.num_epochs = iterations
    if engine == "lsqml":
        options.reconstructor_options.noise_model = api.NoiseModels.GAUSSIAN
    task = PtychographyTask(options)
    t0 = time.perf_counter()
    task.run()
    seconds = (time.perf_counter() - t0) / iterations
    obj = task.get_data_to_cpu("object", as_numpy=True)[0]
    probe_out = task.get_data_to_cpu("probe", as_numpy=True)[0]
    px = task.get_data_to_cpu("probe_positions", as_numpy=True)  # (N, 2) y, x
    corrected = np.asarray(px) + recorded.mean(axis=0)
    # Pty-chi's probe centre at position p sits at object pixel p + shape // 2: the
    # probe's corner (lensfree's position) at p + shape // 2 - h // 2
    origin = recorded.mean(axis=0) - (np.array(obj.shape) // 2 - np.array((h, w)) // 2)
    truth = pt.in_frame(src["truth/object"][...], np.round(origin), obj.shape)
    crops, _ = pt.corners(corrected, np.round(origin), obj.shape, (h, w))
    lit = pt.illumination(crops, probe_out.reshape(-1, h, w), obj.shape)
    true_pos = src["truth/positions"][...]
    return {"seconds_per_iteration": seconds,
            "object_error": pt.object_error(obj, truth, lit > 0.1 * lit.max()),
            "position_error_before": pt.position_error(recorded, true_pos),
            "position_error_after": pt.position_error(corrected, true_pos)}


def side_by_side(tmp: str, n: int, size: int, iterations: int,
                 position_error: float = 2.0, engines=("parallel", "lsqml", "epie", "dm"),
                 peers=("ptylab", "ptychi"), seed: int = 0) -> dict:
    """lensfree (each engine with its defaults and refinement, 1 local worker), PtyLab
    (mPIE with position correction) and Pty-chi (LSQML with gradient position correction)
    on one simulated scan (``seed``), the same iterations."""
    frames = os.path.join(tmp, f"scan-peer-{seed}.zarr")
    simulate_ptycho(frames, sp.PtychoSimParams(n_positions=n, frame_size=size,
                                               position_error=position_error, subpixel=True,
                                               seed=seed))
    out = {"positions": n, "frame": size, "iterations": iterations,
           "position_error_rms_px": position_error, "seeds": [seed]}
    for engine in engines:
        run = os.path.join(tmp, f"peer-lensfree-{engine}.zarr")
        params = PtychoStageParams(engine=pt.PtychoParams(
            engine=engine, iterations=iterations, refine_positions=True))
        with make_backend("local", workers=1, progress=False) as be:
            attrs = run_ptycho(be, frames, run, params)
        err, before, after = score_run(frames, run)
        out[f"lensfree {engine}"] = {"seconds_per_iteration": attrs["seconds_per_iteration"],
                                     "object_error": err, "position_error_before": before,
                                     "position_error_after": after}
    runners = {"ptylab": (lambda: _ptylab_run(frames, tmp, iterations), "pip install ptylab"),
               "ptychi": (lambda: _ptychi_run(frames, iterations),
                          "pip install --no-deps ptychi; pip install pydantic")}
    for name in peers:
        run_peer, how = runners[name]
        try:
            out[name] = run_peer()
        except ImportError as exc:
            out[name] = {"error": f"{name} not installed ({exc}); {how}"}
        except Exception as exc:  # say exactly why the peer did not run
            out[name] = {"error": f"{name} failed: {type(exc).__name__}: {exc}"}
    return out


def median_over_scans(runs: list[dict]) -> dict:
    """The side by side of several scans (`side_by_side` of each seed): every code's
    median of each number, and its object errors scan by scan (``object_errors``)."""
    out = {k: v for k, v in runs[0].items() if not isinstance(v, dict)}
    out["seeds"] = [s for r in runs for s in r["seeds"]]
    for name, first in runs[0].items():
        if not isinstance(first, dict):
            continue
        if "error" in first:
            out[name] = first
            continue
        rows = [r[name] for r in runs]
        out[name] = {key: float(np.median([row[key] for row in rows])) for key in first}
        out[name]["object_errors"] = [row["object_error"] for row in rows]
    return out


def print_peer(peer: dict) -> None:
    seeds = peer.get("seeds", [0])
    print(f"\nside by side: {peer['positions']} positions of {peer['frame']}^2, "
          f"{peer['iterations']} iterations, recorded positions "
          f"{peer['position_error_rms_px']:g} px RMS off (sub-pixel truth)"
          + (f"; medians over {len(seeds)} scans (seeds {', '.join(map(str, seeds))})"
             if len(seeds) > 1 else ""))
    print(f"{'code':32s} {'ms/frame-iter':>13s} {'object error':>12s} "
          f"{'pos. error before':>17s} {'after':>7s} {'cut':>5s}")
    labels = {"ptylab": "PtyLab mPIE + pcPIE", "ptychi": "Pty-chi LSQML + gradient pos."}
    for name in peer:
        if not isinstance(peer[name], dict):
            continue
        label = labels.get(name, f"{name} + refinement")
        r = peer[name]
        if "error" in r:
            print(f"{label:32s} not run: {r['error']}")
            continue
        ms = r["seconds_per_iteration"] / peer["positions"] * 1e3
        cut = 1 - r["position_error_after"] / r["position_error_before"]
        per_scan = ("  (" + " ".join(f"{e:.4f}" for e in r["object_errors"]) + ")"
                    if len(r.get("object_errors", ())) > 1 else "")
        print(f"{label:32s} {ms:13.3f} {r['object_error']:12.4f} "
              f"{r['position_error_before']:17.2f} {r['position_error_after']:7.2f} "
              f"{cut:5.0%}{per_scan}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--positions", type=int, default=1000)
    ap.add_argument("--iterations", type=int, default=5)
    ap.add_argument("--backends", default="local:1,local:2,dask:1,dask:2,mpi:1,mpi:2",
                    help="back end:workers pairs to time")
    ap.add_argument("--cases", default="refine,fixed", help="timing cases: refine, fixed")
    ap.add_argument("--engine", default="parallel", choices=pt.ENGINES[2:],
                    help="block engine of the timing rows")
    ap.add_argument("--peer-iterations", type=int, default=50,
                    help="iterations of the side-by-side runs with PtyLab (0: skip)")
    ap.add_argument("--peer-positions", type=int, default=200)
    ap.add_argument("--peer-size", type=int, default=128, help="frame side of the side by side")
    ap.add_argument("--peer-engines", default="parallel,lsqml,epie,dm",
                    help="lensfree engines of the side by side")
    ap.add_argument("--peers", default="ptylab,ptychi", help="peer codes of the side by side")
    ap.add_argument("--peer-seeds", default="0",
                    help="seeds of the side-by-side scans (medians over them: one scan's "
                         "object error moves by ~10%% from seed to seed)")
    ap.add_argument("--out", default="benchmarks/results/bench_ptycho.json")
    args = ap.parse_args()
    n, size = args.positions, 128
    per_k = 1000 / n
    configs = [(b, int(w)) for b, w in (c.split(":") for c in args.backends.split(",") if c)]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        limit = two_ffts_per_position(n, size) * per_k
        rows.append({"what": "two FFTs per position (limit)", "workers": 1,
                     "seconds_per_iteration_per_1000": limit})
        for case in args.cases.split(",") if configs else ():
            frames = os.path.join(tmp, f"scan-{case}.zarr")
            simulate_ptycho(frames, sp.PtychoSimParams(
                n_positions=n, frame_size=size, position_error=1.0 if case == "refine" else 0,
                subpixel=case == "refine"))
            runs = [(b, w, None) for b, w in configs]
            if args.engine == "dm":  # also stored every iteration, as on Dask
                runs += [(b, w, "stored every iteration") for b, w in configs if b == "local"]
            for backend, workers, note in runs:
                what = f"{args.engine} engine, {case}, {backend}" + (f", {note}" if note else "")
                try:
                    t, rss, first = iteration_time(frames, tmp, case, backend, workers,
                                                   args.iterations, args.engine, note or "")
                except Exception as exc:  # say why, keep the rest of the table
                    rows.append({"what": what, "workers": workers, "error": str(exc)})
                    continue
                print(f"{what} x{workers}: {t * per_k:.3f} s/iter/1000 ({t * per_k / limit:.1f}x "
                      f"limit), root {rss:.0f} MB, first iteration {first:.1f} s", flush=True)
                rows.append({"what": what, "workers": workers,
                             "seconds_per_iteration_per_1000": t * per_k,
                             "root_max_rss_mb": rss, "first_iteration_s": first,
                             # the frames' amplitudes the root process keeps itself
                             "root_amplitudes_mb": n * size * size * 4 / 2**20
                             * {"local": 1, "mpi": 1 / workers}.get(backend, 0)})
            if args.engine == "dm":
                t = exit_store_time(frames, tmp) * per_k
                print(f"dm exit waves stored once: {t:.3f} s/1000 positions", flush=True)
                rows.append({"what": "dm exit waves, one store of every block", "workers": 1,
                             "seconds_per_iteration_per_1000": t})
        peer = None
        if args.peer_iterations:
            peer = median_over_scans([
                side_by_side(tmp, args.peer_positions, args.peer_size, args.peer_iterations,
                             engines=tuple(args.peer_engines.split(",")),
                             peers=tuple(p for p in args.peers.split(",") if p), seed=seed)
                for seed in (int(v) for v in args.peer_seeds.split(","))])
    _print(rows, limit)
    if peer:
        print_peer(peer)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as fh:
        json.dump({"rows": rows, "peer": peer, "date": time.strftime("%Y-%m-%d %H:%M"),
                   "load_average": os.getloadavg()}, fh, indent=1)


def _print(rows, limit) -> None:
    print(f"{'what':40s} {'workers':>7s} {'s/iter/1000 pos':>16s} {'x limit':>8s} "
          f"{'vs ptypy':>8s} {'speed-up':>8s} {'root MB':>8s} {'its frames':>10s}")
    one = {}
    for r in rows:
        if "error" in r:
            print(f"{r['what']:40s} {r['workers']:7d}  not run: {r['error']}")
            continue
        t = r["seconds_per_iteration_per_1000"]
        if r["workers"] == 1:
            one[r["what"]] = t
        speedup = one.get(r["what"], np.nan) / t
        print(f"{r['what']:40s} {r['workers']:7d} {t:16.3f} {t / limit:8.1f} "
              f"{PTYPY_MS / t:7.1f}x {speedup:7.2f}x {r.get('root_max_rss_mb', np.nan):8.0f} "
              f"{r.get('root_amplitudes_mb', np.nan):10.0f}")
    print(f"(s per iteration per 1000 positions = ms per frame-iteration; load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")


if __name__ == "__main__":
    main()
