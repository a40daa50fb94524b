"""Figures and summary of ``ptycho/``: object, probe modes, errors per iteration, scan,
the two halves' Fourier ring correlation (``--split-frc``)."""

from __future__ import annotations

import numpy as np

from lensfree.io.report._common import Figure, Section, bare, pyplot, save


def plot_object(run_path: str, out_png: str) -> str:
    """Object amplitude and phase; pixels never illuminated are greyed out."""
    import zarr

    plt = pyplot()
    group = zarr.open_group(run_path, mode="r")["ptycho"]
    obj = np.asarray(group["object"][...])
    fig, axes = plt.subplots(1, 2, figsize=(11, 5), constrained_layout=True)
    im = axes[0].imshow(np.abs(obj), cmap="gray")
    axes[0].set_title("object amplitude")
    fig.colorbar(im, ax=axes[0], shrink=0.8)
    im = axes[1].imshow(np.angle(obj), cmap="twilight", vmin=-np.pi, vmax=np.pi)
    axes[1].set_title("object phase (rad)")
    fig.colorbar(im, ax=axes[1], shrink=0.8)
    for ax in axes:
        bare(ax)
    return save(fig, out_png)


def plot_probe(run_path: str, out_png: str) -> str:
    """Amplitude of every probe mode with its share of the total power."""
    import zarr

    plt = pyplot()
    probe = np.asarray(zarr.open_group(run_path, mode="r")["ptycho/probe"][...])
    power = (np.abs(probe) ** 2).sum(axis=(1, 2))
    share = power / power.sum()
    fig, axes = plt.subplots(1, len(probe), figsize=(4 * len(probe), 4),
                             constrained_layout=True, squeeze=False)
    for k, ax in enumerate(axes[0]):
        ax.imshow(np.abs(probe[k]), cmap="magma")
        ax.set_title(f"probe mode {k}: {share[k]:.1%} of the power", fontsize=10)
        bare(ax)
    return save(fig, out_png)


def plot_ptycho_errors(run_path: str, out_png: str) -> str:
    """Fourier error per iteration."""
    import zarr

    plt = pyplot()
    errors = np.asarray(zarr.open_group(run_path, mode="r")["ptycho/errors"][...])
    fig, ax = plt.subplots(figsize=(6, 4), constrained_layout=True)
    done = np.isfinite(errors)
    ax.semilogy(np.flatnonzero(done) + 1, errors[done], "-")
    ax.set_xlabel("iteration")
    ax.set_ylabel("Fourier error")
    ax.set_title("error per iteration")
    return save(fig, out_png)


def plot_scan(run_path: str, out_png: str) -> str:
    """Scan positions with the refinement's corrections drawn as arrows (scaled up)."""
    import zarr

    plt = pyplot()
    group = zarr.open_group(run_path, mode="r")["ptycho"]
    final = np.asarray(group["positions"][...])
    initial = np.asarray(group["positions_initial"][...]) if "positions_initial" in group \
        else final
    unit = group.attrs.get("positions_unit", "px")
    moves = final - initial
    rms = float(np.sqrt((moves**2).sum(axis=1).mean()))
    span = float(np.ptp(initial, axis=0).max()) or 1.0
    scale = 0.05 * span / rms if rms > 0 else 1.0
    fig, ax = plt.subplots(figsize=(6, 6), constrained_layout=True)
    ax.plot(initial[:, 1], initial[:, 0], ".", color="0.5", ms=3, label="initial")
    if rms > 0:
        ax.quiver(initial[:, 1], initial[:, 0], moves[:, 1] * scale, moves[:, 0] * scale,
                  angles="xy", scale_units="xy", scale=1, color="C3", width=0.003,
                  label=f"correction x{scale:.1f}")
    ax.set_aspect("equal")
    ax.invert_yaxis()
    ax.set_xlabel(f"x ({unit})")
    ax.set_ylabel(f"y ({unit})")
    ax.set_title(f"scan: {len(final)} positions, corrections {rms:.3g} {unit} RMS")
    ax.legend(loc="upper right", fontsize=8)
    return save(fig, out_png)


def plot_frc(run_path: str, out_png: str) -> str:
    """FRC of the two half-scan objects against the half-bit threshold."""
    import zarr

    plt = pyplot()
    group = zarr.open_group(run_path, mode="r")["ptycho"]
    f = np.asarray(group["frc_frequency"][...])
    frc, threshold = np.asarray(group["frc"][...]), np.asarray(group["frc_threshold"][...])
    res = group.attrs.get("frc_resolution_px")
    fig, ax = plt.subplots(figsize=(6, 4), constrained_layout=True)
    ax.plot(f[1:], frc[1:], "-", label="FRC of the two halves")
    ax.plot(f[1:], threshold[1:], "--", color="0.4", label="half-bit threshold")
    if res is not None and res > 2.0:
        ax.axvline(1 / res, color="C3", lw=0.8, label=f"crossing: {res:.3g} px")
    ax.set_xlabel("spatial frequency (cycles per object pixel)")
    ax.set_ylabel("FRC")
    ax.set_ylim(-0.1, 1.05)
    ax.set_title("Fourier ring correlation, interleaved halves")
    ax.legend(fontsize=8)
    return save(fig, out_png)


def summary_lines(run) -> list[str]:
    """Engine, iterations, probe modes and positions; the final error and the refinement."""
    a = run["ptycho"].attrs
    engine = a.get("parameters", {}).get("engine", "?")
    if isinstance(engine, dict):  # the engine's whole parameter set
        engine = engine.get("engine", "?")
    lines = ["## Ptychography",
             f"- engine {engine}, {a.get('iterations_done', '?')} iterations, "
             f"{run['ptycho/probe'].shape[0]} probe mode(s), "
             f"{run['ptycho/positions'].shape[0]} positions"]
    if a.get("final_error") is not None:
        lines.append(f"- final Fourier error {a['final_error']:.4g}")
    if a.get("position_shift_rms_px") is not None:
        most = a.get("position_shift_max_px")
        lines.append(f"- positions moved {a['position_shift_rms_px']:.3g} px RMS"
                     + ("" if most is None else f", {most:.3g} px at most")
                     + " by refinement")
    if a.get("propagation") == "near-field":
        lines.append("- near-field (angular spectrum) propagation")
    if a.get("frc_resolution_px") is not None:
        res, metres = a["frc_resolution_px"], a.get("frc_resolution_m")
        where = ("beyond Nyquist: FRC above half-bit at every frequency" if res <= 2.0
                 else f"{res:.3g} px" + ("" if metres is None else f" ({metres * 1e9:.3g} nm)"))
        lines.append(f"- resolution (FRC of two interleaved halves, half-bit): {where}")
    return [*lines, ""]


SECTION = Section("ptycho", (
    Figure("object.png", plot_object, "Object"),
    Figure("probe.png", plot_probe, "Probe modes"),
    Figure("ptycho_errors.png", plot_ptycho_errors, "Error per iteration"),
    Figure("scan.png", plot_scan, "Scan and position corrections"),
    Figure("frc.png", plot_frc, "Fourier ring correlation of two half scans",
           array="ptycho/frc"),
), summary_lines)
