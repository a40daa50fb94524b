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
    assert "px at most by refinement" in summary
    assert not (out / "frc.png").exists()  # no --split-frc: no FRC figure


def test_report_draws_the_split_frc(tmp_path):
    """--split-frc: the FRC of the halves is stored (1 at low frequencies, a half-bit
    crossing reported) and the report draws and states it."""
    import zarr

    frames, run, out = tmp_path / "f.zarr", tmp_path / "run.zarr", tmp_path / "rep"
    assert main(["simulate", "ptycho", "--out", str(frames), "--positions", "60", "--size",
                 "32", "--photons", "1e5"]) == 0
    assert main(["ptycho", str(frames), "--out", str(run), "--iterations", "30",
                 "--split-frc", "--quiet"]) == 0
    g = zarr.open_group(str(run), mode="r")["ptycho"]
    frc, threshold = g["frc"][...], g["frc_threshold"][...]
    assert frc.shape == threshold.shape == g["frc_frequency"].shape
    assert frc[1:4].min() > 0.8  # the halves agree on the object's coarse structure
    assert g.attrs["frc_resolution_px"] >= 2.0 and g.attrs["frc_resolution_m"] is None
    assert main(["report", str(run), "--out", str(out)]) == 0
    image = np.asarray(Image.open(out / "frc.png").convert("L"), dtype=float)
    assert image.shape[0] > 300 and image.std() > 5
    assert "resolution (FRC of two interleaved halves, half-bit)" in (out / "summary.md"
                                                                      ).read_text()
