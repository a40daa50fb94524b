"""Figure and summary of ``fit/``: the core-shell fit against the ensemble's amplitude."""

from __future__ import annotations

import numpy as np

from lensfree.io.report._common import Figure, Section, pyplot, save


def plot_fit(run_path: str, out_png: str) -> str:
    """The core-shell fit: erf% over the diameter grid, and measured vs model profiles."""
    import zarr

    from lensfree.engine.profiles import radial_profile

    plt = pyplot()
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
    region = np.asarray(group["region"][...], bool)
    r, measured = radial_profile(run["ensemble/amplitude"][...], region)
    _, model = radial_profile(group["model"][...], region)
    axes[1].semilogy(r, measured, "k.", label="measured")
    axes[1].semilogy(r, model, "r-", label="model")
    axes[1].set_xlabel("radius (binned pixels)")
    axes[1].set_ylabel("shell mean amplitude")
    axes[1].legend()
    axes[1].set_title("radial profile, fitted pixels only", fontsize=10)
    return save(fig, out_png)


def _extent(axis: np.ndarray) -> list[float]:
    """imshow limits that put each grid value at the middle of its cell."""
    step = float(axis[1] - axis[0]) if axis.size > 1 else 1.0
    return [float(axis[0]) - step / 2, float(axis[-1]) + step / 2]


def summary_lines(run) -> list[str]:
    """The best diameters, their erf, the densities and the speckle left out."""
    a = run["fit"].attrs
    return ["## Core-shell fit",
            f"- inner {a['best_inner']:g} {a['unit']}, outer {a['best_outer']:g} "
            f"{a['unit']}: erf {a['best_erf']:.2f}% over {a['n_points']} grid points",
            f"- densities core {a['core_density']}, shell {a['shell_density']}; "
            f"central speckle {a['speckle_diameter']:.1f} px left out",
            ""]


SECTION = Section("fit", (
    Figure("fit.png", plot_fit, "Core-shell fit", needs=("ensemble",)),
), summary_lines)
