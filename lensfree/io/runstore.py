"""The run store: one Zarr group per stage, marked complete as its very last write."""

from __future__ import annotations

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


def begin_stage(run: zarr.Group, name: str, params: dict, inputs: dict) -> zarr.Group:
    """Start a stage's group afresh: it stays ``complete: false`` until `finish_stage`.

    The attrs record the lensfree version, the full parameters and the input read, so the
    result can be reproduced from the store alone.
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
    }))


def finish_stage(group: zarr.Group, **attrs) -> None:
    """Write the stage's summary attrs, then ``complete: true`` last."""
    group.attrs.update({**jsonable(attrs), "finished": _now()})
    group.attrs["complete"] = True


def is_complete(run: zarr.Group, name: str) -> bool:
    return name in run and bool(run[name].attrs.get("complete", False))


def require_complete(path: str, name: str) -> zarr.Group:
    """The group of a finished stage, or a one-line error saying what to run first."""
    run = open_run(path, mode="r")
    if name not in run:
        raise LensfreeError(f"{path}: has no '{name}' group; run that stage first")
    if not is_complete(run, name):
        raise LensfreeError(f"{path}: stage '{name}' never completed; rerun it")
    return run[name]


def write_array(group: zarr.Group, name: str, data, *, chunks=None) -> zarr.Array:
    """Write a whole array into ``group`` (replacing any array of that name)."""
    data = np.asarray(data)
    return group.create_array(
        name, data=data, chunks=chunks or data.shape or "auto", overwrite=True
    )


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
