"""The ``lensfree`` command line. Only this module prints; everything else logs."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time

from lensfree.errors import LensfreeError
from lensfree.launch.backends import BACKENDS, boot_dask_in_mpi, make_backend, mpi_world_size

log = logging.getLogger("lensfree")


def _common(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("execution")
    g.add_argument("--backend", choices=BACKENDS, default="local",
                   help="where work runs: this process, a Dask cluster, or MPI ranks "
                        "(under mpirun -n N) [local]")
    g.add_argument("--workers", type=int, default=None,
                   help="local: threads; dask: LocalCluster worker processes [1; dask: cores]")
    g.add_argument("--scheduler", default=None,
                   help="dask: address of an existing scheduler to join instead")
    g.add_argument("--dashboard-address", default=":8787",
                   help="dask: where the LocalCluster dashboard listens [:8787]")
    g.add_argument("--seed", type=int, default=0, help="run seed [0]")
    g.add_argument("--quiet", action="store_true", help="no progress bars")


def _geometry_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("geometry (overrides the store's attrs)")
    g.add_argument("--wavelength", type=float, help="wavelength in metres")
    g.add_argument("--distance", type=float, help="sample-detector distance in metres")
    g.add_argument("--pixel-size", type=float, help="detector pixel size in metres")
    g.add_argument("--pixels", action="store_true",
                   help="accept a store without geometry and work in pixels")


def _geometry(args):
    from lensfree.io.frames import Geometry

    given = [args.wavelength, args.distance, args.pixel_size]
    if all(v is None for v in given):
        return None
    if any(v is None for v in given):
        raise LensfreeError("give all of --wavelength, --distance and --pixel-size, or none")
    for name, v in zip(("--wavelength", "--distance", "--pixel-size"), given):
        if not v > 0:
            raise LensfreeError(f"{name} {v}: must be positive")
    return Geometry(*given)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lensfree",
        description="Distributed reconstruction for lensless coherent imaging "
                    "(ensemble CDI, GHIO phase retrieval, ptychography).")
    parser.add_argument("--version", action="version", version=_version())
    parser.add_argument("--debug", action="store_true", help="full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("demo", help="the whole pipeline on built-in simulated data")
    p.add_argument("--out", default="lensfree-demo", help="output folder [lensfree-demo]")
    p.add_argument("--frames", type=int, default=1000, help="frames to simulate [1000]")
    _common(p)
    p.set_defaults(handler=_cmd_demo)

    p = sub.add_parser("simulate", help="make simulated data")
    kinds = p.add_subparsers(dest="kind", required=True, metavar="KIND")
    e = kinds.add_parser("ensemble", help="frames of many identical core-shell spheres")
    e.add_argument("--out", required=True, help="frame store to write (X.zarr)")
    e.add_argument("--frames", type=int, default=2000, help="number of frames [2000]")
    e.add_argument("--size", type=int, default=256, help="frame size in pixels [256]")
    e.add_argument("--inner", type=float, default=19.0, help="core diameter, nm [19]")
    e.add_argument("--outer", type=float, default=55.0, help="shell diameter, nm [55]")
    e.add_argument("--core-density", type=float, default=3.0, help="[3.0]")
    e.add_argument("--shell-density", type=float, default=1.0, help="[1.0]")
    e.add_argument("--particles", type=float, default=2.0, help="mean particles per frame [2]")
    e.add_argument("--photons", type=float, default=3000.0,
                   help="mean photons per particle on the detector [3000]")
    e.add_argument("--weak-fraction", type=float, default=0.02, help="[0.02]")
    e.add_argument("--streak-fraction", type=float, default=0.02, help="[0.02]")
    e.add_argument("--invalid-fraction", type=float, default=None,
                   help="[0.01 for float dtypes, 0 for integer]")
    e.add_argument("--dtype", default="float32", help="float32, uint16, ... [float32]")
    e.add_argument("--chunk", type=int, default=64, help="frames per chunk [64]")
    _common(e)
    e.set_defaults(handler=_cmd_simulate_ensemble)

    o = kinds.add_parser("object", help="an isolated object's noisy far-field amplitude")
    o.add_argument("--out", required=True, help="run store to write (RUN.zarr)")
    o.add_argument("--shape", default="letter", help="letter, blobs or cell [letter]")
    o.add_argument("--size", type=int, default=128, help="array size in pixels [128]")
    o.add_argument("--oversampling", type=float, default=3.0, help="per dimension [3]")
    o.add_argument("--photons", type=float, default=1e9, help="total expected counts [1e9]")
    o.add_argument("--missing-radius", type=float, default=3.0,
                   help="radius of the missing centre, px [3]")
    o.add_argument("--seed", type=int, default=0, help="noise seed [0]")
    o.set_defaults(handler=_cmd_simulate_object)
    _simulate_ptycho_parser(kinds)

    p = sub.add_parser("ingest", help="convert a CXI/HDF5 file to a frame store, or one "
                                      "summed pattern (--pattern) to a run store")
    p.add_argument("input", help="CXI, Eiger master or HDF5 file; with --pattern .npz/.npy/"
                                 ".tif/.h5/.zarr")
    p.add_argument("--out", required=True, help="frame store (X.zarr), or with --pattern the "
                                                "run store (RUN.zarr) to write")
    p.add_argument("--dataset", help="HDF5 path of the frames (plain HDF5)")
    p.add_argument("--mask-dataset", help="HDF5 path of a mask (nonzero = bad)")
    p.add_argument("--chunk", type=int, default=64, help="frames per chunk [64]")
    _geometry_args(p)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    g = p.add_argument_group("one summed pattern: RUN.zarr/ensemble/ ready for phasing")
    g.add_argument("--pattern", action="store_true", help="the file holds one 2D pattern")
    g.add_argument("--key", help="array name [.npz: intensity or data]")
    g.add_argument("--valid-key", help="array of measured pixels (nonzero = measured)")
    g.add_argument("--support-key", help="real-space support array [.npz: support]")
    g.add_argument("--zeros-measured", action="store_true",
                   help="exact zeros are measured counts, not unmeasured pixels")
    g.add_argument("--amplitude", action="store_true", help="the file holds amplitudes")
    g.add_argument("--fft-shifted", action="store_true", help="zero frequency at pixel (0, 0)")
    g.add_argument("--center", type=float, nargs=2, metavar=("Y", "X"),
                   help="zero frequency in file pixels [found from centrosymmetry]")
    p.set_defaults(handler=_cmd_ingest)

    p = sub.add_parser("sum", help="stage 1: screen, background, sum, centre, patch, bin")
    p.add_argument("frames", help="frame store (X.zarr)")
    p.add_argument("--out", required=True, help="run store to write (RUN.zarr)")
    p.add_argument("--mask", help="mask file (.npy/.npz/.tif/.h5), True or nonzero = measured")
    p.add_argument("--mask-key", help="array name inside the mask file")
    p.add_argument("--weak-factor", type=float, default=0.1,
                   help="weak: total below this times the median total [0.1]")
    p.add_argument("--chi2-max", type=float, default=None,
                   help="edge-scatter chi-square limit [median + 8 * 1.4826 MAD]")
    p.add_argument("--chi2-mad", type=float, default=8.0, help="MADs for the default [8]")
    p.add_argument("--background-fraction", type=float, default=0.01,
                   help="weakest share of surviving frames summed as background [0.01]")
    p.add_argument("--annulus-width", type=int, default=4,
                   help="width of the edge-scatter ring next to the beam stop, px [4]")
    p.add_argument("--bin", type=int, default=2, dest="binning", help="bin factor [2]")
    p.add_argument("--speckle-diameter", type=float, default=None,
                   help="central disk dropped, binned px [beam stop + 4]")
    _geometry_args(p)
    _common(p)
    p.set_defaults(handler=_cmd_sum)
    p = sub.add_parser("run", help="stages and their parameters from one TOML file")
    p.add_argument("config", help="TOML file: [execution] and one table per stage")
    g = p.add_argument_group("overrides of the file's [execution] table")
    g.add_argument("--backend", choices=BACKENDS, default=None)
    g.add_argument("--workers", type=int, default=None)
    g.add_argument("--scheduler", default=None)
    g.add_argument("--dashboard-address", default=None)
    g.add_argument("--seed", type=int, default=None)
    g.add_argument("--quiet", action="store_const", const=True, default=None)
    p.add_argument("--var", action="append", default=[], metavar="NAME=VALUE",
                   help="fill {NAME} placeholders in the file's strings")
    p.set_defaults(handler=_cmd_run)

    p = sub.add_parser("batch", help="many datasets from a manifest, resumably")
    p.add_argument("manifest", help="TOML ([[dataset]] tables) or CSV (name,input,output,config)")
    p.add_argument("--config", help="config for rows that name none")
    p.add_argument("--jobs", type=int, default=1, help="datasets at once [1]")
    g = p.add_argument_group("passed on to every dataset's run")
    g.add_argument("--backend", choices=BACKENDS, default=None)
    g.add_argument("--workers", type=int, default=None)
    g.add_argument("--scheduler", default=None)
    p.set_defaults(handler=_cmd_batch)

    p = sub.add_parser("phase", help="stage 2: GHIO phase-retrieval populations")
    p.add_argument("run", help="run store with a finished ensemble/ group (RUN.zarr)")
    p.add_argument("--population", type=int, default=100, help="members M [100]")
    p.add_argument("--generations", type=int, default=10, help="generations G [10]")
    p.add_argument("--schedule", default="HIO:400,ER:100;shrinkwrap=50",
                   help="steps of every member per generation [HIO:400,ER:100;shrinkwrap=50]")
    p.add_argument("--beta", type=float, default=0.9, help="HIO/RAAR feedback [0.9]")
    p.add_argument("--positivity", default="none", choices=("none", "real", "real-nonneg"),
                   help="object constraint inside the support [none]")
    p.add_argument("--support-threshold", type=float, default=0.1,
                   help="starting support: autocorrelation above this fraction of its "
                        "maximum, when ensemble/ has no support [0.1]")
    p.add_argument("--shrinkwrap-threshold", type=float, default=0.2,
                   help="shrinkwrap: blurred |rho| above this fraction of its maximum [0.2]")
    p.add_argument("--shrinkwrap-sigma", type=float, nargs=2, default=(3.0, 1.0),
                   metavar=("START", "END"), help="shrinkwrap blur, px [3 1]")
    p.add_argument("--error-every", type=int, default=1,
                   help="record R_F and E_S every K-th iteration (and each step's last); "
                        "K > 1 saves ~15%% per iteration [1]")
    _common(p)
    p.set_defaults(handler=_cmd_phase)
    _stage3_parsers(sub)
    _ptycho_parser(sub)
    return parser


def _version() -> str:
    import lensfree

    return f"lensfree {lensfree.__version__}"


def _backend(args):
    if args.backend == "dask" and not args.debug:
        import distributed  # noqa: F401  (its import sets its loggers to INFO)

        # cluster start and stop at INFO are noise on a user's terminal
        logging.getLogger("distributed").setLevel(logging.WARNING)
    in_mpi = getattr(args, "dask_in_mpi", 0)
    return make_backend(args.backend, workers=in_mpi or args.workers, scheduler=args.scheduler,
                        progress=not args.quiet, dashboard_address=args.dashboard_address,
                        shutdown=bool(in_mpi))


def _announce(backend, out=sys.stdout) -> None:
    if backend.is_root:
        link = getattr(backend, "dashboard_link", None)
        extra = f", dashboard {link}" if link else ""
        print(f"backend {backend.name}: {backend.n_workers} worker(s){extra}", file=out,
              flush=True)


def _cmd_simulate_ensemble(args) -> int:
    import numpy as np

    from lensfree.engine.simulate import EnsembleParams
    from lensfree.launch.stage_simulate import simulate_ensemble

    invalid = args.invalid_fraction
    if invalid is None:
        invalid = 0.01 if np.dtype(args.dtype).kind == "f" else 0.0
    try:
        params = EnsembleParams(
            n_frames=args.frames, shape=(args.size, args.size),
            inner_diameter_m=args.inner * 1e-9, outer_diameter_m=args.outer * 1e-9,
            core_density=args.core_density, shell_density=args.shell_density,
            particles_per_frame=args.particles, photons_per_particle=args.photons,
            weak_fraction=args.weak_fraction, streak_fraction=args.streak_fraction,
            invalid_fraction=invalid, dtype=args.dtype, seed=args.seed)
    except (ValueError, TypeError) as exc:
        raise LensfreeError(f"simulate ensemble: {exc}") from None
    with _backend(args) as backend:
        _announce(backend)
        t0 = time.perf_counter()
        attrs = simulate_ensemble(backend, params, args.out, chunk_frames=args.chunk)
        if backend.is_root:
            truth = attrs["truth"]
            print(f"{args.out}: {params.n_frames} frames of {params.shape[0]}x{params.shape[1]} "
                  f"{params.dtype} in {time.perf_counter() - t0:.1f} s; planted "
                  f"{len(truth['weak'])} weak, {len(truth['streak'])} streak, "
                  f"{len(truth['invalid'])} invalid; centre "
                  f"({truth['center'][0]:.2f}, {truth['center'][1]:.2f})")
    return 0


def _cmd_simulate_object(args) -> int:
    from lensfree.launch.stage_simulate import simulate_object

    try:
        attrs = simulate_object(args.out, name=args.shape, size=args.size,
                                oversampling=args.oversampling, photons=args.photons,
                                missing_radius=args.missing_radius, seed=args.seed)
    except ValueError as exc:
        raise LensfreeError(f"simulate object: {exc}") from None
    print(f"{args.out}: {args.shape} {args.size}x{args.size}, {args.photons:.3g} photons, "
          f"{attrs['missing_fraction']:.1%} of pixels missing at the centre")
    return 0


def _cmd_ingest(args) -> int:
    from lensfree.io.ingest import ingest, ingest_pattern

    if args.pattern:
        info = ingest_pattern(
            args.input, args.out, key=args.key, valid_key=args.valid_key,
            support_key=args.support_key, zero_is_missing=not args.zeros_measured,
            geometry=_geometry(args), amplitude=args.amplitude, fft_shifted=args.fft_shifted,
            center=args.center)
        (h, w), (cy, cx) = info["shape"], info["center"]
        print(f"{args.out}: ensemble/ {h}x{w} {info['quantity']} from {args.input}; centre "
              f"({cy:.2f}, {cx:.2f}) moved by {info['shift']}; {info['n_valid']} valid pixels"
              + ("; support" if info["has_support"] else ""))
        return 0
    given = [o for o, v in (("--key", args.key), ("--valid-key", args.valid_key),
                            ("--support-key", args.support_key), ("--center", args.center),
                            ("--zeros-measured", args.zeros_measured),
                            ("--amplitude", args.amplitude), ("--fft-shifted", args.fft_shifted))
             if v not in (None, False)]
    if given:
        raise LensfreeError(f"{', '.join(given)}: only with --pattern")
    info = ingest(args.input, args.out, dataset=args.dataset, mask_dataset=args.mask_dataset,
                  geometry=_geometry(args), chunk_frames=args.chunk, progress=not args.quiet)
    print(f"{args.out}: {info['n_frames']} frames of {info['frame_shape']} {info['dtype']} "
          f"from {args.input}")
    return 0


def _load_mask(args):
    if not args.mask:
        return None
    import numpy as np

    from lensfree.io.images import load_image

    return np.asarray(load_image(args.mask, args.mask_key)) != 0


def sum_params(args):
    """SumParams from parsed arguments; bad values become one-line errors."""
    from lensfree.engine.ensemble import ScreenParams
    from lensfree.launch.stage_sum import SumParams

    try:
        return SumParams(
            screen=ScreenParams(weak_factor=args.weak_factor, chi2_max=args.chi2_max,
                                chi2_mad=args.chi2_mad,
                                background_fraction=args.background_fraction,
                                annulus_width=args.annulus_width),
            binning=args.binning, speckle_diameter=args.speckle_diameter)
    except ValueError as exc:
        raise LensfreeError(f"sum: {exc}") from None


def _cmd_sum(args) -> int:
    from lensfree.io.frames import open_frames
    from lensfree.launch.stage_sum import run_sum

    params = sum_params(args)
    store = open_frames(args.frames, geometry=_geometry(args), allow_pixels=args.pixels,
                        mask=_load_mask(args))
    with _backend(args) as backend:
        _announce(backend)
        t0 = time.perf_counter()
        attrs = run_sum(backend, store, args.out, params)
        if backend.is_root:
            _print_sum(args.out, attrs, time.perf_counter() - t0)
    return 0


def _print_sum(out: str, attrs: dict, seconds: float) -> None:
    c = attrs["counts"]
    cy, cx = attrs["center"]
    print(f"{out}: ensemble/ written in {seconds:.1f} s")
    print(f"  frames  accepted {c['accepted']}, background {c['background']}, weak {c['weak']}, "
          f"chi2 {c['chi2']}, invalid {c['invalid']}")
    if attrs["unreadable"]:
        print(f"  unreadable chunks: {len(attrs['unreadable'])} (frames marked invalid)")
    print(f"  centre  ({cy:.2f}, {cx:.2f}) px; {attrs['n_patched']} pixels patched from mirrors; "
          f"binned x{attrs['binning']}, {attrs['n_valid']} valid pixels")


def phase_params(args):
    """PhaseParams from parsed arguments; bad values become one-line errors."""
    from lensfree.engine.phasing import PhasingParams
    from lensfree.launch.stage_phase import PhaseParams

    try:
        return PhaseParams(
            population=args.population, generations=args.generations,
            schedule=args.schedule, support_threshold=args.support_threshold, seed=args.seed,
            phasing=PhasingParams(beta=args.beta, positivity=args.positivity,
                                  shrinkwrap_threshold=args.shrinkwrap_threshold,
                                  shrinkwrap_sigma_start=args.shrinkwrap_sigma[0],
                                  shrinkwrap_sigma_end=args.shrinkwrap_sigma[1],
                                  error_every=args.error_every))
    except ValueError as exc:
        raise LensfreeError(f"phase: {exc}") from None


def _cmd_phase(args) -> int:
    from lensfree.launch.stage_phase import run_phase

    params = phase_params(args)
    with _backend(args) as backend:
        _announce(backend)
        t0 = time.perf_counter()
        attrs = run_phase(backend, args.run, params)
        if backend.is_root:
            resumed = attrs.get("resumed_complete")
            verb = "already complete, nothing recomputed" if resumed else "written"
            print(f"{args.run}: phasing/ {verb} in {time.perf_counter() - t0:.1f} s; "
                  f"{params.population} members x {params.generations} generations x "
                  f"{params.n_iterations} iterations")
            print(f"  best member {attrs['best_member']}: R_F {attrs['best_error']:.4f} "
                  f"(median {attrs['median_error']:.4f})")
    return 0


def _stage3_parsers(sub) -> None:
    p = sub.add_parser("gather", help="stage 3: average the best members, PRTF, R-factor, SSIM")
    p.add_argument("run", help="run store with a finished phasing/ group (RUN.zarr)")
    p.add_argument("--fraction", type=float, default=0.2,
                   help="share of members averaged, the best by final error [0.2]")
    p.add_argument("--model", help="model image for SSIM (.npy/.npz/.tif/.h5/.zarr) "
                                   "[the store's truth/object when present]")
    p.add_argument("--model-key", help="array name inside the model file")
    p.add_argument("--upsample", type=int, default=20,
                   help="alignment precision, 1/N pixel [20]")
    p.add_argument("--members-per-task", type=int, default=8,
                   help="members one task aligns and sums [8]")
    _common(p)
    p.set_defaults(handler=_cmd_gather)

    p = sub.add_parser("fit", help="fit a particle model to the ensemble amplitude")
    models = p.add_subparsers(dest="model", required=True, metavar="MODEL")
    f = models.add_parser("core-shell", help="core-shell sphere over a grid of diameters")
    f.add_argument("run", help="run store with a finished ensemble/ group (RUN.zarr)")
    f.add_argument("--inner", default="16:21:0.5",
                   help="core diameters START:STOP:STEP (stop included), V or V1,V2 "
                        "[16:21:0.5]")
    f.add_argument("--outer", default="53:58:0.5", help="particle diameters [53:58:0.5]")
    f.add_argument("--pixels", action="store_true",
                   help="diameters in real-space pixels instead of nm")
    f.add_argument("--core-density", type=float, default=3.0, help="[3.0]")
    f.add_argument("--shell-density", type=float, default=1.0, help="[1.0]")
    f.add_argument("--speckle-diameter", type=float, default=None,
                   help="central disk left out, binned px [ensemble/'s speckle_diameter]")
    f.add_argument("--no-offset", dest="offset", action="store_false",
                   help="scale the form factor only (the paper's model), no constant "
                        "amplitude offset for a residual background floor")
    _common(f)
    f.set_defaults(handler=_cmd_fit)

    p = sub.add_parser("report", help="PNG figures and a Markdown summary of a run store")
    p.add_argument("run", help="run store (RUN.zarr)")
    p.add_argument("--out", default=None, help="folder for the report [RUN-report next to RUN]")
    p.set_defaults(handler=_cmd_report)


def gather_params(args):
    """GatherParams from parsed arguments; bad values become one-line errors."""
    from lensfree.launch.stage_gather import GatherParams

    try:
        return GatherParams(fraction=args.fraction, upsample=args.upsample,
                            members_per_task=args.members_per_task)
    except ValueError as exc:
        raise LensfreeError(f"gather {args.run}: {exc}") from None


def _cmd_gather(args) -> int:
    from lensfree.launch.stage_gather import run_gather

    params = gather_params(args)
    model = None
    if args.model:
        from lensfree.io.images import load_image

        model = load_image(args.model, args.model_key)
    with _backend(args) as backend:
        _announce(backend)
        t0 = time.perf_counter()
        a = run_gather(backend, args.run, params, model=model, model_source=args.model)
        if backend.is_root:
            res = f"{a['resolution_px']:.2f} px"
            if a.get("resolution_m"):
                res += f" ({a['resolution_m'] * 1e9:.2f} nm)"
            if not a["resolution_reached"]:
                res += ", PRTF never below 1/e: limited by the data edge"
            print(f"{args.run}: gather/ written in {time.perf_counter() - t0:.1f} s; best "
                  f"{a['n_selected']} of {a['n_members']} members averaged")
            print(f"  resolution {res}; R-factor {a['r_factor']:.4f}"
                  + (f"; SSIM {a['ssim']:.4f}" if a.get("ssim") is not None else ""))
    return 0


def fit_params(args):
    """FitParams from parsed arguments; bad values become one-line errors."""
    from lensfree.launch.stage_fit import FitParams, parse_grid

    try:
        return FitParams(inner=parse_grid(args.inner, "--inner"),
                         outer=parse_grid(args.outer, "--outer"),
                         unit="px" if args.pixels else "nm", core_density=args.core_density,
                         shell_density=args.shell_density,
                         speckle_diameter=args.speckle_diameter, offset=args.offset)
    except ValueError as exc:
        raise LensfreeError(f"fit core-shell: {exc}") from None


def _cmd_fit(args) -> int:
    from lensfree.launch.stage_fit import run_fit

    params = fit_params(args)
    with _backend(args) as backend:
        _announce(backend)
        t0 = time.perf_counter()
        a = run_fit(backend, args.run, params)
        if backend.is_root:
            print(f"{args.run}: fit/ written in {time.perf_counter() - t0:.1f} s; "
                  f"{len(params.inner)} x {len(params.outer)} grid points")
            print(f"  best inner {a['best_inner']:g} {a['unit']}, outer {a['best_outer']:g} "
                  f"{a['unit']}: erf {a['best_erf']:.2f}%")
    return 0


def _cmd_report(args) -> int:
    from lensfree.io.report import write_report

    out = args.out or os.path.splitext(os.path.normpath(args.run))[0] + "-report"
    paths = write_report(args.run, out)
    print(f"{args.run}: report in {out}: {', '.join(os.path.basename(p) for p in paths)}")
    return 0


def _cmd_run(args) -> int:
    from lensfree.io import runstore
    from lensfree.launch import config

    overrides = {k: getattr(args, k) for k in config.EXECUTION}
    variables = dict(v.split("=", 1) for v in args.var if "=" in v)
    bad = [v for v in args.var if "=" not in v]
    if bad:
        raise LensfreeError(f"--var {bad[0]}: expected NAME=VALUE")
    doc = config.substitute(config.load(args.config), variables, args.config)
    planned = config.plan(args.config, doc, build_parser(), overrides,
                          {"sum": sum_params, "phase": phase_params, "gather": gather_params,
                           "fit.core-shell": fit_params, "ptycho": ptycho_params})
    resolved = config.effective(planned)
    for name, stage_args in planned:  # every run store keeps the config that made it
        path = getattr(stage_args, "run", None) or (
            stage_args.out if name in ("sum", "ptycho") else None)
        if path:
            runstore.open_run(path).attrs["config"] = runstore.jsonable(
                {"file": os.path.abspath(args.config), "stages": resolved})
    for name, stage_args in planned:
        print(f"== {name} ==", flush=True)
        stage_args.debug = args.debug
        code = stage_args.handler(stage_args)
        if code:
            return code
    return 0


def _cmd_batch(args) -> int:
    from lensfree.launch.batch import read_manifest, run_batch

    datasets = read_manifest(args.manifest, args.config)
    overrides = ["--quiet"]
    for flag in ("backend", "workers", "scheduler"):
        if getattr(args, flag) is not None:
            overrides += [f"--{flag}", str(getattr(args, flag))]
    results = run_batch(datasets, overrides, jobs=args.jobs,
                        report=lambda line: print(line, flush=True))
    width = max(len(ds.name) for ds, _, _ in results)
    print(f"\n{'dataset':{width}s}  status   reason")
    for ds, status, reason in results:
        print(f"{ds.name:{width}s}  {status:7s}  {reason}")
    counts = {s: sum(r[1] == s for r in results) for s in ("done", "skipped", "failed")}
    print(f"{counts['done']} done, {counts['skipped']} skipped, {counts['failed']} failed")
    return 1 if counts["failed"] else 0


def _cmd_demo(args) -> int:
    from lensfree.launch.demo import run_demo

    return run_demo(args, _backend, _announce)


class StoreLog(logging.Handler):
    """Appends log records to ``RUN.zarr/lensfree.log`` once the run store exists.

    Records from before the store is created wait in memory, so a command that fails on
    bad input never creates a store just to log into it.
    """

    def __init__(self, run_path: str):
        super().__init__(logging.INFO)
        self.path = os.path.join(run_path, "lensfree.log")
        self.pending: list[str] = []
        self.setFormatter(logging.Formatter(
            "%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"))

    def emit(self, record):
        self.pending.append(self.format(record))
        if os.path.isdir(os.path.dirname(self.path)):
            with open(self.path, "a") as f:
                f.write("\n".join(self.pending) + "\n")
            self.pending.clear()


def _run_store_of(args) -> str | None:
    if args.command in ("sum", "ptycho"):
        return args.out
    return getattr(args, "run", None)


def _is_worker_rank(args) -> bool:
    if getattr(args, "backend", None) != "mpi":
        return False
    from mpi4py import MPI

    return MPI.COMM_WORLD.Get_rank() != 0


# ----------------------------------------------------------------------------- stage 4


def _simulate_ptycho_parser(kinds) -> None:
    t = kinds.add_parser("ptycho", help="a far-field ptychography scan with known truth")
    t.add_argument("--out", required=True, help="frame store to write (X.zarr)")
    t.add_argument("--positions", type=int, default=100, help="scan positions [100]")
    t.add_argument("--size", type=int, default=64, help="frame size in pixels [64]")
    t.add_argument("--scan", default="fermat", choices=("fermat", "raster"), help="[fermat]")
    t.add_argument("--overlap", type=float, default=0.7, help="1 - step / probe diameter [0.7]")
    t.add_argument("--probe", default="focused", choices=("focused", "pinhole"),
                   help="[focused]")
    t.add_argument("--probe-diameter", type=float, default=None, help="px [size / 4]")
    t.add_argument("--probe-modes", type=int, default=1, help="incoherent modes [1]")
    t.add_argument("--photons", type=float, default=1e6,
                   help="mean counts per frame, Poisson; 0 for noise-free [1e6]")
    t.add_argument("--position-error", type=float, default=0.0,
                   help="RMS error of the recorded positions, px [0]")
    t.add_argument("--drift", type=float, nargs=2, default=(0.0, 0.0), metavar=("DY", "DX"),
                   help="linear drift of the recorded positions over the scan, px [0 0]")
    t.add_argument("--subpixel", action="store_true",
                   help="true positions off the pixel grid [rounded to whole pixels]")
    t.add_argument("--seed", type=int, default=0, help="seed [0]")
    t.set_defaults(handler=_cmd_simulate_ptycho)


def _ptycho_parser(sub) -> None:
    p = sub.add_parser("ptycho", help="stage 4: ptychography, positions refined in parallel")
    p.add_argument("frames", help="frame store with positions (X.zarr)")
    p.add_argument("--out", required=True, help="run store to write (RUN.zarr)")
    p.add_argument("--engine", default="parallel", choices=("epie", "rpie", "parallel"),
                   help="serial ePIE/rPIE, or blocks reduced every iteration [parallel]")
    p.add_argument("--iterations", type=int, default=100, help="[100]")
    p.add_argument("--probe-modes", type=int, default=1, help="incoherent probe modes [1]")
    p.add_argument("--alpha", type=float, default=None, help="object step [ePIE 1, rPIE 0.1]")
    p.add_argument("--beta", type=float, default=1.0, help="ePIE/rPIE probe step [1]")
    p.add_argument("--probe-start", type=int, default=2,
                   help="first iteration updating the probe [2]")
    p.add_argument("--refine-positions", action="store_true", help="refine every position")
    p.add_argument("--refine-start", type=int, default=10, help="from this iteration [10]")
    p.add_argument("--refine-every", type=int, default=1, help="every k iterations [1]")
    p.add_argument("--max-step", type=float, default=0.5, help="px per update and axis [0.5]")
    p.add_argument("--blocks", type=int, default=None,
                   help="position blocks of the parallel engine [N / 64]")
    p.add_argument("--checkpoint-every", type=int, default=10, help="iterations [10]")
    _common(p)
    p.set_defaults(handler=_cmd_ptycho)


def _cmd_simulate_ptycho(args) -> int:
    from lensfree.engine.simulate_ptycho import PtychoSimParams
    from lensfree.launch.stage_ptycho import simulate_ptycho

    try:
        params = PtychoSimParams(
            n_positions=args.positions, frame_size=args.size, scan=args.scan,
            overlap=args.overlap, probe=args.probe, probe_diameter=args.probe_diameter,
            probe_modes=args.probe_modes, photons=args.photons or None,
            position_error=args.position_error, drift=tuple(args.drift),
            subpixel=args.subpixel, seed=args.seed)
        info = simulate_ptycho(args.out, params)
    except ValueError as exc:
        raise LensfreeError(f"simulate ptycho: {exc}") from None
    oy, ox = info["object_shape"]
    print(f"{args.out}: {args.positions} frames of {args.size}x{args.size} ({args.scan} scan), "
          f"object {oy}x{ox}; recorded positions off by {info['position_error']:.2f} px RMS")
    return 0


def ptycho_params(args):
    """PtychoStageParams from parsed arguments; bad values become one-line errors."""
    from lensfree.engine.ptycho import PtychoParams
    from lensfree.launch.stage_ptycho import PtychoStageParams

    try:
        return PtychoStageParams(
            engine=PtychoParams(
                engine=args.engine, iterations=args.iterations, probe_modes=args.probe_modes,
                alpha=args.alpha, beta=args.beta, probe_start=args.probe_start,
                refine_positions=args.refine_positions, refine_start=args.refine_start,
                refine_every=args.refine_every, max_step=args.max_step, seed=args.seed),
            blocks=args.blocks, checkpoint_every=args.checkpoint_every)
    except ValueError as exc:
        raise LensfreeError(f"ptycho: {exc}") from None


def _cmd_ptycho(args) -> int:
    from lensfree.launch.stage_ptycho import run_ptycho

    params = ptycho_params(args)
    with _backend(args) as backend:
        _announce(backend)
        t0 = time.perf_counter()
        attrs = run_ptycho(backend, args.frames, args.out, params)
        if backend.is_root:
            verb = ("already complete, nothing recomputed" if attrs.get("resumed_complete")
                    else "written")
            print(f"{args.out}: ptycho/ {verb} in {time.perf_counter() - t0:.1f} s; "
                  f"{args.engine}, {args.iterations} iterations, {attrs['n_blocks']} blocks")
            print(f"  Fourier error {attrs['final_error']:.4g}; positions moved "
                  f"{attrs['position_shift_rms_px']:.2f} px RMS")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="lensfree: %(levelname)s: %(message)s")
    for handler in logging.getLogger().handlers:  # the terminal gets warnings and errors only
        handler.setLevel(logging.WARNING)
    mpi = getattr(args, "backend", None) == "mpi"
    if getattr(args, "backend", None) == "dask" and mpi_world_size() > 1:
        # mpirun -n N lensfree ... --backend dask: a Dask cluster inside the allocation
        try:
            address = boot_dask_in_mpi(args.dashboard_address)
        except LensfreeError as exc:
            return _fail(str(exc), 2, mpi=False)
        if address is None:
            return 0  # the scheduler's or a worker's rank: the cluster has finished
        args.scheduler, args.dask_in_mpi = address, mpi_world_size() - 2
    store_log = None
    run_path = _run_store_of(args)
    if run_path and not _is_worker_rank(args):
        store_log = StoreLog(run_path)
        log.addHandler(store_log)
        log.setLevel(logging.INFO)
        log.info("lensfree %s", " ".join(sys.argv[1:] if argv is None else argv))
    try:
        code = args.handler(args)
        log.info("finished with exit code %d", code)
        return code
    except (LensfreeError, FileNotFoundError) as exc:
        code = 2
        message = str(exc)
    except Exception as exc:  # an unexpected failure: say it plainly, keep the traceback
        if args.debug or os.environ.get("LENSFREE_DEBUG"):
            raise
        code = 1
        message = f"{exc.__class__.__name__}: {exc} (rerun with --debug for the traceback)"
    finally:
        log.removeHandler(store_log)
    if store_log is not None:
        store_log.emit(logging.makeLogRecord(
            {"msg": message, "levelname": "ERROR", "levelno": logging.ERROR, "name": "lensfree"}))
    return _fail(message, code, mpi)


def _fail(message: str, code: int, mpi: bool) -> int:
    prefix = "lensfree: error: "
    if mpi:
        from mpi4py import MPI

        rank = MPI.COMM_WORLD.Get_rank()
        if rank:
            prefix = f"lensfree: error (rank {rank}): "
        print(prefix + message, file=sys.stderr, flush=True)
        if MPI.COMM_WORLD.Get_size() > 1:
            MPI.COMM_WORLD.Abort(code)  # one failing rank must not leave the others hanging
        return code
    print(prefix + message, file=sys.stderr, flush=True)
    return code
