"""`lensfree report`: PNG figures a test opens, and the Markdown summary."""

from __future__ import annotations

import os

import numpy as np
import pytest
import zarr
from PIL import Image

from lensfree.errors import LensfreeError
from lensfree.io.report import write_report
from lensfree.launch.cli import main

FIGURES = ("pattern.png", "frame_status.png", "members.png", "errors.png", "average.png",
           "prtf.png", "fit.png")


@pytest.fixture(scope="module")
def full_run(ensemble_store, tmp_path_factory):
    """The shared ensemble through every stage: sum, a small phasing, gather, fit."""
    run = str(tmp_path_factory.mktemp("report") / "run.zarr")
    assert main(["sum", ensemble_store, "--out", run, "--quiet"]) == 0
    assert main(["phase", run, "--population", "6", "--generations", "2", "--schedule",
                 "HIO:100,ER:50;shrinkwrap=50", "--positivity", "real", "--quiet"]) == 0
    assert main(["gather", run, "--fraction", "0.5", "--quiet"]) == 0
    assert main(["fit", "core-shell", run, "--quiet"]) == 0
    return run


def _picture(path) -> np.ndarray:
    img = Image.open(path)
    assert img.format == "PNG"
    assert img.size[0] >= 500 and img.size[1] >= 300, img.size
    rgb = np.asarray(img.convert("RGB"), dtype=float)
    assert rgb.std() > 10  # a picture, not a blank canvas
    return rgb


def _has_colour(rgb, colour, tol=40) -> bool:
    return bool((np.abs(rgb - np.asarray(colour, float)).max(axis=-1) < tol).sum() > 20)


def test_report_draws_every_stage(full_run, tmp_path):
    out = tmp_path / "report"
    paths = write_report(full_run, str(out))
    assert sorted(os.path.basename(p) for p in paths) == sorted([*FIGURES, "summary.md"])
    pictures = {name: _picture(out / name) for name in FIGURES}
    assert _has_colour(pictures["prtf.png"], (214, 39, 40))  # the red 1/e line
    assert _has_colour(pictures["fit.png"], (255, 0, 0))  # the red star at the minimum
    text = (out / "summary.md").read_text()
    a = zarr.open_group(full_run, mode="r")
    res_nm = a["gather"].attrs["resolution_m"] * 1e9
    assert f"({res_nm:.2f} nm)" in text
    fit = a["fit"].attrs
    assert f"inner {fit['best_inner']:g} nm, outer {fit['best_outer']:g} nm" in text
    assert "R-factor of the average" in text and "accepted" in text
    for name in FIGURES:
        assert f"({name})" in text


def test_report_of_the_groups_a_caller_names_in_its_order(full_run, tmp_path):
    out = tmp_path / "some"
    paths = write_report(full_run, str(out), groups=["gather", "fit", "phasing"])
    # fit.png draws on ensemble/ too, which was not asked for
    assert [os.path.basename(p) for p in paths] == ["average.png", "prtf.png", "members.png",
                                                    "errors.png", "summary.md"]
    text = (out / "summary.md").read_text()
    assert text.index("## Gather") < text.index("## Core-shell fit") < text.index("## Phasing")
    assert "## Ensemble" not in text and "| ensemble |" not in text
    with pytest.raises(LensfreeError, match="no finished stage to report on"):
        write_report(full_run, str(tmp_path / "none"), groups=["ptycho"])


def test_report_of_a_store_with_ensemble_only(tmp_path, capsys):
    run = str(tmp_path / "obj.zarr")
    assert main(["simulate", "object", "--out", run, "--size", "64"]) == 0
    assert main(["report", run]) == 0
    out = tmp_path / "obj-report"  # next to the store by default
    assert sorted(os.listdir(out)) == ["pattern.png", "summary.md"]
    _picture(out / "pattern.png")
    assert "## Phasing" not in (out / "summary.md").read_text()


def test_report_bad_input_is_a_one_line_error(tmp_path, capsys):
    code = main(["report", str(tmp_path / "missing.zarr")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "missing.zarr" in err and len(err.splitlines()) == 1
    run = str(tmp_path / "obj.zarr")
    assert main(["simulate", "object", "--out", run, "--size", "32"]) == 0
    zarr.open_group(os.path.join(run, "ensemble"), mode="r+").attrs["complete"] = False
    code = main(["report", run, "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and run in err and "no finished stage" in err
