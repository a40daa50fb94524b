"""Stage 4 across workers: ptychography with scan positions refined in parallel.

The parallel engine runs each iteration as one ``backend.reduce`` over blocks of positions
(spatially compact, from `partitioning.position_blocks`, a number fixed by the data, not
by the workers), one leaf per block, per batch (every block's positions dealt into
batches spread over it, `engine.ptycho.batches`, as many as the scan's overlap asks
for: each batch updates object and probe before the next); LSQML runs two per batch
(the directions, then every position's step lengths). The object, probe, crops and
sub-pixel rests travel once per batch as the shared value, and every worker process
reads a block's frames from the store once and keeps their amplitudes for the next
iterations (`block_amplitudes`; where tasks stay in one process, its whole run of blocks
at once, `plan_batches`). The blocks' sums are plain sums folded in the back end's fixed
tree (`sums.combine`, the same numbers on every back end and worker count), so the root
holds one object-sized partial whatever the number of positions; it updates object, probe
and positions and broadcasts them. ePIE and rPIE are serial and run on the root. The
difference map (``--engine dm``) runs one batch an iteration as two reductions
(`ptycho_dm`).

Store layout (``RUN.zarr/ptycho/``, DESIGN.md): ``object`` (oy, ox) complex64, ``probe``
(modes, h, w) complex64, ``positions`` (N, 2) refined and ``positions_initial`` (N, 2),
both in the input's unit and frame, ``errors`` (iterations,) Fourier error per iteration
(NaN until done). Attrs: ``object_origin`` (position-frame coordinate of object pixel
(0, 0), px), ``positions_unit``, ``propagation`` (``far-field`` or ``near-field``: the
store's or ``--propagation``), ``object_pixel_m`` (metres per object pixel, None when the
geometry is unknown), ``iterations_done`` (the checkpoint), then ``complete``; with
``--split-frc`` also ``frc``, ``frc_threshold``, ``frc_frequency`` (cycles per object
pixel) and attrs ``frc_resolution_px`` / ``frc_resolution_m`` (full period at the half-bit
crossing; 2 px when it never crosses). With ``--engine dm`` also ``exit_waves`` and its
attrs (`ptycho_dm`). A rerun with the same parameters resumes from the last checkpoint.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, replace

import numpy as np

from lensfree.engine import ptycho as pt
from lensfree.engine.ptycho import batches as batching
from lensfree.engine.ptycho import lsqml
from lensfree.engine.ptycho.parallel import fold
from lensfree.engine.ptycho.sums import combine
from lensfree.errors import LensfreeError
from lensfree.io import frames as frame_io
from lensfree.io import runstore
from lensfree.io.scan import ScanInput, read_scan, scan_power
from lensfree.io.scan import load_npz_scan as load_npz_scan  # moved there, kept importable
from lensfree.io.scan import simulate_ptycho as simulate_ptycho
from lensfree.io.scan import write_ptycho_frames as write_ptycho_frames
from lensfree.launch import ptycho_dm
from lensfree.launch.backends import Backend
from lensfree.launch.ptycho_params import PtychoOptions, PtychoStageParams
from lensfree.launch.ptycho_workers import (
    Shared,
    block_amplitudes,
    plan_batches,
    ptycho_block,
)
from lensfree.launch.stage import Context, Stage, run_stage
from lensfree.partitioning import position_blocks

log = logging.getLogger(__name__)

#: positions per block and batch to aim for when the number of blocks is not given (a
#: block's fixed costs, its box's sums and their tiles through the fold, are paid once a
#: batch: at 10,000 positions in 7 batches, blocks of 64 positions, 9 a batch, cost 1.4x
#: the iteration of blocks of 250)
TARGET_BLOCK_POSITIONS = 64


# ----------------------------------------------------------------------------- the stage


@dataclass(frozen=True)
class PtychoInput:
    scan: ScanInput
    origin: np.ndarray
    shape: tuple
    blocks: tuple
    n_batches: int    # the block engines' batches per iteration (`_n_batches`)


class PtychoStage(Stage):
    name = "ptycho"
    help = "stage 4: ptychography, positions refined in parallel"
    group = "ptycho"
    resumable = True
    Options = PtychoOptions

    def run_path(self, opts) -> str:
        return opts.out

    def open(self, opts) -> PtychoInput:
        g = opts.params.geometry
        scan = read_scan(opts.frames, propagation=g.propagation, wavelength=g.wavelength,
                         distance=g.distance, pixel_size=g.pixel_size)
        n, frame = scan.store.n_frames, scan.store.frame_shape
        origin, shape = pt.object_frame(scan.positions_px, frame, opts.params.margin)
        n_batches = self._n_batches(opts, scan)
        n_blocks = opts.params.blocks or max(
            1, int(np.ceil(n / (TARGET_BLOCK_POSITIONS * n_batches))))
        if n_blocks > n:
            raise LensfreeError(f"--blocks {n_blocks}: more blocks than the {n} positions")
        return PtychoInput(scan, origin, shape,
                           tuple(position_blocks(scan.positions_px, n_blocks)), n_batches)

    def inputs(self, opts, inp: PtychoInput) -> dict:
        store = inp.scan.store
        return {"frames": opts.frames, "store_id": store.attrs.get("store_id"),
                "n_frames": store.n_frames, "frame_shape": list(store.frame_shape),
                "positions_unit": inp.scan.unit}

    def begin(self, group, opts, inp: PtychoInput) -> None:
        p = opts.params.engine
        n, m = p.iterations, p.probe_modes
        h, w = inp.scan.store.frame_shape
        runstore.create_array(group, "object", shape=inp.shape, chunks=inp.shape,
                              dtype=np.complex64)
        runstore.create_array(group, "probe", shape=(m, h, w), chunks=(m, h, w), dtype=np.complex64)
        runstore.create_array(group, "errors", shape=(n,), chunks=(n,), dtype=np.float64,
                           fill_value=np.nan)
        runstore.write_array(group, "positions_initial", inp.scan.positions)  # as stored
        if p.engine == "dm":
            ptycho_dm.exit_waves_array(group, inp.blocks, (m, h, w))
        prop = inp.scan.propagator
        group.attrs.update({"object_origin": [float(o) for o in inp.origin],
                            "positions_unit": inp.scan.unit, "iterations_done": 0,
                            "propagation": prop.kind, "object_pixel_m": _object_pixel(inp.scan)})

    def _start(self, ctx: Context, opts, inp: PtychoInput):
        """(first iteration, object, probe, positions in px, errors, momentum or None, the
        slot of the difference map's exit waves after the first iteration's predecessor or
        None) on the root."""
        group, scan, p = ctx.group, inp.scan, opts.params.engine
        done = int(group.attrs.get("iterations_done", 0))
        if ctx.resumed and done > 0:
            log.info("resuming %s at iteration %d", ctx.run_path, done)
            velocity = None
            if "object_momentum" in group:
                velocity = (np.asarray(group["object_momentum"][...]),
                            np.asarray(group["probe_momentum"][...]))
            slot = restart = None
            if p.engine == "dm":
                slot = group.attrs.get("exit_waves_slot")
                if slot is None or group.attrs.get("exit_waves_iteration") != done:
                    slot = None
                    log.warning("%s: the stored exit waves are not those of iteration %d: "
                                "they start again as P O", ctx.run_path, done)
                elif "exit_waves_restart" in group:
                    restart = np.asarray(group["exit_waves_restart"][...])
            return (done, np.asarray(group["object"][...]), np.asarray(group["probe"][...]),
                    scan.to_px(group["positions"][...]), np.asarray(group["errors"][...]),
                    velocity, (slot, restart))
        return (0, np.ones(inp.shape, np.complex64), self._first_probe(opts, inp.scan),
                scan.positions_px.copy(), np.full(p.iterations, np.nan), None, (None, None))

    @staticmethod
    def _first_probe(opts, scan: ScanInput) -> np.ndarray:
        prop = scan.propagator
        amp, _ = pt.prepare_amplitudes(
            frame_io.read_frames(opts.frames, 0, min(scan.store.n_frames, 256)),
            centred=prop.centred_frames)
        return pt.initial_probe(scan.probe, amp, opts.params.engine.probe_modes, prop)

    def execute(self, ctx: Context, opts, inp: PtychoInput) -> dict | None:
        from lensfree.engine import fft

        scan = inp.scan
        n, (h, w) = scan.store.n_frames, scan.store.frame_shape
        state = total = None
        if ctx.is_root:
            state = self._start(ctx, opts, inp)
            fft.get_fft2((h, w)).prepare()  # plan once so every worker loads the same wisdom
            total = scan_power(opts.frames, scan.store.mask)
            state = (*state, inp.n_batches)
        start, obj, probe, positions, errors, velocity, slot, n_batches = ctx.bcast(state)
        initial = scan.positions_px
        obj, probe, positions, seconds = self._iterate(
            ctx, opts, inp, np.arange(n), inp.blocks, n_batches, start,
            (obj, probe, positions, velocity, slot), errors, total)
        frc = (self._split_frc(ctx, opts, inp, n_batches) if opts.params.split_frc
               else None)
        if not ctx.is_root:
            return None
        moves = np.sqrt(np.sum((positions - initial) ** 2, axis=1))
        import resource  # the root's peak memory: bounded, whatever the number of positions

        rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        out = {"final_error": float(errors[-1]), "n_blocks": len(inp.blocks),
               "batches": n_batches,
               # wall time of one iteration on this run's back end (median over those run
               # by this invocation; the first also reads the frames and plans the FFTs)
               "seconds_per_iteration": float(np.median(seconds)) if seconds else None,
               # the first reads the frames, so a run's start is seen apart
               "seconds_first_iteration": float(seconds[0]) if seconds else None,
               "position_shift_rms_px": float(np.sqrt(np.mean(moves ** 2))),
               "position_shift_max_px": float(moves.max()),
               "root_max_rss_mb": float(rss_mb)}
        if frc is not None:
            out.update(frc)
        return out

    @staticmethod
    def _n_batches(opts, scan: ScanInput) -> int:
        """The block engines' batches per iteration: the parameter, else from the overlap
        of the starting probe at the recorded positions (the same on a resumed run)."""
        p = opts.params.engine
        if p.batches is not None or p.engine not in ("parallel", "lsqml"):  # dm: one
            return p.batches or 1
        probe = PtychoStage._first_probe(opts, scan)
        return batching.default_batches(batching.scan_overlap(scan.positions_px, probe),
                                        len(scan.positions_px))

    def _iterate(self, ctx: Context, opts, inp: PtychoInput, index, blocks, n_batches, start,
                 state, errors, total):
        """Iterations ``start..`` over the positions ``index`` (frame indices) cut into
        ``blocks`` (indices into ``index``), each block's positions dealt into
        ``n_batches`` batches; ``state`` (object, probe, positions (k, 2) px, momentum:
        the object's and probe's velocities, or None to start from rest, and the slot of
        the difference map's exit waves of iteration ``start``, or None: ``P O``).
        With ``errors`` (the whole scan) each iteration's error is kept and checkpoints are
        written; without (a half of the scan) nothing is written."""
        scan, p = inp.scan, opts.params.engine
        h, w = scan.store.frame_shape
        obj, probe, positions, velocity, (slot, restart) = state
        waves = None
        if p.engine == "dm":
            waves = ptycho_dm.ExitSlots.start(
                ctx, os.path.join(ctx.run_path, self.group, "exit_waves"), blocks,
                probe.shape, slot)
        momentum = p.momentum if p.engine in ("parallel", "lsqml") else 0.0
        if momentum and velocity is None:
            velocity = (np.zeros_like(obj), np.zeros_like(probe))
        initial = scan.positions_px[index]
        n_batches = min(n_batches, len(index))
        batches, parents, runs = plan_batches(ctx.backend, blocks, len(index), n_batches,
                                              h * w * scan.store.dtype.itemsize)
        seconds = []
        for it in range(start, p.iterations):
            t0 = time.perf_counter()
            refine = p.refines_at(it)
            update_probe = it >= p.probe_start
            crops, fractions = pt.corners(positions, inp.origin, inp.shape, (h, w))
            checkpoint = errors is not None and (
                (it + 1) % opts.params.checkpoint_every == 0 or it + 1 == p.iterations)
            if p.engine in ("parallel", "lsqml"):
                before = (obj, probe)
                err, steps = 0.0, np.zeros((len(index), 2))
                for g, batch in enumerate(batches):
                    shared = Shared(opts.frames, scan.store.mask, batch, index, obj, probe,
                                    crops, fractions, refine, scan.propagator,
                                    parents=parents[g], n_batches=n_batches,
                                    read_runs=runs[g])
                    obj, probe, e, s = self._batch(ctx, p, shared, update_probe,
                                                   f"{it:04d}-{g}", it, len(index))
                    if ctx.is_root:
                        err += e
                        if refine:
                            steps += s
                    if len(batches) > 1:
                        obj, probe = ctx.bcast((obj, probe))
            elif p.engine == "dm":
                shared = Shared(opts.frames, scan.store.mask, batches[0], index, obj, probe,
                                crops, fractions, refine, scan.propagator, read_runs=runs[0])
                obj, probe, err, steps = waves.iteration(
                    ctx, p, shared,
                    lambda c, s, part, it=it: self._reduce(c, s, it, p.iterations,
                                                           f"{it:04d}", part),
                    it=it, n=len(index), update_probe=update_probe, checkpoint=checkpoint,
                    restart=restart)
            elif ctx.is_root:
                amp, valid = block_amplitudes(opts.frames, scan.store.mask, index,
                                               scan.propagator.centred_frames)
                valid = np.ones(amp.shape, bool) if valid is None else valid
                order = np.random.default_rng([p.seed, it]).permutation(len(index))
                obj, probe, e, steps = pt.pie_iteration(
                    obj, probe, crops, fractions, amp, valid, order, engine=p.engine,
                    alpha=p.object_step, beta=p.beta, update_probe=update_probe,
                    refine=refine, propagator=scan.propagator)
                err = float(e.sum())
            if ctx.is_root:
                if momentum and it >= p.probe_start:
                    obj, probe, velocity = pt.momentum_step(obj, probe, before, velocity,
                                                            momentum, update_probe)
                restart = None
                if refine:
                    positions = pt.refine_positions(
                        positions, steps, initial, gain=p.refine_gain, max_step=p.max_step,
                        affine=(scan.propagator.kind == "near-field"
                                or it < p.first_refinement + p.refine_affine))
                    if waves is not None:  # moved a pixel: their exit waves start again
                        restart = ptycho_dm.restarts(positions, crops, inp.origin, inp.shape,
                                                     (h, w))
                if errors is not None:
                    errors[it] = err / total
                    if checkpoint:
                        _checkpoint(ctx.group, scan, obj, probe, positions, errors, it + 1,
                                    velocity, None if waves is None else waves.read, restart)
            obj, probe, positions, restart = ctx.bcast((obj, probe, positions, restart))
            seconds.append(time.perf_counter() - t0)
        if waves is not None:
            waves.forget()
        return obj, probe, positions, seconds

    def _split_frc(self, ctx: Context, opts, inp: PtychoInput, n_batches: int) -> dict | None:
        """The scan's two interleaved halves (even and odd positions) reconstructed alone,
        from the same start and with the same parameters, and the Fourier ring correlation
        of their objects over the pixels both lit: written to ``frc*``, attrs returned."""
        from lensfree.engine.ptycho.frc import fourier_ring_correlation

        scan = inp.scan
        n = scan.store.n_frames
        first = ctx.bcast(self._first_probe(opts, inp.scan) if ctx.is_root else None)
        if ctx.is_root and "exit_waves" in ctx.group:  # each half has its own blocks
            ctx.group.attrs["exit_waves_slot"] = None
        halves = []
        for half in (0, 1):
            index = np.arange(half, n, 2)
            local = scan.positions_px[index]
            nb = max(1, len(inp.blocks) // 2)
            blocks = tuple(position_blocks(local, min(nb, len(index))))
            if ctx.is_root and "exit_waves" in ctx.group:
                ptycho_dm.exit_waves_array(ctx.group, blocks, first.shape)
            obj, probe, positions, _ = self._iterate(
                ctx, opts, inp, index, blocks, max(1, n_batches // 2), 0,
                (np.ones(inp.shape, np.complex64), first.copy(), local.copy(), None,
                 (None, None)),
                None, None)
            halves.append((obj, probe, positions))
        if not ctx.is_root:
            return None
        lit = np.ones(inp.shape, bool)
        for _, probe, positions in halves:
            crops, _ = pt.corners(positions, inp.origin, inp.shape, probe.shape[-2:])
            light = pt.illumination(crops, probe, inp.shape)
            lit &= light > 0.1 * light.max()
        result = fourier_ring_correlation(halves[0][0], halves[1][0], lit)
        group = ctx.group
        for name, values in (("frc", result.frc), ("frc_threshold", result.threshold),
                             ("frc_frequency", result.frequency)):
            runstore.write_array(group, name, values)
        pixel = _object_pixel(scan)
        return {"frc_resolution_px": result.resolution_px,
                "frc_resolution_m": None if pixel is None else result.resolution_px * pixel}

    def _batch(self, ctx: Context, p: pt.PtychoParams, shared: Shared, update_probe: bool,
               tag: str, it: int, n: int):
        """One batch of the block engines: its reduction(s) and, on the root, the update;
        ``(object, probe, Fourier error, position steps (n, 2) or None)`` (the root's; the
        other processes get their own object and probe back)."""
        sums = self._reduce(ctx, shared, it, p.iterations, tag)
        obj, probe = shared.obj, shared.probe
        if p.engine == "lsqml":
            folded = fold(obj.shape, probe.shape, [sums]) if ctx.is_root else None
            dobj, dprobe = ctx.bcast(lsqml.directions(
                obj, probe, folded, update_probe=update_probe,
                regularisation=p.regularisation) if ctx.is_root else None)
            steps2 = self._reduce(ctx, replace(shared, dobj=dobj, dprobe=dprobe), it,
                                  p.iterations, tag, "steps")
        if not ctx.is_root:
            return obj, probe, 0.0, None
        if p.engine == "lsqml":
            obj, probe = lsqml.apply_steps(obj, probe, folded, [steps2],
                                           update_probe=update_probe,
                                           regularisation=p.regularisation)
        else:
            obj, probe = pt.apply_update(obj, probe, [sums], update_probe=update_probe,
                                         regularisation=p.regularisation)
        return obj, probe, sums.error, sums.per_position(n) if shared.refine else None

    @staticmethod
    def _reduce(ctx: Context, shared: Shared, it: int, iterations: int, tag: str,
                part: str = "sums"):
        """One pass over the blocks, folded through the back end's fixed tree: the root's
        memory holds one object-sized partial, not one result per block; only the root
        gets it (None elsewhere), as only the root updates."""
        tasks = [(it, b) for b in range(len(shared.blocks))]
        return ctx.reduce(ptycho_block, tasks, shared, combine=combine,
                          names=[f"ptycho-it{tag}-{part}-b{b}" for b in range(len(tasks))],
                          desc=f"iteration {it + 1}/{iterations}", everywhere=False)

    def summary(self, attrs: dict, opts, seconds: float) -> list[str]:
        p = opts.params.engine
        verb = ("already complete, nothing recomputed" if attrs.get("resumed_complete")
                else "written")
        batches = attrs.get("batches") or 1
        lines = [f"{opts.out}: ptycho/ {verb} in {seconds:.1f} s; {p.engine}, {p.iterations} "
                 f"iterations, {attrs['n_blocks']} blocks"
                 + (f" in {batches} batches" if batches > 1 else ""),
                 f"  Fourier error {attrs['final_error']:.4g}; positions moved "
                 f"{attrs['position_shift_rms_px']:.2f} px RMS"
                 + (f", {attrs['position_shift_max_px']:.2f} px at most"
                    if attrs.get("position_shift_max_px") else "")]
        if attrs.get("frc_resolution_px") is not None:
            lines.append(f"  FRC of the two interleaved halves crosses half-bit at "
                         f"{attrs['frc_resolution_px']:.3g} px")
        return lines


STAGE = PtychoStage()


def _checkpoint(group, scan, obj, probe, positions, errors, done: int, velocity=None,
                exit_slot: int | None = None, restart: np.ndarray | None = None) -> None:
    group["object"][...] = obj
    group["probe"][...] = probe
    if velocity is not None:  # the momentum, for a resumed run to go on as this one
        runstore.write_array(group, "object_momentum", velocity[0])
        runstore.write_array(group, "probe_momentum", velocity[1])
    runstore.write_array(group, "positions", scan.to_unit(positions))
    group["errors"][:done] = errors[:done]
    if exit_slot is not None:  # the difference map's exit waves of this checkpoint
        runstore.write_array(group, "exit_waves_restart",
                             np.zeros(len(positions), bool) if restart is None else restart)
        group.attrs.update({"exit_waves_slot": exit_slot, "exit_waves_iteration": done})
    group.attrs["iterations_done"] = done  # last: the checkpoint is whole


def run_ptycho(backend: Backend, frames_path: str, out: str,
               params: PtychoStageParams | None = None) -> dict:
    """Run (or resume) stage 4 on ``backend`` (``params`` None: the defaults); every
    process returns the ``ptycho`` attrs."""
    return run_stage(STAGE, backend, PtychoOptions(frames=frames_path, out=out,
                                                   params=params or PtychoStageParams()))


def _object_pixel(scan: ScanInput) -> float | None:
    """Metres per object pixel, when the geometry says (the near field's sample pixel, the
    far field's ``lambda z / (n p)``)."""
    if scan.pixel_m is not None:
        return float(scan.pixel_m)
    if scan.propagator.kind == "near-field":
        return float(scan.propagator.pixel_size_m)
    pixel = scan.store.geometry.real_space_pixel(scan.store.frame_shape[0])
    return None if pixel is None else float(pixel)
