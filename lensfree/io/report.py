"""PNG figures of a run store (matplotlib, no display needed)."""

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
