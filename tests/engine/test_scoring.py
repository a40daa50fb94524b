"""Scores: PRTF and resolution, partial sums, SSIM, core-shell fit on constructed cases."""

from __future__ import annotations

import numpy as np
import pytest

from lensfree.engine import align, ensemble, scoring, shapes


@pytest.fixture(scope="module")
def letter():
    return shapes.letter(64, 3.0).astype(np.complex64)


def _valid(shape, radius=2):
    return scoring.shell_index(shape) > radius


def _copies(obj, n, rng):
    """Shifted (on the 1/20 px registration grid), twinned, phase-rotated copies of obj."""
    out = []
    for k in range(n):
        shift = tuple(np.round(rng.uniform(-10, 10, 2) * 20) / 20)
        m = align.fourier_shift(obj, shift)
        if k % 2:
            m = align.twin(m)
        out.append((m * np.exp(1j * rng.uniform(0, 2 * np.pi))).astype(np.complex64))
    return out


def test_prtf_of_identical_members_is_one_in_every_shell(letter):
    amplitude = np.abs(scoring.spectrum(letter))
    valid = _valid(letter.shape)
    members = _copies(letter, 6, np.random.default_rng(0))
    sums = scoring.align_members(iter(members), letter)
    assert sums.n == 6 and sums.twins == [False, True] * 3
    q, curve = scoring.prtf(sums.mean_phasor, amplitude, valid)
    assert q.shape == curve.shape == (33,)
    assert np.isnan(curve[:3]).all()  # the missing centre has no valid pixel
    np.testing.assert_allclose(curve[3:], 1.0, atol=1e-4)
    np.testing.assert_allclose(q[3:], np.arange(3, 33) / 64)
    res = scoring.resolution(q, curve)
    assert not res.reached and res.q_cut == 0.5 and res.half_period_px == 1.0
    # and the average is the reference itself
    assert np.linalg.norm(sums.average - letter) < 1e-4 * np.linalg.norm(letter)


def test_prtf_falls_with_phase_noise_as_expected(letter):
    """Fourier phases jittered by sigma(q) = sqrt(2) q / q0: <e^{i d}> = e^{-sigma^2 / 2},
    which is 1/e at q0; N members add a chance floor (1 - e^{-sigma^2}) / N in power."""
    rng = np.random.default_rng(1)
    n, q0 = 100, 0.3
    g = scoring.spectrum(letter)
    sigma = np.sqrt(2) * scoring.frequency_grid(letter.shape, 1 / 64) / q0
    members = (np.fft.ifft2(np.fft.ifftshift(g * np.exp(1j * sigma * rng.standard_normal(g.shape))))
               .astype(np.complex64) for _ in range(n))
    sums = scoring.align_members(members, letter)
    q, curve = scoring.prtf(sums.mean_phasor, np.abs(g), _valid(letter.shape))
    s2 = (np.sqrt(2) * q / q0) ** 2
    expected = np.sqrt(np.exp(-s2) + (1 - np.exp(-s2)) / n)
    ok = np.isfinite(curve)
    assert np.abs(curve[ok] - expected[ok]).max() < 0.06
    assert np.all(np.diff(curve[ok][::4]) < 0)  # falls with q
    res = scoring.resolution(q, curve)
    assert res.reached and abs(res.q_cut - q0) < 0.03
    assert res.half_period_px == pytest.approx(1 / (2 * res.q_cut))
    # more noise everywhere: a lower PRTF
    members = (np.fft.ifft2(np.fft.ifftshift(g * np.exp(2j * sigma * rng.standard_normal(g.shape))))
               .astype(np.complex64) for _ in range(20))
    _, worse = scoring.prtf(scoring.align_members(members, letter).mean_phasor, np.abs(g),
                            _valid(letter.shape))
    assert np.nanmean(worse[4:]) < np.nanmean(curve[4:]) - 0.1


