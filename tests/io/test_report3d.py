"""`lensfree report` of a 3D run: central slices and a projection, PRTF over shells."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from lensfree.io.report import write_report
from lensfree.io.report.volume import object_centre
from lensfree.launch.cli import main
from tests.launch.test_phase3d import crystal, write_volume_run


@pytest.fixture(scope="module")
def volume_run(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("report3d") / "run.zarr")
    write_volume_run(path, crystal())
    assert main(["phase", path, "--population", "2", "--generations", "2", "--schedule",
                 "HIO:200,ER:50;shrinkwrap=25", "--quiet"]) == 0
    assert main(["gather", path, "--fraction", "1", "--quiet"]) == 0
    return path


def test_report_of_a_3d_run_draws_slices_and_a_projection(volume_run, tmp_path):
    out = tmp_path / "report"
    paths = write_report(volume_run, str(out))
    names = sorted(os.path.basename(p) for p in paths)
    assert names == sorted(["pattern.png", "members.png", "errors.png", "average.png",
                            "prtf.png", "summary.md"])
    for name, (least_w, least_h) in {"pattern.png": (1500, 400), "members.png": (1500, 1400),
                                     "average.png": (1500, 700), "prtf.png": (600, 400)}.items():
        img = Image.open(out / name)
        assert img.size[0] >= least_w and img.size[1] >= least_h, (name, img.size)
        rgb = np.asarray(img.convert("RGB"), float)
        assert rgb.std() > 10, name
    text = (out / "summary.md").read_text()
    assert "amplitude 32 x 32 x 32" in text and "valid voxels" in text


def test_slices_pass_through_the_body_wherever_it_sits():
    obj = np.zeros((20, 20, 20), np.complex64)
    obj[2:7, 11:15, 0:3] = 1
    assert object_centre(obj) == (4, 12, 1)
    assert object_centre(np.zeros((4, 6, 8))) == (2, 3, 4)
