"""Stage 2 with ``--engine cdip``: one generation of independent neural-field members.

CDIP members do not breed (a neural field's weights have no meaningful average with a
guide's), so the population is one generation (``PhaseParams.generations`` is 1 for this
engine) of ``population`` members, each one task fitted from its own seed
``ghio.member_seed(seed, 0, m)``. The group keeps the GHIO layout that ``gather``,
``report`` and resuming read:
- ``objects`` (M, h, w) complex64 and ``supports`` (M, h, w) bool (the support the
  member's finishing refinement took from its own object, not a constraint given to it;
  with ``refine_cycles`` 0, ``|rho|`` above ``object_threshold`` of its maximum);
- ``r_fourier`` (1, M, epochs): R_F of every epoch of the field; ``member_errors`` (1, M),
  NaN until the member's worker has written its object, then its final R_F after the
  refinement (``fourier_r_factor``, as for GHIO): the completion marker, written last;
  ``errors`` (1, M) by the root.
A rerun skips finished members; an unfinished one retrains from its seed, and since a
member is deterministic (one torch thread, deterministic kernels) it gives the same object.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import zarr

from lensfree.engine import cdip, ghio
from lensfree.errors import LensfreeError
from lensfree.io import runstore
from lensfree.launch.timing import Clock

_ARRAYS = ("objects", "supports", "r_fourier", "member_errors")


def require(params) -> None:
    """A one-line LensfreeError when torch or the chosen device is missing."""
    try:
        cdip.require_torch()
        cdip.resolve_device(params.device)
    except (ImportError, ValueError) as exc:
        raise LensfreeError(str(exc)) from None


def schedule_text(p) -> str:
    refine = f", refined {p.refine_cycles} cycles" if p.refine_cycles else ""
    return (f"CDIP {p.epochs} epochs, {p.loss} loss, {p.field} SIREN {p.layers}x{p.hidden}"
            f"{refine}")


def begin(group, params, shape) -> None:
    m, n = params.population, params.cdip.epochs
    h, w = shape
    runstore.create_array(group, "objects", shape=(m, h, w), chunks=(1, h, w), dtype=np.complex64)
    runstore.create_array(group, "supports", shape=(m, h, w), chunks=(1, h, w), dtype=bool)
    for name in ("member_errors", "errors"):
        runstore.create_array(group, name, shape=(1, m), chunks=(1, 1) if name == "member_errors"
                           else (1, m), dtype=np.float64, fill_value=np.nan)
    runstore.create_array(group, "r_fourier", shape=(1, m, n), chunks=(1, 1, n), dtype=np.float32,
                       fill_value=np.nan)
    group.attrs.update({"engine": "cdip", "schedule": schedule_text(params.cdip),
                        "seed": params.seed, "generations_complete": 0, "best": []})


@dataclass(frozen=True)
class _Shared:
    run: str
    amplitude: np.ndarray
    valid: np.ndarray
    params: object  # PhaseParams
    stamp: str  # the phasing group's run_id


@functools.lru_cache(maxsize=4)
def _arrays(run: str, stamp: str) -> dict:
    group = zarr.open_group(run, mode="r+")["phasing"]
    return {name: group[name] for name in _ARRAYS}


def cdip_member(task: tuple[int, int], shared: _Shared) -> tuple[float, dict]:
    """Train member ``m`` and store it; returns its final R_F and its seconds."""
    _, m = task
    p = shared.params
    clock = Clock()
    with clock("read"):
        group = _arrays(shared.run, shared.stamp)
    with clock("compute"):
        cdip.set_deterministic()
        result = cdip.run_member(shared.amplitude, shared.valid, p.cdip,
                                 seed=ghio.member_seed(p.seed, 0, m))
    with clock("write"):
        group["objects"][m] = result.rho
        group["supports"][m] = result.support
        group["r_fourier"][0, m] = result.r_fourier
        group["member_errors"][0, m] = result.final_r_fourier  # completion marker, last
    return float(result.final_r_fourier), clock.seconds


def execute(ctx, params, amplitude, valid) -> dict | None:
    group, todo = ctx.group, None
    if ctx.is_root:
        done = np.isfinite(group["member_errors"][0, :])
        todo = [(0, m) for m in range(params.population) if not done[m]]
    todo = ctx.bcast(todo)
    shared = _Shared(ctx.run_path, amplitude, valid, params, ctx.run_id)
    results = ctx.map(cdip_member, todo, shared, names=[f"cdip-m{m:03d}" for _, m in todo],
                      desc="cdip members")
    if not ctx.is_root:
        return None
    for _, seconds in results:
        ctx.clock.merge(seconds)
    errors = group["member_errors"][0, :]
    if not np.isfinite(errors).all():
        raise RuntimeError("cdip: members without a stored result")
    group["errors"][0, :] = errors
    order = np.argsort(errors, kind="stable")
    group.attrs.update({"best": [int(order[0])], "generations_complete": 1})
    return {"best_member": int(order[0]), "best_error": float(errors[order[0]]),
            "median_error": float(np.median(errors)), "n_members": params.population}
