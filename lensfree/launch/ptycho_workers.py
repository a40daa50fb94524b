"""Stage 4's worker side: a block's amplitudes (read once per process, kept), the
difference map's exit waves (:class:`ExitWaves`), and one leaf of an iteration's
reduction (:func:`ptycho_block`)."""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import zarr

from lensfree.engine import ptycho as pt
from lensfree.engine.ptycho import batches as batching
from lensfree.engine.ptycho import dm, lsqml
from lensfree.engine.ptycho.sums import Partial
from lensfree.io import frames as frame_io

#: bytes of amplitudes a worker process keeps between iterations (LRU over blocks)
AMPLITUDE_CACHE_BYTES = int(float(os.environ.get("LENSFREE_PTYCHO_CACHE_MB", "4096")) * 2**20)

_amplitude_cache: OrderedDict = OrderedDict()
_amplitude_bytes = [0]
_amplitude_lock = threading.Lock()
_read_lock = threading.Lock()


def block_amplitudes(path: str, mask: np.ndarray, index: np.ndarray, centred: bool = True,
                     *, block: np.ndarray | None = None, parents: tuple = (),
                     n_batches: int = 1):
    """``(amplitude, valid or None)`` of frames ``index[block]`` (``block`` None: all of
    ``index``), read once per process and kept for the next iterations (LRU,
    `AMPLITUDE_CACHE_BYTES`; the key holds the frames' metadata time, so a store rewritten
    at the same path is read again). ``parents``: whole blocks of positions (indices into
    ``index``) that this process runs, one of them ``block``'s own, each dealt by
    `batches.split_batches` into ``n_batches`` batches (``block`` one of the shares): a miss
    reads them all at once and keeps every share, so each frame is read once and each
    chunk of the store decoded about once (`frames.read_rows`)."""
    index = np.asarray(index)
    rows = index if block is None else index[block]
    try:
        stamp = os.stat(os.path.join(path, "frames", "zarr.json")).st_mtime_ns
    except OSError:
        stamp = 0
    prefix = (os.path.abspath(path), stamp, centred)
    key = (*prefix, rows.tobytes())
    hit = _cached(key)
    if hit is None and parents:
        with _read_lock:  # one thread reads a run of blocks; the others then find theirs
            if key not in _amplitude_cache:
                _read_shares(path, mask, index, centred, parents, n_batches, prefix)
        hit = _cached(key)
    if hit is not None:
        return hit
    return _keep(prefix, rows, *pt.prepare_amplitudes(frame_io.read_rows(path, rows), mask,
                                                      centred=centred))


def _cached(key):
    with _amplitude_lock:
        hit = _amplitude_cache.get(key)
        if hit is None:
            return None
        _amplitude_cache.move_to_end(key)
        return hit[0]


def _read_shares(path, mask, index, centred, parents, n_batches, prefix) -> None:
    """The frames of the blocks ``parents`` read at once, each block's batch shares kept
    (converted block by block: small arrays, no fresh memory to fault in)."""
    whole = np.concatenate([np.asarray(p) for p in parents])
    frames = frame_io.read_rows(path, index[whole])
    start = 0
    for parent in parents:
        parent = np.asarray(parent)
        amp, valid = pt.prepare_amplitudes(frames[start:start + len(parent)], mask,
                                           centred=centred)
        order = np.argsort(parent)
        for (share,) in batching.split_batches([parent], n_batches):
            at = order[np.searchsorted(parent, share, sorter=order)]
            _keep(prefix, index[share], amp[at], valid[at])
        start += len(parent)


def _keep(prefix: tuple, rows: np.ndarray, amp: np.ndarray, valid: np.ndarray):
    hit = (amp, None if valid.all() else valid)
    size = amp.nbytes + (0 if hit[1] is None else valid.nbytes)
    with _amplitude_lock:
        _amplitude_cache[(*prefix, rows.tobytes())] = (hit, size)
        _amplitude_bytes[0] += size
        while _amplitude_bytes[0] > AMPLITUDE_CACHE_BYTES and len(_amplitude_cache) > 1:
            _amplitude_bytes[0] -= _amplitude_cache.popitem(last=False)[1][1]
    return hit


#: frames (as stored) a process reads at once on its first pass (`read_runs`)
READ_RUN_BYTES = 256 * 2**20


