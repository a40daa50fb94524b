"""Stores other tools open: xarray reads every group lensfree writes."""

from __future__ import annotations

import os
import warnings

import pytest
import zarr

from lensfree.launch.cli import main

xr = pytest.importorskip("xarray")


def _open_every_group(path: str) -> dict:
    opened = {}
    root = zarr.open_group(path, mode="r")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a non-Zarr file in the store would warn here
        names = ["", *sorted(root.group_keys())]
    for name in names:
        ds = xr.open_zarr(path, group=name or None, consolidated=False)
        opened[name] = ds
    return opened


def test_xarray_opens_every_group_of_a_run_and_of_frame_stores(tmp_path):
    run = str(tmp_path / "run.zarr")
    assert main(["simulate", "object", "--out", run, "--size", "32", "--seed", "1"]) == 0
    assert main(["phase", run, "--population", "4", "--generations", "2", "--schedule",
                 "HIO:20,ER:10", "--quiet"]) == 0
    assert main(["gather", run, "--fraction", "1", "--quiet"]) == 0
    assert main(["fit", "core-shell", run, "--pixels", "--inner", "2,3", "--outer", "6,7",
                 "--quiet"]) == 0
    groups = _open_every_group(run)
    assert groups["phasing"]["objects"].dims == ("member", "y", "x")
    assert groups["phasing"]["objects"].shape == (4, 32, 32)
    assert groups["gather"]["prtf"].dims == ("shell",)
    assert groups["fit"]["erf"].shape == (2, 2)
    assert not [f for f in os.listdir(run) if f not in ("zarr.json", *groups)]

    frames = str(tmp_path / "frames.zarr")
    assert main(["simulate", "ensemble", "--out", frames, "--frames", "40", "--size", "64",
                 "--quiet"]) == 0
    assert _open_every_group(frames)[""]["frames"].dims == ("frame", "y", "x")
    summed = str(tmp_path / "sum.zarr")
    assert main(["sum", frames, "--out", summed, "--quiet"]) == 0
    ensemble = _open_every_group(summed)["ensemble"]
    assert ensemble["sum"].dims == ("detector_y", "detector_x")
    assert ensemble["frame_status"].shape == (40,)

    scan, ptycho = str(tmp_path / "scan.zarr"), str(tmp_path / "ptycho.zarr")
    assert main(["simulate", "ptycho", "--out", scan, "--positions", "16", "--size", "32"]) == 0
    assert main(["ptycho", scan, "--out", ptycho, "--iterations", "2", "--quiet"]) == 0
    assert _open_every_group(scan)["truth"]["probe"].dims == ("mode", "y", "x")
    assert _open_every_group(ptycho)["ptycho"]["positions"].dims == ("position", "axis")
