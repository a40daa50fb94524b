"""Stage 3 through the CLI: scores of a phased object, back-end agreement, bad input."""

from __future__ import annotations

import os
import shutil
import subprocess

import numpy as np
import pytest
import zarr

from lensfree.engine import scoring
from lensfree.launch.backends import LocalBackend
from lensfree.launch.cli import main
from lensfree.launch.stage_gather import GatherParams, blocks, run_gather, select_members
from tests.conftest import lensfree_exe, mpiexec

PHASE = ["--population", "8", "--generations", "2", "--schedule",
         "HIO:500,ER:100;shrinkwrap=50", "--seed", "3", "--quiet"]


@pytest.fixture(scope="module")
def phased(tmp_path_factory):
    """A letter object (truth in truth/), phased by 8 members over 2 generations."""
    path = str(tmp_path_factory.mktemp("gather") / "obj.zarr")
    assert main(["simulate", "object", "--out", path, "--size", "64", "--oversampling", "3",
                 "--photons", "1e8", "--missing-radius", "3.2", "--seed", "2"]) == 0
    assert main(["phase", path, *PHASE]) == 0
    return path


@pytest.fixture(scope="module")
def local_gather(phased, tmp_path_factory):
    path = str(tmp_path_factory.mktemp("local") / "run.zarr")
    shutil.copytree(phased, path)
    assert main(["gather", path, "--fraction", "0.5", "--quiet"]) == 0
    return zarr.open_group(path, mode="r")


def test_gather_scores_the_object(local_gather):
    g = local_gather["gather"]
    a = g.attrs
    assert a["complete"] is True
    errors = local_gather["phasing/errors"][-1]
    selected = g["selected"][...]
    assert selected.tolist() == np.argsort(errors, kind="stable")[:4].tolist()
    assert a["n_selected"] == 4 and a["n_members"] == 8 and a["reference_member"] == selected[0]
    assert g["average"].shape == (64, 64) and g["average"].dtype == np.complex64
    assert g["prtf"].shape == g["q"].shape == (33,)
    assert g["shifts"].shape == (4, 2) and g["twin"].shape == (4,)
    # a good reconstruction of clean data: near-perfect scores
    assert a["ssim"] > 0.95, a["ssim"]
    assert a["r_factor"] < 0.05, a["r_factor"]
    assert 1.0 <= a["resolution_px"] < 1.5
    assert "resolution_m" not in a  # the simulated object carries no geometry
    assert a["model"].endswith("truth/object")
    assert a["parameters"]["fraction"] == 0.5 and a["input"]["run"]
    # the stored numbers are those of the stored average
    amp = local_gather["ensemble/amplitude"][...]
    valid = local_gather["ensemble/valid"][...]
    assert a["r_factor"] == pytest.approx(scoring.r_factor(g["average"][...], amp, valid),
                                          rel=1e-5)
    curve = g["prtf"][...]
    assert np.nanmin(curve) > 0.5 and np.nanmax(curve) < 1.05


def test_dask_agrees_with_local(phased, local_gather, tmp_path):
    path = str(tmp_path / "run.zarr")
    shutil.copytree(phased, path)
    # one member per task: four tasks folded on the root in a fixed order
    assert main(["gather", path, "--fraction", "0.5", "--members-per-task", "1", "--quiet",
                 "--backend", "dask", "--workers", "2", "--dashboard-address", ":0"]) == 0
    got = zarr.open_group(path, mode="r")["gather"]
    want = local_gather["gather"]
    np.testing.assert_array_equal(got["selected"][...], want["selected"][...])
    np.testing.assert_allclose(got["average"][...], want["average"][...], atol=1e-6)
    np.testing.assert_allclose(got["prtf"][...], want["prtf"][...], rtol=1e-9)
    for key in ("r_factor", "ssim", "resolution_px"):
        assert got.attrs[key] == pytest.approx(want.attrs[key], rel=1e-6)


def test_blocks_give_the_same_numbers_in_any_size(phased, local_gather, tmp_path):
    path = str(tmp_path / "run.zarr")
    shutil.copytree(phased, path)
    attrs = run_gather(LocalBackend(2, progress=False), path,
                       GatherParams(fraction=0.5, members_per_task=3))
    assert attrs["resolution_px"] == pytest.approx(
        local_gather["gather"].attrs["resolution_px"], rel=1e-9)
    got = zarr.open_group(path, mode="r")["gather"]
    # blocks of 3 instead of 8 change only the order of the float additions
    np.testing.assert_allclose(got["average"][...], local_gather["gather/average"][...],
                               rtol=0, atol=1e-6)
    np.testing.assert_allclose(got["prtf"][...], local_gather["gather/prtf"][...], rtol=1e-6)
    assert got.attrs["r_factor"] == pytest.approx(local_gather["gather"].attrs["r_factor"],
                                                  rel=1e-6)
    assert blocks(np.arange(7), 3) == [(0, 1, 2), (3, 4, 5), (6,)]


def test_model_file_replaces_truth(phased, tmp_path):
    path = str(tmp_path / "run.zarr")
    shutil.copytree(phased, path)
    model = tmp_path / "model.npy"
    truth = zarr.open_group(path, mode="r")["truth/object"][...]
    np.save(model, np.abs(np.roll(truth, (2, 3), axis=(0, 1))))
    assert main(["gather", path, "--fraction", "1", "--model", str(model), "--quiet"]) == 0
    a = zarr.open_group(path, mode="r")["gather"].attrs
    assert a["model"] == str(model) and a["n_selected"] == 8 and a["ssim"] > 0.9


def test_select_members_rounds_the_fraction():
    errors = np.arange(100, dtype=float)[::-1]
    assert select_members(errors, 0.2).tolist() == list(range(99, 79, -1))  # 20, not 21
    assert select_members(np.array([0.3, np.nan, 0.1]), 1.0).tolist() == [2, 0]
    assert select_members(np.array([0.3, 0.2]), 0.01).tolist() == [1]


def _err(capsys, argv):
    code = main(argv)
    return code, capsys.readouterr().err.strip()


@pytest.mark.parametrize("fraction", ["0", "1.5", "-0.2"])
def test_fraction_outside_0_1_is_refused(phased, capsys, fraction):
    code, err = _err(capsys, ["gather", phased, "--fraction", fraction])
    assert code == 2 and f"--fraction {float(fraction)}" in err and phased in err
    assert len(err.splitlines()) == 1


def test_bad_stores_and_models_are_refused(phased, tmp_path, capsys):
    unfinished = str(tmp_path / "unfinished.zarr")
    shutil.copytree(phased, unfinished)
    zarr.open_group(os.path.join(unfinished, "phasing"), mode="r+").attrs["complete"] = False
    code, err = _err(capsys, ["gather", unfinished])
    assert code == 2 and "never completed" in err and unfinished in err
    assert "gather" not in zarr.open_group(unfinished, mode="r")

    unphased = str(tmp_path / "unphased.zarr")
    shutil.copytree(phased, unphased)
    shutil.rmtree(os.path.join(unphased, "phasing"))
    code, err = _err(capsys, ["gather", unphased])
    assert code == 2 and "phasing" in err and unphased in err

    wrong = tmp_path / "wrong.npy"
    np.save(wrong, np.ones((8, 8)))
    code, err = _err(capsys, ["gather", phased, "--model", str(wrong)])
    assert code == 2 and str(wrong) in err and "(8, 8)" in err and len(err.splitlines()) == 1

    code, err = _err(capsys, ["gather", phased, "--model", str(tmp_path / "none.npy")])
    assert code == 2 and "none.npy" in err

    code, err = _err(capsys, ["gather", str(tmp_path / "missing.zarr")])
    assert code == 2 and "missing.zarr" in err


