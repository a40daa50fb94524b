"""Stage 4 across workers: ptychography with scan positions refined in parallel.

The parallel engine runs each iteration as one ``backend.map`` over blocks of positions
(spatially compact, from `partitioning.position_blocks`, a number fixed by the data, not
by the workers), two runs of consecutive blocks per worker. A task is small (iteration,
run); the object, probe, crops and sub-pixel rests travel once per iteration as the shared
value, and every worker process reads a block's frames from the store once and keeps their
amplitudes for the next iterations (`_block_amplitudes`). The root folds the blocks' sums in
block order (same numbers on every back end), updates object, probe and positions, and
broadcasts them. ePIE and rPIE are serial and run on the root.

Store layout (``RUN.zarr/ptycho/``, DESIGN.md): ``object`` (oy, ox) complex64, ``probe``
(modes, h, w) complex64, ``positions`` (N, 2) refined and ``positions_initial`` (N, 2),
both in the input's unit and frame, ``errors`` (iterations,) Fourier error per iteration
(NaN until done). Attrs: ``object_origin`` (position-frame coordinate of object pixel
(0, 0), px), ``positions_unit``, ``iterations_done`` (the checkpoint), then ``complete``.
A rerun with the same parameters resumes from the last checkpoint.
"""

from __future__ import annotations

import bz2
import logging
import os
import threading
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass, field

import numpy as np
import zarr

from lensfree.engine import ptycho as pt
from lensfree.engine import simulate_ptycho as sim
from lensfree.errors import LensfreeError
from lensfree.io import frames as frame_io
from lensfree.io import runstore
from lensfree.launch.backends import Backend
from lensfree.partitioning import position_blocks

log = logging.getLogger(__name__)

#: largest object side (px) accepted: beyond it the positions are surely in another unit
MAX_OBJECT_SIDE = 16384
#: positions per block to aim for when the number of blocks is not given
TARGET_BLOCK_POSITIONS = 64


@dataclass(frozen=True)
class PtychoStageParams:
    """Stage 4 parameters: the engine's (`ptycho.PtychoParams`) and how the run is cut.

    blocks : position blocks of the parallel engine [ceil(N / 64), at least 1]; the
        numbers depend on it, never on the workers.
    checkpoint_every : write object, probe, positions and errors every so many iterations.
    margin : object pixels around the outermost probe positions.
    """

    engine: pt.PtychoParams = field(default_factory=pt.PtychoParams)
    blocks: int | None = None
    checkpoint_every: int = 10
    margin: int = 8

    def __post_init__(self):
        if self.blocks is not None and self.blocks < 1:
            raise ValueError(f"blocks={self.blocks} must be at least 1")
        if self.checkpoint_every < 1:
            raise ValueError(f"checkpoint_every={self.checkpoint_every} must be at least 1")
        if self.margin < 0:
            raise ValueError(f"margin={self.margin} must be >= 0")


# ----------------------------------------------------------------------------- frame stores


def write_ptycho_frames(path: str, frames: np.ndarray, positions: np.ndarray,
                        probe: np.ndarray | None = None, *, fft_shifted: bool = False,
                        mask: np.ndarray | None = None, attrs: dict | None = None,
                        chunk_frames: int = frame_io.DEFAULT_CHUNK_FRAMES) -> zarr.Group:
    """Write a ptychography frame store: ``frames`` centred, ``positions`` (px), ``probe``.

    ``fft_shifted``: the frames have zero frequency at pixel (0, 0) (as Tike's test data);
    they are moved to (h // 2, w // 2) before writing, since stores hold them centred.
    """
    frames = np.asarray(frames)
    if fft_shifted:
        frames = np.fft.fftshift(frames, axes=(-2, -1))
    n, h, w = frames.shape
    out = frame_io.create_frame_store(path, n, (h, w), frames.dtype, chunk_frames=chunk_frames,
                                      mask=mask, attrs={"positions_unit": "px",
                                                        **(attrs or {})})
    out[...] = frames
    group = zarr.open_group(path, mode="r+")
    group.create_array("positions", data=np.asarray(positions, np.float64))
    if probe is not None:
        group.create_array("probe", data=np.asarray(probe, np.complex64).reshape(-1, h, w))
    return group


def simulate_ptycho(out: str, params: sim.PtychoSimParams) -> dict:
    """Simulate a scan into frame store ``out``; the truth goes to ``truth/`` (object,
    probe, positions, with object pixel (0, 0) at position (0, 0))."""
    scan = sim.simulate_scan(params)
    attrs = {"simulation": runstore.jsonable(asdict(params))}
    group = write_ptycho_frames(out, scan.frames, scan.positions, scan.probe_guess,
                                attrs=attrs)
    truth = group.create_group("truth")
    truth.create_array("object", data=scan.object)
    truth.create_array("probe", data=scan.probe)
    truth.create_array("positions", data=scan.true_positions)
    truth.attrs["object_origin"] = [0.0, 0.0]
    return {"n_positions": params.n_positions, "object_shape": list(scan.object.shape),
            "position_error": pt.position_error(scan.positions, scan.true_positions)}


