"""Phase retrieval: parameters, projections, ER/HIO/RAAR recovering a simulated object
(schedule parsing: test_schedule.py)."""

from __future__ import annotations

from dataclasses import fields

import numpy as np
import pytest

from lensfree.engine import align, ghio, phasing, projections, schedule, shapes
from lensfree.engine.phasing import PhasingParams

# ----------------------------------------------------------------------------- parameters


def test_schedule_and_projection_names_are_reexported_by_phasing():
    for module in (schedule, projections):
        for name in set(module.__all__) - {"constrain", "modulus_inplace"}:
            assert getattr(phasing, name) is getattr(module, name)
            assert name in phasing.__all__


def test_params_defaults_are_the_working_values_and_every_field_has_help():
    p = PhasingParams()
    # the values that recover the object (0.15 and 1.5 recovered 0/20 starts at 64^2)
    assert (p.shrinkwrap_threshold, p.shrinkwrap_sigma_start, p.shrinkwrap_sigma_end) == (
        0.2, 3.0, 1.0)
    for f in fields(PhasingParams):
        text = f.metadata["help"]
        assert text and "\n" not in text and "[" not in text and "%" not in text, f.name
    positivity = {f.name: f for f in fields(PhasingParams)}["positivity"]
    assert positivity.metadata["choices"] == phasing.POSITIVITY


def test_params_validate():
    with pytest.raises(ValueError, match="positivity"):
        PhasingParams(positivity="yes")
    with pytest.raises(ValueError, match="huang_sigma"):
        PhasingParams(huang_mode=True)
    with pytest.raises(ValueError, match="beta"):
        PhasingParams(beta=0)
    with pytest.raises(ValueError, match="error_every"):
        PhasingParams(error_every=0)


# ----------------------------------------------------------------------------- projections


def test_modulus_projection_leaves_missing_pixels_untouched():
    rng = np.random.default_rng(1)
    shape = (32, 32)
    psi = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)
    amplitude = rng.uniform(0.5, 2.0, shape).astype(np.float32)
    valid = rng.uniform(size=shape) > 0.2
    out, r_f = phasing.modulus_projection(psi, amplitude, valid)
    assert np.array_equal(out[~valid], psi[~valid])  # bit for bit
    assert np.allclose(np.abs(out[valid]), amplitude[valid], rtol=1e-6)
    assert np.allclose(np.angle(out[valid] * np.conj(psi[valid])), 0, atol=1e-5)
    expected = np.abs(np.abs(psi) - amplitude)[valid].sum() / amplitude[valid].sum()
    assert r_f == pytest.approx(expected, rel=1e-5)


def test_huang_mode_caps_region_b():
    shape = (16, 16)
    psi = np.full(shape, 3 + 4j, np.complex64)  # |psi| = 5
    amplitude = np.full(shape, 10.0, np.float32)
    amplitude[:, :8] = 0.5  # intensity 0.25, below the noise level sigma = 1
    valid = np.ones(shape, bool)
    valid[0, 0] = False
    params = PhasingParams(huang_mode=True, huang_alpha=0.3, huang_sigma=1.0)
    out, _ = phasing.modulus_projection(psi, amplitude, valid, params)
    assert out[0, 0] == psi[0, 0]  # M floats
    assert np.abs(out[5, 12]) == pytest.approx(10.0, rel=1e-6)  # G
    assert np.abs(out[5, 3]) == pytest.approx(0.3 * min(0.5, np.sqrt(3.0)), rel=1e-5)  # B


def test_support_projection_positivity():
    rho = np.array([[-1 + 2j, 3 - 1j], [2 + 2j, -4j]], np.complex64)
    support = np.array([[True, True], [False, True]])
    assert np.array_equal(phasing.support_projection(rho, support),
                          [[-1 + 2j, 3 - 1j], [0, -4j]])
    assert np.array_equal(phasing.support_projection(rho, support, "real"),
                          [[2j, 3 - 1j], [0, -4j]])
    assert np.array_equal(phasing.support_projection(rho, support, "real-nonneg"),
                          [[0, 3], [0, 0]])


def test_autocorrelation_support_covers_twice_the_object():
    truth = shapes.letter(64, 4.0)
    amplitude, valid = shapes.far_field(truth, np.inf, None)
    support = phasing.autocorrelation_support(amplitude, valid, threshold=0.05)
    ys, xs = np.nonzero(np.abs(truth) > 0.05)
    extent = ys.max() - ys.min()
    sy = np.nonzero(support.any(axis=1))[0]
    assert 1.6 * extent <= sy.max() - sy.min() <= 2.4 * extent
    assert support[32, 32]


# ----------------------------------------------------------------------------- recovery


