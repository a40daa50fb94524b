"""The commands that are not stages: simulators, ingest, the demo and the report."""

from __future__ import annotations

import time
from dataclasses import dataclass

from lensfree.engine.params import at_least, optional, param, positive
from lensfree.errors import LensfreeError
from lensfree.launch.console import open_backend, report
from lensfree.launch.stage import Command, Execution, GeometryOptions


def _number_type(name: str) -> str | None:
    import numpy as np

    try:
        kind = np.dtype(name).kind
    except TypeError:
        return "not a numpy dtype"
    return None if kind in "iuf" else "expected an integer or float dtype"


@dataclass(frozen=True)
class SimulateEnsembleOptions:
    """``lensfree simulate ensemble --out X.zarr [options]``."""

    out: str = param(None, "frame store to write (X.zarr)", required=True)
    frames: int = param(2000, "number of frames", check=at_least(1))
    size: int = param(256, "frame size in pixels", check=at_least(16))
    inner: float = param(19.0, "core diameter, nm", check=positive)
    outer: float = param(55.0, "shell diameter, nm", check=positive)
    core_density: float = param(3.0, "projected density of the core")
    shell_density: float = param(1.0, "projected density of the shell")
    particles: float = param(2.0, "mean particles per frame")
    photons: float = param(3000.0, "mean photons per particle on the detector")
    weak_fraction: float = param(0.02, "share of frames planted weak")
    streak_fraction: float = param(0.02, "share of frames planted with a streak")
    invalid_fraction: float | None = param(None, "share of frames planted invalid",
                                           default_help="0.01 for float dtypes, 0 for integer")
    dtype: str = param("float32", "float32, uint16, ...", check=_number_type)
    chunk: int | None = param(None, "frames per chunk", check=optional(at_least(1)),
                              default_help="~32 MB of frames, at least 1")
    execution: Execution = param(default_factory=Execution, group="execution")


class SimulateEnsemble(Command):
    name = "simulate.ensemble"
    help = "frames of many identical core-shell spheres"
    Options = SimulateEnsembleOptions

    def handler(self, o, backend=None) -> int:
        import numpy as np

        from lensfree.engine.simulate import EnsembleParams
        from lensfree.launch.stage_simulate import simulate_ensemble

        invalid = o.invalid_fraction
        if invalid is None:
            invalid = 0.01 if np.dtype(o.dtype).kind == "f" else 0.0
        try:
            params = EnsembleParams(
                n_frames=o.frames, shape=(o.size, o.size), inner_diameter_m=o.inner * 1e-9,
                outer_diameter_m=o.outer * 1e-9, core_density=o.core_density,
                shell_density=o.shell_density, particles_per_frame=o.particles,
                photons_per_particle=o.photons, weak_fraction=o.weak_fraction,
                streak_fraction=o.streak_fraction, invalid_fraction=invalid, dtype=o.dtype,
                seed=o.execution.seed)
        except (ValueError, TypeError) as exc:
            raise LensfreeError(f"simulate ensemble: {exc}") from None
        with open_backend(o.execution, backend) as backend:
            t0 = time.perf_counter()
            attrs = simulate_ensemble(backend, params, o.out, chunk_frames=o.chunk)
            if backend.is_root:
                t = attrs["truth"]
                report([f"{o.out}: {params.n_frames} frames of {o.size}x{o.size} {params.dtype} "
                        f"in {time.perf_counter() - t0:.1f} s; planted {len(t['weak'])} weak, "
                        f"{len(t['streak'])} streak, {len(t['invalid'])} invalid; centre "
                        f"({t['center'][0]:.2f}, {t['center'][1]:.2f})"])
        return 0


