"""Figures and summary of ``ensemble/``: the pattern phasing reads and the frame screens."""

from __future__ import annotations

import numpy as np

from lensfree.io.report._common import Figure, Section, log_pattern, pyplot, save


def plot_pattern(run_path: str, out_png: str) -> str:
    """The summed pattern with its mask and the phasing amplitude (stage-1 stores), else
    the phasing amplitude alone (a pattern another tool wrote, or ``ingest --pattern``)."""
    import zarr

    group = zarr.open_group(run_path, mode="r")["ensemble"]
    if "sum" in group and "mask" in group and "center" in group.attrs:
        return _plot_sum(group, out_png)
    plt = pyplot()
    amplitude = np.asarray(group["amplitude"][...], np.float64)
    valid = np.asarray(group["valid"][...], bool)
    if amplitude.ndim == 3:  # a 3D pattern (a Bragg rocking scan, or another tool's)
        from lensfree.io.report.volume import draw_pattern

        fig, axes = plt.subplots(1, 4, figsize=(18, 4.6), constrained_layout=True)
        draw_pattern(fig, axes, amplitude, valid)
        return save(fig, out_png)
    fig, ax = plt.subplots(figsize=(6.5, 5.5), constrained_layout=True)
    im = log_pattern(ax, amplitude ** 2, valid)
    ax.set_title("pattern A^2, log10 (red: missing; zero counts at the bottom)", fontsize=10)
    fig.colorbar(im, ax=ax, shrink=0.8)
    return save(fig, out_png)


def _plot_sum(group, out_png: str) -> str:
    """Summed pattern on a log scale with unmeasured pixels shown, and the phasing amplitude."""
    plt = pyplot()
    total = np.asarray(group["sum"][...])
    mask = np.asarray(group["mask"][...])
    amplitude = np.asarray(group["amplitude"][...])
    valid = np.asarray(group["valid"][...])
    cy, cx = group.attrs["center"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 5), constrained_layout=True)
    im = log_pattern(axes[0], total, mask)
    axes[0].plot([cx], [cy], "w+", ms=12)
    axes[0].set_title("ensemble sum, log10 counts (red: not measured, +: centre)",
                      fontsize=10)
    fig.colorbar(im, ax=axes[0], shrink=0.8)
    im = log_pattern(axes[1], amplitude, valid)  # viridis holds no red to mistake
    axes[1].set_title(f"phasing amplitude, log10 (binned x{group.attrs['binning']}; "
                      "red: missing)", fontsize=10)
    fig.colorbar(im, ax=axes[1], shrink=0.8)
    return save(fig, out_png)


def plot_frame_status(run_path: str, out_png: str) -> str:
    """How many frames each screen accepted or rejected."""
    import zarr

    from lensfree.engine.ensemble import STATUS_NAMES

    plt = pyplot()
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
    return save(fig, out_png)


def summary_lines(run) -> list[str]:
    """Frame counts, centre, the amplitude's size and the real-space pixel."""
    a = run["ensemble"].attrs
    shape = run["ensemble/amplitude"].shape
    lines = ["## Ensemble"]
    if "counts" in a:
        lines.append("- frames: " + ", ".join(f"{k} {v}" for k, v in a["counts"].items()))
    if "center" in a:
        lines.append(f"- centre ({a['center'][0]:.2f}, {a['center'][1]:.2f}) px, "
                     f"binned x{a.get('binning', 1)}")
    lines.append(f"- amplitude {' x '.join(str(n) for n in shape)}, "
                 f"{a.get('n_valid', '?')} valid {'voxels' if len(shape) == 3 else 'pixels'}")
    if a.get("bragg"):
        lines.append(f"- Bragg rocking scan: {a.get('n_frames')} frames, cube of "
                     f"{a.get('crop_size')} from {a.get('crop_start')} about the peak "
                     f"{a.get('peak')}, binned x{a.get('binning', 1)}; masked "
                     + ", ".join(f"{k} {v}" for k, v in a.get("masked", {}).items()))
    if a.get("real_space_pixel_m"):
        lines.append(f"- real-space pixel {a['real_space_pixel_m'] * 1e9:.3f} nm "
                     f"(wavelength {a.get('wavelength_m')} m, distance "
                     f"{a.get('distance_m')} m)")
    return [*lines, ""]


SECTION = Section("ensemble", (
    Figure("pattern.png", plot_pattern, "Pattern"),
    Figure("frame_status.png", plot_frame_status, "Frame screens",
           array="ensemble/frame_status"),
), summary_lines)
