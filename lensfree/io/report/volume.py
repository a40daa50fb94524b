"""Figures of 3D groups: three orthogonal central slices (amplitude and phase) and a
projection, for reconstructions; central slices and a projection of a 3D pattern.

Axes of a volume are (z, y, x) as stored: the slices are the (y, x) plane at the object's
centre in z, the (z, x) plane at its centre in y and the (z, y) plane at its centre in x.
"""

from __future__ import annotations

import numpy as np

from lensfree.io.report._common import log_pattern, object_box, phase_panel, show_real

#: the three central planes: (name, the axis cut, the axes shown as rows and columns)
PLANES = (("y-x", 0, ("y", "x")), ("z-x", 1, ("z", "x")), ("z-y", 2, ("z", "y")))


def object_centre(obj, support=None, level: float = 0.1) -> tuple[int, ...]:
    """Voxel through which the central slices pass: the middle of the bounding box of the
    voxels brighter than ``level`` of the maximum (inside ``support`` when it has any),
    so a member translated anywhere in its periodic box is still cut through its body."""
    mag = np.abs(np.asarray(obj))
    if not mag.max() > 0:  # nothing to centre on: the array's centre
        return tuple(n // 2 for n in mag.shape)
    bright = mag > level * mag.max()
    if support is not None and np.any(support & bright):
        bright = bright & np.asarray(support, bool)
    centre = []
    for axis in range(mag.ndim):
        idx = np.flatnonzero(bright.any(axis=tuple(a for a in range(mag.ndim) if a != axis)))
        centre.append(int((idx[0] + idx[-1]) // 2) if idx.size else mag.shape[axis] // 2)
    return tuple(centre)


def _cut(volume, axis: int, index: int):
    return np.take(np.asarray(volume), index, axis=axis)


def _label(ax, names, pixel) -> None:
    unit = "nm" if pixel else "px"
    ax.set_ylabel(f"{names[0]} ({unit})")
    ax.set_xlabel(f"{names[1]} ({unit})")


def draw_volume(fig, axes, obj, pixel, support=None, title: str = "") -> None:
    """Amplitude (row 0) and phase (row 1) of the three central planes of ``obj``, and in
    the fourth column the projection along z: ``sum_z |obj|`` and the phase of
    ``sum_z obj``. ``axes`` is a 2 x 4 array of matplotlib axes."""
    centre = object_centre(obj, support)
    for col, (name, axis, names) in enumerate(PLANES):
        plane = _cut(obj, axis, centre[axis])
        plane_support = None if support is None else _cut(support, axis, centre[axis])
        box = object_box(plane, plane_support)
        im = show_real(axes[0, col], np.abs(plane), pixel, box, cmap="gray")
        fig.colorbar(im, ax=axes[0, col], shrink=0.8)
        axes[0, col].set_title(f"{title}{name} slice at {'zyx'[axis]} = {centre[axis]}: "
                               "amplitude", fontsize=9)
        phase_panel(fig, axes[1, col], plane, pixel, box)
        axes[1, col].set_title(f"{name} slice: phase (grey: amplitude < 10%)", fontsize=9)
        for row in (0, 1):
            _label(axes[row, col], names, pixel)
    projection = np.asarray(obj).sum(axis=0)
    box = object_box(np.abs(obj).sum(axis=0),
                     None if support is None else np.asarray(support).any(axis=0))
    im = show_real(axes[0, 3], np.abs(obj).sum(axis=0), pixel, box, cmap="gray")
    fig.colorbar(im, ax=axes[0, 3], shrink=0.8)
    axes[0, 3].set_title("projection along z: sum |amplitude|", fontsize=9)
    phase_panel(fig, axes[1, 3], projection, pixel, box)
    axes[1, 3].set_title("phase of the projection", fontsize=9)
    for row in (0, 1):
        _label(axes[row, 3], ("y", "x"), pixel)


def draw_pattern(fig, axes, amplitude, valid) -> None:
    """``log10 A^2`` of a 3D pattern: the three planes through its centre (``n // 2``
    on each axis) and the sum along z, on one row of four ``axes``."""
    intensity = np.asarray(amplitude, np.float64) ** 2
    valid = np.asarray(valid, bool)
    for col, (name, axis, names) in enumerate(PLANES):
        index = intensity.shape[axis] // 2
        im = log_pattern(axes[col], _cut(intensity, axis, index), _cut(valid, axis, index))
        axes[col].set_title(f"{name} plane through the centre, log10 A^2", fontsize=9)
        axes[col].set_ylabel(f"q_{names[0]} (px)")
        axes[col].set_xlabel(f"q_{names[1]} (px)")
        fig.colorbar(im, ax=axes[col], shrink=0.7)
    total = np.where(valid, intensity, 0).sum(axis=0)
    im = log_pattern(axes[3], total, valid.any(axis=0))
    axes[3].set_title("sum along z, log10", fontsize=9)
    axes[3].set_ylabel("q_y (px)")
    axes[3].set_xlabel("q_x (px)")
    fig.colorbar(im, ax=axes[3], shrink=0.7)
