"""Single 2D arrays from the files users bring: .npy, .npz, TIFF, HDF5, Zarr."""

from __future__ import annotations

import os

import numpy as np

from lensfree.errors import LensfreeError


def load_image(path: str, key: str | None = None) -> np.ndarray:
    """Load one array from ``path``; ``key`` names the array in .npz, HDF5 or Zarr files.

    A .npz with a single array needs no key.
    """
    if not os.path.exists(path):
        raise LensfreeError(f"{path}: no such file or directory")
    lower = path.lower().rstrip("/")
    try:
        if lower.endswith(".npy"):
            return np.load(path)
        if lower.endswith(".npz"):
            with np.load(path) as data:
                if key is None:
                    if len(data.files) != 1:
                        raise LensfreeError(
                            f"{path}: holds {', '.join(data.files)}; name one with a key"
                        )
                    key = data.files[0]
                if key not in data.files:
                    raise LensfreeError(f"{path}: no array {key!r} (has {', '.join(data.files)})")
                return data[key]
        if lower.endswith((".tif", ".tiff")):
            import tifffile

            return tifffile.imread(path)
        if lower.endswith((".h5", ".hdf5", ".cxi", ".nxs")):
            import h5py

            with h5py.File(path, "r") as f:
                if key is None or key not in f:
                    raise LensfreeError(f"{path}: no dataset {key!r}")
                return f[key][...]
        if lower.endswith(".zarr"):
            import zarr

            return np.asarray(zarr.open_array(os.path.join(path, key or ""), mode="r")[...])
    except LensfreeError:
        raise
    except Exception as exc:
        raise LensfreeError(f"{path}: cannot read ({exc})") from None
    raise LensfreeError(f"{path}: unknown file type (use .npy, .npz, .tif, .h5 or .zarr)")