def plan_batches(backend, blocks, n_positions: int, n_batches: int, frame_bytes: int):
    """``(batches, parents, runs)`` of an iteration: the batches (`batches.split_batches`
    of ``blocks``, indices into the ``n_positions`` run), for each its blocks' whole
    blocks (None with one batch: the blocks themselves), read at once, and the runs of
    blocks one process reads together (`read_runs`)."""
    batches = batching.split_batches(blocks, n_batches)
    parents = [None] * len(batches)
    if len(batches) > 1:
        owner = np.empty(n_positions, int)
        for k, block in enumerate(blocks):
            owner[block] = k
        parents = [tuple(blocks[owner[b[0]]] for b in batch) for batch in batches]
    runs = [read_runs(backend, par or batch, frame_bytes) for batch, par in zip(batches, parents)]
    return batches, parents, runs


def read_runs(backend, blocks, frame_bytes: int) -> tuple | None:
    """``(lo, hi)`` runs of a batch's blocks that one process reads at once (each chunk of
    the store then decoded about once, where block by block a spatially compact block
    decodes every chunk its positions fall in): each process's tasks
    (`Backend.placement`), cut where a run's frames pass `READ_RUN_BYTES`; None (each
    block alone) where a scheduler places the tasks."""
    placement = backend.placement(len(blocks))
    if placement is None:
        return None
    runs = []
    for tasks in placement:
        lo, size = tasks.start, 0
        for k in tasks:
            if size and size + len(blocks[k]) * frame_bytes > READ_RUN_BYTES:
                runs.append((lo, k))
                lo, size = k, 0
            size += len(blocks[k]) * frame_bytes
        if len(tasks):
            runs.append((lo, tasks.stop))
    return tuple(runs)


@dataclass(frozen=True)
class ExitWaves:
    """Where the difference map's exit waves live between iterations: the run store's
    ``ptycho/exit_waves`` (slot, block, position in the block, M, h, w), one chunk per
    slot and block, so that a block's task is the only writer of its chunk and writes it
    whole (one chunk per position cost zarr about a millisecond each). An iteration reads
    the slot the last one wrote and writes another (never the one the last checkpoint
    names), so a retried task reads what its first attempt read, and a checkpoint's exit
    waves stay whole until the next checkpoint. A process keeps the exit waves it wrote
    (:func:`load_exits`), so a block that runs where it ran last reads nothing; where
    every block runs in the same process every iteration (local threads, MPI ranks) and
    the cache holds them all, only the iterations a checkpoint names are stored
    (``persist``), and a miss is an error, never a stale read."""

    path: str              # the exit_waves array
    lineage: str           # one run of iterations: no cache entry of another is read
    read: int | None       # slot holding the exit waves after `version` iterations (None:
    version: int           # they start as P O_j)
    write: int             # slot this iteration writes
    alpha: float = 1.0
    relax: float = 0.0     # the Fourier projection's power bound (`dm.dm_block`)
    stored: bool = True    # the store's slot `read` holds them (else only caches do)
    persist: bool = True   # this iteration's go to the store too
    probe_pass: bool = False  # the overlap projection's probe half: read `write`, no write
    restart: np.ndarray | None = None  # (k,) positions whose exit waves start again


_exit_cache: OrderedDict = OrderedDict()
_exit_arrays: dict = {}


def _exit_array(waves: ExitWaves):
    key = (waves.path, waves.lineage)
    with _amplitude_lock:
        arr = _exit_arrays.get(key)
        if arr is None:
            _exit_arrays.clear()  # one run's array at a time
            # every chunk is written whole and never equals the fill value: zarr's pass
            # looking for empty chunks would only cost (a third of a store, measured)
            arr = _exit_arrays[key] = zarr.open_array(waves.path, mode="r+").with_config(
                {"write_empty_chunks": True})
    return arr


def load_exits(waves: ExitWaves, block: int, version: int, slot: int | None, *,
               take: bool) -> np.ndarray | None:
    """Block ``block``'s exit waves after ``version`` iterations, (block size padded, M,
    h, w): this process's own copy when it wrote that version (``take``: removed from the
    cache, as the caller updates it in place), else the store's ``slot``; None when
    ``slot`` is None (they start as ``P O_j``)."""
    if slot is None:
        return None
    key = (waves.lineage, block)
    with _amplitude_lock:
        hit = _exit_cache.get(key)
        if hit is not None and hit[0] == version:
            if take:
                del _exit_cache[key]
            return hit[1]
    if not waves.stored:
        raise RuntimeError(f"the exit waves of block {block} after {version} iterations are "
                           f"not in this process's cache and were not stored")
    return np.asarray(_exit_array(waves)[slot, block])


