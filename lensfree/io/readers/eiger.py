"""Eiger master files (``/entry/data/data_*``, usually external links to the data files).

The linked blocks are read in name order; geometry (``detector_distance``, pixel sizes,
``beam/incident_wavelength``) and ``pixel_mask`` (nonzero = bad) under
``/entry/instrument/``. `lensfree.io.ingest` imports ``hdf5plugin`` so that
bitshuffle-LZ4 chunks decode.
"""

from __future__ import annotations

from lensfree.io.readers.common import (
    LENGTH,
    Source,
    frames_source,
    get_dataset,
    read_mask,
    scalar,
    square,
)


def guess(f, path: str) -> bool:
    """An ``/entry/data`` group holding ``data_*`` blocks."""
    return "entry/data" in f and any(k.startswith("data_") for k in f["entry/data"])


def open(f, path: str, dataset: str | None = None) -> Source:
    """Frames of every ``data_*`` block, geometry and pixel mask of an Eiger master file
    (``dataset`` is unused: named frames are read as plain HDF5)."""
    group = f["entry/data"]
    names = sorted(k for k in group if k.startswith("data_"))
    blocks = [(f"entry/data/{k}", get_dataset(f, path, f"entry/data/{k}")) for k in names]
    src = frames_source("eiger", blocks, path)
    det = "entry/instrument/detector"
    px = scalar(f, path, f"{det}/x_pixel_size", LENGTH, "m")
    py = scalar(f, path, f"{det}/y_pixel_size", LENGTH, "m")
    src.geometry = {
        "distance_m": scalar(f, path, f"{det}/detector_distance", LENGTH, "m"),
        "pixel_size_m": square(px, py),
        "wavelength_m": scalar(f, path, "entry/instrument/beam/incident_wavelength", LENGTH,
                               "angstrom"),
    }
    mask = next((p for p in (f"{det}/pixel_mask", f"{det}/detectorSpecific/pixel_mask")
                 if p in f), None)
    if mask is not None:
        src.mask = read_mask(f, path, mask, src.frame_shape)
    return src
