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