def _error(rho, truth):
    """``||a x - truth|| / ||truth||`` after alignment, ``a`` the optimal complex scalar."""
    aligned, _ = align.align(rho, truth)
    a = np.vdot(aligned, truth) / np.vdot(aligned, aligned)
    return float(np.linalg.norm(a * aligned - truth) / np.linalg.norm(truth))


@pytest.fixture(scope="module")
def letter_data():
    """Complex letter at oversampling 3 on 96^2, 1e9 photons, a missing central disk of
    10% of the width (radius 4.8 px, about 1.6 speckles: Poisson noise everywhere)."""
    n = 96
    truth = shapes.letter(n, 3.0)
    amplitude, valid = shapes.far_field(truth, 1e9, np.random.default_rng(7), 0.05 * n)
    support = phasing.autocorrelation_support(amplitude, valid, threshold=0.1)
    return truth, amplitude, valid, support


_PARAMS = PhasingParams(shrinkwrap_threshold=0.2, shrinkwrap_sigma_end=1.0, error_every=1)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hio_er_recovers_object_with_missing_centre(letter_data, seed):
    truth, amplitude, valid, support = letter_data
    rho0 = ghio.member_start(amplitude, valid, support, seed)
    rho, final_support, errors = phasing.run(
        amplitude, valid, rho0, support, "HIO:2000,ER:100;shrinkwrap=50", _PARAMS)
    assert rho.dtype == np.complex64 and final_support.dtype == bool
    assert _error(rho, truth) <= 0.1
    # R_F falls by an order of magnitude and ends near the photon-noise floor
    r = errors.r_fourier
    assert len(r) == 2100 and np.all(np.isfinite(r)) and np.all(np.isfinite(errors.e_support))
    assert r[-100:].mean() < 0.1 * r[:10].mean()
    assert errors.final_r_fourier < 0.03
    # the recorded R_F of the last iterate agrees with an independent computation
    assert errors.final_r_fourier == pytest.approx(
        phasing.fourier_r_factor(rho, amplitude, valid), rel=1e-3)
    # ER keeps the object inside the support, so E_S of the final ER steps is small
    assert errors.e_support[-1] < 0.05
    assert not np.any(rho[~final_support])


def test_raar_recovers_object(letter_data):
    truth, amplitude, valid, support = letter_data
    rho0 = ghio.member_start(amplitude, valid, support, 0)
    rho, _, errors = phasing.run(amplitude, valid, rho0, support,
                                 "RAAR:1000:0.99,ER:100;shrinkwrap=50", _PARAMS)
    assert _error(rho, truth) <= 0.1
    assert errors.final_r_fourier < 0.03


def test_positivity_recovers_real_object():
    truth = shapes.letter(64, 3.0, phase_ramp=0.0)
    amplitude, valid = shapes.far_field(truth, 1e9, np.random.default_rng(3), 3.0)
    support = phasing.autocorrelation_support(amplitude, valid, threshold=0.1)
    params = PhasingParams(positivity="real-nonneg", shrinkwrap_threshold=0.2,
                           shrinkwrap_sigma_end=1.0)
    rho0 = ghio.member_start(amplitude, valid, support, 5)
    rho, _, errors = phasing.run(amplitude, valid, rho0, support,
                                 "HIO:400,ER:100;shrinkwrap=50", params)
    assert np.all(rho.imag == 0) and np.all(rho.real >= 0)
    assert _error(rho, truth) <= 0.1


def test_run_is_deterministic_and_does_not_touch_inputs(letter_data):
    truth, amplitude, valid, support = letter_data
    rho0 = ghio.member_start(amplitude, valid, support, 4)
    copies = [a.copy() for a in (amplitude, valid, rho0, support)]
    a = phasing.run(amplitude, valid, rho0, support, "HIO:30,ER:10;shrinkwrap=10", _PARAMS)
    b = phasing.run(amplitude, valid, rho0, support, "HIO:30,ER:10;shrinkwrap=10", _PARAMS)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert np.array_equal(a[2].r_fourier, b[2].r_fourier)
    for before, now in zip(copies, (amplitude, valid, rho0, support)):
        assert np.array_equal(before, now)


