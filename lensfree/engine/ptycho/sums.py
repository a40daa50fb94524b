"""Block sums as partials of a tree reduction: any two add into one, so the root ends with
one object-sized sum whatever the number of blocks.

The object sums are kept in tiles of ``TILE``^2 object pixels on a grid fixed to the
object array: two partials add only the tiles both hold and share the others, so a fold
costs what the blocks cover, not the bounding box of every union (which at the tree's top
is the whole object, at every level: 10,000 positions of 128^2 spent more time there than
in their FFTs). Every field is a plain sum in double precision (object and probe
numerators and denominators, the Fourier error), except the per-position values (position
steps, LSQML's step lengths), which are kept with their positions' indices and
concatenated: 24 bytes a position, not a frame. :func:`parallel.fold` and the LSQML
functions take ``[partial]`` as they take a list of block results (``add_into``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lensfree.engine.ptycho import compiled

#: side of the object tiles a partial holds its sums in (object pixels)
TILE = 64


#: the tiled fields of a `Partial` and their tiles' type
_TILED = {"obj_num": np.complex128, "obj_den": np.float64}


@dataclass
class Partial:
    obj_num: dict                   # (ty, tx) -> (TILE, TILE) complex128 tiles
    obj_den: dict | None            # (ty, tx) -> float64 tiles (None in LSQML's pass 2)
    probe_num: np.ndarray           # (M, h, w) complex
    probe_den: np.ndarray | None    # (h, w) real (None in LSQML's second pass)
    error: float                    # sum of the positions' Fourier errors
    index: np.ndarray               # (k,) the positions the per-position values belong to
    steps: np.ndarray | None        # (k, 2) position steps or LSQML step lengths

    @classmethod
    def of(cls, result, index: np.ndarray, *, steps=None) -> Partial:
        """A block's result (:class:`BlockResult` or LSQML's :class:`StepResult`) for the
        positions ``index``; ``steps`` overrides the result's own per-position values."""
        error = getattr(result, "error", None)
        den = getattr(result, "obj_den", None)
        return cls(_tiled(result.obj_num, result.start, np.complex128),
                   None if den is None else _tiled(den, result.start, np.float64),
                   result.probe_num, getattr(result, "probe_den", None),
                   0.0 if error is None else float(np.sum(error)), np.asarray(index),
                   result.steps if steps is None else steps)

    def __getstate__(self) -> dict:
        """Pickled (to another worker) with each field's tiles stacked into one array:
        one buffer to send, not hundreds of tile views that pickle would copy in band."""
        state = dict(self.__dict__)
        for name, dtype in _TILED.items():
            tiles = state[name]
            if tiles is not None:
                keys = np.array(list(tiles), np.int64).reshape(-1, 2)
                stack = (np.stack(list(tiles.values())) if tiles
                         else np.zeros((0, TILE, TILE), dtype))
                state[name] = (keys, stack)
        return state

    def __setstate__(self, state: dict) -> None:
        for name in _TILED:
            if state[name] is not None:
                keys, stack = state[name]
                state[name] = {(int(y), int(x)): stack[i] for i, (y, x) in enumerate(keys)}
        self.__dict__.update(state)

    def add_into(self, num: np.ndarray, den: np.ndarray | None = None) -> None:
        """Add the object sums into object-sized ``num`` (and ``den``)."""
        for tiles, out in ((self.obj_num, num), (self.obj_den, den)):
            if tiles is None or out is None:
                continue
            for (ty, tx), tile in tiles.items():
                y, x = ty * TILE, tx * TILE
                part = out[y:y + TILE, x:x + TILE]
                part += tile[:part.shape[0], :part.shape[1]]

    def stepped(self, obj: np.ndarray, reg: float) -> np.ndarray:
        """A new ``obj + num / (den + reg)``, tile by tile (in double, then ``obj``'s type;
        a pixel no tile holds is unchanged): the update without object-sized sums."""
        out = obj.copy()
        for key, num in self.obj_num.items():
            y, x = key[0] * TILE, key[1] * TILE
            part = out[y:y + TILE, x:x + TILE]
            py, px = part.shape
            compiled.step_tile(part, num[:py, :px], self.obj_den[key][:py, :px], reg)
        return out

    def den_max(self) -> float:
        """The largest ``sum |P|^2`` of the object."""
        return max((float(t.max()) for t in self.obj_den.values()), default=0.0)

    def per_position(self, n: int) -> np.ndarray | None:
        """(n, 2) the per-position values in position order (None when there are none)."""
        if self.steps is None:
            return None
        out = np.zeros((n, 2))
        out[self.index] = self.steps
        return out


def _tiled(box: np.ndarray, start, dtype) -> dict:
    """The tiles a box (its corner at ``start`` in the object) covers, as double: views of
    one copy of the box padded to the tile grid."""
    (y0, x0), (by, bx) = start, box.shape
    t0y, t0x = y0 // TILE, x0 // TILE
    ny, nx = (y0 + by - 1) // TILE + 1 - t0y, (x0 + bx - 1) // TILE + 1 - t0x
    padded = np.zeros((ny * TILE, nx * TILE), dtype)
    padded[y0 - t0y * TILE:y0 - t0y * TILE + by, x0 - t0x * TILE:x0 - t0x * TILE + bx] = box
    return {(t0y + i, t0x + j): padded[i * TILE:(i + 1) * TILE, j * TILE:(j + 1) * TILE]
            for i in range(ny) for j in range(nx)}


def _merged(a: dict | None, b: dict | None) -> dict | None:
    if a is None:
        return None
    out = dict(a)
    for key, tile in b.items():
        mine = out.get(key)
        out[key] = tile if mine is None else mine + tile
    return out


def combine(a: Partial, b: Partial) -> Partial:
    """``a + b`` (left before right, in double precision): the reduction's fold. Tiles
    held by one side only are shared, never written (no partial is changed in place)."""
    pden = None if a.probe_den is None else np.add(a.probe_den, b.probe_den, dtype=np.float64)
    steps = None if a.steps is None else np.concatenate([a.steps, b.steps])
    return Partial(_merged(a.obj_num, b.obj_num), _merged(a.obj_den, b.obj_den),
                   np.add(a.probe_num, b.probe_num, dtype=np.complex128), pden,
                   a.error + b.error, np.concatenate([a.index, b.index]), steps)