def test_prtf_is_at_most_one_where_most_pixels_count_no_photon(letter):
    """Photon-starved high q (90% zero counts, as on the real NADIA pattern): members whose
    moduli do not follow the data there. The ratio of shell sums sum|<G>| / sum A that
    lensfree used before climbs far above 1; the phase-only PRTF stays in [0, 1]."""
    rng = np.random.default_rng(6)
    g = scoring.spectrum(letter)
    far = scoring.frequency_grid(letter.shape, 1 / 64) > 0.25
    counts = rng.poisson(np.where(far, 0.1, 1e4 * np.abs(g) ** 2 / np.abs(g).max() ** 2))
    amplitude = np.sqrt(counts)
    valid = _valid(letter.shape)
    assert (counts[far & valid] == 0).mean() > 0.85
    # every member: the object plus its own faint noise, so its transform has some modulus
    # everywhere, with phases that differ between members only where the object is faint
    members = [(letter + 0.02 * (rng.standard_normal(letter.shape)
                                 + 1j * rng.standard_normal(letter.shape))).astype(np.complex64)
               for _ in range(8)]
    sums = scoring.align_members(iter(members), letter)
    with np.errstate(invalid="ignore"):
        shells = scoring.shell_index(letter.shape)
        use = valid & (shells >= 0)
        old = (np.bincount(shells[use], np.abs(sums.mean_spectrum)[use], 33)
               / np.bincount(shells[use], amplitude[use], 33))
    assert np.nanmax(old) > 2  # the old score: "better than perfect" at high q
    q, curve = scoring.prtf(sums.mean_phasor, amplitude, valid)
    ok = np.isfinite(curve)
    assert ok[3:].all() and curve[ok].min() >= 0 and curve[ok].max() <= 1
    assert curve[5] > 0.95  # where the object is bright the members agree
    # where the mean unit phasor is not a phasor mean (|.| > 1), the call is refused
    with pytest.raises(ValueError, match="mean_phasor"):
        scoring.prtf(sums.mean_spectrum, amplitude, valid)


def test_resolution_at_the_data_edge_says_better_than_and_keeps_the_edge_value():
    q = np.arange(6) / 10
    curve = np.array([np.nan, np.nan, 0.95, 0.9, 0.85, 0.8])
    res = scoring.resolution(q, curve)
    assert not res.reached and res.q_cut == 0.5 and res.half_period_px == 1.0
    assert res.edge == 0.8
    text = scoring.describe_resolution(res.half_period_px, res.reached, 2.6e-9, res.edge)
    assert text == "better than 1.00 px (2.60 nm) (the data edge; PRTF 0.80 there)"
    crossed = scoring.resolution(q, np.array([np.nan, 0.9, 0.5, 0.2, 0.1, 0.1]))
    assert crossed.reached and crossed.edge == 0.1
    assert scoring.describe_resolution(crossed.half_period_px, True) == (
        f"{crossed.half_period_px:.2f} px")


def test_blocks_fold_to_the_one_pass_sums(letter):
    members = _copies(letter, 5, np.random.default_rng(2))
    whole = scoring.align_members(members, letter)
    parts = [scoring.align_members(members[i : i + 2], letter) for i in (0, 2, 4)]
    folded = scoring.combine(parts)
    assert folded.n == 5 and folded.twins == whole.twins
    np.testing.assert_allclose(folded.object_sum, whole.object_sum, rtol=0, atol=1e-9)
    np.testing.assert_allclose(folded.spectrum_sum, whole.spectrum_sum, rtol=0, atol=1e-6)
    # <G> is F<g> by linearity
    np.testing.assert_allclose(folded.mean_spectrum, scoring.spectrum(folded.average),
                               atol=1e-6 * np.abs(folded.mean_spectrum).max())
    with pytest.raises(ValueError):
        scoring.combine([])


def test_resolution_interpolates_and_skips_missing_shells():
    q = np.arange(6) / 10
    curve = np.array([np.nan, np.nan, 0.9, 0.5, 0.2, 0.1])
    res = scoring.resolution(q, curve)
    t = (0.5 - np.exp(-1)) / (0.5 - 0.2)
    assert res.reached and res.q_cut == pytest.approx(0.3 + 0.1 * t)
    assert res.half_period_px == pytest.approx(1 / (2 * res.q_cut))
    first = scoring.resolution(q, np.array([np.nan, 0.1, 0.1, 0.1, 0.1, 0.1]))
    assert first.q_cut == pytest.approx(0.1)
    with pytest.raises(ValueError):
        scoring.resolution(q, np.full(6, np.nan))


def test_prtf_floor_is_the_chance_level_of_random_phases():
    assert scoring.prtf_floor(1) == 1.0
    rng = np.random.default_rng(3)
    for n in (4, 20, 100):
        phasors = np.exp(2j * np.pi * rng.random((20000, n)))
        assert np.abs(phasors.mean(axis=1)).mean() == pytest.approx(scoring.prtf_floor(n),
                                                                   rel=0.05)
    assert scoring.prtf_floor(5) > scoring.INV_E > scoring.prtf_floor(6)


