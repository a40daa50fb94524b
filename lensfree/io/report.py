"""PNG figures and a Markdown summary of a run store (matplotlib, no display needed).

`write_report` draws whatever finished groups a store holds (pattern, frame screens,
best members, error per generation, average, PRTF, core-shell fit) and writes
``summary.md``; the ``plot_*`` functions each draw one figure.
"""

from __future__ import annotations

import os

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_ensemble(run_path: str, out_png: str) -> str:
    """Summed pattern on a log scale with unmeasured pixels shown, and the phasing amplitude."""
    import zarr

    plt = _pyplot()
    group = zarr.open_group(run_path, mode="r")["ensemble"]
    total = np.asarray(group["sum"][...])
    mask = np.asarray(group["mask"][...])
    amplitude = np.asarray(group["amplitude"][...])
    valid = np.asarray(group["valid"][...])
    cy, cx = group.attrs["center"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 5), constrained_layout=True)
    shown = np.ma.masked_where(~mask | (total <= 0), total)
    im = axes[0].imshow(np.ma.log10(shown), cmap="viridis")
    axes[0].imshow(np.ma.masked_where(mask, np.ones_like(total)), cmap="Reds", vmin=0, vmax=2,
                   alpha=0.8)
    axes[0].plot([cx], [cy], "w+", ms=12)
    axes[0].set_title("ensemble sum, log10 counts (red: not measured, +: centre)")
    fig.colorbar(im, ax=axes[0], shrink=0.8)
    amp = np.ma.masked_where(~valid | (amplitude <= 0), amplitude)
    im = axes[1].imshow(np.ma.log10(amp), cmap="magma")
    axes[1].set_title(f"phasing amplitude, log10 (binned x{group.attrs['binning']}; "
                      "white: missing)")
    fig.colorbar(im, ax=axes[1], shrink=0.8)
    os.makedirs(os.path.dirname(os.path.abspath(out_png)), exist_ok=True)
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
    return out_png


def plot_phasing(run_path: str, out_png: str, n_best: int = 4) -> str:
    """Amplitude and phase of the best members, and the best error per generation."""
    import zarr

    plt = _pyplot()
    group = zarr.open_group(run_path, mode="r")["phasing"]
    errors = np.asarray(group["errors"][...])
    order = np.argsort(errors[-1], kind="stable")[:n_best]
    fig, axes = plt.subplots(2, len(order) + 1, figsize=(3 * (len(order) + 1), 6),
                             constrained_layout=True)
    axes = np.atleast_2d(axes)
    for col, m in enumerate(order):
        obj = np.asarray(group["objects"][int(m)])
        axes[0, col].imshow(np.abs(obj), cmap="gray")
        axes[0, col].set_title(f"member {m}: R_F {errors[-1, m]:.4f}", fontsize=9)
        phase = np.ma.masked_where(np.abs(obj) < 0.1 * np.abs(obj).max(), np.angle(obj))
        axes[1, col].imshow(phase, cmap="twilight", vmin=-np.pi, vmax=np.pi)
        axes[1, col].set_title("phase", fontsize=9)
    for ax in axes[:, :-1].ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    gen = np.arange(1, errors.shape[0] + 1)
    axes[0, -1].plot(gen, np.nanmin(errors, axis=1), "o-", label="best")
    axes[0, -1].plot(gen, np.nanmedian(errors, axis=1), "s--", label="median")
    axes[0, -1].set_xlabel("generation")
    axes[0, -1].set_ylabel("R_F")
    axes[0, -1].legend()
    r = np.asarray(group["r_fourier"][-1, int(order[0])])
    axes[1, -1].semilogy(r)
    axes[1, -1].set_xlabel("iteration (last generation, best member)")
    axes[1, -1].set_ylabel("R_F")
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
    return out_png


# ----------------------------------------------------------------------------- the report


def _save(fig, out_png: str) -> str:
    os.makedirs(os.path.dirname(os.path.abspath(out_png)), exist_ok=True)
    fig.savefig(out_png, dpi=100)
    _pyplot().close(fig)
    return out_png