@dataclass(frozen=True)
class SimulateObjectOptions:
    """``lensfree simulate object --out RUN.zarr [options]``."""

    out: str = param(None, "run store to write (RUN.zarr)", required=True)
    shape: str = param("letter", "letter, blobs or cell")
    size: int = param(128, "array size in pixels", check=at_least(16))
    oversampling: float = param(3.0, "per dimension", check=positive)
    photons: float = param(1e9, "total expected counts", check=positive)
    missing_radius: float = param(3.0, "radius of the missing centre, px")
    seed: int = param(0, "noise seed")


class SimulateObject(Command):
    name = "simulate.object"
    help = "an isolated object's noisy far-field amplitude"
    Options = SimulateObjectOptions

    def handler(self, o) -> int:
        from lensfree.launch.stage_simulate import simulate_object

        try:
            attrs = simulate_object(o.out, name=o.shape, size=o.size,
                                    oversampling=o.oversampling, photons=o.photons,
                                    missing_radius=o.missing_radius, seed=o.seed)
        except ValueError as exc:
            raise LensfreeError(f"simulate object: {exc}") from None
        report([f"{o.out}: {o.shape} {o.size}x{o.size}, {o.photons:.3g} photons, "
                f"{attrs['missing_fraction']:.1%} of pixels missing at the centre"])
        return 0


@dataclass(frozen=True)
class SimulatePtychoOptions:
    """``lensfree simulate ptycho --out X.zarr [options]``."""

    out: str = param(None, "frame store to write (X.zarr)", required=True)
    positions: int = param(100, "scan positions", check=at_least(1))
    size: int = param(64, "frame size in pixels", check=at_least(8))
    scan: str = param("fermat", "scan pattern", choices=("fermat", "raster"))
    overlap: float = param(0.7, "1 - step / probe diameter")
    probe: str = param("focused", "probe kind", choices=("focused", "pinhole", "diffuser"))
    probe_diameter: float | None = param(None, "px", default_help="size / 4; diffuser 0.8 size")
    probe_modes: int = param(1, "incoherent modes", check=at_least(1))
    photons: float = param(1e6, "mean counts per frame, Poisson; 0 for noise-free")
    position_error: float = param(0.0, "RMS error of the recorded positions, px")
    drift: tuple[float, float] = param((0.0, 0.0), "linear drift of the recorded positions "
                                       "over the scan, px", nargs=2, metavar=("DY", "DX"))
    subpixel: bool = param(False, "true positions off the pixel grid [rounded to whole "
                           "pixels]", action="store_true")
    propagation: str = param("far-field", "far-field, or near-field holograms (with "
                             "--probe diffuser; 0.1 nm, 8 mm, 200 nm pixels)",
                             choices=("far-field", "near-field"))
    seed: int = param(0, "seed")


class SimulatePtycho(Command):
    name = "simulate.ptycho"
    help = "a far- or near-field ptychography scan with known truth"
    Options = SimulatePtychoOptions

    def handler(self, o) -> int:
        from lensfree.engine.simulate_ptycho import PtychoSimParams
        from lensfree.io.scan import simulate_ptycho

        try:
            params = PtychoSimParams(
                n_positions=o.positions, frame_size=o.size, scan=o.scan, overlap=o.overlap,
                probe=o.probe, probe_diameter=o.probe_diameter, probe_modes=o.probe_modes,
                photons=o.photons or None, position_error=o.position_error,
                drift=tuple(o.drift), subpixel=o.subpixel, seed=o.seed,
                propagation=o.propagation)
            info = simulate_ptycho(o.out, params)
        except ValueError as exc:
            raise LensfreeError(f"simulate ptycho: {exc}") from None
        oy, ox = info["object_shape"]
        report([f"{o.out}: {o.positions} frames of {o.size}x{o.size} ({o.scan} scan), object "
                f"{oy}x{ox}; recorded positions off by {info['position_error']:.2f} px RMS"])
        return 0


