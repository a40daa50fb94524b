"""Stage 1 numerics on constructed cases with known answers."""

import numpy as np
import pytest

from lensfree.engine import ensemble
from lensfree.engine.simulate import EnsembleParams, detector_mask, particle_intensity


def test_find_center_recovers_subpixel_origin():
    p = EnsembleParams(shape=(128, 128), center_offset=(2.3, -1.6), distance_m=0.125)
    pattern = particle_intensity(p) * 1e4
    valid = detector_mask(p)
    cy, cx = ensemble.find_center(pattern, valid)
    assert abs(cy - (64 + 2.3)) < 0.25
    assert abs(cx - (64 - 1.6)) < 0.25


def test_centro_patch_fills_from_mirror_only_where_measured():
    rng = np.random.default_rng(0)
    img = rng.random((32, 32))
    valid = np.ones((32, 32), bool)
    valid[5:8, 10:14] = False          # mirror measured: patched
    valid[16, 16] = False              # the centre pixel mirrors onto itself: stays missing
    patched, valid_out, filled = ensemble.centro_patch(img, valid, (16.0, 16.0))
    assert filled.sum() == 12 and not filled[16, 16] and not valid_out[16, 16]
    ys, xs = np.nonzero(filled)
    np.testing.assert_array_equal(patched[ys, xs], img[32 - ys, 32 - xs])
    np.testing.assert_array_equal(patched[valid], img[valid])


def test_bin_pattern_puts_centre_in_the_middle_and_keeps_counts():
    img = np.zeros((64, 64))
    img[30:32, 40:42] = 1.0                      # 2x2 block centred at (30.5, 40.5)
    valid = np.ones_like(img, dtype=bool)
    binned, valid_b, origin = ensemble.bin_pattern(img, valid, (30.5, 40.5), 2)
    assert binned.shape == (32, 32)
    assert binned[16, 16] == 4.0 and binned.sum() == 4.0
    assert origin == (-2, 8)
    # the window reaches past the detector (row -2.., columns ..71): those pixels are missing
    assert valid_b[1:, :28].all() and not valid_b[0].any() and not valid_b[:, 28:].any()


def test_frame_stats_flags_nan_inf_negative_on_measured_pixels_only():
    frames = np.ones((4, 8, 8), dtype=np.float32)
    mask = np.ones((8, 8), bool)
    mask[0, 0] = False
    frames[0, 0, 0] = np.nan        # unmeasured: ignored
    frames[1, 3, 3] = np.inf
    frames[2, 4, 4] = -1
    ring = np.zeros_like(mask)
    ring[2, 2:6] = True
    total, chi2, invalid = ensemble.frame_stats(frames, mask, ring)
    assert invalid.tolist() == [False, True, True, False]
    assert total[0] == 63 and np.isnan(total[1])


def test_screen_thresholds_and_background_choice():
    total = np.array([100.0] * 20 + [5.0, 101, 99, 80])
    chi2 = np.array([10.0] * 20 + [10, 500, 10, 10])
    invalid = np.zeros(24, bool)
    invalid[22] = True
    params = ensemble.ScreenParams(background_fraction=0.05)
    status, th = ensemble.screen(total, chi2, invalid, params)
    assert status[20] == ensemble.WEAK and status[21] == ensemble.CHI2
    assert status[22] == ensemble.INVALID and status[23] == ensemble.BACKGROUND
    assert (status == ensemble.ACCEPTED).sum() == 20


def test_screen_params_reject_bad_values():
    with pytest.raises(ValueError, match="weak_factor"):
        ensemble.ScreenParams(weak_factor=2)


def test_frame_stats_in_sub_blocks_and_in_place_match_whole_frame_sums(monkeypatch):
    rng = np.random.default_rng(3)
    frames = rng.poisson(5.0, (7, 16, 16)).astype(np.uint16)
    mask = np.ones((16, 16), bool)
    mask[:, 7] = False                           # a gap, holding junk
    frames[:, :, 7] = 65535
    ring = np.zeros_like(mask)
    ring[3, 8:14] = True                         # measured pixels, as edge_annulus gives
    want_total = frames[:, mask].sum(axis=1, dtype=np.float64)
    # three frames per step: the block is screened in three steps, the last one short
    monkeypatch.setattr(ensemble, "SUB_BLOCK_BYTES", 3 * frames[0].nbytes)
    total, chi2, invalid = ensemble.frame_stats(frames, mask, ring)
    np.testing.assert_array_equal(total, want_total)   # integer totals: exact
    assert (frames[:, :, 7] == 65535).all()             # not overwritten unless asked
    ring_values = frames[:, ring].astype(np.float64)
    mean = ring_values.mean(axis=1)
    np.testing.assert_allclose(chi2, ((ring_values - mean[:, None]) ** 2).sum(1) / mean,
                               rtol=1e-12)
    again = ensemble.frame_stats(frames, mask, ring, overwrite=True)
    np.testing.assert_array_equal(again[0], total)
    assert (frames[:, :, 7] == 0).all() and not invalid.any()


