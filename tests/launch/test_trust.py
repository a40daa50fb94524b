"""A run store users can trust: stale stages, one writer, the log beside it, interrupts."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import zarr

from lensfree.io import runstore, sidecar
from lensfree.launch.cli import main
from tests.conftest import lensfree_exe, mpiexec

PHASE = ["--population", "2", "--generations", "1", "--schedule", "HIO:30,ER:10", "--quiet"]


def _object(path: str, photons: str = "1e9") -> str:
    assert main(["simulate", "object", "--out", path, "--size", "32", "--photons", photons,
                 "--seed", "1"]) == 0
    return path


def _rewrite_ensemble(run: str) -> None:
    """What another ``lensfree sum`` (or any tool) does: a new ensemble/ incarnation."""
    old = zarr.open_group(run, mode="r")["ensemble"]
    amplitude, valid = old["amplitude"][...], old["valid"][...]
    group = runstore.begin_stage(runstore.open_run(run), "ensemble", params={}, inputs={})
    runstore.write_array(group, "amplitude", amplitude * 0.5)
    runstore.write_array(group, "valid", valid)
    runstore.finish_stage(group)


def _err(capsys, argv):
    code = main(argv)
    return code, capsys.readouterr().err.strip()


def test_a_rewritten_input_makes_later_stages_stale(tmp_path, capsys):
    run = _object(str(tmp_path / "run.zarr"))
    assert main(["phase", run, *PHASE]) == 0
    assert main(["gather", run, "--fraction", "1", "--quiet"]) == 0
    group = zarr.open_group(run, mode="r")
    assert group["phasing"].attrs["read"] == {"ensemble": group["ensemble"].attrs["run_id"]}
    assert runstore.state(group, "gather") == "complete"
    _rewrite_ensemble(run)  # a new ensemble/ under the old phasing/ and gather/
    capsys.readouterr()
    assert main(["status", run]) == 0
    status = capsys.readouterr().out
    assert "phasing/   stale" in status and "gather/    stale" in status
    code, err = _err(capsys, ["gather", run, "--quiet"])
    assert code == 2 and "stale" in err and "lensfree phase" in err
    assert main(["phase", run, *PHASE]) == 0  # recomputed, not "already complete"
    assert "already complete" not in capsys.readouterr().out
    group = zarr.open_group(run, mode="r")
    assert runstore.state(group, "phasing") == "complete"
    assert runstore.state(group, "gather") == "stale"


def test_one_writer_at_a_time(tmp_path, capsys):
    run = _object(str(tmp_path / "run.zarr"))
    holder = subprocess.Popen(  # another process writing the store
        [sys.executable, "-c", "import sys, time; from lensfree.io import sidecar\n"
         "with sidecar.lock(sys.argv[1]):\n print('held', flush=True); time.sleep(60)", run],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        code, err = _err(capsys, ["phase", run, *PHASE])
    finally:
        holder.kill()
        holder.wait()
    assert code == 2 and f"in use by pid {holder.pid}" in err and len(err.splitlines()) == 1
    assert "phasing" not in zarr.open_group(run, mode="r")
    # the lock the killed process left behind is taken over
    assert main(["phase", run, *PHASE]) == 0
    assert not os.path.exists(sidecar.lock_path(run))
    dead = _dead_pid()
    with open(sidecar.lock_path(run), "w") as f:
        json.dump({"pid": dead, "host": os.uname().nodename, "command": "lensfree phase"}, f)
    assert main(["phase", run, *PHASE]) == 0
    assert not os.path.exists(sidecar.lock_path(run))


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_the_log_sits_beside_the_store_and_only_zarr_inside(tmp_path):
    run = _object(str(tmp_path / "run.zarr"))
    assert main(["phase", run, *PHASE]) == 0
    logged = open(sidecar.log_path(run)).read()
    assert "lensfree phase" in logged and "finished with exit code 0" in logged
    assert set(os.listdir(run)) == {"zarr.json", "ensemble", "truth", "phasing"}


def test_mpirun_without_backend_mpi_is_refused(tmp_path, capsys, monkeypatch):
    run = _object(str(tmp_path / "run.zarr"))
    monkeypatch.setenv("PMI_SIZE", "2")
    code, err = _err(capsys, ["phase", run, *PHASE])
    assert code == 2 and "--backend mpi" in err
    assert "phasing" not in zarr.open_group(run, mode="r")


def test_scheduler_without_dask_is_refused(tmp_path, capsys):
    run = _object(str(tmp_path / "run.zarr"))
    code, err = _err(capsys, ["phase", run, *PHASE, "--scheduler", "tcp://127.0.0.1:1"])
    assert code == 2 and "--scheduler" in err and "--backend dask" in err


@pytest.mark.timeout(120)
def test_ctrl_c_is_one_line_and_the_rerun_resumes(tmp_path):
    run = _object(str(tmp_path / "run.zarr"))
    argv = [*lensfree_exe(), "phase", run, "--population", "2", "--generations", "1",
            "--schedule", "HIO:200000,ER:100", "--quiet"]  # seconds a member: time to stop it
    # SIGINT as a terminal gives it, even where this test runs in the background (a shell
    # starts background jobs with SIGINT ignored, and Python keeps an ignored SIGINT)
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    group_made = time.monotonic() + 60
    while time.monotonic() < group_made:
        time.sleep(0.5)
        try:
            if "member_errors" in zarr.open_group(run, mode="r").get("phasing", {}):
                break
        except Exception:
            continue
    time.sleep(0.5)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert err.strip() == "lensfree: error: interrupted; rerun the same command to resume"
    assert zarr.open_group(run, mode="r")["phasing"].attrs["complete"] is False
    done = subprocess.run(argv, capture_output=True, text=True, timeout=100)
    assert done.returncode == 0, done.stderr
    assert "resumed the interrupted run of phasing/" in done.stdout
    logged = open(sidecar.log_path(run)).read()
    assert "interrupted" in logged and "resuming the unfinished phasing/" in logged


@pytest.mark.timeout(180)
@pytest.mark.skipif(mpiexec() is None, reason="no mpiexec (pip install 'lensfree[mpi]')")
def test_a_cluster_booted_inside_mpirun_refuses_strangers(tmp_path):
    from distributed import Client

    run = _object(str(tmp_path / "run.zarr"))
    proc = subprocess.Popen(
        [mpiexec(), "-n", "3", sys.executable, "-m", "mpi4py", "-m", "lensfree", "phase", run,
         "--population", "2", "--generations", "1", "--schedule", "HIO:20000",
         "--backend", "dask", "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)
    try:
        address, deadline = None, time.monotonic() + 90
        while address is None and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.5)
            if os.path.exists(sidecar.log_path(run)):
                found = re.search(r"scheduler (tls://\S+),", open(sidecar.log_path(run)).read())
                address = found and found.group(1)
        assert address, "the scheduler's address never reached the log"
        for stranger in (address, address.replace("tls://", "tcp://")):
            with pytest.raises(Exception):  # noqa: B017 (refused, however it is worded)
                Client(stranger, timeout="5s").close()
    finally:
        proc.kill()
        proc.communicate()


def test_all_invalid_frames_are_a_one_line_error(tmp_path, capsys):
    frames = str(tmp_path / "nan.zarr")
    assert main(["simulate", "ensemble", "--out", frames, "--frames", "64", "--size", "64",
                 "--quiet"]) == 0
    array = zarr.open_array(frames + "/frames", mode="r+")
    array[...] = float("nan")
    code, err = _err(capsys, ["sum", frames, "--out", str(tmp_path / "r.zarr"), "--quiet"])
    assert code == 2 and "every one of the 64 frames is invalid" in err
    assert len(err.splitlines()) == 1


def _config(tmp_path, backend: str) -> str:
    frames, run = tmp_path / "frames.zarr", tmp_path / "run.zarr"
    path = tmp_path / "run.toml"
    path.write_text(f"""
