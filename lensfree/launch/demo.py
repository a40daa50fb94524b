"""``lensfree demo``: the pipeline on a small built-in simulated ensemble."""

from __future__ import annotations

import os
import time

import numpy as np

from lensfree.engine import geometry, scoring
from lensfree.engine.phasing import PhasingParams
from lensfree.engine.simulate import EnsembleParams
from lensfree.io.frames import open_frames
from lensfree.io.report import write_report
from lensfree.io.report.ensemble import plot_pattern
from lensfree.io.report.phasing import plot_members
from lensfree.launch.stage_fit import FitParams, run_fit
from lensfree.launch.stage_gather import GatherParams, run_gather
from lensfree.launch.stage_phase import PhaseParams, run_phase
from lensfree.launch.stage_simulate import simulate_ensemble
from lensfree.launch.stage_sum import SumParams, run_sum

#: a small population, enough to show GHIO at work in seconds; the particles' projected
#: density is real and non-negative, so the real part is kept non-negative; a loose
#: starting support (5% of the autocorrelation) lets shrinkwrap find the particle's edge
DEMO_PHASING = PhaseParams(
    population=20, generations=3, schedule="HIO:200,ER:50;shrinkwrap=50",
    support_threshold=0.05,
    phasing=PhasingParams(positivity="real-nonneg"))
#: the best 8 of 20: fewer than about 6 members cannot take the PRTF below 1/e
DEMO_GATHER = GatherParams(fraction=0.4)
#: the paper's grid (Chen et al. 2024, Fig. 3)
DEMO_FIT = FitParams()


def run_demo(backend, out: str, n_frames: int = 1000, seed: int = 0) -> None:
    """Simulate, sum, phase, gather, fit and report into the folder ``out``, printing what
    each stage found beside the truth (on the root)."""
    frames_path = os.path.join(out, "frames.zarr")
    run_path = os.path.join(out, "run.zarr")
    params = EnsembleParams(n_frames=n_frames, shape=(256, 256), seed=seed)
    if backend.is_root:
        os.makedirs(out, exist_ok=True)
    t0 = time.perf_counter()
    truth = simulate_ensemble(backend, params, frames_path)
    t1 = time.perf_counter()
    attrs = run_sum(backend, open_frames(frames_path), run_path, SumParams())
    t2 = time.perf_counter()
    phase = run_phase(backend, run_path, DEMO_PHASING)
    t3 = time.perf_counter()
    model = _particle(params, attrs) if backend.is_root else None
    gather = run_gather(backend, run_path, DEMO_GATHER, model=model,
                        model_source="simulated particle")
    fit = run_fit(backend, run_path, DEMO_FIT)
    t4 = time.perf_counter()
    if not backend.is_root:
        return
    png = plot_pattern(run_path, os.path.join(out, "ensemble.png"))
    png_phase = plot_members(run_path, os.path.join(out, "phasing.png"))
    t = truth["truth"]
    status = _status(run_path)
    planted = {k: set(t[k]) for k in ("weak", "streak", "invalid")}
    c = attrs["counts"]
    print(f"simulated {params.n_frames} frames of 256x256 in {t1 - t0:.1f} s "
          f"-> {frames_path}")
    print(f"stage 1 (sum) in {t2 - t1:.1f} s -> {run_path}")
    print(f"  accepted {c['accepted']}, background {c['background']}, weak {c['weak']} "
          f"(planted {len(planted['weak'])}), chi2 {c['chi2']} "
          f"(planted streaks {len(planted['streak'])}), invalid {c['invalid']} "
          f"(planted {len(planted['invalid'])})")
    caught = len(planted["streak"] & set(np.flatnonzero(status == 2)))
    print(f"  streak frames caught {caught}/{len(planted['streak'])}")
    (cy, cx), (ty, tx) = attrs["center"], t["center"]
    print(f"  centre ({cy:.2f}, {cx:.2f}) px, true ({ty:.2f}, {tx:.2f}): "
          f"off by {np.hypot(cy - ty, cx - tx):.2f} px")
    print(f"  figure: {png}")
    p = DEMO_PHASING
    print(f"stage 2 (phase) in {t3 - t2:.1f} s: {p.population} members x {p.generations} "
          f"generations x {p.n_iterations} iterations")
    print(f"  best R_F {phase['best_error']:.4f} (median {phase['median_error']:.4f}); "
          f"best R_F per generation: {_best_per_generation(run_path)}")
    print(f"  figure: {png_phase}")
    g = gather
    print(f"stage 3 (gather, fit) in {t4 - t3:.1f} s: best {g['n_selected']} of "
          f"{g['n_members']} members aligned and averaged")
    res = scoring.describe_resolution(g["resolution_px"], g["resolution_reached"],
                                      g.get("real_space_pixel_m"), g.get("prtf_edge"))
    print(f"  resolution (PRTF 1/e) {res}; R-factor of the average "
          f"{g['r_factor']:.4f}; SSIM against the simulated particle {g['ssim']:.3f}")
    print(f"  core-shell fit: inner {fit['best_inner']:g} nm, outer {fit['best_outer']:g} nm "
          f"(true {params.inner_diameter_m * 1e9:g} / {params.outer_diameter_m * 1e9:g} nm),"
          f" erf {fit['best_erf']:.1f}%")
    report = write_report(run_path, os.path.join(out, "report"))
    print(f"  report: {os.path.dirname(report[-1])} ({len(report) - 1} figures, "
          f"{os.path.basename(report[-1])})")


def _particle(params: EnsembleParams, attrs: dict) -> np.ndarray:
    """The simulated particle as a perfect reconstruction on the phasing grid would show it."""
    spacing = geometry.frequency_spacing(attrs["binned_pixel_size_m"], params.wavelength_m,
                                         params.distance_m)
    h = params.shape[0] // attrs["binning"]
    w = params.shape[1] // attrs["binning"]
    return scoring.core_shell_image((h, w), spacing, params.inner_diameter_m,
                                    params.outer_diameter_m, params.core_density,
                                    params.shell_density)


def _status(run_path: str) -> np.ndarray:
    import zarr

    return np.asarray(zarr.open_group(run_path, mode="r")["ensemble/frame_status"][...])


def _best_per_generation(run_path: str) -> str:
    import zarr

    errors = zarr.open_group(run_path, mode="r")["phasing/errors"][...]
    return ", ".join(f"{e:.4f}" for e in np.nanmin(errors, axis=1))
