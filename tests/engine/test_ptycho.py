"""Ptychography numerics: geometry, block sums, sub-pixel positions, refinement steps."""

from __future__ import annotations

import numpy as np
import pytest

from lensfree.engine import ptycho as pt
from lensfree.engine import simulate_ptycho as sp
from lensfree.engine.align import fourier_shift
from lensfree.partitioning import position_blocks


@pytest.fixture(scope="module")
def scan():
    return sp.simulate_scan(sp.PtychoSimParams(n_positions=60, frame_size=32, photons=None,
                                               subpixel=True, seed=3))


def test_position_blocks_are_compact_and_cover_everything():
    pos = sp.fermat_scan(500, 5.0)
    blocks = position_blocks(pos, 7)
    assert sorted(np.concatenate(blocks).tolist()) == list(range(500))
    assert max(map(len, blocks)) - min(map(len, blocks)) <= 1
    whole = np.ptp(pos, axis=0).prod()
    assert all(np.ptp(pos[b], axis=0).prod() < 0.4 * whole for b in blocks)
    again = position_blocks(pos, 7)
    assert all(np.array_equal(a, b) for a, b in zip(blocks, again))
    with pytest.raises(ValueError):
        position_blocks(pos, 0)


def test_simulated_object_has_distinct_amplitude_and_phase():
    obj = sp.test_object((64, 64))
    amp, phase = np.abs(obj), np.angle(obj)
    assert 0.39 < amp.min() and amp.max() <= 1.0 + 1e-6
    assert abs(np.corrcoef(amp.ravel(), phase.ravel())[0, 1]) < 0.5
    modes = sp.orthogonal_modes(sp.make_probe((32, 32), "pinhole", 8), 3)
    gram = np.abs(np.einsum("ahw,bhw->ab", modes.conj(), modes))
    assert np.allclose(gram - np.diag(np.diag(gram)), 0, atol=1e-5)


def test_true_model_is_a_fixed_point(scan):
    """With the true object, probe and sub-pixel positions the Fourier error is ~0 and the
    parallel update leaves the object where it is."""
    amp, valid = pt.prepare_amplitudes(scan.frames)
    origin, shape = pt.object_frame(scan.true_positions, (32, 32))
    obj = pt.in_frame(scan.object, origin, shape)
    crops, fractions = pt.corners(scan.true_positions, origin, shape, (32, 32))
    assert np.abs(fractions).max() > 0.1
    res = [pt.block_update(obj, scan.probe, crops[b], fractions[b], amp[b], valid[b],
                           refine=True)
           for b in position_blocks(scan.true_positions, 3)]
    # not 0: the probe's weak tails wrap round the frame edges when it is shifted
    assert sum(r.error.sum() for r in res) < 2e-3 * (amp**2).sum()
    assert np.abs(np.concatenate([r.steps for r in res])).max() < 0.1
    new, new_probe = pt.apply_update(obj, scan.probe, res, update_probe=True)
    lit = pt.illumination(crops, scan.probe, shape)
    lit = lit > 0.1 * lit.max()
    assert np.abs(new - obj)[lit].max() < 0.02
    # the probe moves by increments that vanish at the fixed point
    assert np.abs(new_probe - scan.probe).max() < 0.02 * np.abs(scan.probe).max()


def test_masked_pixels_are_left_free(scan):
    """All-valid and ``valid=None`` give the same sums; an unmeasured pixel drops out of the
    error and keeps the model's own amplitude."""
    amp, valid = pt.prepare_amplitudes(scan.frames)
    origin, shape = pt.object_frame(scan.positions, (32, 32))
    obj = np.ones(shape, np.complex64)
    crops, fractions = pt.corners(scan.positions, origin, shape, (32, 32))
    probe = pt.initial_probe(scan.probe_guess, amp, 1)
    a = pt.block_update(obj, probe, crops, fractions, amp, valid, refine=True)
    b = pt.block_update(obj, probe, crops, fractions, amp, None, refine=True)
    for name in ("obj_num", "obj_den", "probe_num", "probe_den", "error", "steps"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    holes = valid.copy()
    holes[:, 0, 0] = False  # zero frequency unmeasured (a beam stop)
    c = pt.block_update(obj, probe, crops, fractions, amp, holes)
    assert np.all(c.error < a.error)
    assert np.all(np.isfinite(c.obj_num)) and not np.allclose(c.obj_num, a.obj_num)


def test_block_split_does_not_change_the_sums(scan):
    amp, valid = pt.prepare_amplitudes(scan.frames)
    origin, shape = pt.object_frame(scan.positions, (32, 32))
    obj = np.ones(shape, np.complex64)
    crops, fractions = pt.corners(scan.positions, origin, shape, (32, 32))
    probe = pt.initial_probe(scan.probe_guess, amp, 2)
    out = []
    for n in (1, 4):
        res = [pt.block_update(obj, probe, crops[b], fractions[b], amp[b], valid[b])
               for b in position_blocks(scan.positions, n)]
        out.append(pt.apply_update(obj, probe, res, update_probe=True))
    for a, b in zip(*out):
        assert np.linalg.norm(a - b) <= 1e-5 * np.linalg.norm(a)


def test_refine_positions_is_bounded_and_keeps_the_mean():
    rng = np.random.default_rng(0)
    initial = rng.uniform(0, 50, (40, 2))
    steps = rng.normal(0, 3, (40, 2))
    moved = pt.refine_positions(initial, steps, initial, max_step=0.5, affine=False)
    assert np.allclose((moved - initial).mean(axis=0), 0)
    assert np.abs(moved - initial).max() <= 1.0 + 1e-9
    assert pt.position_error(initial + [3.0, -2.0], initial) == pytest.approx(0, abs=1e-12)


def test_object_error_ignores_shift_phase_and_ramp():
    obj = sp.test_object((48, 48))
    yy, xx = np.indices(obj.shape)
    weight = np.zeros(obj.shape, bool)
    weight[8:40, 8:40] = True
    shifted = fourier_shift(obj, (0.3, -0.4)) * np.exp(0.7j)
    assert pt.object_error(shifted, obj, weight, ramp=False) < 0.05
    ramped = obj * np.exp(1j * (0.7 + 0.03 * yy - 0.02 * xx))
    assert pt.object_error(ramped, obj, weight) < 0.02
    assert pt.object_error(ramped, obj, weight, ramp=False) > 0.1