def _bare(ax) -> None:
    ax.set_xticks([])
    ax.set_yticks([])


def plot_pattern(run_path: str, out_png: str) -> str:
    """The summed pattern with its mask (stage-1 stores), else the phasing amplitude alone."""
    import zarr

    group = zarr.open_group(run_path, mode="r")["ensemble"]
    if "sum" in group and "mask" in group and "center" in group.attrs:
        return plot_ensemble(run_path, out_png)
    plt = _pyplot()
    amplitude = np.asarray(group["amplitude"][...], np.float64)
    valid = np.asarray(group["valid"][...], bool)
    fig, ax = plt.subplots(figsize=(6.5, 5.5), constrained_layout=True)
    shown = np.ma.masked_where(~valid | (amplitude <= 0), amplitude ** 2)
    im = ax.imshow(np.ma.log10(shown), cmap="viridis")
    ax.imshow(np.ma.masked_where(valid, np.ones_like(amplitude)), cmap="Reds", vmin=0, vmax=2,
              alpha=0.8)
    ax.set_title("pattern A^2, log10 (red: missing)")
    fig.colorbar(im, ax=ax, shrink=0.8)
    return _save(fig, out_png)


def plot_frame_status(run_path: str, out_png: str) -> str:
    """How many frames each screen accepted or rejected."""
    import zarr

    from lensfree.engine.ensemble import STATUS_NAMES

    plt = _pyplot()
    status = np.asarray(zarr.open_group(run_path, mode="r")["ensemble/frame_status"][...])
    codes = sorted(STATUS_NAMES)
    counts = [int((status == c).sum()) for c in codes]
    fig, ax = plt.subplots(figsize=(7, 4), constrained_layout=True)
    colours = ["tab:green", "tab:orange", "tab:red", "tab:purple", "tab:gray"]
    bars = ax.bar([STATUS_NAMES[c] for c in codes], counts, color=colours)
    ax.bar_label(bars, labels=[str(c) for c in counts])
    ax.set_yscale("symlog", linthresh=10)
    ax.set_ylabel("frames")
    ax.set_title(f"frame status ({status.size} frames)")
    return _save(fig, out_png)


def _best_members(group, n_best: int):
    errors = np.asarray(group["errors"][...])
    final = errors[-1]
    order = np.argsort(np.where(np.isfinite(final), final, np.inf), kind="stable")[:n_best]
    return errors, order


def plot_members(run_path: str, out_png: str, n_best: int = 4) -> str:
    """Amplitude and phase of the best members of the last generation."""
    import zarr

    plt = _pyplot()
    group = zarr.open_group(run_path, mode="r")["phasing"]
    errors, order = _best_members(group, n_best)
    fig, axes = plt.subplots(2, len(order), figsize=(3 * len(order), 6), squeeze=False,
                             constrained_layout=True)
    for col, m in enumerate(order):
        obj = np.asarray(group["objects"][int(m)])
        axes[0, col].imshow(np.abs(obj), cmap="gray")
        axes[0, col].set_title(f"member {m}: R_F {errors[-1, m]:.4f}", fontsize=9)
        phase = np.ma.masked_where(np.abs(obj) < 0.1 * np.abs(obj).max(), np.angle(obj))
        axes[1, col].imshow(phase, cmap="twilight", vmin=-np.pi, vmax=np.pi)
        axes[1, col].set_title("phase", fontsize=9)
    for ax in axes.ravel():
        _bare(ax)
    return _save(fig, out_png)