def test_sum_plan_labelled_class_sums_plus_corrections_are_the_direct_sums():
    from lensfree.engine import sum_plan

    rng = np.random.default_rng(5)
    n, n_classes = 300, 5
    frames = rng.integers(0, 1000, (n, 4, 4)).astype(np.float64)
    status = rng.choice([ensemble.ACCEPTED] * 8 + [ensemble.BACKGROUND, ensemble.WEAK,
                                                   ensemble.CHI2, ensemble.INVALID], n)
    # a prediction that is mostly right, and wrong for some frames of every kind
    classes = np.where(status == ensemble.BACKGROUND, 0, n_classes - 1).astype(np.int16)
    classes[np.isin(status, (ensemble.WEAK, ensemble.CHI2, ensemble.INVALID))] = -1
    wrong = rng.random(n) < 0.1
    classes[wrong] = rng.integers(-1, n_classes, wrong.sum())
    classes[status == ensemble.INVALID] = -1    # invalid frames are never summed
    labels, coef = sum_plan.resolve(classes, status, n_classes)
    assert labels[0] == ensemble.BACKGROUND and labels[-1] == ensemble.ACCEPTED
    sums = np.stack([frames[classes == c].sum(0) for c in range(n_classes)])
    accepted = sum(sums[c] for c in range(n_classes) if labels[c] == ensemble.ACCEPTED)
    background = sum(sums[c] for c in range(n_classes) if labels[c] == ensemble.BACKGROUND)
    accepted = accepted + (coef[:, 0, None, None] * frames).sum(0)
    background = background + (coef[:, 1, None, None] * frames).sum(0)
    np.testing.assert_array_equal(accepted, frames[status == ensemble.ACCEPTED].sum(0))
    np.testing.assert_array_equal(background, frames[status == ensemble.BACKGROUND].sum(0))
    # only mispredicted frames are read again
    assert 0 < np.count_nonzero(coef.any(axis=1)) <= wrong.sum()


def test_sum_plan_pilot_spreads_whole_chunks_and_bins_bracket_the_background_level():
    from lensfree.engine import sum_plan

    chunks = sum_plan.pilot_chunks(20000, 64)
    assert len(chunks) == 7 and chunks[0] == (0, 64) and chunks[-1][1] == 20000
    assert all(a % 64 == 0 for a, _ in chunks)
    assert sum_plan.pilot_chunks(10, 64) == [(0, 10)]
    params = ensemble.ScreenParams()
    assert sum_plan.n_classes_for((256, 256), params) == 16
    assert sum_plan.n_classes_for((2048, 2048), params) == 2
    assert sum_plan.n_classes_for((256, 256), ensemble.ScreenParams(
        background_fraction=0)) == 1
    rng = np.random.default_rng(1)
    total = rng.normal(1000, 100, 2000)
    pred = sum_plan.predict(total, np.ones(2000), np.zeros(2000, bool), params, 8)
    assert len(pred.edges) == 7
    level = np.mean(total < np.array(pred.edges)[:, None], axis=1)
    assert level[0] < 0.01 < level[-1]


@pytest.mark.parametrize("dtype", [np.uint16, np.uint32, np.int32, np.int64, np.float32])
def test_screen_and_sum_gives_frame_stats_and_the_sums_by_class(dtype):
    from lensfree.engine import sum_plan

    rng = np.random.default_rng(7)
    frames = rng.poisson(50.0, (12, 16, 16)).astype(dtype)
    mask = np.ones((16, 16), bool)
    mask[5, :] = False
    junk = {np.uint16: 65535, np.uint32: 2**32 - 1, np.int32: -1, np.int64: -1,
            np.float32: np.nan}[dtype]
    frames[:, 5, :] = junk                      # unmeasured junk must not count
    frames[2] //= 20                            # weak
    if np.dtype(dtype).kind != "u":
        frames[4, 8, 8] = -3                    # invalid: negative on a measured pixel
    ring = np.zeros_like(mask)
    ring[8:10, 2:14] = True
    pred = sum_plan.Prediction(weak_total=1000.0, chi2_max=1e9, edges=(12500.0, 12800.0))
    sums = np.zeros((3, 16, 16))
    total, chi2, invalid, classes = sum_plan.screen_and_sum(frames, mask, ring, pred, sums)
    want = ensemble.frame_stats(frames, mask, ring)
    np.testing.assert_array_equal(invalid, want[2])
    np.testing.assert_allclose(total, want[0], rtol=1e-12)  # exact for integers
    np.testing.assert_allclose(chi2, want[1], rtol=1e-12)
    np.testing.assert_array_equal(classes, sum_plan.classify(*want, pred))
    assert classes[2] == -1 and (classes >= 0).sum() >= 9
    for c in range(3):
        members = frames[classes == c].astype(np.float64)
        np.testing.assert_array_equal(sums[c][mask], members.sum(0)[mask])
