"""3D CDI through the CLI: a simulated faceted crystal with a strain phase, 32^3 at linear
oversampling 2, phased by ``lensfree phase`` and averaged by ``lensfree gather``; local,
Dask and ``mpiexec -n 2`` give the same numbers, and a rerun resumes member by member."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
import zarr

from lensfree.engine import shapes
from lensfree.engine.align import align
from lensfree.io import runstore
from lensfree.launch.cli import main
from tests.conftest import lensfree_exe, mpiexec

N = 32
PHASE = ["--population", "4", "--generations", "2", "--schedule",
         "HIO:300,ER:100;shrinkwrap=25", "--seed", "5", "--quiet"]
GATHER = ["--fraction", "1", "--members-per-task", "2", "--quiet"]


def crystal(n: int = N, size: float = 14.0) -> np.ndarray:
    """`shapes.crystal` about ``size`` voxels across (747 voxels at 32^3 and size 14)."""
    return shapes.crystal(n, oversampling=n / size)


def write_volume_run(path: str, obj: np.ndarray) -> None:
    """A run store as another tool would write it: a finished 3D ``ensemble/`` (the
    noise-free amplitude, all voxels measured) and ``truth/object``."""
    amplitude = np.abs(np.fft.fftshift(np.fft.fftn(obj.astype(np.complex128))))
    run = runstore.open_run(path, mode="w")
    ens = runstore.begin_stage(run, "ensemble", {"simulated": "3d crystal"}, {})
    runstore.write_array(ens, "amplitude", amplitude.astype(np.float32))
    runstore.write_array(ens, "valid", np.ones(obj.shape, bool))
    runstore.finish_stage(ens)
    truth = runstore.begin_stage(run, "truth", {}, {})
    runstore.write_array(truth, "object", obj)
    runstore.finish_stage(truth)


def error_after_alignment(obj, truth) -> float:
    """``||s g - t|| / ||t||`` after translation, twin and global phase, ``s`` least squares."""
    aligned, _ = align(np.asarray(obj), truth)
    scale = np.vdot(aligned, truth) / np.vdot(aligned, aligned)
    return float(np.linalg.norm(scale * aligned - truth) / np.linalg.norm(truth))


@pytest.fixture(scope="module")
def volume_run(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("vol") / "vol.zarr")
    write_volume_run(path, crystal())
    return path


@pytest.fixture(scope="module")
def local_run(volume_run, tmp_path_factory):
    path = str(tmp_path_factory.mktemp("local3d") / "run.zarr")
    shutil.copytree(volume_run, path)
    assert main(["phase", path, *PHASE]) == 0
    assert main(["gather", path, *GATHER]) == 0
    return path


def test_phase_and_gather_recover_the_crystal(local_run):
    run = zarr.open_group(local_run, mode="r")
    ph, ga, truth = run["phasing"], run["gather"], run["truth/object"][...]
    assert ph["objects"].shape == (4, N, N, N) and ph["objects"].chunks == (1, N, N, N)
    assert ph["population"].chunks == (1, 1, N, N, N)
    errors = ph["errors"][...]
    assert errors.shape == (2, 4) and np.isfinite(errors).all()
    assert errors[-1].min() < 0.01, errors  # noise-free data: R_F falls far below 1 %
    best = int(np.argmin(errors[-1]))
    assert error_after_alignment(ph["objects"][best], truth) <= 0.05
    assert ga["average"].shape == (N, N, N)
    assert error_after_alignment(ga["average"][...], truth) <= 0.05
    assert ga["shifts"].shape == (4, 3)
    q, curve = ga["q"][...], ga["prtf"][...]
    assert q.shape == curve.shape == (N // 2 + 1,)  # one spherical shell per voxel of radius
    assert np.nanmin(curve) > 0.9  # members agree at every frequency on noise-free data
    assert ga.attrs["resolution_reached"] is False
    assert 0 <= ga.attrs["r_factor"] < 0.01
    assert ga.attrs["ssim"] > 0.9


def _assert_same(a_path, b_path):
    a, b = zarr.open_group(a_path, mode="r"), zarr.open_group(b_path, mode="r")
    np.testing.assert_allclose(a["phasing/errors"][...], b["phasing/errors"][...], rtol=1e-5)
    objs_a, objs_b = a["phasing/objects"][...], b["phasing/objects"][...]
    assert np.linalg.norm(objs_a - objs_b) <= 1e-5 * np.linalg.norm(objs_a)
    avg_a, avg_b = a["gather/average"][...], b["gather/average"][...]
    assert np.linalg.norm(avg_a - avg_b) <= 1e-5 * np.linalg.norm(avg_a)
    np.testing.assert_allclose(a["gather/prtf"][...], b["gather/prtf"][...], rtol=1e-6)


@pytest.mark.timeout(240)
@pytest.mark.skipif(mpiexec() is None, reason="no mpiexec (pip install 'lensfree[mpi]')")
def test_mpiexec_two_ranks_agree_with_local(volume_run, local_run, tmp_path):
    path = str(tmp_path / "run.zarr")
    shutil.copytree(volume_run, path)
    for argv in (["phase", path, *PHASE], ["gather", path, *GATHER]):
        cmd = [mpiexec(), "-n", "2", *lensfree_exe(), *argv, "--backend", "mpi"]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=200)
        assert proc.returncode == 0, proc.stderr
    _assert_same(path, local_run)


@pytest.mark.timeout(240)
def test_dask_two_workers_agree_with_local(volume_run, local_run, tmp_path):
    path = str(tmp_path / "run.zarr")
    shutil.copytree(volume_run, path)
    dask = ["--backend", "dask", "--workers", "2", "--dashboard-address", ":0"]
    assert main(["phase", path, *PHASE, *dask]) == 0
    assert main(["gather", path, *GATHER, *dask]) == 0
    _assert_same(path, local_run)


def test_rerun_resumes_unfinished_members(volume_run, local_run, tmp_path):
    path = str(tmp_path / "run.zarr")
    shutil.copytree(local_run, path)
    # what a run killed in its last generation leaves: two members unfinished
    ph = zarr.open_group(path, mode="r+")["phasing"]
    ph["member_errors"][1, 2:] = np.nan
    ph["objects"][2:] = 0
    ph.attrs.update({"complete": False, "generations_complete": 1})
    assert main(["phase", path, *PHASE]) == 0
    ph = zarr.open_group(path, mode="r")["phasing"]
    ref = zarr.open_group(local_run, mode="r")["phasing"]
    np.testing.assert_array_equal(ph["objects"][...], ref["objects"][...])
    np.testing.assert_array_equal(ph["errors"][...], ref["errors"][...])


@pytest.mark.parametrize("name, shape", [("valid", (N, N)), ("valid", (N, N, N + 2)),
                                         ("support", (N, N))])
def test_mismatched_mask_is_a_one_line_error(volume_run, tmp_path, capsys, name, shape):
    path = str(tmp_path / "bad.zarr")
    shutil.copytree(volume_run, path)
    ens = zarr.open_group(path, mode="r+")["ensemble"]
    runstore.write_array(ens, name, np.ones(shape, bool))
    assert main(["phase", path]) == 2
    err = capsys.readouterr().err.strip()
    assert name in err and str(shape) in err and len(err.splitlines()) == 1


def test_nan_in_the_amplitude_is_a_one_line_error(volume_run, tmp_path, capsys):
    path = str(tmp_path / "nan.zarr")
    shutil.copytree(volume_run, path)
    ens = zarr.open_group(path, mode="r+")["ensemble"]
    amplitude = ens["amplitude"][...]
    amplitude[3, 4, 5] = np.nan
    runstore.write_array(ens, "amplitude", amplitude)
    assert main(["phase", path]) == 2
    err = capsys.readouterr().err.strip()
    assert "NaN" in err and len(err.splitlines()) == 1
