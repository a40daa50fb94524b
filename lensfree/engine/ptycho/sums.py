"""Block sums as partials of a tree reduction: any two add into one over the union of their
object boxes, so the root ends with one object-sized sum whatever the number of blocks.

Every field is a plain sum (object and probe numerators and denominators, the Fourier
error), except the per-position values (position steps, LSQML's step lengths), which are
kept with their positions' indices and concatenated: 24 bytes a position, not a frame.
The fields are named as :class:`BlockResult`'s, so :func:`apply_update` and the LSQML
functions take ``[partial]`` as they take a list of block results.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Partial:
    start: tuple[int, int]          # corner of the object box the boxed sums cover
    obj_num: np.ndarray             # (by, bx) complex
    obj_den: np.ndarray | None      # (by, bx) real (None in LSQML's second pass)
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
        return cls(result.start, result.obj_num, getattr(result, "obj_den", None),
                   result.probe_num, getattr(result, "probe_den", None),
                   0.0 if error is None else float(np.sum(error)), np.asarray(index),
                   result.steps if steps is None else steps)

    def per_position(self, n: int) -> np.ndarray | None:
        """(n, 2) the per-position values in position order (None when there are none)."""
        if self.steps is None:
            return None
        out = np.zeros((n, 2))
        out[self.index] = self.steps
        return out


def _boxed(a, b, start, shape):
    if a[0] is None:
        return None
    out = np.zeros(shape, np.result_type(a[0].dtype, np.float64))
    for (y, x), arr in ((a[1], a[0]), (b[1], b[0])):
        y, x = y - start[0], x - start[1]
        out[y:y + arr.shape[0], x:x + arr.shape[1]] += arr
    return out


def combine(a: Partial, b: Partial) -> Partial:
    """``a + b`` (left before right, in double precision): the reduction's fold."""
    lo = np.minimum(a.start, b.start)
    hi = np.maximum(np.add(a.start, a.obj_num.shape), np.add(b.start, b.obj_num.shape))
    start, shape = (int(lo[0]), int(lo[1])), tuple(int(v) for v in hi - lo)
    num = _boxed((a.obj_num, a.start), (b.obj_num, b.start), start, shape)
    den = _boxed((a.obj_den, a.start), (b.obj_den, b.start), start, shape)
    pden = None if a.probe_den is None else a.probe_den.astype(np.float64) + b.probe_den
    steps = None if a.steps is None else np.concatenate([a.steps, b.steps])
    return Partial(start, num, den, a.probe_num.astype(np.complex128) + b.probe_num, pden,
                   a.error + b.error, np.concatenate([a.index, b.index]), steps)
