"""The run store: one Zarr group per stage, marked complete as its very last write.

Provenance: a stage's group records in its attr ``read`` the ``run_id`` of every group it
read. A group whose recorded inputs have since been rewritten (or are unfinished, or stale
themselves) is *stale* (`state`): it is never presented as complete, and a rerun recomputes
it. One process writes a store at a time (`lock`).
"""

from __future__ import annotations

import asyncio
import datetime
import os
import uuid

import numpy as np
import zarr

import lensfree
from lensfree.errors import LensfreeError


def open_run(path: str, mode: str = "a") -> zarr.Group:
    """Open (create with mode "a") a run store."""
    if mode == "r" and not os.path.exists(path):
        raise LensfreeError(f"{path}: no such run store")
    if os.path.isfile(path):
        raise LensfreeError(f"{path}: is a file, expected a Zarr run store directory")
    try:
        return zarr.open_group(path, mode=mode)
    except Exception as exc:
        raise LensfreeError(f"{path}: not a Zarr v3 store ({exc.__class__.__name__})") from None


def begin_stage(run: zarr.Group, name: str, params: dict, inputs: dict, *,
                read: dict | None = None, command: str | None = None) -> zarr.Group:
    """Start a stage's group afresh: it stays ``complete: false`` until `finish_stage`.

    The attrs record the lensfree version, the full parameters, the input read, the
    ``run_id`` of every group read (``read``, see `state`) and the command that wrote it, so
    the result can be reproduced from the store alone.
    """
    if name in run:
        del run[name]
    # the group appears with its attrs in one write: never without ``complete: false``
    return run.create_group(name, attributes=jsonable({
        "complete": False,
        "run_id": uuid.uuid4().hex,  # tells this incarnation of the group from earlier ones
        "lensfree_version": lensfree.__version__,
        "started": _now(),
        "parameters": params,
        "input": inputs,
        "read": read or {},
        "command": command,
    }))


def finish_stage(group: zarr.Group, **attrs) -> None:
    """Write the stage's summary attrs, then ``complete: true`` last."""
    group.attrs.update({**jsonable(attrs), "finished": _now()})
    group.attrs["complete"] = True


def is_complete(run: zarr.Group, name: str) -> bool:
    """True when group ``name`` is complete and not stale."""
    return state(run, name) == "complete"


def state(run: zarr.Group, name: str) -> str:
    """``"absent"``, ``"unfinished"``, ``"stale"`` (a group it read was rewritten since, or
    is not complete itself) or ``"complete"``."""
    if name not in run:
        return "absent"
    attrs = run[name].attrs
    if not attrs.get("complete", False):
        return "unfinished"
    for upstream, run_id in (attrs.get("read") or {}).items():
        if state(run, upstream) != "complete" or run[upstream].attrs.get("run_id") != run_id:
            return "stale"
    return "complete"


def read_record(run: zarr.Group, names) -> dict:
    """``{group: run_id}`` of the groups a stage reads, for its ``read`` attr."""
    return {name: run[name].attrs.get("run_id") for name in names if name in run}


def require_complete(path: str, name: str) -> zarr.Group:
    """The group of a finished, current stage, or a one-line error saying what to run."""
    run = open_run(path, mode="r")
    found = state(run, name)
    command = run[name].attrs.get("command") if name in run else None
    again = f" (lensfree {command.replace('.', ' ')})" if command else ""
    if found == "absent":
        raise LensfreeError(f"{path}: has no '{name}' group; run that stage first")
    if found == "unfinished":
        raise LensfreeError(f"{path}: stage '{name}' never completed; rerun it{again}")
    if found == "stale":
        changed = [g for g, rid in run[name].attrs["read"].items()
                   if state(run, g) != "complete" or run[g].attrs.get("run_id") != rid]
        raise LensfreeError(f"{path}: stage '{name}' is stale: {', '.join(changed)} changed "
                            f"since it was computed; rerun it{again}")
    return run[name]


