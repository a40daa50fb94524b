"""`lensfree fit core-shell` on a simulated ensemble: the diameters, back ends, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from lensfree.launch.cli import main
from lensfree.launch.stage_fit import parse_grid


@pytest.fixture(scope="module")
def summed(ensemble_store, tmp_path_factory):
    """The shared 1500-frame ensemble of 19 / 55 nm spheres after stage 1 (64 x 64, 2.6 nm)."""
    out = str(tmp_path_factory.mktemp("fit") / "run.zarr")
    assert main(["sum", ensemble_store, "--out", out, "--quiet"]) == 0
    return out


def test_fit_finds_the_simulated_diameters_within_one_grid_step(summed, ensemble_params,
                                                                capsys):
    assert main(["fit", "core-shell", summed, "--inner", "16:21:0.5", "--outer", "53:58:0.5",
                 "--quiet"]) == 0
    assert "best inner" in capsys.readouterr().out
    fit = zarr.open_group(summed, mode="r")["fit"]
    a = fit.attrs
    assert a["complete"] is True and a["unit"] == "nm"
    assert abs(a["best_inner"] - ensemble_params.inner_diameter_m * 1e9) <= 0.5
    assert abs(a["best_outer"] - ensemble_params.outer_diameter_m * 1e9) <= 0.5
    erf = fit["erf"][...]
    assert erf.shape == (11, 11) and np.nanmin(erf) == a["best_erf"] < 15
    np.testing.assert_allclose(fit["inner"][...], np.arange(16, 21.01, 0.5))
    assert fit["model"].shape == fit["region"].shape == (64, 64)
    assert a["speckle_diameter"] > 0 and a["n_pixels"] == fit["region"][...].sum()


def test_pixels_and_dask_agree_with_nm(summed, tmp_path):
    """In real-space pixels (2.6 nm here) on two Dask workers: the same particle."""
    assert main(["fit", "core-shell", summed, "--pixels", "--inner", "6:8.5:0.25", "--outer",
                 "20:22.5:0.25", "--quiet", "--backend", "dask", "--workers", "2",
                 "--dashboard-address", ":0"]) == 0
    run = zarr.open_group(summed, mode="r")
    a = run["fit"].attrs
    pixel_nm = run["ensemble"].attrs["real_space_pixel_m"] * 1e9
    assert a["unit"] == "px"
    assert abs(a["best_inner"] * pixel_nm - 19) <= 0.25 * pixel_nm + 0.5
    assert abs(a["best_outer"] * pixel_nm - 55) <= 0.25 * pixel_nm + 0.5


def test_parse_grid():
    assert parse_grid("16:17:0.5") == (16.0, 16.5, 17.0)
    assert parse_grid("0.1:0.3:0.1") == (0.1, 0.2, 0.3)  # stop included despite rounding
    assert parse_grid("19") == (19.0,)
    assert parse_grid("18, 19") == (18.0, 19.0)


def _err(capsys, argv):
    code = main(argv)
    return code, capsys.readouterr().err.strip()


@pytest.mark.parametrize("args,needle", [
    (["--inner", "21:16:0.5"], "--inner 21:16:0.5: no grid points"),
    (["--outer", "53:58:0"], "--outer 53:58:0: no grid points"),
    (["--inner", "a:b"], "--inner a:b"),
    (["--inner", "60", "--outer", "50"], "inner < outer"),
])
def test_empty_or_bad_grids_are_one_line_errors(summed, capsys, args, needle):
    code, err = _err(capsys, ["fit", "core-shell", summed, *args])
    assert code == 2 and needle in err and len(err.splitlines()) == 1


def test_store_without_geometry_needs_pixels(tmp_path, capsys):
    path = str(tmp_path / "obj.zarr")
    assert main(["simulate", "object", "--out", path, "--size", "32"]) == 0
    code, err = _err(capsys, ["fit", "core-shell", path])
    assert code == 2 and path in err and "--pixels" in err
    code, err = _err(capsys, ["fit", "core-shell", str(tmp_path / "none.zarr")])
    assert code == 2 and "none.zarr" in err
