"""``lensfree export``: ptycho and gather results through CXI 1.6 and back."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import zarr

from lensfree.io.readers.cxi import _positions
from lensfree.launch.cli import main


@pytest.fixture(scope="module")
def ptycho_run(tmp_path_factory):
    """A near-field run (so the object pixel, 200 nm, is known) with refined positions."""
    d = tmp_path_factory.mktemp("export")
    frames, run = str(d / "f.zarr"), str(d / "run.zarr")
    assert main(["simulate", "ptycho", "--out", frames, "--positions", "30", "--size", "32",
                 "--position-error", "1"]) == 0
    zarr.open_group(frames, mode="r+").attrs.update(
        {"propagation": "near-field", "wavelength_m": 1e-10, "distance_m": 2e-3,
         "pixel_size_m": 2e-7})
    assert main(["ptycho", frames, "--out", run, "--iterations", "6", "--probe-modes", "2",
                 "--refine-positions", "--refine-start", "2", "--quiet"]) == 0
    return run


def test_ptycho_round_trip(ptycho_run, tmp_path):
    out = str(tmp_path / "run.cxi")
    assert main(["export", ptycho_run, out]) == 0
    g = zarr.open_group(ptycho_run, mode="r")["ptycho"]
    with h5py.File(out, "r") as f:
        assert int(f["cxi_version"][()]) == 160
        assert f["entry_1/image_1/data_type"][()].decode() == "object"
        np.testing.assert_array_equal(f["entry_1/image_1/data"][...], g["object"][...])
        np.testing.assert_array_equal(f["entry_1/data_1/data"][...], g["object"][...])
        np.testing.assert_array_equal(f["entry_1/image_2/data"][...], g["probe"][...])
        assert f["entry_1/instrument_1/source_1/probe"].shape == (2, 32, 32)
        assert f["entry_1/image_1/x_pixel_size"][()] == pytest.approx(2e-7)
        np.testing.assert_array_equal(f["entry_1/image_1/process_1/errors"][...],
                                      g["errors"][...])
        for k, name in ((1, "positions"), (2, "positions_initial")):
            geo = f[f"entry_1/sample_1/geometry_{k}/translation"]
            assert geo.attrs["units"] == "m"
            # our CXI reader turns the translations back into probe positions (m)
            back = _positions(f, out, geo.name, g[name].shape[0]) / 2e-7
            np.testing.assert_allclose(back, g[name][...], atol=1e-9)
        moved = (f["entry_1/sample_1/geometry_1/translation"][...]
                 - f["entry_1/sample_1/geometry_2/translation"][...])
        assert np.abs(moved).max() > 1e-9  # refined and initial differ
        params = f["entry_1/image_1/process_1/configuration"][()].decode()
        assert '"iterations": 6' in params or '"iterations":6' in params


def test_gather_round_trip_and_refusals(ptycho_run, tmp_path, capsys):
    run = str(tmp_path / "g.zarr")
    rng = np.random.default_rng(0)
    g = zarr.open_group(run, mode="w").create_group("gather")
    average = (rng.normal(size=(16, 16)) + 1j * rng.normal(size=(16, 16))).astype(np.complex64)
    g.create_array("average", data=average)
    g.create_array("prtf", data=np.linspace(1, 0, 8))
    g.create_array("q", data=np.arange(8) / 16)
    g.attrs.update({"resolution_px": 3.5, "real_space_pixel_m": 1e-8})
    out = str(tmp_path / "g.cxi")
    assert main(["export", run, out]) == 2  # not complete: refused
    assert "no finished" in capsys.readouterr().err
    g.attrs["complete"] = True
    assert main(["export", run, out]) == 0
    with h5py.File(out, "r") as f:
        np.testing.assert_array_equal(f["entry_1/image_3/data"][...], average)
        np.testing.assert_array_equal(f["entry_1/image_3/process_1/prtf"][...],
                                      np.linspace(1, 0, 8))
        assert f["entry_1/image_3/x_pixel_size"][()] == pytest.approx(1e-8)
        np.testing.assert_array_equal(f["entry_1/data_1/data"][...], average)
    assert main(["export", ptycho_run, out, "--groups", "gather"]) == 2
