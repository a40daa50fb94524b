"""What every reader shares: the `Source` it returns, and checked reads of HDF5 objects."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import scipy.constants

from lensfree.errors import LensfreeError

log = logging.getLogger(__name__)

HC = scipy.constants.h * scipy.constants.c  # J m
LENGTH = {"m": 1.0, "meter": 1.0, "metre": 1.0, "mm": 1e-3, "um": 1e-6, "µm": 1e-6,
          "micron": 1e-6, "nm": 1e-9, "a": 1e-10, "å": 1e-10, "angstrom": 1e-10}
ENERGY = {"j": 1.0, "ev": scipy.constants.e, "kev": 1e3 * scipy.constants.e}


@dataclass
class Source:
    """What was found in the input file, checked, before anything is written.

    kind : the format, recorded as the store's ``source.format``.
    blocks : [(HDF5 path, h5py.Dataset)] holding the frames in order.
    mask : (H, W) bool, True = measured; None when the file has none.
    geometry : ``wavelength_m``, ``distance_m``, ``pixel_size_m`` as found (None when
        absent; a pixel size ``(px, py)`` when not square).
    positions, probe : for ptychography, as the frame store holds them.
    attrs : more of the store's ``source`` attr (datasets read, where positions came from).
    """

    kind: str
    blocks: list
    n_frames: int
    frame_shape: tuple[int, int]
    dtype: np.dtype
    mask: np.ndarray | None = None
    geometry: dict = field(default_factory=dict)
    positions: np.ndarray | None = None
    probe: np.ndarray | None = None
    attrs: dict = field(default_factory=dict)


def get_dataset(f, path: str, name: str):
    """The dataset ``name`` of the open file ``f``, or a `LensfreeError` saying why not."""
    import h5py

    try:
        obj = f.get(name)
    except (KeyError, OSError) as exc:  # a dangling external link
        raise LensfreeError(f"{path}:{name}: cannot read ({exc})") from None
    if obj is None:
        try:
            link = f.get(name, getlink=True)
        except (KeyError, OSError):
            link = None
        if isinstance(link, h5py.ExternalLink):
            raise LensfreeError(f"{path}:{name}: external link to {link.filename}:{link.path} "
                                "cannot be read (file missing?)")
        raise LensfreeError(f"{path}: no dataset {name}")
    if not isinstance(obj, h5py.Dataset):
        raise LensfreeError(f"{path}:{name}: is a group, not a dataset")
    return obj


def frames_source(kind: str, blocks: list, path: str) -> Source:
    """A `Source` over ``blocks`` of (N, H, W) or (H, W) frames, all of one shape and dtype."""
    shape, dtype, n = None, None, 0
    for name, ds in blocks:
        if ds.ndim not in (2, 3):
            raise LensfreeError(f"{path}:{name}: shape {ds.shape}, expected frames (N, H, W) "
                                "or one frame (H, W)")
        if ds.dtype.kind not in "iuf":
            raise LensfreeError(f"{path}:{name}: dtype {ds.dtype}, expected integers or floats")
        if shape is not None and (ds.shape[-2:] != shape or ds.dtype != dtype):
            raise LensfreeError(f"{path}:{name}: {ds.shape} {ds.dtype} differs from the first "
                                f"block's frames {shape} {dtype}")
        shape, dtype = ds.shape[-2:], ds.dtype
        n += 1 if ds.ndim == 2 else ds.shape[0]
    if n == 0 or 0 in shape:
        raise LensfreeError(f"{path}:{blocks[0][0]}: holds no frames (shape {blocks[0][1].shape})")
    return Source(kind, blocks, n, tuple(int(s) for s in shape), dtype.newbyteorder("="),
                  attrs={"dataset": [name for name, _ in blocks]})


def scalar(f, path: str, name: str, units: dict, default_unit: str) -> float | None:
    """A positive scalar in SI units, or None when absent; a per-frame array gives its mean."""
    if name not in f:
        return None
    ds = f[name]
    try:
        values = np.asarray(ds[()], dtype=np.float64).ravel()
    except (TypeError, ValueError):
        raise LensfreeError(f"{path}:{name}: not a number ({ds.dtype})") from None
    unit = ds.attrs.get("units", default_unit)
    unit = (unit.decode() if isinstance(unit, bytes) else str(unit)).strip().lower()
    if unit not in units:
        raise LensfreeError(f"{path}:{name}: unknown unit {unit!r} (know {', '.join(units)})")
    if values.size == 0 or not np.all(np.isfinite(values)) or not np.all(values > 0):
        log.warning("%s:%s: %s is not a positive number; ignored (give the geometry on the "
                    "command line)", path, name, values[:4])
        return None
    if ds.dtype == np.float32:  # float32 1.12 reads 1.1200000047683716: keep the written value
        values = np.array([float(str(np.float32(v))) for v in values])
    if np.ptp(values) > 1e-6 * values.mean():
        log.warning("%s:%s varies over %d values; using the mean", path, name, values.size)
    return float(values.mean()) * units[unit]


def square(px: float | None, py: float | None) -> float | tuple | None:
    """The pixel size, or (px, py) when not square: refused unless overridden."""
    if px is None or py is None:
        return px if py is None else py
    if abs(px - py) > 1e-6 * max(px, py):
        return (px, py)
    return (px + py) / 2


def read_mask(f, path: str, name: str, shape: tuple[int, int]) -> np.ndarray:
    """CXI / Eiger flags (nonzero = bad) to True = measured."""
    flags = np.asarray(get_dataset(f, path, name)[()])
    if flags.shape != shape:
        raise LensfreeError(f"{path}:{name}: mask shape {flags.shape} differs from the "
                            f"frames' {shape}")
    mask = flags == 0
    if not mask.any():
        raise LensfreeError(f"{path}:{name}: every pixel is flagged bad (nonzero = bad)")
    return mask