@dataclass(frozen=True)
class IngestOptions:
    """``lensfree ingest FILE --out X.zarr [options]``."""

    input: str = param(None, "CXI, Eiger master or HDF5 file; with --pattern .npz/.npy/.tif/"
                       ".h5/.zarr", positional=True)
    out: str = param(None, "frame store (X.zarr), or with --pattern the run store (RUN.zarr) "
                     "to write", required=True)
    dataset: str | None = param(None, "HDF5 path of the frames (plain HDF5)", default_help="auto")
    mask_dataset: str | None = param(None, "HDF5 path of a mask (nonzero = bad)",
                                     default_help="auto")
    chunk: int | None = param(None, "frames per chunk", check=optional(at_least(1)),
                              default_help="~32 MB of frames, at least 1")
    quiet: bool = param(False, "no progress bars", action="store_true")
    geometry: GeometryOptions = param(default_factory=GeometryOptions,
                                      group="geometry (overrides the file's)")
    pattern: bool = param(False, "the file holds one 2D pattern: RUN.zarr/ensemble/ ready "
                          "for phasing", action="store_true")
    key: str | None = param(None, "array name", default_help=".npz: intensity or data")
    valid_key: str | None = param(None, "array of measured pixels (nonzero = measured)",
                                  default_help="none")
    support_key: str | None = param(None, "real-space support array",
                                    default_help=".npz: support")
    zeros_measured: bool = param(False, "exact zeros are measured counts, not unmeasured "
                                 "pixels", action="store_true")
    zeros_missing: bool = param(False, "every exact zero is unmeasured [only those joined to "
                                "the beam stop, gaps and edges]", action="store_true")
    no_support: bool = param(False, "ignore a support the file ships", action="store_true")
    mask_key: str | None = param(None, "array of unmeasured pixels (nonzero = bad)",
                                 default_help="none; Hawk files: mask")
    mask_good: bool = param(False, "the --mask-key array's nonzero pixels are the good ones",
                            action="store_true")
    saturation: float | None = param(None, "pixels at or above this value (file units) are "
                                     "unmeasured", check=optional(positive),
                                     default_help="none", metavar="COUNTS")
    binning: int = param(1, "bin factor of the pattern (then cropped square)",
                         check=at_least(1), flag="bin", metavar="N")
    amplitude: bool = param(False, "the file holds amplitudes", action="store_true")
    fft_shifted: bool = param(False, "zero frequency at pixel (0, 0)", action="store_true")
    center: tuple[float, float] | None = param(None, "zero frequency in file pixels", nargs=2,
                                               metavar=("Y", "X"),
                                               default_help="found from centrosymmetry")
    ptycho: bool = param(False, "a ptychography scan: a Tike-style .npz[.bz2] (data, scan "
                         "in object pixels, probe) or a CXI/HDF5 file with translations",
                         action="store_true")
    propagation: str | None = param(None, "ptychography: sample to detector",
                                    choices=("far-field", "near-field"),
                                    default_help="near-field with --focus-distance, else "
                                    "far-field")
    focus_distance: float | None = param(None, "near field: focus to sample in metres (a "
                                         "diverging beam; the geometry is Fresnel-scaled)",
                                         check=optional(positive), default_help="plane wave")
    bragg: bool = param(False, "a Bragg CDI rocking scan (NPZ/HDF5 stack of frames, or a "
                        "TIFF series: a directory, a glob or a multi-page .tif): "
                        "RUN.zarr/ensemble/ with a 3D amplitude", action="store_true")
    frames_key: str = param("frames", "--bragg: array of the frames (n, h, w)")
    dark_key: str | None = param(None, "--bragg: dark field array (a TIFF file with a TIFF "
                                 "series)", default_help="none")
    white_key: str | None = param(None, "--bragg: white (flat) field array (a TIFF file)",
                                  default_help="none")
    roi: tuple[int, int] | None = param(None, "--bragg: the frames' top-left pixel on a "
                                        "larger detector's dark/white field", nargs=2,
                                        metavar=("Y", "X"), default_help="same shape")
    size: int | None = param(None, "--bragg: side of the cube cropped about the peak "
                             "(after --bin)", check=optional(at_least(2)),
                             default_help="the largest FFT-friendly size that fits")
    floor: float = param(0.0, "--bragg: counts at or below this become 0 (cohere: 2)",
                         check=at_least(0))
    rocking_step: float | None = param(None, "--bragg: rocking step, degrees, stored",
                                       default_help="none")
    detector_angles: tuple[float, float] | None = param(
        None, "--bragg: detector angles delta and gamma, degrees, stored", nargs=2,
        metavar=("DELTA", "GAMMA"), default_help="none")


