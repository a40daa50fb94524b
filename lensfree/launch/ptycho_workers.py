"""Stage 4's worker side: a block's amplitudes (read once per process, kept), and one
leaf of an iteration's reduction (:func:`ptycho_block`)."""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import zarr

from lensfree.engine import ptycho as pt
from lensfree.engine.ptycho import lsqml
from lensfree.engine.ptycho.sums import Partial

#: bytes of amplitudes a worker process keeps between iterations (LRU over blocks)
AMPLITUDE_CACHE_BYTES = int(float(os.environ.get("LENSFREE_PTYCHO_CACHE_MB", "4096")) * 2**20)

_amplitude_cache: OrderedDict = OrderedDict()
_amplitude_lock = threading.Lock()


def block_amplitudes(path: str, mask: np.ndarray, index: np.ndarray, centred: bool = True):
    """``(amplitude, valid or None)`` of a block's frames, read once per process and kept
    for the next iterations (LRU, `AMPLITUDE_CACHE_BYTES`). The key holds the frames'
    metadata time, so a store rewritten at the same path is read again."""
    try:
        stamp = os.stat(os.path.join(path, "frames", "zarr.json")).st_mtime_ns
    except OSError:
        stamp = 0
    key = (os.path.abspath(path), stamp, centred, index.tobytes())
    with _amplitude_lock:
        hit = _amplitude_cache.get(key)
        if hit is not None:
            _amplitude_cache.move_to_end(key)
            return hit
    frames = zarr.open_array(os.path.join(path, "frames"), mode="r")
    block = frames.get_orthogonal_selection((index, slice(None), slice(None)))
    amp, valid = pt.prepare_amplitudes(block, mask, centred=centred)
    hit = (amp, None if valid.all() else valid)
    with _amplitude_lock:
        _amplitude_cache[key] = hit
        total = sum(a.nbytes + (v.nbytes if v is not None else 0)
                    for a, v in _amplitude_cache.values())
        while total > AMPLITUDE_CACHE_BYTES and len(_amplitude_cache) > 1:
            a, v = _amplitude_cache.popitem(last=False)[1]
            total -= a.nbytes + (v.nbytes if v is not None else 0)
    return hit


@dataclass(frozen=True)
class Shared:
    path: str
    mask: np.ndarray
    blocks: tuple                      # indices into ``index``
    index: np.ndarray                  # the frames of the positions run (all, or a half)
    obj: np.ndarray
    probe: np.ndarray
    crops: np.ndarray
    fractions: np.ndarray
    refine: bool
    propagator: pt.Propagator
    dobj: np.ndarray | None = None     # LSQML's second pass: the directions
    dprobe: np.ndarray | None = None


def ptycho_block(task: tuple[int, int], shared: Shared) -> Partial:
    """One leaf of one iteration's reduction: block ``b``'s sums against the shared object
    and probe (:func:`block_update`), or in LSQML's second pass its step-weighted sums
    (:func:`lsqml.step_block`), as a :class:`Partial`."""
    _, b = task
    index = shared.blocks[b]
    amp, valid = block_amplitudes(shared.path, shared.mask, shared.index[index],
                                   shared.propagator.centred_frames)
    args = (shared.crops[index], shared.fractions[index], amp, valid)
    if shared.dobj is not None:
        result = lsqml.step_block(shared.obj, shared.probe, shared.dobj, shared.dprobe, *args,
                                  propagator=shared.propagator)
        return Partial.of(result, index)
    result = pt.block_update(shared.obj, shared.probe, *args, refine=shared.refine,
                             propagator=shared.propagator)
    return Partial.of(result, index)


