"""CDIP members: recovery without a support, determinism, anchoring, torch imported lazily."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from lensfree.engine import ghio, phasing, shapes
from lensfree.engine.align import align
from lensfree.engine.cdip import CdipParams, anchor_radius, energy_support

FIT = dict(epochs=300)


def _error_after_alignment(obj, truth):
    aligned, _ = align(obj, truth)
    scale = np.vdot(aligned, truth) / np.vdot(aligned, aligned)
    return float(np.linalg.norm(scale * aligned - truth) / np.linalg.norm(truth))


def test_anchoring_disk_widens_from_start_to_end():
    p = CdipParams(epochs=100, anchor_start=0.2, anchor_end=0.6, anchor_growth=0.5)
    radii = [anchor_radius(e, p, 32) for e in range(101)]
    assert radii[0] == pytest.approx(0.2 * 32)
    assert radii[25] == pytest.approx(0.4 * 32)
    assert radii[50] == pytest.approx(0.6 * 32) and radii[100] == radii[50]
    assert np.all(np.diff(radii) >= 0)
    whole = CdipParams(epochs=10, anchor_end=1.5)
    assert anchor_radius(10, whole, 32) > np.sqrt(2) * 32  # past the corners


@pytest.mark.parametrize("field", [
    {"epochs": 0}, {"loss": "l2"}, {"anchor_growth": 1.5}, {"device": "tpu"}, {"hidden": 0},
])
def test_impossible_parameters_are_refused(field):
    name = next(iter(field))
    with pytest.raises(ValueError, match=name):
        CdipParams(**field)


def test_importing_the_engine_needs_no_torch():
    code = ("import sys; sys.modules['torch'] = None; import lensfree.engine.cdip as c; "
            "import lensfree.launch.stage_phase\n"
            "try:\n    c.require_torch()\nexcept ImportError as e:\n    print(e)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert "pip install 'lensfree[cdip]'" in out.stdout


@pytest.fixture(scope="module")
def letter():
    pytest.importorskip("torch")
    truth = shapes.make_object("letter", 64, 3.0)
    amplitude, valid = shapes.far_field(truth, 1e9, np.random.default_rng([2, 4]), 3.2)
    return truth, amplitude, valid


def test_fits_the_data_inside_the_anchoring_disk(letter):
    from lensfree.engine import cdip

    truth, amplitude, valid = letter
    cdip.set_deterministic()
    p = CdipParams(**FIT, refine_cycles=0)  # the field alone
    result = cdip.run_member(amplitude, valid, p, seed=ghio.member_seed(0, 0, 0))
    assert result.rho.shape == (64, 64) and result.rho.dtype == np.complex64
    # R_F from 0.94 (the untrained field) to about 0.1 in 300 epochs
    assert result.r_fourier[0] > 0.8 and result.final_r_fourier < 0.15
    assert result.final_r_fourier == pytest.approx(
        phasing.fourier_r_factor(result.rho, amplitude, valid))
    # nothing rendered outside the final disk (0.5 of the half-width, 16 px, soft edge)
    yy, xx = np.mgrid[0:64, 0:64]
    outside = np.hypot(yy - 32, xx - 32) > 16 + 3
    assert np.abs(result.rho[outside]).max() < 1e-3 * np.abs(result.rho).max()


def _best_error(letter, members: int, **options) -> list[float]:
    from lensfree.engine import cdip

    truth, amplitude, valid = letter
    cdip.set_deterministic()
    errors = []
    for m in range(members):
        result = cdip.run_member(amplitude, valid, CdipParams(**options),
                                 seed=ghio.member_seed(0, 0, m))
        errors.append(_error_after_alignment(result.rho, truth))
        assert result.support.sum() < 0.2 * truth.size  # the member found a compact support
    return errors


def test_recovers_a_complex_object_without_a_support_short_fit(letter):
    # one member of a short field fit, finished by the refinement (the field alone of
    # this fit is at 0.8-0.9)
    errors = _best_error(letter, 1, epochs=150)
    assert min(errors) <= 0.15, errors


@pytest.mark.slow
def test_recovers_a_complex_object_without_a_support(letter):
    errors = _best_error(letter, 4)  # the defaults
    assert min(errors) <= 0.15, errors


def test_energy_support_is_the_smallest_set_holding_the_energy():
    rho = np.zeros((32, 32), complex)
    rho[10:14, 10:14] = 1.0
    rho[20, 20] = 0.01  # a speck with a negligible share of the energy
    s = energy_support(rho, 0.0, 0.99)
    assert s[10:14, 10:14].all() and not s[20, 20] and s.sum() == 16
    assert energy_support(rho, 1.0, 0.99).sum() > 16  # the blur widens it
    assert energy_support(np.zeros((8, 8)), 1.0, 0.99).all()  # nothing to rank: all


def test_a_member_is_a_function_of_its_seed(letter):
    from lensfree.engine import cdip

    _, amplitude, valid = letter
    cdip.set_deterministic()
    p = CdipParams(epochs=30, hidden=16, layers=2)
    a = cdip.run_member(amplitude, valid, p, seed=7)
    b = cdip.run_member(amplitude, valid, p, seed=7)
    c = cdip.run_member(amplitude, valid, p, seed=8)
    assert np.array_equal(a.rho, b.rho) and np.array_equal(a.r_fourier, b.r_fourier)
    assert not np.array_equal(a.rho, c.rho)