def load_npz_scan(source: str, out: str, *, fft_shifted: bool = True) -> dict:
    """Convert a Tike-style ``.npz`` (or ``.npz.bz2``) scan to a frame store.

    Arrays: ``data`` (..., N, h, w) counts, ``scan`` (..., N, 2) positions in object
    pixels (y, x), optional ``probe`` (..., h, w). Leading singleton axes are dropped.
    """
    opener = bz2.open if str(source).endswith(".bz2") else open
    try:
        with opener(source, "rb") as fh:
            z = dict(np.load(fh))
    except (OSError, ValueError, EOFError) as exc:
        raise LensfreeError(f"{source}: not a readable .npz scan ({exc})") from None
    for key in ("data", "scan"):
        if key not in z:
            raise LensfreeError(f"{source}: no '{key}' array (have {', '.join(z)})")
    h, w = z["data"].shape[-2:]
    frames = z["data"].reshape(-1, h, w)
    positions = z["scan"].reshape(-1, 2)
    probe = z["probe"].reshape(-1, *z["probe"].shape[-2:]) if "probe" in z else None
    write_ptycho_frames(out, frames, positions, probe, fft_shifted=fft_shifted,
                        attrs={"source": os.path.basename(str(source))})
    return {"n_frames": len(frames), "frame_shape": [h, w], "has_probe": probe is not None}


@dataclass(frozen=True)
class ScanInput:
    """A checked ptychography frame store."""

    store: frame_io.FrameStore
    positions_px: np.ndarray      # (N, 2) in object pixels
    unit: str                     # the store's unit: "px" or "m"
    pixel_m: float | None         # metres per object pixel when unit is "m"
    probe: np.ndarray | None      # (modes, h, w) or None


def read_scan(path: str) -> ScanInput:
    """Open a frame store for ptychography and check positions and probe (one-line errors)."""
    store = frame_io.open_frames(path, allow_pixels=True)
    group = zarr.open_group(path, mode="r")
    if "positions" not in group:
        raise LensfreeError(f"{path}: no 'positions' array (N, 2); ptychography needs the "
                            "scan positions")
    positions = np.asarray(group["positions"][...], np.float64)
    n = store.n_frames
    if positions.ndim != 2 or positions.shape[1] != 2:
        raise LensfreeError(f"{path}: positions has shape {positions.shape}, expected ({n}, 2)")
    if len(positions) != n:
        raise LensfreeError(f"{path}: {len(positions)} positions for {n} frames; they must "
                            "match one to one")
    bad = np.flatnonzero(~np.isfinite(positions).all(axis=1))
    if len(bad):
        raise LensfreeError(f"{path}: positions of {len(bad)} frames are NaN or inf (first: "
                            f"frame {bad[0]})")
    unit = store.attrs.get("positions_unit", "m")
    pixel_m = None
    if unit == "m":
        h = store.frame_shape[0]
        pixel_m = store.geometry.real_space_pixel(h)
        if pixel_m is None:
            raise LensfreeError(f"{path}: positions are in metres but the store has no "
                                "geometry to convert them to pixels; set positions_unit: px "
                                "or the geometry attrs")
        positions_px = positions / pixel_m
    elif unit == "px":
        positions_px = positions
    else:
        raise LensfreeError(f"{path}: positions_unit {unit!r}: expected 'px' or 'm'")
    span = np.ptp(positions_px, axis=0) + np.asarray(store.frame_shape)
    if span.max() > MAX_OBJECT_SIDE:
        raise LensfreeError(
            f"{path}: the positions span {span[0]:.3g} x {span[1]:.3g} object pixels, beyond "
            f"any sensible object frame (max {MAX_OBJECT_SIDE}); check positions_unit")
    probe = None
    if "probe" in group:
        probe = np.asarray(group["probe"][...])
        if probe.ndim < 2 or probe.shape[-2:] != store.frame_shape:
            raise LensfreeError(f"{path}: probe has shape {probe.shape}, expected (modes, "
                                f"{store.frame_shape[0]}, {store.frame_shape[1]}) like the "
                                "frames")
        probe = probe.reshape(-1, *store.frame_shape)
        if not np.isfinite(probe).all() or not np.abs(probe).any():
            raise LensfreeError(f"{path}: probe is all zero or holds NaN/inf")
    return ScanInput(store, positions_px, unit, pixel_m, probe)


# ----------------------------------------------------------------------------- workers