def plot_errors(run_path: str, out_png: str) -> str:
    """Final error of every member per generation, with the best and the median."""
    import zarr

    plt = _pyplot()
    group = zarr.open_group(run_path, mode="r")["phasing"]
    errors = np.asarray(group["errors"][...])
    gen = np.arange(1, errors.shape[0] + 1)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    ax = axes[0]
    ax.plot(np.repeat(gen, errors.shape[1]), errors.ravel(), ".", color="0.7", label="members")
    ax.plot(gen, np.nanmin(errors, axis=1), "o-", label="best")
    ax.plot(gen, np.nanmedian(errors, axis=1), "s--", label="median")
    ax.set_xlabel("generation")
    ax.set_ylabel("final R_F")
    ax.set_xticks(gen)
    ax.legend()
    ax.set_title("error per generation")
    best = int(np.nanargmin(errors[-1]))
    if "r_fourier" in group:
        axes[1].semilogy(np.asarray(group["r_fourier"][-1, best]))
        axes[1].set_xlabel("iteration")
        axes[1].set_ylabel("R_F")
        axes[1].set_title(f"last generation, best member {best}")
    else:
        axes[1].set_visible(False)
    return _save(fig, out_png)


def plot_average(run_path: str, out_png: str) -> str:
    """The gathered average (amplitude and phase), beside the model when there is one."""
    import zarr

    from lensfree.engine.scoring import align_to_model

    plt = _pyplot()
    run = zarr.open_group(run_path, mode="r")
    group = run["gather"]
    average = np.asarray(group["average"][...])
    model = None
    if "truth" in run and "object" in run["truth"] and group.attrs.get("ssim") is not None:
        model = np.abs(np.asarray(run["truth/object"][...]))
    fig, axes = plt.subplots(1, 3 if model is not None else 2,
                             figsize=(13 if model is not None else 9, 4.5),
                             constrained_layout=True)
    im = axes[0].imshow(np.abs(average), cmap="gray")
    fig.colorbar(im, ax=axes[0], shrink=0.8)
    axes[0].set_title(f"average of {group.attrs['n_selected']}: amplitude", fontsize=10)
    phase = np.ma.masked_where(np.abs(average) < 0.1 * np.abs(average).max(), np.angle(average))
    im = axes[1].imshow(phase, cmap="twilight", vmin=-np.pi, vmax=np.pi)
    fig.colorbar(im, ax=axes[1], shrink=0.8)
    axes[1].set_title("phase (rad)", fontsize=10)
    if model is not None:
        axes[2].imshow(np.hstack([align_to_model(average, model), model]), cmap="gray")
        axes[2].set_title(f"aligned | model: SSIM {group.attrs['ssim']:.3f}", fontsize=10)
    for ax in axes:
        _bare(ax)
    return _save(fig, out_png)


def plot_prtf(run_path: str, out_png: str) -> str:
    """The PRTF against spatial frequency, the 1/e line and the resolution it gives."""
    import zarr

    plt = _pyplot()
    group = zarr.open_group(run_path, mode="r")["gather"]
    a = group.attrs
    q = np.asarray(group["q"][...])
    curve = np.asarray(group["prtf"][...])
    pixel = a.get("real_space_pixel_m")
    scale, unit = (1e-9 / pixel, "1/nm") if pixel else (1.0, "cycles/pixel")
    fig, ax = plt.subplots(figsize=(7, 4.5), constrained_layout=True)
    ax.plot(q * scale, curve, "o-", ms=3, label="PRTF")
    ax.axhline(a["prtf_threshold"], color="tab:red", ls="--", label="1/e")
    ax.axvline(a["q_cut"] * scale, color="tab:gray", ls=":")
    if a.get("prtf_floor") is not None:
        ax.axhline(a["prtf_floor"], color="0.6", ls="-.",
                   label=f"chance level of {a['n_selected']} members")
    res = f"{a['resolution_px']:.2f} px"
    if a.get("resolution_m"):
        res += f" = {a['resolution_m'] * 1e9:.2f} nm"
    edge = "" if a.get("resolution_reached", True) else " (never below 1/e: data edge)"
    ax.set_title(f"PRTF of {a['n_selected']} members: half-period resolution {res}{edge}",
                 fontsize=10)
    ax.set_xlabel(f"q ({unit})")
    ax.set_ylabel("PRTF")
    ax.set_ylim(0, max(1.05, float(np.nanmax(curve)) * 1.05) if np.isfinite(curve).any()
                else 1.05)
    ax.legend()
    return _save(fig, out_png)


