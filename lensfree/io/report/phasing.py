"""Figures and summary of ``phasing/``: the best members and the error per generation."""

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


def _best_members(group, n_best: int):
    errors = np.asarray(group["errors"][...])
    final = errors[-1]
    order = np.argsort(np.where(np.isfinite(final), final, np.inf), kind="stable")[:n_best]
    return errors, order


def plot_members(run_path: str, out_png: str, n_best: int = 4) -> str:
    """Amplitude and phase of the best members of the last generation.

    Each member cropped to its support plus a margin, axes in nm (px when the pixel size
    is unknown) with a scale bar, colour bars on every panel.
    """
    import zarr

    plt = pyplot()
    run = zarr.open_group(run_path, mode="r")
    group = run["phasing"]
    pixel = real_space_pixel(run)
    if group["objects"].ndim == 4:  # 3D members
        return _plot_volume_members(group, pixel, out_png, min(n_best, 2))
    errors, order = _best_members(group, n_best)
    fig, axes = plt.subplots(2, len(order), figsize=(3.6 * len(order), 6.4), squeeze=False,
                             constrained_layout=True)
    for col, m in enumerate(order):
        obj = np.asarray(group["objects"][int(m)])
        support = (np.asarray(group["supports"][int(m)], bool) if "supports" in group
                   else None)
        box = object_box(obj, support)
        im = show_real(axes[0, col], np.abs(obj), pixel, box, cmap="gray")
        fig.colorbar(im, ax=axes[0, col], shrink=0.8)
        axes[0, col].set_title(f"member {m}: R_F {errors[-1, m]:.4f}", fontsize=9)
        phase_panel(fig, axes[1, col], obj, pixel, box)
        axes[1, col].set_title("phase (grey: amplitude < 10%)", fontsize=9)
    return save(fig, out_png)


def _plot_volume_members(group, pixel, out_png: str, n_best: int) -> str:
    """The best 3D members: for each, three orthogonal central slices (amplitude above,
    phase below) and the projection along z."""
    from lensfree.io.report.volume import draw_volume

    errors, order = _best_members(group, n_best)
    fig, axes = pyplot().subplots(2 * len(order), 4, figsize=(17, 7.6 * len(order)),
                                  squeeze=False, constrained_layout=True)
    for k, m in enumerate(order):
        support = (np.asarray(group["supports"][int(m)], bool) if "supports" in group
                   else None)
        draw_volume(fig, axes[2 * k:2 * k + 2], np.asarray(group["objects"][int(m)]), pixel,
                    support, title=f"member {m} (R_F {errors[-1, m]:.4f}), ")
    return save(fig, out_png)


def plot_errors(run_path: str, out_png: str) -> str:
    """Final error of every member per generation, with the best and the median."""
    import zarr

    plt = pyplot()
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
        curve = np.asarray(group["r_fourier"][-1, best])
        recorded = np.flatnonzero(np.isfinite(curve))  # every error_every-th iteration
        axes[1].semilogy(recorded, curve[recorded])
        axes[1].set_xlabel("iteration")
        axes[1].set_ylabel("R_F")
        axes[1].set_title(f"last generation, best member {best}")
    else:
        axes[1].set_visible(False)
    return save(fig, out_png)


def summary_lines(run) -> list[str]:
    """Population, generations, schedule and seed; the best member's error."""
    a = run["phasing"].attrs
    p = a.get("parameters", {})
    return ["## Phasing",
            f"- {p.get('population', '?')} members x {p.get('generations', '?')} "
            f"generations, schedule `{a.get('schedule', p.get('schedule'))}`, "
            f"seed {a.get('seed')}",
            f"- best member {a.get('best_member')}: R_F {num(a.get('best_error'))} "
            f"(median {num(a.get('median_error'))})",
            ""]


SECTION = Section("phasing", (
    Figure("members.png", plot_members, "Best members"),
    Figure("errors.png", plot_errors, "Error per generation"),
), summary_lines)
