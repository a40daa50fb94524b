"""Plain HDF5: (N, H, W) frames or one (H, W) frame at a dataset the user names.

Nothing in a plain file says which dataset holds the frames, so this reader has no
``guess``: it is the one `lensfree.io.readers.open_source` uses whenever the frames are
named (``--dataset``), whatever the layout. Geometry comes only from the command line.
"""

from __future__ import annotations

from lensfree.io.readers.common import Source, frames_source, get_dataset


def open(f, path: str, dataset: str) -> Source:
    """The frames at ``dataset``."""
    return frames_source("hdf5", [(dataset, get_dataset(f, path, dataset))], path)


def candidates(f, limit: int = 5) -> list[str]:
    """The first ``limit`` 2D or 3D datasets of ``f``: what ``--dataset`` might name."""
    found = []
    f.visititems(lambda name, obj: found.append(name) if getattr(obj, "ndim", 0) in (2, 3)
                 and len(found) < limit else None)
    return found
