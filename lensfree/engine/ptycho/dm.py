"""The difference map (Thibault et al., Ultramicroscopy 109, 338 (2009)), in blocks.

Every position keeps its exit waves ``psi_j`` (M modes) from one iteration to the next.
In an iteration each block, against the shared object ``O`` and probe ``P``, updates its
positions' exit waves

    psi_j <- psi_j + P_F((1 + alpha) P O_j - alpha psi_j) - P O_j

(``alpha = 1``: the standard difference map, ptypy's default; ``P_F`` the Fourier
projection of every engine, :class:`PositionKernel`), and returns the sums of the overlap
projection: ``conj(P_j) (psi_j - P_j O_j)`` and ``|P_j|^2`` into its object box,
``conj(O_j) (psi_j - P_j O_j)`` and ``|O_j|^2`` into the probe's. The root sets
``O += sum conj(P) (psi - P O) / (sum |P|^2 + r)``, which is
``O = (sum conj(P) psi + r O_old) / (sum |P|^2 + r)``: the overlap projection with ptypy's
object inertia ``r`` (:func:`apply_update`, the parallel form's update, with the probe
likewise: one alternation of object and probe per iteration). The blocks' sums are the
parallel form's :class:`BlockResult`, with ``psi_j`` where that form has ``psi'_j``; the
position step is the parallel form's, on ``psi_j - P_j O_j``. The exit waves start as
``P O_j``, and start again so wherever refinement moved a position's whole-pixel crop.
The Fourier error is that of the projected field
``(1 + alpha) P O_j - alpha psi_j``, as ptypy reports it.
"""

from __future__ import annotations

import numpy as np

from lensfree.engine.ptycho import compiled
from lensfree.engine.ptycho.parallel import BlockResult, BlockSetup


def dm_block(obj: np.ndarray, probe: np.ndarray, exits: np.ndarray, crops: np.ndarray,
             fractions: np.ndarray, amp: np.ndarray, valid: np.ndarray | None, *,
             first: bool = False, restart: np.ndarray | None = None, alpha: float = 1.0,
             relax: float = 0.0, refine: bool = False, propagator=None) -> BlockResult:
    """One block's difference-map update: its sums, and its exit waves updated in place.

    Parameters
    ----------
    obj, probe, crops, fractions, amp, valid, refine, propagator : as
        :func:`block_update`.
    exits : (B, M, h, w) complex64 exit waves of the block's positions from the last
        iteration, updated in place; with ``first`` they start as ``P_j O_j`` (their
        values unread).
    restart : (B,) bool, positions whose exit waves start again as ``P_j O_j``: those whose
        whole-pixel crop moved since their exit waves were made (the stored waves, in the
        probe's frame, would stand a pixel off the object under them: an inconsistency
        the difference map amplifies, and refinement diverged).
    alpha : ``psi_j + P_F((1 + alpha) P O_j - alpha psi_j) - P O_j`` (1: the standard
        difference map).
    relax : ptypy's ``fourier_relax_factor``: ``P_F`` projects onto the measured moduli
        only as far as a Fourier error of ``relax^2 / 4`` times the frame's counts (about
        the Poisson noise's at ``relax`` 0.05: the data are not forced to fit their
        noise; 0: the plain projection).
    """
    block = BlockSetup(probe, crops, fractions, amp, valid, propagator)
    kernel, lo, hi = block.kernel, block.lo, block.hi
    obj_num, obj_den, probe_num, probe_den = block.zero_sums()
    errors = np.empty(len(crops))
    steps = np.empty((len(crops), 2)) if refine else None
    a = np.float32(alpha)
    bounds = 0.25 * relax ** 2 * np.sum(np.square(amp, dtype=np.float64), axis=(1, 2))
    for i, (y, x) in enumerate(crops):
        probe_j = block.probe_at(i)
        compiled.dm_reflect(probe_j, obj, y, x, exits[i],
                            first or (restart is not None and bool(restart[i])), a,
                            kernel.model, kernel.psi)
        errors[i] = kernel.project_field(amp[i], block.amp_scaled[i], block.invalid_at(i),
                                         shifted=bool(block.shifted[i]), residual=False,
                                         bound=bounds[i] if relax else None)
        compiled.dm_exit(exits[i], kernel.psi_new, kernel.model)
        # the overlap projection's sums of psi_j - P_j O_j, and the position step
        step = compiled.accumulate(kernel.model, exits[i], probe_j, obj, y, x, lo[0], lo[1],
                                   hi[0], hi[1], obj_num, obj_den, probe_num, probe_den,
                                   refine, kernel.chi_row, kernel.power_row)
        if refine:
            steps[i] = step
    return BlockResult(start=(int(lo[0]), int(lo[1])), obj_num=obj_num, obj_den=obj_den,
                       probe_num=probe_num, probe_den=probe_den, error=errors, steps=steps)


def dm_probe_block(obj: np.ndarray, probe: np.ndarray, exits: np.ndarray,
                   crops: np.ndarray, fractions: np.ndarray, *, propagator=None
                   ) -> tuple[np.ndarray, np.ndarray]:
    """The probe's half of the overlap projection on one block, against the object the
    root has just projected: ``(sum conj(O_j) (psi_j - P_j O_j) (M, h, w),
    sum |O_j|^2 (h, w))`` (``P_j`` moved by the position's sub-pixel rest; its increment
    placed at the whole-pixel crop, as the parallel form places its own)."""
    block = BlockSetup(probe, crops, fractions, propagator=propagator)
    probe_num = np.zeros(probe.shape, probe.dtype)
    probe_den = np.zeros(probe.shape[-2:], np.float32)
    for i, (y, x) in enumerate(crops):
        compiled.dm_probe_sums(exits[i], block.probe_at(i), obj, y, x, probe_num, probe_den)
    return probe_num, probe_den


def project_probe(probe: np.ndarray, results, *, regularisation: float = 1e-3) -> np.ndarray:
    """The probe's overlap projection from :func:`dm_probe_block` sums folded in the order
    given (``results`` with ``probe_num``, ``probe_den``):
    ``P + sum conj(O_j) (psi_j - P_j O_j) / (sum |O_j|^2 + r)``, ``r`` ``regularisation``
    times the largest denominator (the probe's inertia). The modes are not made
    orthogonal, as the other engines make theirs: each mode has its own exit waves, which
    a mix of the modes would leave behind."""
    pnum = sum(np.asarray(r.probe_num, np.complex128) for r in results)
    pden = sum(np.asarray(r.probe_den, np.float64) for r in results)
    return (probe + pnum / (pden + regularisation * pden.max())).astype(probe.dtype)