def forget_exits(lineage: str) -> None:
    """Drop this process's cached exit waves of ``lineage``, a finished run of iterations
    (a Dask worker's go as its cache fills)."""
    with _amplitude_lock:
        for key in [k for k in _exit_cache if k[0] == lineage]:
            del _exit_cache[key]
        _exit_arrays.clear()


def exits_fit_cache(nbytes: int) -> bool:
    """Whether a process's cache holds ``nbytes`` of exit waves (`AMPLITUDE_CACHE_BYTES`)."""
    return nbytes <= AMPLITUDE_CACHE_BYTES


def store_exits(waves: ExitWaves, block: int, version: int, exits: np.ndarray) -> None:
    """Block ``block``'s ``exits`` (after ``version`` iterations) into the store's slot
    ``waves.write`` and this process's cache (LRU, `AMPLITUDE_CACHE_BYTES` of its own)."""
    if waves.persist:
        _exit_array(waves)[waves.write, block] = exits
    key = (waves.lineage, block)
    with _amplitude_lock:
        _exit_cache[key] = (version, exits)
        _exit_cache.move_to_end(key)
        total = sum(e.nbytes for _, e in _exit_cache.values())
        while total > AMPLITUDE_CACHE_BYTES and len(_exit_cache) > 1:
            total -= _exit_cache.popitem(last=False)[1][1].nbytes


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
    exits: ExitWaves | None = None     # the difference map's
    parents: tuple | None = None       # each block's whole block (all batches), or None
    n_batches: int = 1                 # the batches `split_batches` dealt the parents into
    read_runs: tuple | None = None     # (lo, hi) runs of blocks one process reads at once


def ptycho_block(task: tuple[int, int], shared: Shared) -> Partial:
    """One leaf of one iteration's reduction: block ``b``'s sums against the shared object
    and probe (:func:`block_update`), or in LSQML's second pass its step-weighted sums
    (:func:`lsqml.step_block`), as a :class:`Partial`."""
    _, b = task
    index = shared.blocks[b]
    amp, valid = block_amplitudes(shared.path, shared.mask, shared.index,
                                   shared.propagator.centred_frames, block=index,
                                   parents=_read_together(shared, b),
                                   n_batches=shared.n_batches)
    args = (shared.crops[index], shared.fractions[index], amp, valid)
    if shared.exits is not None:
        return _dm_block(shared, b, index, args)
    if shared.dobj is not None:
        result = lsqml.step_block(shared.obj, shared.probe, shared.dobj, shared.dprobe, *args,
                                  propagator=shared.propagator)
        return Partial.of(result, index)
    result = pt.block_update(shared.obj, shared.probe, *args, refine=shared.refine,
                             propagator=shared.propagator)
    return Partial.of(result, index)


def _read_together(shared: Shared, b: int) -> tuple:
    """The whole blocks this process reads with block ``b``'s: its run in
    ``shared.read_runs``, or its own alone."""
    whole = shared.parents or shared.blocks
    for lo, hi in shared.read_runs or ((b, b + 1),):
        if lo <= b < hi:
            return tuple(whole[lo:hi])
    return (whole[b],)


def _dm_block(shared: Shared, b: int, index: np.ndarray, args) -> Partial:
    """The difference map's leaf: block ``b``'s exit-wave update and the object's sums, or
    (the probe pass) the probe's sums against the object just projected."""
    waves = shared.exits
    k = len(index)
    if waves.probe_pass:
        exits = load_exits(waves, b, waves.version, waves.write, take=False)
        probe_num, probe_den = dm.dm_probe_block(shared.obj, shared.probe, exits[:k],
                                                 *args[:2], propagator=shared.propagator)
        return Partial({}, None, probe_num, probe_den, 0.0, np.asarray(index), None)
    exits = load_exits(waves, b, waves.version, waves.read, take=True)
    first = exits is None
    if first:  # padded to the chunk, so that the store writes it whole
        m, h, w = shared.probe.shape
        exits = np.zeros((_exit_array(waves).shape[2], m, h, w), shared.probe.dtype)
    restart = None if waves.restart is None else waves.restart[index]
    result = dm.dm_block(shared.obj, shared.probe, exits[:k], *args, first=first,
                         restart=restart,
                         alpha=waves.alpha, relax=waves.relax, refine=shared.refine,
                         propagator=shared.propagator)
    store_exits(waves, b, waves.version + 1, exits)
    return Partial.of(result, index)