#: bytes of amplitudes a worker process keeps between iterations (LRU over blocks)
AMPLITUDE_CACHE_BYTES = int(float(os.environ.get("LENSFREE_PTYCHO_CACHE_MB", "4096")) * 2**20)

_amplitude_cache: OrderedDict = OrderedDict()
_amplitude_lock = threading.Lock()


def _block_amplitudes(path: str, mask: np.ndarray, index: np.ndarray):
    """``(amplitude, valid or None)`` of a block's frames, read once per process and kept
    for the next iterations (LRU, `AMPLITUDE_CACHE_BYTES`). The key holds the frames'
    metadata time, so a store rewritten at the same path is read again."""
    try:
        stamp = os.stat(os.path.join(path, "frames", "zarr.json")).st_mtime_ns
    except OSError:
        stamp = 0
    key = (os.path.abspath(path), stamp, index.tobytes())
    with _amplitude_lock:
        hit = _amplitude_cache.get(key)
        if hit is not None:
            _amplitude_cache.move_to_end(key)
            return hit
    frames = zarr.open_array(os.path.join(path, "frames"), mode="r")
    block = frames.get_orthogonal_selection((index, slice(None), slice(None)))
    amp, valid = pt.prepare_amplitudes(block, mask)
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
class _Shared:
    path: str
    mask: np.ndarray
    blocks: tuple
    groups: tuple
    obj: np.ndarray
    probe: np.ndarray
    crops: np.ndarray
    fractions: np.ndarray
    refine: bool


def ptycho_blocks(task: tuple[int, int], shared: _Shared) -> list[pt.BlockResult]:
    """One task of one iteration: the sums of its run of blocks (``shared.groups``), each
    block against the shared object and probe, one result per block."""
    _, g = task
    out = []
    for b in shared.groups[g]:
        index = shared.blocks[b]
        amp, valid = _block_amplitudes(shared.path, shared.mask, index)
        out.append(pt.block_update(shared.obj, shared.probe, shared.crops[index],
                                   shared.fractions[index], amp, valid,
                                   refine=shared.refine))
    return out


def _groups(n_blocks: int, n_workers: int) -> tuple:
    """Blocks cut into runs of consecutive blocks, two runs per worker: few tasks per
    iteration (each costs the scheduler a round trip), still some room to balance. The
    numbers do not depend on it: every block is computed alone and folded in order."""
    n = min(n_blocks, 2 * max(1, n_workers))
    return tuple(tuple(int(b) for b in part) for part in np.array_split(np.arange(n_blocks), n))


# ----------------------------------------------------------------------------- the stage


def _create(run, params, scan: ScanInput, origin, shape, inputs) -> zarr.Group:
    group = runstore.begin_stage(run, "ptycho", params=_params_attrs(params), inputs=inputs)
    n = params.engine.iterations
    m = params.engine.probe_modes
    h, w = scan.store.frame_shape
    group.create_array("object", shape=shape, chunks=shape, dtype=np.complex64)
    group.create_array("probe", shape=(m, h, w), chunks=(m, h, w), dtype=np.complex64)
    group.create_array("errors", shape=(n,), chunks=(n,), dtype=np.float64, fill_value=np.nan)
    group.attrs.update({"object_origin": [float(o) for o in origin],
                        "positions_unit": scan.unit, "iterations_done": 0})
    return group


def _to_unit(positions_px: np.ndarray, scan: ScanInput) -> np.ndarray:
    return positions_px * scan.pixel_m if scan.unit == "m" else positions_px


def _checkpoint(group, scan, obj, probe, positions, errors, done: int) -> None:
    group["object"][...] = obj
    group["probe"][...] = probe
    runstore.write_array(group, "positions", _to_unit(positions, scan))
    group["errors"][:done] = errors[:done]
    group.attrs["iterations_done"] = done  # last: the checkpoint is whole