#: dimension names of the arrays lensfree writes, by (group, array); spatial ones list
#: (z, y, x) and a 2D array takes the last two. xarray needs names on every array, and
#: arrays of one group that share a name must share its length.
_SPACE = ("z", "y", "x")
_DETECTOR = ("detector_z", "detector_y", "detector_x")
_OBJECT = ("object_z", "object_y", "object_x")
DIMENSIONS = {
    **{("ensemble", a): _DETECTOR for a in ("sum", "background", "mask", "patched", "filled")},
    **{("ensemble", a): ("frame",) for a in ("frame_status", "frame_total", "frame_chi2")},
    **{("ensemble", a): _SPACE for a in ("amplitude", "valid", "support")},
    **{("phasing", a): ("member", *_SPACE) for a in ("objects", "supports")},
    **{("phasing", a): ("slot", "member", *_SPACE) for a in ("population",
                                                              "population_support")},
    **{("phasing", a): ("generation", "member") for a in ("errors", "member_errors")},
    **{("phasing", a): ("generation", "member", "iteration") for a in ("r_fourier",
                                                                       "e_support")},
    ("gather", "average"): _SPACE, ("gather", "prtf"): ("shell",), ("gather", "q"): ("shell",),
    **{("gather", a): ("selected",) for a in ("selected", "twin", "correlation")},
    ("gather", "shifts"): ("selected", "axis"),
    **{("fit", a): ("inner", "outer") for a in ("erf", "scale", "offset")},
    ("fit", "inner"): ("inner",), ("fit", "outer"): ("outer",),
    ("fit", "model"): _SPACE, ("fit", "region"): _SPACE,
    ("ptycho", "object"): _OBJECT, ("ptycho", "probe"): ("mode", *_SPACE),
    **{("ptycho", a): ("position", "axis") for a in ("positions", "positions_initial")},
    ("ptycho", "errors"): ("iteration",),
    ("", "frames"): ("frame", *_SPACE), ("", "mask"): _SPACE,
    ("", "positions"): ("frame", "axis"), ("", "probe"): ("mode", *_SPACE),
    ("truth", "positions"): ("frame", "axis"), ("truth", "probe"): ("mode", *_SPACE),
    ("truth", "object"): _OBJECT, ("truth", "support"): _OBJECT,
}


def dimension_names(group: zarr.Group, name: str, ndim: int) -> tuple[str, ...]:
    """The names of the ``ndim`` dimensions of array ``name`` in ``group``: from
    `DIMENSIONS`, else ``name_0, name_1, ...`` (unique, so never in conflict)."""
    where = group.path.rsplit("/", 1)[-1] if group.path else ""
    known = DIMENSIONS.get((where, name))
    if known is not None and len(known) > ndim:
        known = tuple(d for d in known if d not in (_SPACE[0], _DETECTOR[0], _OBJECT[0]))
    if known is not None and len(known) == ndim:  # a 2D array drops the z of (z, y, x)
        return known
    return tuple(f"{name}_{i}" for i in range(ndim))


def create_array(group: zarr.Group, name: str, *, dims=None, **kwargs) -> zarr.Array:
    """``group.create_array`` with the array's `dimension_names` (xarray opens it)."""
    shape = np.shape(kwargs["data"]) if "data" in kwargs else kwargs["shape"]
    names = dims or dimension_names(group, name, len(shape))
    return group.create_array(name, dimension_names=names, **kwargs)


def write_array(group: zarr.Group, name: str, data, *, chunks=None, dims=None) -> zarr.Array:
    """Write a whole array into ``group`` (replacing any array of that name)."""
    data = np.asarray(data)
    return create_array(group, name, data=data, chunks=chunks or data.shape or "auto",
                        overwrite=True, dims=dims)


def write_together(writes, last=None) -> None:
    """Write ``(array, selection, value)`` items in one pass of zarr's event loop, then
    ``last`` (one more item, or None) once every one of them has finished.

    Each zarr write on its own costs about 1 ms of CPU in zarr's machinery (a round trip
    to its event-loop thread), more than compressing a 256^2 phasing object; the items
    and ``last`` together cost about one. ``last`` is for a completion marker: it is
    written only after all the others, and all have finished when this returns.
    """
    from zarr.core.sync import sync

    async def together():
        await asyncio.gather(*(a.async_array.setitem(sel, v) for a, sel, v in writes))
        if last is not None:
            await last[0].async_array.setitem(last[1], last[2])

    sync(together())


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def jsonable(obj):
    """numpy scalars and tuples to plain JSON types for Zarr attrs."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj
