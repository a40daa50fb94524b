"""Operations: a Dask worker killed mid-run, and the dashboard answering while a run goes."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.request

import numpy as np
import pytest
import zarr

from lensfree.launch.backends import DaskBackend
from lensfree.launch.cli import main
from lensfree.launch.stage_phase import PhaseParams, run_phase
from tests.conftest import lensfree_exe

PARAMS = PhaseParams(population=8, generations=2, schedule="HIO:1500,ER:300", seed=4)


@pytest.fixture(scope="module")
def object_run(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("obj") / "obj.zarr")
    assert main(["simulate", "object", "--out", path, "--size", "64", "--photons", "1e9",
                 "--missing-radius", "3", "--seed", "1"]) == 0
    return path


@pytest.mark.timeout(240)
def test_run_survives_a_killed_dask_worker(object_run, tmp_path):
    reference = str(tmp_path / "ref.zarr")
    shutil.copytree(object_run, reference)
    from lensfree.launch.backends import LocalBackend

    run_phase(LocalBackend(1, progress=False), reference, PARAMS)

    path = str(tmp_path / "dask.zarr")
    shutil.copytree(object_run, path)
    with DaskBackend(2, dashboard_address=":0", progress=False) as backend:
        pids = list(backend.client.run(os.getpid).values())
        errors: list[BaseException] = []

        def go():
            try:
                run_phase(backend, path, PARAMS)
            except BaseException as exc:  # surfaced below
                errors.append(exc)

        thread = threading.Thread(target=go)
        thread.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                done = np.isfinite(zarr.open_group(path, mode="r")["phasing/member_errors"][0])
            except Exception:
                done = np.zeros(8, bool)
            if done.sum() >= 2:
                break
            time.sleep(0.02)
        running = thread.is_alive() and not np.isfinite(
            zarr.open_group(path, mode="r")["phasing/member_errors"][...]).all()
        os.kill(pids[0], signal.SIGKILL)  # the nanny restarts it; its task is rescheduled
        thread.join(180)
        assert running, "the run ended before the worker was killed: make it longer"
        assert not thread.is_alive() and not errors, errors
    got = zarr.open_group(path, mode="r")["phasing"]
    want = zarr.open_group(reference, mode="r")["phasing"]
    assert got.attrs["complete"] is True
    np.testing.assert_allclose(got["errors"][...], want["errors"][...], rtol=1e-5)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.timeout(240)
def test_dashboard_status_page_answers_during_a_run(object_run, tmp_path):
    path = str(tmp_path / "run.zarr")
    shutil.copytree(object_run, path)
    port = _free_port()
    cmd = [*lensfree_exe(), "phase", path, "--population", "24", "--generations", "3",
           "--schedule", "HIO:400,ER:100", "--backend", "dask", "--workers", "2",
           "--dashboard-address", f"127.0.0.1:{port}", "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    page = None
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=5) as r:
                    if r.status == 200:
                        page = r.read().decode("utf-8", "replace")
                        break
            except OSError:
                time.sleep(0.2)
        out, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert page is not None, "the dashboard never answered while the run was going"
    assert "bokeh" in page.lower() and "install" not in page.lower()  # the real dashboard
    assert f"127.0.0.1:{port}/status" in out  # the CLI printed the link


def test_joins_an_existing_scheduler(object_run, tmp_path, capsys):
    from distributed import LocalCluster

    path = str(tmp_path / "run.zarr")
    shutil.copytree(object_run, path)
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0") as cluster:
        assert main(["phase", path, "--population", "4", "--generations", "1", "--schedule",
                     "HIO:50,ER:10", "--backend", "dask", "--scheduler",
                     cluster.scheduler_address, "--quiet"]) == 0
        assert len(cluster.scheduler_info["workers"]) == 2  # the cluster outlives the run
    assert zarr.open_group(path, mode="r")["phasing"].attrs["complete"] is True


def test_unreachable_scheduler_is_a_one_line_error(object_run, capsys):
    port = _free_port()
    code = main(["phase", object_run, "--backend", "dask", "--scheduler",
                 f"tcp://127.0.0.1:{port}"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and f"127.0.0.1:{port}" in err and len(err.splitlines()) == 1
