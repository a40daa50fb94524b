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
