"""Figures and summary of ``gather/``: the average and its PRTF."""

from __future__ import annotations

import numpy as np

from lensfree.io.report._common import (
    Figure,
    Section,
    num,
    object_box,
    phase_panel,
    pyplot,
    real_space_pixel,
    save,
    show_real,
)


def plot_average(run_path: str, out_png: str) -> str:
    """The gathered average (amplitude and phase), beside the model when there is one.

    Cropped to the reference member's support plus a margin, axes in nm (px when the pixel
    size is unknown) with a scale bar; a colour bar on each panel.
    """
    import zarr

    from lensfree.engine.scoring import align_to_model

    plt = pyplot()
    run = zarr.open_group(run_path, mode="r")
    group = run["gather"]
    average = np.asarray(group["average"][...])
    model = None
    if "truth" in run and "object" in run["truth"] and group.attrs.get("ssim") is not None:
        model = np.abs(np.asarray(run["truth/object"][...]))
    pixel = real_space_pixel(run)
    support = None
    ref = group.attrs.get("reference_member")
    if ref is not None and "phasing" in run and "supports" in run["phasing"]:
        support = np.asarray(run["phasing/supports"][int(ref)], bool)
    if average.ndim == 3:
        return _plot_volume_average(run, average, pixel, support, out_png)
    box = object_box(average, support)
    fig, axes = plt.subplots(1, 4 if model is not None else 2,
                             figsize=(17 if model is not None else 9.5, 4.5),
                             constrained_layout=True)
    im = show_real(axes[0], np.abs(average), pixel, box, cmap="gray")
    fig.colorbar(im, ax=axes[0], shrink=0.8, label="amplitude")
    axes[0].set_title(f"average of {group.attrs['n_selected']}: amplitude", fontsize=10)
    phase_panel(fig, axes[1], average, pixel, box)
    axes[1].set_title("phase (grey: amplitude below 10%)", fontsize=10)
    if model is not None:
        aligned = align_to_model(average, model)
        top = float(max(aligned.max(), model.max()))
        model_box = object_box(model)  # both in the model's frame now
        for ax, image, title in ((axes[2], aligned, "aligned to the model"),
                                 (axes[3], model, f"model: SSIM {group.attrs['ssim']:.3f}")):
            im = show_real(ax, image, pixel, model_box, cmap="gray", vmin=0, vmax=top)
            ax.set_title(title, fontsize=10)
        fig.colorbar(im, ax=axes[3], shrink=0.8, label="amplitude")
    return save(fig, out_png)


def _plot_volume_average(run, average, pixel, support, out_png: str) -> str:
    """The 3D average: three orthogonal central slices (amplitude, phase) and a projection.
    The phase is in radians; of a Bragg reconstruction it is the projection of the
    displacement field on the scattering vector, ``phi = Q . u``."""
    from lensfree.io.report.volume import draw_volume

    fig, axes = pyplot().subplots(2, 4, figsize=(17, 7.6), squeeze=False,
                                  constrained_layout=True)
    draw_volume(fig, axes, average, pixel, support,
                title=f"average of {run['gather'].attrs['n_selected']}, ")
    if "ensemble" in run and run["ensemble"].attrs.get("bragg"):
        fig.suptitle("Bragg CDI: phase = Q . u, the displacement field projected on the "
                     "scattering vector (rad); axes: rocking angle (z), detector y, x",
                     fontsize=10)
    return save(fig, out_png)


def plot_prtf(run_path: str, out_png: str) -> str:
    """The PRTF against spatial frequency, the 1/e line and the resolution it gives."""
    import zarr

    plt = pyplot()
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
    shells = " over spherical shells" if group["average"].ndim == 3 else ""
    ax.set_title(f"PRTF of {a['n_selected']} members{shells}\nhalf-period resolution "
                 f"{_resolution(a)}", fontsize=10)
    ax.set_xlabel(f"q ({unit})")
    ax.set_ylabel("PRTF (phase-only)")
    # stores written before the phase-only PRTF may hold values above 1
    ax.set_ylim(0, max(1.05, float(np.nanmax(curve)) * 1.05) if np.isfinite(curve).any()
                else 1.05)
    ax.legend()
    return save(fig, out_png)


def summary_lines(run) -> list[str]:
    """Members averaged, resolution, R-factor and SSIM against a model."""
    a = run["gather"].attrs
    lines = ["## Gather",
             f"- best {a['n_selected']} of {a.get('n_members', '?')} members "
             f"(fraction {a['parameters']['fraction']}), aligned to member "
             f"{a['reference_member']}",
             f"- half-period resolution (PRTF 1/e): {_resolution(a)}",
             f"- R-factor of the average: {num(a['r_factor'])}"]
    if a.get("ssim") is not None:
        lines.append(f"- SSIM against the model ({a.get('model')}): {a['ssim']:.4f}")
    if "ensemble" in run and run["ensemble"].attrs.get("bragg"):
        lines.append("- Bragg CDI: the phase is the projection of the displacement field on "
                     "the scattering vector, phi = Q . u, in radians (figures in detector "
                     "coordinates: rocking angle, detector y, detector x)")
    return [*lines, ""]


def _resolution(a) -> str:
    """``gather/``'s resolution in words: "better than X (the data edge)" when not reached."""
    from lensfree.engine.scoring import describe_resolution

    pixel = a.get("real_space_pixel_m")
    if not pixel and a.get("resolution_m"):
        pixel = a["resolution_m"] / a["resolution_px"]
    return describe_resolution(a["resolution_px"], a.get("resolution_reached", True), pixel,
                               a.get("prtf_edge"))


SECTION = Section("gather", (
    Figure("average.png", plot_average, "Average"),
    Figure("prtf.png", plot_prtf, "PRTF"),
), summary_lines)
