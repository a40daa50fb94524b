"""What every report section shares: how it declares its figures, and matplotlib helpers."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Figure:
    """One PNG of a report.

    name : file name in the report directory.
    plot : ``plot(run_path, out_png) -> out_png``.
    title : its caption in ``summary.md``.
    needs : other finished groups it draws on (the fit figure reads ``ensemble/``); it is
        listed with the earliest of them.
    array : run-store path of an array without which it is not drawn (``frame_status``
        is absent where another tool wrote ``ensemble/``).
    """

    name: str
    plot: Callable[[str, str], str]
    title: str
    needs: tuple[str, ...] = ()
    array: str | None = None


@dataclass(frozen=True)
class Section:
    """What a report shows of one run-store group: its figures and its summary lines.

    summary : ``summary(run) -> lines`` of Markdown, ending in a blank line; ``run`` is
        the opened run store.
    """

    group: str
    figures: tuple[Figure, ...]
    summary: Callable[[object], list[str]]


def pyplot():
    """matplotlib's pyplot on the Agg back end: reports are written without a display."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig, out_png: str) -> str:
    """Write ``fig`` to ``out_png`` (making its directory) and close it."""
    os.makedirs(os.path.dirname(os.path.abspath(out_png)), exist_ok=True)
    fig.savefig(out_png, dpi=100)
    pyplot().close(fig)
    return out_png


def bare(ax) -> None:
    """No ticks: for images, whose pixel indices say nothing."""
    ax.set_xticks([])
    ax.set_yticks([])


def num(x) -> str:
    """A score with four decimals, or ``n/a`` when the stage recorded none."""
    return "n/a" if x is None else f"{x:.4f}"


# ----------------------------------------------------------------------------- real space

#: the colour every figure draws unmeasured pixels in, as its caption says
MISSING_RGBA = (0.85, 0.1, 0.1, 1.0)


def real_space_pixel(run) -> float | None:
    """The real-space pixel in metres that ``ensemble/`` records, or None (unknown)."""
    try:
        pixel = run["ensemble"].attrs.get("real_space_pixel_m")
    except KeyError:
        return None
    return float(pixel) if pixel else None


def support_box(support, shape, margin: float = 0.25, least: int = 8) -> tuple[slice, slice]:
    """The bounding box of ``support`` widened by ``margin`` of its size (at least ``least``
    px a side), clipped to ``shape``; the whole frame when ``support`` is empty or None."""
    if support is None or not np.any(support):
        return slice(0, shape[0]), slice(0, shape[1])
    box = []
    for axis, n in enumerate(shape):
        idx = np.flatnonzero(np.any(support, axis=1 - axis))
        pad = max(least, int(np.ceil(margin * (idx[-1] + 1 - idx[0]))))
        box.append(slice(max(0, idx[0] - pad), min(n, idx[-1] + 1 + pad)))
    return box[0], box[1]


def object_box(obj, support=None, level: float = 0.1) -> tuple[slice, slice]:
    """Where to crop a reconstruction: where ``|obj|`` exceeds ``level`` of its maximum
    inside its support (the support alone when nothing there does; a shrink-wrapped
    support may still be loose), plus a margin (`support_box`)."""
    mag = np.abs(obj)
    bright = mag > level * mag.max() if mag.max() > 0 else np.zeros(mag.shape, bool)
    if support is not None and np.any(support):
        inside = bright & np.asarray(support, bool)
        return support_box(inside if inside.any() else support, mag.shape)
    return support_box(bright, mag.shape)


def show_real(ax, image, pixel_m: float | None, box, **imshow) -> object:
    """``image[box]`` with axes in nm about the frame's centre (px when the pixel size is
    unknown) and a scale bar; returns the image for a colour bar."""
    h, w = np.shape(image)[:2]
    scale, unit = (pixel_m * 1e9, "nm") if pixel_m else (1.0, "px")
    rows, cols = box
    # pixel centres at (index - h // 2) * scale; the extent runs along the pixel edges
    extent = ((cols.start - w // 2 - 0.5) * scale, (cols.stop - w // 2 - 0.5) * scale,
              (rows.stop - h // 2 - 0.5) * scale, (rows.start - h // 2 - 0.5) * scale)
    image = image if np.ma.isMaskedArray(image) else np.asarray(image)  # keep a mask
    im = ax.imshow(image[rows, cols], extent=extent, interpolation="nearest", **imshow)
    ax.set_xlabel(f"x ({unit})")
    ax.set_ylabel(f"y ({unit})")
    scale_bar(ax, (cols.stop - cols.start) * scale, unit)
    return im


def nice_length(span: float) -> float:
    """A round length (1, 2 or 5 times a power of ten) near a quarter of ``span``."""
    target = span / 4
    power = 10 ** np.floor(np.log10(target))
    return float(max(m * power for m in (1, 2, 5) if m * power <= target))


def scale_bar(ax, span: float, unit: str) -> None:
    """A bar of a round length in the lower left corner, labelled with it."""
    from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar

    length = nice_length(span)
    label = f"{length:g} {unit}"
    bar = AnchoredSizeBar(ax.transData, length, label, "lower left", pad=0.4, color="black",
                          frameon=True, size_vertical=span / 80, fontproperties={"size": 8})
    bar.patch.set_facecolor("white")
    bar.patch.set_alpha(0.75)
    ax.add_artist(bar)


def phase_panel(fig, ax, obj, pixel_m, box, level: float = 0.1):
    """The phase of ``obj`` where ``|obj|`` exceeds ``level`` of its maximum (grey below),
    with a colour bar in radians."""
    import matplotlib

    mag = np.abs(obj)
    phase = np.ma.masked_where(mag < level * mag.max(), np.angle(obj))
    cmap = matplotlib.colormaps["hsv"].with_extremes(bad="0.8")  # no grey in a hue wheel
    im = show_real(ax, phase, pixel_m, box, cmap=cmap, vmin=-np.pi, vmax=np.pi)
    bar = fig.colorbar(im, ax=ax, shrink=0.8, ticks=[-np.pi, 0, np.pi])
    bar.ax.set_yticklabels(["-π", "0", "π"])
    bar.set_label("phase (rad)")
    return im


def log_pattern(ax, values, measured, cmap: str = "viridis"):
    """``log10 values`` on the measured pixels, unmeasured ones in `MISSING_RGBA` (red);
    measured zeros (and negatives) sit at the bottom of the scale, the smallest positive
    value, rather than vanishing as blank pixels would. Returns the image."""
    import matplotlib

    values = np.asarray(values, np.float64)
    measured = np.asarray(measured, bool)
    positive = measured & (values > 0)
    floor = float(values[positive].min()) if positive.any() else 1.0
    shown = np.where(measured, np.log10(np.maximum(values, floor)), np.nan)
    colours = matplotlib.colormaps[cmap].with_extremes(bad=MISSING_RGBA)
    return ax.imshow(np.ma.masked_invalid(shown), cmap=colours, interpolation="nearest")