@pytest.mark.timeout(180)
@pytest.mark.skipif(mpiexec() is None, reason="no mpiexec (pip install 'lensfree[mpi]')")
def test_mpiexec_two_ranks_fold_the_blocks_as_local(phased, local_gather, tmp_path):
    path = str(tmp_path / "run.zarr")
    shutil.copytree(phased, path)
    # one member per task: the blocks' sums fold in the tree across the two ranks
    cmd = [mpiexec(), "-n", "2", *lensfree_exe(), "gather", path, "--fraction", "0.5",
           "--members-per-task", "1", "--quiet", "--backend", "mpi"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=150)
    assert proc.returncode == 0, proc.stderr
    got, want = zarr.open_group(path, mode="r")["gather"], local_gather["gather"]
    np.testing.assert_array_equal(got["selected"][...], want["selected"][...])
    np.testing.assert_allclose(got["average"][...], want["average"][...], atol=1e-6)
    for key in ("r_factor", "ssim", "resolution_px"):
        assert got.attrs[key] == pytest.approx(want.attrs[key], rel=1e-6)


def test_a_prtf_that_never_falls_below_1e_says_better_than_the_data_edge(phased, tmp_path,
                                                                         capsys):
    """One member averaged: its PRTF is 1 in every shell, so the curve never crosses 1/e and
    the resolution is only bounded by the data edge: said so on the CLI, in the attrs and in
    summary.md, with the PRTF value at the edge."""
    from lensfree.io.report import write_report

    path = str(tmp_path / "run.zarr")
    shutil.copytree(phased, path)
    assert main(["gather", path, "--fraction", "0.01"]) == 0
    out = capsys.readouterr().out
    g = zarr.open_group(path, mode="r")["gather"]
    a = g.attrs
    curve = g["prtf"][...]
    assert a["n_selected"] == 1 and a["resolution_reached"] is False
    assert a["prtf_edge"] == pytest.approx(curve[np.isfinite(curve)][-1], abs=0)
    assert a["prtf_edge"] == pytest.approx(1.0, abs=1e-6)
    assert np.nanmax(curve) <= 1.0
    said = "better than 1.00 px (the data edge; PRTF 1.00 there)"
    assert f"resolution {said}" in out
    write_report(path, str(tmp_path / "report"), groups=["gather"])
    text = (tmp_path / "report" / "summary.md").read_text()
    assert f"half-period resolution (PRTF 1/e): {said}" in text
    assert "limited by the data edge" not in text


def test_the_stored_prtf_is_at_most_one(local_gather):
    """The phase-only PRTF (Chapman et al. 2006): the length of a mean unit phasor."""
    curve = local_gather["gather/prtf"][...]
    ok = np.isfinite(curve)
    assert ok.sum() >= 28 and curve[ok].max() <= 1.0 and curve[ok].min() >= 0.0
    assert local_gather["gather"].attrs["prtf_edge"] == curve[ok][-1]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_real_nadia_prtf_stays_at_most_one_at_high_q(tmp_path):
    """The real NADIA pattern, 90% zero counts: the ratio of shell sums the PRTF was before
    climbed to ~7 at high q there; the phase-only PRTF stays at most 1 and falls towards
    the chance level of the members where the data hold almost no photon."""
    from tests.conftest import SHARED_DATA

    source = SHARED_DATA / "nadia_planar_cdi" / "planar_data.tif"
    if not source.exists():
        pytest.skip(f"{source} not present")
    run = str(tmp_path / "nadia.zarr")
    assert main(["ingest", str(source), "--pattern", "--zeros-measured", "--out", run]) == 0
    assert main(["phase", run, "--population", "8", "--generations", "1", "--schedule",
                 "HIO:100,ER:50;shrinkwrap=50", "--seed", "1", "--quiet"]) == 0
    assert main(["gather", run, "--fraction", "1", "--quiet"]) == 0
    g = zarr.open_group(run, mode="r")["gather"]
    curve = g["prtf"][...]
    ok = np.isfinite(curve)
    assert curve[ok].max() <= 1.0 and curve[ok].min() >= 0.0
    assert np.mean(curve[ok][-50:]) < 2 * scoring.prtf_floor(8)
    assert g.attrs["prtf_edge"] == curve[ok][-1]
