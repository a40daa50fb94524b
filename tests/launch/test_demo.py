"""`lensfree demo` and `lensfree simulate` through the CLI."""

import numpy as np
import zarr
from PIL import Image

from lensfree.launch.cli import main


def test_demo_runs_end_to_end_and_writes_a_figure(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--frames", "300", "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "streak frames caught 6/6" in text
    png = Image.open(out / "ensemble.png")
    assert png.size[0] > 500 and png.size[1] > 300
    pixels = np.asarray(png.convert("L"), dtype=float)
    assert pixels.std() > 10  # a picture, not a blank canvas
    run = zarr.open_group(str(out / "run.zarr"), mode="r")
    assert run["ensemble"].attrs["complete"] is True
    assert run["phasing"].attrs["complete"] is True
    assert run["phasing/errors"].shape == (3, 20)
    assert Image.open(out / "phasing.png").size[0] > 500
    # stage 3: the average of the best 8, scored against the simulated particle, and the
    # core-shell fit on the paper's 0.5 nm grid
    assert "SSIM against the simulated particle" in text and "(true 19 / 55 nm)" in text
    gather, fit = run["gather"].attrs, run["fit"].attrs
    assert gather["complete"] is True and gather["n_selected"] == 8
    assert gather["ssim"] > 0.75, gather["ssim"]
    assert 1 <= gather["resolution_px"] < 6 and gather["resolution_m"] < 16e-9
    assert abs(fit["best_inner"] - 19) <= 0.5 and abs(fit["best_outer"] - 55) <= 0.5
    report = out / "report"
    assert (report / "summary.md").exists() and len(list(report.glob("*.png"))) == 7


def test_simulate_ensemble_plants_bad_frames_and_writes_truth(tmp_path, capsys):
    out = str(tmp_path / "f.zarr")
    assert main(["simulate", "ensemble", "--out", out, "--frames", "200", "--size", "64",
                 "--dtype", "uint16", "--quiet"]) == 0
    g = zarr.open_group(out, mode="r")
    assert g["frames"].shape == (200, 64, 64) and g["frames"].dtype == np.uint16
    truth = g.attrs["truth"]
    assert len(truth["weak"]) == 4 and len(truth["streak"]) == 4 and truth["invalid"] == []
    assert g["mask"][...].sum() < 64 * 64


def test_simulate_refuses_invalid_frames_in_unsigned_store(tmp_path, capsys):
    code = main(["simulate", "ensemble", "--out", str(tmp_path / "f.zarr"), "--dtype",
                 "uint16", "--invalid-fraction", "0.1", "--quiet"])
    assert code == 2 and "invalid" in capsys.readouterr().err


def test_killed_simulation_leaves_no_store_that_looks_whole(tmp_path):
    import os
    import signal
    import subprocess
    import time

    from tests.conftest import lensfree_exe

    out = tmp_path / "f.zarr"
    cmd = [*lensfree_exe(), "simulate", "ensemble", "--out", str(out), "--frames", "3000",
           "--size", "128", "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if (tmp_path / "f.zarr.partial" / "frames" / "c").exists():  # frames being written
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.01)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the simulation ended before it was killed"
    assert not out.exists()
    assert main(["simulate", "ensemble", "--out", str(out), "--frames", "100", "--size", "64",
                 "--quiet"]) == 0
    assert out.exists() and not (tmp_path / "f.zarr.partial").exists()