def test_r_factor_of_the_true_object_is_zero(letter):
    amplitude = np.abs(np.fft.fftshift(np.fft.fft2(letter)))
    valid = _valid(letter.shape)
    assert scoring.r_factor(letter, amplitude, valid) < 1e-6
    assert scoring.r_factor(1.1 * letter, amplitude, valid) == pytest.approx(0.1, rel=1e-4)


def test_ssim_of_an_image_with_itself_is_one(letter):
    assert scoring.ssim(letter, letter) == pytest.approx(1.0, abs=1e-12)
    # aligned to the model first: shift, twin and global phase do not matter
    moved = align.twin(align.fourier_shift(letter, (5, -7))) * np.exp(2j)
    assert scoring.ssim(moved, letter) < 0.8
    assert scoring.ssim_to_model(3.0 * moved, letter) == pytest.approx(1.0, abs=1e-6)
    rng = np.random.default_rng(4)
    scores = [scoring.ssim_to_model(letter + s * rng.standard_normal(letter.shape), letter)
              for s in (0.02, 0.1, 0.3)]
    assert 1 > scores[0] > scores[1] > scores[2]
    with pytest.raises(ValueError):
        scoring.ssim(letter, letter[:32])


def test_erf_percent_and_least_squares_scale():
    measured = np.array([[1.0, 2.0], [3.0, 4.0]])
    region = np.array([[True, True], [True, False]])
    assert scoring.erf_percent(measured, measured, region) == 0.0
    assert scoring.erf_percent(np.zeros((2, 2)), measured, region) == 100.0
    assert scoring.erf_percent(measured + 0.6, measured, region) == pytest.approx(30.0)
    assert scoring.least_squares_scale(measured, 2.5 * measured, region) == pytest.approx(2.5)


#: the simulator's geometry, binned x2: 128 x 128 pixels of 3e6 cycles per metre
DQ = 150e-6 / (2e-10 * 0.25)
INNER = np.arange(16, 21.01, 0.5)
OUTER = np.arange(53, 58.01, 0.5)


def _grid(measured, region, q, **kw):
    return np.array([[scoring.fit_core_shell(q, measured, region, i * 1e-9, o * 1e-9, **kw)[0]
                      for o in OUTER] for i in INNER])


@pytest.mark.parametrize("offset", [True, False])
def test_fit_finds_the_diameters_within_one_grid_step(offset):
    """Form factor of a 19.2 / 54.8 nm core-shell sphere, Poisson counts, a flat floor."""
    centre = (64.3, 63.8)
    q = scoring.frequency_grid((128, 128), DQ, centre)
    truth = scoring.core_shell_amplitude(q, 19.2e-9, 54.8e-9)
    counts = np.random.default_rng(5).poisson(2e6 * truth**2)
    measured = np.sqrt(counts) + (2.0 if offset else 0.0)
    region = ~ensemble.central_disk(q.shape, 12)
    erf = _grid(measured, region, q, offset=offset)
    i, j = np.unravel_index(np.nanargmin(erf), erf.shape)
    assert abs(INNER[i] - 19.2) <= 0.5 and abs(OUTER[j] - 54.8) <= 0.5
    assert erf[i, j] < 15 and np.nanmax(erf) > 2 * erf[i, j]
    erf_best, scale, c = scoring.fit_core_shell(q, measured, region, INNER[i] * 1e-9,
                                               OUTER[j] * 1e-9, offset=offset)
    assert erf_best == erf[i, j] and scale == pytest.approx(np.sqrt(2e6), rel=0.1)
    assert c == pytest.approx(2.0 if offset else 0.0, abs=0.5)
    assert np.isnan(scoring.fit_core_shell(q, measured, region, 30e-9, 20e-9)[0])


def test_core_shell_image_is_the_particle_through_the_aperture():
    img = scoring.core_shell_image((128, 128), DQ, 19e-9, 55e-9)
    assert img.max() == 1.0 and np.unravel_index(np.argmax(img), img.shape) == (64, 64)
    # 55 nm at 1 / (128 DQ) = 2.6 nm per pixel: about 21 px across
    width = (img[64] > 0.1).sum()
    assert 18 <= width <= 24
    assert scoring.ssim_to_model(np.roll(img, (3, -4), axis=(0, 1)), img) > 0.999