class Ingest(Command):
    name = "ingest"
    help = ("convert a CXI/HDF5 file to a frame store, or one summed pattern (--pattern) to "
            "a run store")
    Options = IngestOptions

    def handler(self, o) -> int:
        from lensfree.io.ingest import ingest, ingest_pattern

        geometry = o.geometry.geometry()
        if o.bragg:
            return self._bragg(o, geometry)
        bragg_only = [flag for flag, v in (
            ("--dark-key", o.dark_key), ("--white-key", o.white_key), ("--roi", o.roi),
            ("--size", o.size), ("--floor", o.floor or None),
            ("--rocking-step", o.rocking_step), ("--detector-angles", o.detector_angles),
            ("--frames-key", None if o.frames_key == "frames" else o.frames_key))
            if v is not None]
        if bragg_only:
            raise LensfreeError(f"{', '.join(bragg_only)}: only with --bragg")
        if o.pattern:
            if o.zeros_measured and o.zeros_missing:
                raise LensfreeError("--zeros-measured and --zeros-missing: choose one")
            info = ingest_pattern(
                o.input, o.out, key=o.key, valid_key=o.valid_key, support_key=o.support_key,
                zeros=("measured" if o.zeros_measured else "all" if o.zeros_missing
                       else "connected"), geometry=geometry,
                amplitude=o.amplitude, fft_shifted=o.fft_shifted, center=o.center,
                no_support=o.no_support, mask_key=o.mask_key, mask_good=o.mask_good,
                saturation=o.saturation, binning=o.binning)
            (h, w), (cy, cx) = info["shape"], info["center"]
            window = info["window"]
            cropped = "" if window == (h, w) else f"; cropped to {window[0]}x{window[1]}"
            report([f"{o.out}: ensemble/ {h}x{w} {info['quantity']} from {o.input}; centre "
                    f"({cy:.2f}, {cx:.2f}) moved by {info['shift']}{cropped}; "
                    f"{info['n_valid']} valid pixels ({info['zeros_unmeasured']} zeros "
                    "unmeasured)" + ("; support" if info["has_support"] else "")])
            return 0
        given = [flag for flag, v in (
            ("--key", o.key), ("--valid-key", o.valid_key), ("--support-key", o.support_key),
            ("--center", o.center), ("--zeros-measured", o.zeros_measured),
            ("--zeros-missing", o.zeros_missing), ("--no-support", o.no_support),
            ("--mask-key", o.mask_key), ("--mask-good", o.mask_good),
            ("--saturation", o.saturation), ("--bin", o.binning if o.binning != 1 else None),
            ("--amplitude", o.amplitude))
            if v not in (None, False)]
        if given:
            raise LensfreeError(f"{', '.join(given)}: only with --pattern")
        if (o.ptycho or o.fft_shifted or o.propagation or o.focus_distance is not None
                or o.input.lower().endswith((".npz", ".npz.bz2"))):
            return self._ptycho(o, geometry)
        info = ingest(o.input, o.out, dataset=o.dataset, mask_dataset=o.mask_dataset,
                      geometry=geometry, chunk_frames=o.chunk, progress=not o.quiet)
        report([f"{o.out}: {info['n_frames']} frames of {info['frame_shape']} {info['dtype']} "
                f"from {o.input}"])
        return 0

    def _bragg(self, o, geometry) -> int:
        """A rocking scan to a 3D ``ensemble/`` (`lensfree.io.bragg`)."""
        from lensfree.io.bragg import ingest_bragg

        if o.pattern or o.ptycho:
            raise LensfreeError("--bragg: not with --pattern or --ptycho")
        a = ingest_bragg(o.input, o.out, frames_key=o.frames_key, dark_key=o.dark_key,
                         white_key=o.white_key, mask_key=o.mask_key, roi=o.roi,
                         saturation=o.saturation, floor=o.floor, size=o.size,
                         binning=o.binning, geometry=geometry,
                         rocking_step_deg=o.rocking_step,
                         detector_angles_deg=o.detector_angles)
        n = a["crop_size"]
        masked = ", ".join(f"{k} {v}" for k, v in a["masked"].items())
        report([f"{o.out}: ensemble/ {n}x{n}x{n} Bragg amplitude from {a['n_frames']} frames "
                f"of {o.input}; peak {tuple(a['peak'])}, crop from {tuple(a['crop_start'])}, "
                f"binned x{a['binning']}; {a['n_valid']} valid voxels ({masked})"])
        return 0

    def _ptycho(self, o, geometry) -> int:
        """A scan: a Tike-style .npz, or an HDF5/CXI file; then its propagation."""
        from lensfree.io.ingest import ingest
        from lensfree.io.scan import load_npz_scan, set_propagation

        npz = o.input.lower().endswith((".npz", ".npz.bz2"))
        if o.fft_shifted and not npz:
            raise LensfreeError("--fft-shifted: only with --pattern or a .npz scan")
        if not o.ptycho and npz:
            raise LensfreeError(f"{o.input}: a .npz file: add --ptycho (a scan) or "
                                "--pattern (one pattern)")
        if npz:
            info = load_npz_scan(o.input, o.out, fft_shifted=o.fft_shifted)
            if geometry is not None:
                import zarr

                zarr.open_group(o.out, mode="r+").attrs.update(geometry.as_attrs())
            lines = [f"{o.out}: {info['n_frames']} frames of {info['frame_shape']} from "
                     f"{o.input}, positions in object pixels"
                     + ("; initial probe" if info["has_probe"] else "")]
        else:
            info = ingest(o.input, o.out, dataset=o.dataset, mask_dataset=o.mask_dataset,
                          geometry=geometry, chunk_frames=o.chunk, progress=not o.quiet)
            if not info["has_positions"]:
                raise LensfreeError(f"{o.input}: no scan positions (translations) found; "
                                    "ptychography needs them")
            lines = [f"{o.out}: {info['n_frames']} frames of {info['frame_shape']} "
                     f"{info['dtype']} from {o.input}, with positions"]
        propagation = o.propagation or ("near-field" if o.focus_distance else None)
        if propagation:
            new = set_propagation(o.out, propagation, o.focus_distance)
            if "fresnel_scaling" in new:
                lines.append(f"  near field, Fresnel-scaled: magnification "
                             f"{new['fresnel_scaling']['magnification']:.4g}, effective "
                             f"distance {new['distance_m']:.4g} m, sample pixel "
                             f"{new['pixel_size_m']:.4g} m")
            else:
                lines.append(f"  {propagation}")
        report(lines)
        return 0


@dataclass(frozen=True)
class DemoOptions:
    """``lensfree demo [--out DIR]``."""

    out: str = param("lensfree-demo", "output folder")
    frames: int = param(1000, "frames to simulate", check=at_least(1))
    execution: Execution = param(default_factory=Execution, group="execution")


class Demo(Command):
    name = "demo"
    help = "the whole pipeline on built-in simulated data"
    Options = DemoOptions

    def handler(self, o, backend=None) -> int:
        from lensfree.launch.demo import run_demo

        with open_backend(o.execution, backend) as backend:
            run_demo(backend, o.out, o.frames, o.execution.seed)
        return 0