[execution]
backend = "{backend}"
workers = 2
quiet = true

[simulate.ensemble]
out = "{frames}"
frames = 64
size = 64

[sum]
frames = "{frames}"
out = "{run}"
""")
    return str(path)


@pytest.mark.timeout(180)
def test_one_cluster_for_every_stage_of_a_run_on_this_machine_only(tmp_path):
    proc = subprocess.run([*lensfree_exe(), "run", _config(tmp_path, "dask")],
                          capture_output=True, text=True, timeout=170)
    assert proc.returncode == 0, proc.stderr
    started = [ln for ln in proc.stdout.splitlines() if ln.startswith("backend dask")]
    assert len(started) == 1, proc.stdout  # not one cluster per stage
    assert "dashboard http://127.0.0.1:" in started[0]


@pytest.mark.timeout(180)
@pytest.mark.skipif(mpiexec() is None, reason="no mpiexec (pip install 'lensfree[mpi]')")
def test_stage_headers_come_from_rank_0_only(tmp_path):
    proc = subprocess.run([mpiexec(), "-n", "2", sys.executable, "-m", "mpi4py", "-m",
                           "lensfree", "run", _config(tmp_path, "mpi")],
                          capture_output=True, text=True, timeout=170)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("== sum ==") == 1, proc.stdout


def test_bad_input_is_refused_before_a_cluster_starts(tmp_path, capsys):
    code = main(["sum", str(tmp_path / "none.zarr"), "--out", str(tmp_path / "r.zarr"),
                 "--backend", "dask"])
    printed = capsys.readouterr()
    assert code == 2 and "none.zarr" in printed.err
    assert "backend dask" not in printed.out  # refused before any cluster started
    assert main(["report", _object(str(tmp_path / "o.zarr")), "--quiet"]) == 0
