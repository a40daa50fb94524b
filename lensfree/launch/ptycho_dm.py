"""Stage 4's difference map across workers: where a run's exit waves live between
iterations, and one iteration as two reductions (`engine.ptycho.dm`): every block
updates its positions' exit waves and returns the object's sums, the root projects the
object; then (from ``--probe-start``) every block returns the probe's sums against that
object and the root projects the probe.

The exit waves are per-position state that outlives the iteration: they live in the run
store's ``ptycho/exit_waves`` (`exit_waves_array`: `EXIT_SLOTS` slots, one chunk per slot
and block), every process keeps those it wrote (`ptycho_workers.ExitWaves`), and a
block's task, wherever it runs, reads the version the last iteration wrote. An iteration
reads the slot the last one wrote and writes one that is neither that nor the last
checkpoint's (`ExitSlots`).

Store layout: ``ptycho/exit_waves`` (3, blocks, largest block, modes, h, w) complex64,
uncompressed, one chunk per slot and block (the block's positions in `position_blocks`
order, zero-padded; each block's task the only writer of its chunk). The checkpoint names
its slot in attrs ``exit_waves_slot`` and ``exit_waves_iteration`` (the iterations done
whose exit waves it holds), and ``exit_waves_restart`` (N,) bool holds the positions
whose whole-pixel crop the checkpoint's last refinement moved (their exit waves start
again as ``P O_j``, as in a run that goes on). A resumed run goes on with the
checkpoint's exit waves; where the attrs do not name them (the run stopped between
writing them and ``iterations_done``, or once ``--split-frc`` had begun, whose halves
rewrite the array with their own blocks) they start again as ``P O_j`` (logged), never
from another iteration's.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace

import numpy as np

from lensfree.engine import ptycho as pt
from lensfree.engine.ptycho import dm
from lensfree.io import runstore
from lensfree.launch.ptycho_workers import ExitWaves, Shared, exits_fit_cache, forget_exits

#: slots of the stored exit waves: the last iteration's, the last checkpoint's and the one
#: being written
EXIT_SLOTS = 3


def exit_waves_array(group, blocks, probe_shape) -> None:
    """``exit_waves`` for ``blocks`` in ``group`` (replacing any): one chunk per slot and
    block, uncompressed (written and read again every iteration)."""
    size = max(len(b) for b in blocks)
    runstore.create_array(group, "exit_waves", shape=(EXIT_SLOTS, len(blocks), size,
                                                      *probe_shape),
                          chunks=(1, 1, size, *probe_shape), dtype=np.complex64,
                          compressors=None, fill_value=0, overwrite=True,
                          dims=("slot", "block", "position", "mode", "y", "x"))


@dataclass
class ExitSlots:
    """One run of difference-map iterations' exit waves: the array at ``path``,
    ``lineage`` (no process's cache entry of another run is read), ``placed`` (every
    block runs where it ran last and the caches hold them all: only the iterations a
    checkpoint names are stored), ``read`` (the slot of the last iteration's, None: they
    start as ``P O_j``), ``keep`` (the last checkpoint's slot, never written) and
    ``stored`` (the store's slot ``read`` holds them)."""

    path: str
    lineage: str
    placed: bool
    read: int | None
    keep: int | None
    stored: bool = True

    @classmethod
    def start(cls, ctx, path: str, blocks, probe_shape, slot: int | None) -> ExitSlots:
        """The run's slots from ``slot`` (the checkpoint's, or None), the same on every
        process."""
        m, h, w = probe_shape
        size = max(len(b) for b in blocks)
        # each block's task in the same process every time (`Backend.placement`)
        placed = ctx.backend.placement(len(blocks)) is not None and exits_fit_cache(
            len(blocks) * size * m * h * w * np.dtype(np.complex64).itemsize)
        lineage, placed = ctx.bcast((uuid.uuid4().hex, placed) if ctx.is_root else None)
        return cls(path, lineage, placed, slot, slot)

    def iteration(self, ctx, p: pt.PtychoParams, shared: Shared, reduce, *, it: int,
                  n: int, update_probe: bool, checkpoint: bool,
                  restart: np.ndarray | None = None):
        """One iteration: the exit waves and the object's overlap projection, then
        (``update_probe``) the probe's against the new object; stored when ``checkpoint``
        or wherever a block may run elsewhere next. ``reduce(ctx, shared, part)``
        folds one pass over the blocks. Returns ``(object, probe, Fourier error, position
        steps (n, 2) or None)`` (the root's; the other processes get their own object and
        probe back)."""
        persist = checkpoint or not self.placed
        write = min(set(range(EXIT_SLOTS)) - {self.read, self.keep})
        waves = ExitWaves(self.path, self.lineage, self.read, it, write, p.object_step,
                          p.fourier_relax, self.stored, persist, restart=restart)
        sums = reduce(ctx, replace(shared, exits=waves), "dm")
        obj, probe = shared.obj, shared.probe
        if ctx.is_root:
            obj, _ = pt.apply_update(obj, probe, [sums], update_probe=False,
                                     regularisation=p.regularisation)
        if update_probe:
            obj = ctx.bcast(obj)
            probe_sums = reduce(ctx, replace(shared, obj=obj, exits=replace(
                waves, version=it + 1, stored=persist, probe_pass=True)), "probe")
            if ctx.is_root:
                probe = dm.project_probe(probe, [probe_sums], regularisation=p.regularisation)
        self.read, self.stored = write, persist
        if checkpoint:
            self.keep = write
        if not ctx.is_root:
            return obj, probe, 0.0, None
        return obj, probe, sums.error, sums.per_position(n) if shared.refine else None

    def forget(self) -> None:
        """Drop what every process kept of this run's exit waves."""
        forget_exits(self.lineage)


def restarts(positions, crops, origin, shape, frame) -> np.ndarray:
    """(N,) the positions whose whole-pixel crop refinement moved from ``crops``: their
    exit waves start again as ``P O_j`` (stored waves a pixel off the object under them
    made refinement diverge)."""
    return np.any(pt.corners(positions, origin, shape, frame)[0] != crops, axis=1)
