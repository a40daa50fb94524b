"""`lensfree report` on a ptychography run: object, probe, errors and the scan figure."""

import numpy as np
from PIL import Image

from lensfree.launch.cli import main


def test_report_draws_a_ptycho_run(tmp_path):
    frames, run, out = tmp_path / "f.zarr", tmp_path / "run.zarr", tmp_path / "rep"
    assert main(["simulate", "ptycho", "--out", str(frames), "--positions", "40", "--size",
                 "32", "--position-error", "1.5"]) == 0
    assert main(["ptycho", str(frames), "--out", str(run), "--iterations", "8",
                 "--refine-positions", "--refine-start", "2", "--quiet"]) == 0
    assert main(["report", str(run), "--out", str(out)]) == 0
    for name in ("object.png", "probe.png", "ptycho_errors.png", "scan.png"):
        image = np.asarray(Image.open(out / name).convert("L"), dtype=float)
        assert image.shape[0] > 300 and image.std() > 5, name
    summary = (out / "summary.md").read_text()
    assert "## Ptychography" in summary and "40 positions" in summary
    assert "engine parallel" in summary