@pytest.mark.parametrize("schedule, positivity", [
    ("HIO:30,ER:10;shrinkwrap=10", "none"),
    ("(HIO:4,ER:1)*4,RAAR:12,ER:8;shrinkwrap=15", "real"),
])
def test_error_every_records_some_iterations_and_keeps_the_iterates(letter_data, schedule,
                                                                     positivity):
    _, amplitude, valid, support = letter_data
    rho0 = ghio.member_start(amplitude, valid, support, 2)
    params = PhasingParams(**{**_PARAMS.__dict__, "positivity": positivity})
    every = phasing.run(amplitude, valid, rho0, support, schedule, params)
    sparse = phasing.run(amplitude, valid, rho0, support, schedule,
                         PhasingParams(**{**params.__dict__, "error_every": 7}))
    # the same iterates and supports, bit for bit
    assert every[0].tobytes() == sparse[0].tobytes()
    assert np.array_equal(every[1], sparse[1])
    assert sparse[2].final_r_fourier == every[2].final_r_fourier
    # recorded: every 7th iteration and the last of every step; the rest NaN
    lasts = np.cumsum([s.iterations for s in phasing.as_schedule(schedule)]) - 1
    n = len(every[2].r_fourier)
    expected = (np.arange(n) % 7 == 0) | np.isin(np.arange(n), lasts)
    for name in ("r_fourier", "e_support"):
        full, part = getattr(every[2], name), getattr(sparse[2], name)
        assert np.array_equal(np.isfinite(part), expected), name
        assert np.array_equal(part[expected], full[expected]), name


def test_zero_start_does_not_produce_nan():
    amplitude = np.ones((16, 16), np.float32)
    valid = np.ones((16, 16), bool)
    support = np.zeros((16, 16), bool)
    support[6:10, 6:10] = True
    rho, _, errors = phasing.run(amplitude, valid, np.zeros((16, 16), np.complex64), support,
                                 "HIO:3,ER:2", PhasingParams(error_every=1))
    assert np.all(np.isfinite(rho)) and np.all(np.isfinite(errors.r_fourier))


def test_run_rejects_bad_shapes(letter_data):
    _, amplitude, valid, support = letter_data
    with pytest.raises(ValueError, match="one shape"):
        phasing.run(amplitude, valid[:10], np.zeros_like(amplitude, np.complex64), support,
                    "ER:1")


def test_huang_mode_run_reduces_to_plain_when_region_b_is_empty(letter_data):
    _, amplitude, valid, support = letter_data
    rho0 = ghio.member_start(amplitude, valid, support, 1)
    plain = phasing.run(amplitude, valid, rho0, support, "HIO:20,ER:5", _PARAMS)
    tiny = PhasingParams(**{**_PARAMS.__dict__, "huang_mode": True, "huang_sigma": 1e-9})
    assert not phasing.huang_regions(amplitude, valid, 1e-9).any()
    huang = phasing.run(amplitude, valid, rho0, support, "HIO:20,ER:5", tiny)
    assert np.array_equal(plain[0], huang[0])
    # with a real noise floor, B is capped and R_F is still measured against A
    floor = PhasingParams(**{**_PARAMS.__dict__, "huang_mode": True, "huang_sigma": 30.0})
    assert phasing.huang_regions(amplitude, valid, 30.0).sum() > 500
    rho, _, errors = phasing.run(amplitude, valid, rho0, support, "HIO:20,ER:5", floor)
    assert errors.final_r_fourier == pytest.approx(
        phasing.fourier_r_factor(rho, amplitude, valid), rel=1e-3)


def test_odd_shape_round_trip():
    truth = shapes.letter(63, 3.0)[:, :61]
    amplitude, valid = shapes.far_field(truth, np.inf, None, 2.0)
    support = np.abs(truth) > 0
    # starting from the truth with its own support, ER stays there
    rho, _, errors = phasing.run(amplitude, valid, truth, support, "ER:3",
                                 PhasingParams(error_every=1))
    assert errors.r_fourier.max() < 1e-5
    assert np.allclose(rho, truth, atol=1e-5)


# ----------------------------------------------------------------------------- 3D


def _crystal_3d(n=32, size=14.0):
    """`shapes.crystal` about ``size`` voxels across (747 voxels at 32^3 and size 14:
    linear oversampling above 2)."""
    return shapes.crystal(n, oversampling=n / size)


def _volume_data(obj):
    amplitude = np.abs(np.fft.fftshift(np.fft.fftn(obj.astype(np.complex128))))
    return amplitude.astype(np.float32), np.ones(obj.shape, bool)


def test_fftn_plans_3d_match_numpy_and_2d_keeps_its_check():
    from lensfree.engine import fft

    rng = np.random.default_rng(0)
    x = (rng.standard_normal((8, 12, 10)) + 1j * rng.standard_normal((8, 12, 10)))
    x = x.astype(np.complex64)
    plan = fft.get_fftn(x.shape)
    assert plan is fft.get_fftn(x.shape) and plan.size == 960
    forward = plan.forward(x)
    assert np.abs(forward - np.fft.fftn(x)).max() <= 1e-4 * np.abs(forward).max()
    assert np.abs(plan.inverse(forward) - x).max() <= 1e-5
    with pytest.raises(ValueError, match="2D shape"):
        fft.get_fft2(x.shape)
    with pytest.raises(ValueError, match="2D or 3D"):
        fft.get_fftn((4, 4, 4, 4))


