"""``lensfree phase --engine cdip``: the store contract, back ends, resume, bad options,
and the one-line error without torch."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import zarr

from lensfree.launch.cli import main
from tests.conftest import lensfree_exe, mpiexec

pytest.importorskip("torch")

# small and short: the back ends must agree, recovery is tests/engine/test_cdip.py's job
CDIP = ["--engine", "cdip", "--population", "2", "--epochs", "40", "--hidden", "24",
        "--layers", "2", "--seed", "5", "--quiet"]


@pytest.fixture(scope="module")
def object_run(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("cdipobj") / "obj.zarr")
    assert main(["simulate", "object", "--out", path, "--size", "32", "--photons", "1e9",
                 "--missing-radius", "2", "--seed", "2"]) == 0
    return path


@pytest.fixture(scope="module")
def local_cdip(object_run, tmp_path_factory):
    path = str(tmp_path_factory.mktemp("cdiplocal") / "run.zarr")
    shutil.copytree(object_run, path)
    assert main(["phase", path, *CDIP]) == 0
    return path


def _same(a: str, b: str, exact: bool = True):
    pa, pb = (zarr.open_group(p, mode="r")["phasing"] for p in (a, b))
    objs_a, objs_b = pa["objects"][...], pb["objects"][...]
    if exact:  # one torch thread, deterministic kernels: the same bits in any process
        assert np.array_equal(objs_a, objs_b)
        assert np.array_equal(pa["errors"][...], pb["errors"][...])
    else:
        assert np.linalg.norm(objs_a - objs_b) <= 1e-5 * np.linalg.norm(objs_a)
        np.testing.assert_allclose(pa["errors"][...], pb["errors"][...], rtol=1e-5)


def test_store_has_the_ghio_layout_and_gather_report_read_it(local_cdip, tmp_path):
    ph = zarr.open_group(local_cdip, mode="r")["phasing"]
    assert ph.attrs["complete"] is True and ph.attrs["engine"] == "cdip"
    assert ph.attrs["parameters"]["generations"] == 1
    errors = ph["errors"][...]
    assert errors.shape == (1, 2) and np.isfinite(errors).all()
    assert ph["objects"].shape == (2, 32, 32) and ph["objects"].chunks == (1, 32, 32)
    assert ph["supports"].dtype == bool and ph["supports"][...].any()
    # every member is its own seed: different objects
    objs = ph["objects"][...]
    assert not np.array_equal(objs[0], objs[1])
    r_f = ph["r_fourier"][0]
    assert r_f.shape == (2, 40) and (r_f[:, -1] < r_f[:, 0]).all()
    assert ph.attrs["best_member"] == int(np.argmin(errors[0]))
    assert main(["gather", local_cdip, "--fraction", "1", "--quiet"]) == 0
    out = str(tmp_path / "report")
    assert main(["report", local_cdip, "--out", out]) == 0
    assert os.path.exists(os.path.join(out, "members.png"))


def test_dask_two_workers_agree_with_local(object_run, local_cdip, tmp_path):
    path = str(tmp_path / "run.zarr")
    shutil.copytree(object_run, path)
    assert main(["phase", path, *CDIP, "--backend", "dask", "--workers", "2",
                 "--dashboard-address", ":0"]) == 0
    _same(path, local_cdip)


@pytest.mark.timeout(240)
@pytest.mark.skipif(mpiexec() is None, reason="no mpiexec (pip install 'lensfree[mpi]')")
def test_mpiexec_two_ranks_agree_with_local(object_run, local_cdip, tmp_path):
    path = str(tmp_path / "run.zarr")
    shutil.copytree(object_run, path)
    cmd = [mpiexec(), "-n", "2", *lensfree_exe(), "phase", path, *CDIP, "--backend", "mpi"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=200)
    assert proc.returncode == 0, proc.stderr
    _same(path, local_cdip)


@pytest.mark.timeout(240)
def test_killed_mid_member_then_rerun_equals_uninterrupted(object_run, local_cdip, tmp_path):
    path = str(tmp_path / "run.zarr")
    shutil.copytree(object_run, path)
    proc = subprocess.Popen([*lensfree_exe(), "phase", path, *CDIP], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline, killed = time.monotonic() + 120, None
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            done = np.isfinite(zarr.open_group(path, mode="r")["phasing/member_errors"][...])
        except Exception:  # the group is being created
            done = np.zeros((1, 2), bool)
        if done.sum() >= 1:  # member 0 stored, member 1 mid-training
            os.killpg(proc.pid, signal.SIGKILL)
            killed = done.copy()
            break
        time.sleep(0.01)
    proc.wait()
    if killed is None or killed.all():
        pytest.fail("the run finished before it could be killed: make it longer")
    assert zarr.open_group(path, mode="r")["phasing"].attrs["complete"] is False
    assert main(["phase", path, *CDIP]) == 0
    _same(path, local_cdip)


@pytest.mark.parametrize("args,needle", [
    (["--epochs", "0"], "--epochs 0"),
    (["--loss", "huber"], "--loss huber"),
    (["--learning-rate", "0"], "--learning-rate"),
    (["--anchor-growth", "2"], "--anchor-growth"),
    (["--device", "tpu"], "--device tpu"),
])
def test_bad_options_are_one_line_errors(object_run, tmp_path, capsys, args, needle):
    path = str(tmp_path / "run.zarr")
    shutil.copytree(object_run, path)
    code = main(["phase", path, "--engine", "cdip", *args])
    err = capsys.readouterr().err.strip()
    assert code == 2 and needle in err and len(err.splitlines()) == 1, err
    assert "phasing" not in zarr.open_group(path, mode="r")


def test_without_torch_a_one_line_error_naming_the_extra(object_run, tmp_path):
    path = str(tmp_path / "run.zarr")
    shutil.copytree(object_run, path)
    # torch made unimportable in a fresh interpreter; GHIO still runs there
    code = ("import sys; sys.modules['torch'] = None; from lensfree.launch.cli import main; "
            "sys.exit(main(sys.argv[1:]))")
    proc = subprocess.run([sys.executable, "-c", code, "phase", path, "--engine", "cdip"],
                          capture_output=True, text=True, timeout=120)
    lines = [ln for ln in proc.stderr.splitlines() if "error" in ln]
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and "pip install 'lensfree[cdip]'" in lines[0], proc.stderr
    assert "phasing" not in zarr.open_group(path, mode="r")
    proc = subprocess.run([sys.executable, "-c", code, "phase", path, "--population", "2",
                           "--generations", "1", "--schedule", "HIO:20", "--quiet"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
