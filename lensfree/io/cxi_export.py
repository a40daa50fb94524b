"""Finished results out as CXI 1.6 (HDF5), for beamline tools: ptycho, gather (phasing).

Layout (CXI 1.6: F. Maia, Nat. Methods 9, 854 (2012), cxidb.org/cxi.html), one entry:

- ``/cxi_version`` 160; ``/entry_1/program_name`` "lensfree", ``start_time``.
- ``ptycho/``: ``/entry_1/image_1`` the object (``data`` complex64, ``data_type``
  "object", ``data_space`` "real", ``x/y_pixel_size`` in metres when known);
  ``/entry_1/image_2`` the probe modes (M, h, w), ``data_type`` "probe"; the same modes
  at ``/entry_1/instrument_1/source_1/probe`` (where CXI readers, ours included, look for
  an illumination); ``/entry_1/sample_1/geometry_1/translation`` (N, 3) the refined and
  ``geometry_2/translation`` the initial positions, as CXI translations (the sample's
  displacement: minus the probe position, along the default detector basis, as
  :mod:`lensfree.io.readers.cxi` reads them back), ``units`` "m" when the geometry is
  known, else "pixel"; ``/entry_1/image_1/process_1``: ``errors`` per iteration, the FRC
  when there is one, ``configuration`` (the run parameters, JSON) and the run attrs.
- ``gather/``: ``/entry_1/image_3`` the average (``data_type`` "average"), its
  ``process_1`` holding ``prtf`` and ``q`` (cycles per pixel) and the attrs.
- ``/entry_1/data_1/data``: a soft link to the first image written (CXI wants one).
"""

from __future__ import annotations

import json
import time

import numpy as np
import zarr

from lensfree.errors import LensfreeError
from lensfree.io import runstore

GROUPS = ("ptycho", "gather")


def _complete(run) -> list[str]:
    return [g for g in GROUPS if g in run and run[g].attrs.get("complete")]


def _text(group, name: str, value: str) -> None:
    import h5py

    group.create_dataset(name, data=value, dtype=h5py.string_dtype())


def _process(image, attrs: dict, arrays: dict) -> None:
    proc = image.create_group("process_1")
    _text(proc, "program", "lensfree")
    _text(proc, "configuration", json.dumps(runstore.jsonable(attrs.get("parameters", {}))))
    _text(proc, "attributes", json.dumps(runstore.jsonable(attrs)))
    for name, values in arrays.items():
        proc.create_dataset(name, data=values)


def _translations(positions_px: np.ndarray, pixel_m: float | None):
    """(N, 3) CXI translations of probe positions (y, x), and their unit: the sample moves
    by minus the probe's position; with the default basis (+row = -y, +col = -x, the
    reader's) the two signs cancel, so the translation is ``(x, y, 0)`` in lab axes."""
    scale = 1.0 if pixel_m is None else pixel_m
    t = np.zeros((len(positions_px), 3))
    t[:, 0] = positions_px[:, 1] * scale
    t[:, 1] = positions_px[:, 0] * scale
    return t, ("pixel" if pixel_m is None else "m")


def _export_ptycho(entry, g) -> str:
    attrs = dict(g.attrs)
    pixel = attrs.get("object_pixel_m")
    unit = attrs.get("positions_unit", "px")
    to_px = (lambda p: p / pixel) if unit == "m" and pixel else (lambda p: p)
    image = entry.create_group("image_1")
    image.create_dataset("data", data=np.asarray(g["object"][...]), compression="gzip")
    _text(image, "data_type", "object")
    _text(image, "data_space", "real")
    if pixel:
        for axis in ("x", "y"):
            image.create_dataset(f"{axis}_pixel_size", data=float(pixel)).attrs["units"] = "m"
    image.create_dataset("image_center", data=np.asarray(attrs.get("object_origin", [0, 0]),
                                                         float))
    arrays = {"errors": np.asarray(g["errors"][...])}
    for name in ("frc", "frc_threshold", "frc_frequency"):
        if name in g:
            arrays[name] = np.asarray(g[name][...])
    _process(image, attrs, arrays)
    probe = np.asarray(g["probe"][...])
    img2 = entry.create_group("image_2")
    img2.create_dataset("data", data=probe)
    _text(img2, "data_type", "probe")
    _text(img2, "data_space", "real")
    source = entry.require_group("instrument_1").require_group("source_1")
    source["probe"] = img2["data"]  # a hard link: one copy in the file
    sample = entry.require_group("sample_1")
    for k, name in ((1, "positions"), (2, "positions_initial")):
        t, tunit = _translations(to_px(np.asarray(g[name][...], float)), pixel)
        geo = sample.create_group(f"geometry_{k}")
        geo.create_dataset("translation", data=t).attrs["units"] = tunit
        _text(geo, "description", "refined positions" if k == 1 else "initial positions")
    return "/entry_1/image_1/data"


def _export_gather(entry, g, name: str) -> str:
    attrs = dict(g.attrs)
    image = entry.create_group(name)
    image.create_dataset("data", data=np.asarray(g["average"][...]), compression="gzip")
    _text(image, "data_type", "average")
    _text(image, "data_space", "real")
    pixel = attrs.get("pixel_m") or attrs.get("real_space_pixel_m")
    if pixel:
        for axis in ("x", "y"):
            image.create_dataset(f"{axis}_pixel_size", data=float(pixel)).attrs["units"] = "m"
    arrays = {k: np.asarray(g[k][...]) for k in ("prtf", "q", "selected", "shifts") if k in g}
    _process(image, attrs, arrays)
    return f"/entry_1/{name}/data"


def export_cxi(run_path: str, out: str, groups=None) -> list[str]:
    """Write the finished ``groups`` (default: every finished one of :data:`GROUPS`) of
    ``run_path`` to the CXI file ``out``; returns the groups written."""
    import h5py

    try:
        run = zarr.open_group(run_path, mode="r")
    except Exception:  # zarr raises several types for "not a store"
        raise LensfreeError(f"{run_path}: not a run store") from None
    done = _complete(run)
    wanted = list(groups) if groups else done
    missing = [g for g in wanted if g not in done]
    if missing or not wanted:
        raise LensfreeError(f"{run_path}: no finished {', '.join(missing or GROUPS)}/ to "
                            "export (lensfree export writes ptycho and gather results)")
    with h5py.File(out, "w") as f:
        f.create_dataset("cxi_version", data=160)
        entry = f.create_group("entry_1")
        _text(entry, "program_name", "lensfree")
        _text(entry, "start_time", time.strftime("%Y-%m-%dT%H:%M:%S%z"))
        first = None
        for name in wanted:
            path = (_export_ptycho(entry, run[name]) if name == "ptycho"
                    else _export_gather(entry, run[name], "image_3"))
            first = first or path
        entry.create_group("data_1")["data"] = h5py.SoftLink(first)
    return wanted
