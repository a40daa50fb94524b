"""Shared fixtures: data made by lensfree's own simulator with fixed seeds."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

from lensfree.engine.simulate import EnsembleParams
from lensfree.launch.backends import LocalBackend
from lensfree.launch.stage_simulate import simulate_ensemble

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def mpiexec() -> str | None:
    """The mpiexec next to this Python (the mpich wheel ships one), else on PATH."""
    here = shutil.which("mpiexec", path=os.path.dirname(sys.executable))
    return here or shutil.which("mpiexec")


def lensfree_exe() -> list[str]:
    """Command that runs the lensfree CLI with this Python."""
    return [sys.executable, "-m", "lensfree"]


@pytest.fixture(scope="session")
def ensemble_params() -> EnsembleParams:
    # 1500 frames: 30 planted weak, 30 streak, 15 invalid; centre off the middle
    return EnsembleParams(n_frames=1500, shape=(128, 128), inner_diameter_m=19e-9,
                          outer_diameter_m=55e-9, distance_m=0.125, seed=11)


@pytest.fixture(scope="session")
def ensemble_store(tmp_path_factory, ensemble_params) -> str:
    path = str(tmp_path_factory.mktemp("frames") / "frames.zarr")
    simulate_ensemble(LocalBackend(1, progress=False), ensemble_params, path, chunk_frames=32)
    return path