def plot_fit(run_path: str, out_png: str) -> str:
    """The core-shell fit: erf% over the diameter grid, and measured vs model profiles."""
    import zarr

    from lensfree.engine.scoring import shell_index

    plt = _pyplot()
    run = zarr.open_group(run_path, mode="r")
    group = run["fit"]
    a = group.attrs
    erf = np.asarray(group["erf"][...])
    inner, outer = np.asarray(group["inner"][...]), np.asarray(group["outer"][...])
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8), constrained_layout=True)
    ax = axes[0]
    extent = _extent(outer) + _extent(inner)
    im = ax.imshow(erf, origin="lower", aspect="auto", extent=extent, cmap="viridis")
    ax.plot([a["best_outer"]], [a["best_inner"]], "r*", ms=14)
    fig.colorbar(im, ax=ax, label="erf %")
    ax.set_xlabel(f"outer diameter ({a['unit']})")
    ax.set_ylabel(f"inner diameter ({a['unit']})")
    ax.set_title(f"best {a['best_inner']:g} / {a['best_outer']:g} {a['unit']}: "
                 f"erf {a['best_erf']:.1f}%", fontsize=10)
    measured = np.asarray(run["ensemble/amplitude"][...], np.float64)
    model = np.asarray(group["model"][...], np.float64)
    region = np.asarray(group["region"][...], bool)
    shells = shell_index(measured.shape)
    use = region & (shells >= 0)
    n = int(shells.max()) + 1
    counts = np.bincount(shells[use], minlength=n)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_a = np.bincount(shells[use], measured[use], n) / counts
        mean_m = np.bincount(shells[use], model[use], n) / counts
    r = np.arange(n)
    axes[1].semilogy(r, mean_a, "k.", label="measured")
    axes[1].semilogy(r, mean_m, "r-", label="model")
    axes[1].set_xlabel("radius (binned pixels)")
    axes[1].set_ylabel("shell mean amplitude")
    axes[1].legend()
    axes[1].set_title("radial profile, fitted pixels only", fontsize=10)
    return _save(fig, out_png)


def _extent(axis: np.ndarray) -> list[float]:
    step = float(axis[1] - axis[0]) if axis.size > 1 else 1.0
    return [float(axis[0]) - step / 2, float(axis[-1]) + step / 2]


def write_report(run_path: str, out_dir: str) -> list[str]:
    """Figures for every finished group of a run store and ``summary.md``; returns the paths.

    Raises LensfreeError when the store has no finished group.
    """
    import zarr

    from lensfree.errors import LensfreeError
    from lensfree.io import runstore

    run = runstore.open_run(run_path, mode="r")
    done = [name for name in ("ensemble", "phasing", "gather", "fit", "ptycho")
            if runstore.is_complete(run, name)]
    if not done:
        raise LensfreeError(f"{run_path}: no finished stage to report on")
    plots = []
    if "ensemble" in done:
        plots.append(("pattern.png", plot_pattern, "Pattern"))
        if "frame_status" in run["ensemble"]:
            plots.append(("frame_status.png", plot_frame_status, "Frame screens"))
        if "fit" in done:
            plots.append(("fit.png", plot_fit, "Core-shell fit"))
    if "phasing" in done:
        plots += [("members.png", plot_members, "Best members"),
                  ("errors.png", plot_errors, "Error per generation")]
    if "gather" in done:
        plots += [("average.png", plot_average, "Average"), ("prtf.png", plot_prtf, "PRTF")]
    if "ptycho" in done:
        from lensfree.io.report_ptycho import PTYCHO_PLOTS

        plots += PTYCHO_PLOTS
    os.makedirs(out_dir, exist_ok=True)
    written, figures = [], []
    for name, plot, title in plots:
        written.append(plot(run_path, os.path.join(out_dir, name)))
        figures.append((title, name))
    summary = os.path.join(out_dir, "summary.md")
    with open(summary, "w") as f:
        f.write(summary_markdown(run_path, zarr.open_group(run_path, mode="r"), done, figures))
    return [*written, summary]


