"""Detector-file readers behind one small registry (as xarray's backends, ptychodus' readers).

A reader is a module with ``guess(f, path) -> bool`` (does it recognise the open HDF5 file
``f``?) and ``open(f, path, dataset) -> Source`` (the frames, checked, and whatever else
the file says: geometry, mask, positions, probe). `open_source` asks the readers of
`READERS` in order and the first that recognises the file opens it; frames named by the
user are read as plain HDF5 (`lensfree.io.readers.hdf5`). A new format is a new module
and one line in `READERS`.
"""

from __future__ import annotations

from lensfree.errors import LensfreeError
from lensfree.io.readers import cxi, eiger, hdf5
from lensfree.io.readers.common import Source

__all__ = ["READERS", "Source", "open_source"]

#: Readers that recognise a file by its layout, in priority order.
READERS = (cxi, eiger)


def open_source(f, path: str, dataset: str | None = None) -> Source:
    """The `Source` of the open HDF5 file ``f`` (at ``path``, for messages).

    ``dataset``, given, names the frames and the file is read as plain HDF5; else the
    first reader of `READERS` whose ``guess`` recognises the file opens it.
    """
    if dataset is not None:
        return hdf5.open(f, path, dataset)
    for reader in READERS:
        if reader.guess(f, path):
            return reader.open(f, path, dataset)
    found = hdf5.candidates(f)
    hint = f" (2D/3D datasets here: {', '.join(found)})" if found else ""
    raise LensfreeError(f"{path}: not CXI (no /entry_1) nor an Eiger master; name the frames "
                        f"with --dataset PATH{hint}")