def run_ptycho(backend: Backend, frames_path: str, out: str,
               params: PtychoStageParams = PtychoStageParams()) -> dict | None:
    """Run (or resume) stage 4 on ``backend``; on the root return the ``ptycho`` attrs."""
    scan = read_scan(frames_path)
    p = params.engine
    n = scan.store.n_frames
    h, w = scan.store.frame_shape
    initial = scan.positions_px
    origin, shape = pt.object_frame(initial, (h, w), params.margin)
    n_blocks = params.blocks or max(1, int(np.ceil(n / TARGET_BLOCK_POSITIONS)))
    if n_blocks > n:
        raise LensfreeError(f"--blocks {n_blocks}: more blocks than the {n} positions")
    blocks = tuple(position_blocks(initial, n_blocks))
    groups = _groups(n_blocks, backend.n_workers)
    state = None
    if backend.is_root:
        run = runstore.open_run(out)
        inputs = {"frames": frames_path, "n_frames": n, "frame_shape": [h, w],
                  "positions_unit": scan.unit}
        group = run["ptycho"] if "ptycho" in run else None
        same = (group is not None and group.attrs.get("parameters") == _params_attrs(params)
                and group.attrs.get("input") == runstore.jsonable(inputs))
        if same and group.attrs.get("complete"):
            state = "complete"
        elif same and group.attrs.get("iterations_done", 0) > 0:
            start = int(group.attrs["iterations_done"])
            log.info("resuming %s at iteration %d", out, start)
            pos = np.asarray(group["positions"][...], np.float64)
            pos = pos / scan.pixel_m if scan.unit == "m" else pos
            state = (start, np.asarray(group["object"][...]), np.asarray(group["probe"][...]),
                     pos, np.asarray(group["errors"][...]))
        else:
            group = _create(run, params, scan, origin, shape, inputs)
            runstore.write_array(group, "positions_initial", _to_unit(initial, scan))
            amp, _ = pt.prepare_amplitudes(frame_io.read_frames(frames_path, 0, min(n, 256)))
            probe = pt.initial_probe(scan.probe, amp, p.probe_modes)
            state = (0, np.ones(shape, np.complex64), probe, initial.copy(),
                     np.full(p.iterations, np.nan))
        from lensfree.engine import fft

        fft.get_fft2((h, w)).prepare()  # plan once so every worker loads the same wisdom
    state = backend.bcast(state)
    if state == "complete":
        return {**group.attrs, "resumed_complete": True} if backend.is_root else None
    start, obj, probe, positions, errors = state
    total = None
    if backend.is_root:
        amp_all = zarr.open_array(os.path.join(frames_path, "frames"), mode="r")
        total = _total_power(amp_all, scan.store.mask)
    seconds = []
    for it in range(start, p.iterations):
        t0 = time.perf_counter()
        refine = p.refines_at(it)
        crops, fractions = pt.corners(positions, origin, shape, (h, w))
        if p.engine == "parallel":
            shared = _Shared(frames_path, scan.store.mask, blocks, groups, obj, probe,
                             crops, fractions, refine)
            tasks = [(it, g) for g in range(len(groups))]
            parts = backend.map(ptycho_blocks, tasks, shared,
                                names=[f"ptycho-it{it:04d}-part{g}" for g in range(len(groups))],
                                desc=f"iteration {it + 1}/{p.iterations}")
            if backend.is_root:
                results = [r for part in parts for r in part]  # block order
                obj, probe = pt.apply_update(obj, probe, results,
                                             update_probe=it >= p.probe_start,
                                             regularisation=p.regularisation)
                err = sum(float(r.error.sum()) for r in results)
                steps = np.zeros_like(positions)
                if refine:
                    for index, r in zip(blocks, results):
                        steps[index] = r.steps
        elif backend.is_root:
            amp, valid = _block_amplitudes(frames_path, scan.store.mask, np.arange(n))
            valid = np.ones(amp.shape, bool) if valid is None else valid
            order = np.random.default_rng([p.seed, it]).permutation(n)
            e, steps = pt.pie_iteration(obj, probe, crops, fractions, amp, valid, order,
                                        engine=p.engine, alpha=p.object_step, beta=p.beta,
                                        update_probe=it >= p.probe_start, refine=refine)
            err = float(e.sum())
        if backend.is_root:
            errors[it] = err / total
            if refine:
                positions = pt.refine_positions(positions, steps, initial, gain=p.refine_gain,
                                                max_step=p.max_step)
            done = it + 1
            if done % params.checkpoint_every == 0 or done == p.iterations:
                _checkpoint(group, scan, obj, probe, positions, errors, done)
        obj, probe, positions = backend.bcast((obj, probe, positions))
        seconds.append(time.perf_counter() - t0)
    if not backend.is_root:
        return None
    attrs = {"final_error": float(errors[-1]), "n_blocks": n_blocks,
             # wall time of one iteration on this run's back end (median over those run
             # by this invocation; the first also reads the frames and plans the FFTs)
             "seconds_per_iteration": float(np.median(seconds)) if seconds else None,
             "position_shift_rms_px": float(np.sqrt(np.mean(np.sum(
                 (positions - initial) ** 2, axis=1))))}
    runstore.finish_stage(group, **attrs)
    return dict(group.attrs)


def _total_power(frames, mask) -> float:
    """``sum_valid A^2`` over all frames (the Fourier error's denominator), chunk by chunk."""
    total = 0.0
    step = frames.chunks[0]
    for s in range(0, frames.shape[0], step):
        block = np.asarray(frames[s:s + step], np.float64)
        good = np.isfinite(block) & (block >= 0) & mask[None]
        total += float(np.sum(np.where(good, block, 0)))
    return max(total, 1e-30)


def _params_attrs(params: PtychoStageParams) -> dict:
    return runstore.jsonable(asdict(params))