def summary_markdown(run_path: str, run, done: list[str], figures) -> str:
    """A short Markdown account of a run: stages, parameters, scores, figures."""
    lines = [f"# lensfree run `{os.path.basename(os.path.normpath(run_path))}`", ""]
    lines.append("| stage | finished | lensfree |")
    lines.append("| --- | --- | --- |")
    for name in done:
        a = run[name].attrs
        lines.append(f"| {name} | {a.get('finished', '?')} | {a.get('lensfree_version', '?')} |")
    lines.append("")
    if "ensemble" in done:
        a = run["ensemble"].attrs
        shape = run["ensemble/amplitude"].shape
        lines.append("## Ensemble")
        if "counts" in a:
            lines.append("- frames: " + ", ".join(f"{k} {v}" for k, v in a["counts"].items()))
        if "center" in a:
            lines.append(f"- centre ({a['center'][0]:.2f}, {a['center'][1]:.2f}) px, "
                         f"binned x{a.get('binning', 1)}")
        lines.append(f"- amplitude {shape[0]} x {shape[1]}, {a.get('n_valid', '?')} valid pixels")
        if a.get("real_space_pixel_m"):
            lines.append(f"- real-space pixel {a['real_space_pixel_m'] * 1e9:.3f} nm "
                         f"(wavelength {a.get('wavelength_m')} m, distance "
                         f"{a.get('distance_m')} m)")
        lines.append("")
    if "phasing" in done:
        a = run["phasing"].attrs
        p = a.get("parameters", {})
        lines.append("## Phasing")
        lines.append(f"- {p.get('population', '?')} members x {p.get('generations', '?')} "
                     f"generations, schedule `{a.get('schedule', p.get('schedule'))}`, "
                     f"seed {a.get('seed')}")
        lines.append(f"- best member {a.get('best_member')}: R_F {_num(a.get('best_error'))} "
                     f"(median {_num(a.get('median_error'))})")
        lines.append("")
    if "gather" in done:
        a = run["gather"].attrs
        res = f"{a['resolution_px']:.2f} px"
        if a.get("resolution_m"):
            res += f" ({a['resolution_m'] * 1e9:.2f} nm)"
        lines.append("## Gather")
        lines.append(f"- best {a['n_selected']} of {a.get('n_members', '?')} members "
                     f"(fraction {a['parameters']['fraction']}), aligned to member "
                     f"{a['reference_member']}")
        lines.append(f"- half-period resolution (PRTF 1/e): {res}"
                     + ("" if a.get("resolution_reached", True) else ", limited by the data edge"))
        lines.append(f"- R-factor of the average: {_num(a['r_factor'])}")
        if a.get("ssim") is not None:
            lines.append(f"- SSIM against the model ({a.get('model')}): {a['ssim']:.4f}")
        lines.append("")
    if "fit" in done:
        a = run["fit"].attrs
        lines.append("## Core-shell fit")
        lines.append(f"- inner {a['best_inner']:g} {a['unit']}, outer {a['best_outer']:g} "
                     f"{a['unit']}: erf {a['best_erf']:.2f}% over {a['n_points']} grid points")
        lines.append(f"- densities core {a['core_density']}, shell {a['shell_density']}; "
                     f"central speckle {a['speckle_diameter']:.1f} px left out")
        lines.append("")
    if "ptycho" in done:
        from lensfree.io.report_ptycho import summary_lines

        lines += summary_lines(run)
    if figures:
        lines.append("## Figures")
        lines += [f"- {title}: ![{title}]({name})" for title, name in figures]
        lines.append("")
    return "\n".join(lines)


def _num(x) -> str:
    return "n/a" if x is None else f"{x:.4f}"