def test_autocorrelation_support_3d_covers_the_object_twice():
    obj = _crystal_3d()
    amplitude, valid = _volume_data(obj)
    support = phasing.autocorrelation_support(amplitude, valid, 0.05)
    assert support.shape == obj.shape and support[16, 16, 16]
    # a body 9, 13 and 15 voxels long on the three axes: its autocorrelation is about twice
    # that, less the tails below the threshold (measured 17, 19 and 23)
    for axis, length in enumerate((9, 13, 15)):
        other = tuple(j for j in range(3) if j != axis)
        body = np.flatnonzero((np.abs(obj) > 0).any(axis=other))
        extent = np.flatnonzero(support.any(axis=other))
        assert body[-1] - body[0] + 1 == length
        assert 1.4 * length <= extent[-1] - extent[0] + 1 <= 2 * length + 1, (axis, extent)


def test_shrinkwrap_3d_blurs_in_every_axis():
    rho = np.zeros((16, 16, 16), np.complex64)
    rho[8, 8, 8] = 1
    support = phasing.shrinkwrap(rho, 1.0, 0.2)
    # an isotropic 3D Gaussian of sigma 1 above 0.2 of its peak: radius sqrt(2 ln 5) = 1.79,
    # so the 27 voxels at distance 0, 1, sqrt 2 and sqrt 3, the same along every axis
    r2 = ((np.indices(rho.shape) - 8) ** 2).sum(axis=0)
    np.testing.assert_array_equal(support, r2 <= 3)


# RAAR at beta 0.99 (as in 2D): at 0.9 this crystal came out of 1 of 4 run seeds (errors
# 0.00-0.27), and run seed 0 passed only before a rounding change in |psi|; at 0.99 all 4
# came out (errors <= 0.001)
@pytest.mark.parametrize("schedule", ["HIO:300,ER:100;shrinkwrap=25",
                                      "RAAR:600:0.99,ER:100;shrinkwrap=25"])
def test_3d_crystal_is_recovered_by_a_small_population(schedule):
    from lensfree.engine import scoring

    obj = _crystal_3d()
    amplitude, valid = _volume_data(obj)
    support = phasing.autocorrelation_support(amplitude, valid, 0.1)
    objects, supports, scores = ghio.run_population(amplitude, valid, support, schedule,
                                                    members=3, generations=2)
    assert scores.shape == (2, 3) and objects[0].shape == supports[0].shape == obj.shape
    best = int(np.argmin(scores[-1]))
    assert scores[-1, best] == pytest.approx(
        phasing.fourier_r_factor(objects[best], amplitude, valid), rel=1e-3)
    aligned, info = align.align(objects[best], obj)
    assert len(info.shift) == 3
    scale = np.vdot(aligned, obj) / np.vdot(aligned, aligned)
    error = float(np.linalg.norm(scale * aligned - obj) / np.linalg.norm(obj))
    assert error <= 0.05, (error, scores)  # measured 0.004 (HIO) and 0.0002 (RAAR)
    # PRTF over spherical shells: the members agree at every frequency
    sums = scoring.align_members(objects, objects[best])
    assert np.asarray(sums.shifts).shape == (3, 3)
    q, curve = scoring.prtf(sums.mean_phasor, amplitude, valid)
    assert q.shape == (17,) and np.nanmin(curve) > 0.8


def test_3d_positivity_recovers_a_real_object():
    obj = np.abs(_crystal_3d())
    amplitude, valid = _volume_data(obj)
    support = phasing.autocorrelation_support(amplitude, valid, 0.1)
    rho0 = ghio.member_start(amplitude, valid, support, 0)
    rho, _, errors = phasing.run(amplitude, valid, rho0, support,
                                 "HIO:200,ER:50;shrinkwrap=20",
                                 PhasingParams(positivity="real-nonneg"))
    assert np.all(rho.imag == 0) and rho.real.min() >= 0
    assert errors.final_r_fourier < 0.02
    # recorded every 10th iteration (the default) and in each step's last
    assert np.isfinite(errors.e_support[::10]).all() and errors.e_support[-1] < 0.05


def test_3d_shells_are_spherical():
    from lensfree.engine import scoring

    shells = scoring.shell_index((16, 16, 16))
    # shell 1 holds the voxels at distance 1 and sqrt 2 (sqrt 3 rounds to shell 2)
    assert (shells == 0).sum() == 1 and (shells == 1).sum() == 6 + 12
    assert shells[8, 8, 0] == 8 and shells[0, 0, 0] == -1 and shells.max() == 8
