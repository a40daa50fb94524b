"""Bring measured data in: CXI / Eiger / HDF5 frames to a frame store, one summed pattern
to a run store.

`ingest` streams frames ``chunk_frames`` at a time from HDF5 into a Zarr frame store
(DESIGN.md, "Stores"); it never holds all frames in memory. Each format is a reader in
`lensfree.io.readers` (CXI 1.6, Eiger master, plain HDF5 with ``dataset``: see each
module for what it reads and where); `ingest` asks that registry for the file's `Source`.

Conventions fixed here:

- *Masks*: ``mask_dataset`` and the file masks follow CXI/Eiger, nonzero = bad pixel; the
  store's ``mask`` is True where measured.
- *Geometry*: fields given in ``geometry`` override the file's. Geometry attrs are written
  only when all three are known (a partial set goes to attr ``geometry_partial`` with a
  warning, so the store still opens with ``--pixels`` or with overrides). Pixels must be
  square within 1e-6: otherwise a `LensfreeError`, since a mean would silently distort the
  real-space grid; pass ``--pixel-size`` to override.
- *Positions*: the probe's position on the sample, (y, x) along the frames' rows and
  columns, in metres (`lensfree.io.readers.cxi` explains the CXI translations).
- *Completeness*: the store is written to ``OUT.partial`` and renamed to ``OUT`` after its
  last write, so a store at ``OUT`` is always whole; a failed run removes its partial
  store. An existing ``OUT`` is replaced only if it is a Zarr store.

`ingest_pattern` (`lensfree.io.pattern`, re-exported here) writes an already summed
pattern as the ``ensemble/`` group of a run store, as a finished stage 1 would for phasing.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys

import numpy as np

import lensfree
from lensfree.errors import LensfreeError
from lensfree.io import runstore
from lensfree.io.frames import (
    GEOMETRY_KEYS,
    Geometry,
    chunk_frames_for,
    create_frame_store,
    partial_path,
    publish,
)
from lensfree.io.pattern import ingest_pattern
from lensfree.io.readers import Source, open_source
from lensfree.io.readers.common import read_mask

__all__ = ["ingest", "ingest_pattern"]

log = logging.getLogger(__name__)


def ingest(input: str, out: str, *, dataset: str | None = None, mask_dataset: str | None = None,
           geometry: Geometry | None = None, chunk_frames: int | None = None,
           progress: bool = True) -> dict:
    """Convert a CXI, Eiger or plain HDF5 file into the frame store ``out``, chunk by chunk.

    Parameters
    ----------
    input : the HDF5 file.
    out : frame store directory to write (``X.zarr``).
    dataset : HDF5 path of the frames; given, the file is read as plain HDF5.
    mask_dataset : HDF5 path of an (H, W) mask, nonzero = bad; replaces the file's mask.
    geometry : fields that are not None override the file's geometry.
    chunk_frames : frames per chunk of ``frames``, and per read; None: chosen from the
        frame size (`lensfree.io.frames.chunk_frames_for`, ~32 MB a chunk).
    progress : tqdm bar on stderr.

    Returns
    -------
    dict with n_frames, frame_shape, dtype, geometry (the attrs written), has_mask,
    has_positions, has_probe, format.
    """
    import hdf5plugin  # noqa: F401  (registers the Eiger bitshuffle-LZ4 filter with h5py)

    if chunk_frames is not None and chunk_frames < 1:
        raise LensfreeError(f"chunk_frames {chunk_frames}: must be at least 1")
    input, out = os.fspath(input), os.fspath(out).rstrip("/")
    f = _open_hdf5(input)
    with f:
        src = open_source(f, input, dataset)
        if chunk_frames is None:
            chunk_frames = chunk_frames_for(src.frame_shape, src.dtype)
        if mask_dataset is not None:
            src.mask = read_mask(f, input, mask_dataset, src.frame_shape)
        attrs, geometry_attrs = _store_attrs(src, input, geometry)
        partial = partial_path(out)
        try:
            frames = create_frame_store(partial, src.n_frames, src.frame_shape, src.dtype,
                                        chunk_frames=chunk_frames, mask=src.mask, attrs=attrs)
            _stream(src, frames, input, chunk_frames, progress)
            group = _zarr_group(partial)
            if src.positions is not None:
                runstore.create_array(group, "positions", data=src.positions)
            if src.probe is not None:
                runstore.create_array(group, "probe", data=src.probe)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
    publish(partial, out)
    log.info("%s: %d frames from %s", out, src.n_frames, input)
    return {"n_frames": src.n_frames, "frame_shape": src.frame_shape, "dtype": str(src.dtype),
            "geometry": geometry_attrs, "has_mask": src.mask is not None,
            "has_positions": src.positions is not None, "has_probe": src.probe is not None,
            "format": src.kind}


def _open_hdf5(path: str):
    import h5py

    if not os.path.exists(path):
        raise LensfreeError(f"{path}: no such file or directory")
    if os.path.isdir(path):
        raise LensfreeError(f"{path}: is a directory, expected a CXI/HDF5 file")
    if not h5py.is_hdf5(path):
        hint = "; for one summed pattern use --pattern" if path.lower().endswith(
            (".npz", ".npy", ".tif", ".tiff")) else ""
        raise LensfreeError(f"{path}: not an HDF5 file (expected CXI, Eiger master or HDF5)"
                            + hint)
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise LensfreeError(f"{path}: cannot open as HDF5 ({exc})") from None


def _store_attrs(src: Source, path: str, given: Geometry | None) -> tuple[dict, dict]:
    geometry = dict(src.geometry)
    for key in GEOMETRY_KEYS:
        value = getattr(given, key, None) if given is not None else None
        if value is not None:
            geometry[key] = float(value)
    if isinstance(geometry.get("pixel_size_m"), tuple):
        px, py = geometry["pixel_size_m"]
        raise LensfreeError(f"{path}: non-square pixels {px:g} x {py:g} m are not supported; "
                            "pass --pixel-size (with --wavelength and --distance) to override")
    known = {k: v for k, v in geometry.items() if v is not None}
    attrs = {"source": {"file": os.fspath(path), "format": src.kind, **src.attrs},
             "lensfree_version": lensfree.__version__}
    if len(known) == len(GEOMETRY_KEYS):
        attrs.update(known)
    elif known:
        missing = sorted(set(GEOMETRY_KEYS) - set(known))
        log.warning("%s: geometry lacks %s; stored as attr geometry_partial only (give all "
                    "of --wavelength, --distance, --pixel-size)", path, ", ".join(missing))
        attrs["geometry_partial"] = known
        known = {}
    if src.positions is not None:
        attrs["positions_convention"] = (
            "probe position on the sample, (y, x) = (row, col) directions of the frames, "
            "metres: minus the CXI sample translation projected on the detector axes")
    return attrs, known


def _zarr_group(path: str):
    import zarr

    return zarr.open_group(path, mode="r+")


def _blocks(src: Source, chunk: int):
    """Yield (start, frames) of ``chunk`` frames (the last may be short), across HDF5 blocks."""
    pending, n_pending, start = [], 0, 0
    for name, ds in src.blocks:
        n = 1 if ds.ndim == 2 else ds.shape[0]
        i = 0
        while i < n:
            take = min(chunk - n_pending, n - i)
            pending.append((name, ds, i, i + take))
            n_pending += take
            i += take
            if n_pending == chunk:
                yield start, pending
                start, pending, n_pending = start + chunk, [], 0
    if pending:
        yield start, pending


def _read(path: str, name: str, ds, i: int, j: int, dtype) -> np.ndarray:
    try:
        block = ds[()][None] if ds.ndim == 2 else ds[i:j]
    except (OSError, ValueError) as exc:  # a corrupt chunk or a missing HDF5 filter
        raise LensfreeError(f"{path}:{name}: cannot read frames {i}-{j - 1} ({exc})") from None
    return np.asarray(block, dtype=dtype)


def _stream(src: Source, frames, path: str, chunk: int, progress: bool) -> None:
    from tqdm import tqdm

    with tqdm(total=src.n_frames, unit="frame", desc="ingest", file=sys.stderr,
              disable=not progress) as bar:
        for start, parts in _blocks(src, chunk):
            data = [_read(path, name, ds, i, j, src.dtype) for name, ds, i, j in parts]
            block = data[0] if len(data) == 1 else np.concatenate(data)
            frames[start : start + len(block)] = block
            bar.update(len(block))
