"""The run store: groups begin incomplete, finish with ``complete: true`` last."""

import numpy as np
import pytest
import zarr

from lensfree.errors import LensfreeError
from lensfree.io import runstore


def test_a_stage_group_is_incomplete_until_finished(tmp_path):
    path = str(tmp_path / "run.zarr")
    run = runstore.open_run(path)
    group = runstore.begin_stage(run, "ensemble", params={"binning": 2}, inputs={"x": 1})
    assert group.attrs["complete"] is False and len(group.attrs["run_id"]) == 32
    with pytest.raises(LensfreeError, match="never completed"):
        runstore.require_complete(path, "ensemble")
    runstore.write_array(group, "sum", np.arange(6.0).reshape(2, 3))
    runstore.finish_stage(group, n_valid=np.int64(5), ratio=float("nan"))
    done = runstore.require_complete(path, "ensemble")
    assert done.attrs["complete"] is True and done.attrs["n_valid"] == 5
    assert done.attrs["ratio"] is None and done.attrs["parameters"] == {"binning": 2}
    assert done["sum"][...].tolist() == [[0, 1, 2], [3, 4, 5]]
    again = runstore.begin_stage(runstore.open_run(path), "ensemble", params={}, inputs={})
    assert again.attrs["run_id"] != done.attrs["run_id"] and "sum" not in again


def test_bad_run_stores_are_one_line_errors(tmp_path):
    with pytest.raises(LensfreeError, match="no such run store"):
        runstore.open_run(str(tmp_path / "none.zarr"), mode="r")
    (tmp_path / "file.zarr").write_text("x")
    with pytest.raises(LensfreeError, match="is a file"):
        runstore.open_run(str(tmp_path / "file.zarr"))
    zarr.open_group(str(tmp_path / "r.zarr"), mode="w")
    with pytest.raises(LensfreeError, match="has no 'phasing' group"):
        runstore.require_complete(str(tmp_path / "r.zarr"), "phasing")
    assert runstore.jsonable({"a": (np.float32(1.5), np.arange(2))}) == {"a": [1.5, [0, 1]]}
