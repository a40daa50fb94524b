"""Ptychography numerics: geometry, the shared per-position kernel, block sums, the serial
sweep, sub-pixel positions, refinement steps, scores."""

from __future__ import annotations

import numpy as np
import pytest

from lensfree.engine import ptycho as pt
from lensfree.engine import simulate_ptycho as sp
from lensfree.engine.align import fourier_shift
from lensfree.engine.ptycho.geometry import ramp_factors
from lensfree.engine.ptycho.kernel import PositionKernel, scaled_amplitudes
from lensfree.engine.ptycho.probe import orthogonalise_modes, probe_spectrum
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


def _start(scan, modes=1):
    """Engine inputs at the recorded (sub-pixel) positions: the true object (not flat, so
    that position steps are not zero) and the guessed probe."""
    amp, valid = pt.prepare_amplitudes(scan.frames)
    origin, shape = pt.object_frame(scan.positions, (32, 32))
    crops, fractions = pt.corners(scan.positions, origin, shape, (32, 32))
    obj = pt.in_frame(scan.object, origin, shape).astype(np.complex64)
    return obj, pt.initial_probe(scan.probe_guess, amp, modes), crops, fractions, amp, valid


def test_kernel_projects_one_position_as_the_formula_says(scan):
    """psi' = F^-1[A F psi / sqrt(sum_m |F psi_m|^2)] with the probe moved by the sub-pixel
    rest, against plain numpy FFTs in double precision; unmeasured pixels keep the model."""
    _, probe, _, fractions, amp, valid = _start(scan, modes=2)
    j = int(np.argmax(np.abs(fractions).sum(axis=1)))
    holes = valid[j].copy()
    holes[:3, :3] = False
    patch = sp.test_object((32, 32))  # an object crop with amplitude and phase
    qy, qx = np.fft.fftfreq(32)[:, None], np.fft.fftfreq(32)[None, :]
    ramp = np.exp(-2j * np.pi * (qy * fractions[j, 0] + qx * fractions[j, 1]))
    moved = np.fft.ifft2(np.fft.fft2(probe.astype(np.complex128)) * ramp)
    spec = np.fft.fft2(moved * patch)
    model = np.sqrt(np.sum(np.abs(spec) ** 2, axis=0))
    want_error = np.sum(np.where(holes, (model - amp[j]) ** 2, 0))
    want = np.fft.ifft2(spec * np.where(holes, amp[j] / model, 1))

    kernel = PositionKernel(probe.shape)
    ry, rx = ramp_factors(fractions[j:j + 1], (32, 32))
    probe_j = kernel.shift_probe(probe_spectrum(probe), ry[0], rx[0])
    assert np.linalg.norm(probe_j - moved) <= 1e-6 * np.linalg.norm(moved)
    error = kernel.project(probe_j, patch.astype(np.complex64), 0, 0, amp[j],
                           scaled_amplitudes(amp[j:j + 1])[0], ~holes)
    assert error == pytest.approx(want_error, rel=1e-5)
    assert np.linalg.norm(kernel.psi_new - want) <= 1e-6 * np.linalg.norm(want)
    dpsi = want - moved * patch
    assert np.linalg.norm(kernel.dpsi - dpsi) <= 1e-5 * np.linalg.norm(dpsi)


def test_serial_and_parallel_give_the_same_projection(scan):
    """One position through ePIE and through the parallel form: the same Fourier error and
    position step, and ePIE's object step is the parallel sums' ``num / max den``
    (both are ``conj(P) (psi' - psi)`` of the one projection)."""
    obj, probe, crops, fractions, amp, valid = _start(scan, modes=2)
    for j in (0, int(np.argmax(np.abs(fractions).sum(axis=1)))):
        one = slice(j, j + 1)
        block = pt.block_update(obj, probe, crops[one], fractions[one], amp[one], valid[one],
                                refine=True)
        new_obj, new_probe, errors, steps = pt.pie_iteration(
            obj, probe, crops, fractions, amp, valid, np.array([j]), alpha=1.0,
            update_probe=False, refine=True)
        assert errors[j] == pytest.approx(block.error[0], rel=1e-6)
        assert np.abs(block.steps[0]).min() > 1e-3
        assert np.allclose(steps[j], block.steps[0], rtol=1e-5, atol=0)  # float32 sums
        (y, x), (h, w) = crops[j], probe.shape[-2:]
        step = new_obj[y:y + h, x:x + w] - obj[y:y + h, x:x + w]
        want = block.obj_num / block.obj_den.max()
        assert np.linalg.norm(step - want) <= 1e-5 * np.linalg.norm(want)
        assert np.array_equal(new_probe, probe)  # update_probe=False


def test_pie_iteration_returns_new_state_and_leaves_its_inputs(scan):
    obj, probe, crops, fractions, amp, valid = _start(scan, modes=2)
    inputs = (obj, probe, crops, fractions, amp, valid)
    copies = [a.copy() for a in inputs]
    order = np.random.default_rng(0).permutation(len(crops))
    for engine in ("epie", "rpie"):
        new_obj, new_probe, errors, steps = pt.pie_iteration(
            obj, probe, crops, fractions, amp, valid, order, engine=engine, refine=True)
        for a, b in zip(inputs, copies):
            assert np.array_equal(a, b)
        assert new_obj is not obj and new_probe is not probe
        assert not np.allclose(new_obj, obj) and not np.allclose(new_probe, probe)
        assert np.isfinite(errors).all() and errors.min() > 0 and steps.shape == (60, 2)
    again = pt.pie_iteration(obj, probe, crops, fractions, amp, valid, order, refine=True)
    first = pt.pie_iteration(*copies, order, refine=True)
    for a, b in zip(again, first):
        assert np.array_equal(a, b)  # no hidden state between calls


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


def test_score_of_the_truth_is_zero_and_counts_position_errors(scan):
    origin, shape = pt.object_frame(scan.true_positions, (32, 32))
    obj = pt.in_frame(scan.object, origin, shape)
    moved = scan.true_positions + [2.0, -1.0]  # a common shift is not an error
    got = pt.score(obj, scan.probe, moved, scan.positions, origin, scan.object,
                   scan.true_positions)
    assert got.object_error < 1e-3
    assert got.position_error_after == pytest.approx(0, abs=1e-9)
    assert got.position_error_before == pt.position_error(scan.positions,
                                                          scan.true_positions)
    # a truth that starts elsewhere in the frame: the same score once told where
    shifted = pt.score(pt.in_frame(scan.object, origin - [3, 5], shape), scan.probe, moved,
                       scan.positions, origin, scan.object, scan.true_positions,
                       true_origin=(3, 5))
    assert shifted.object_error < 1e-3


def test_tree_folded_partials_equal_the_ordered_fold(scan):
    """Block sums folded pairwise (any tree, as `ctx.reduce` does) give the update of the
    ordered fold to 1e-6, the per-position steps back in position order, and one partial no
    larger than the object (what the root holds, whatever the number of blocks)."""
    from lensfree.engine.ptycho.sums import TILE, Partial, combine

    amp, valid = pt.prepare_amplitudes(scan.frames)
    origin, shape = pt.object_frame(scan.positions, (32, 32))
    obj = np.ones(shape, np.complex64)
    crops, fractions = pt.corners(scan.positions, origin, shape, (32, 32))
    probe = pt.initial_probe(scan.probe_guess, amp, 2)
    blocks = position_blocks(scan.positions, 5)
    res = [pt.block_update(obj, probe, crops[b], fractions[b], amp[b], valid[b], refine=True)
           for b in blocks]
    ordered = pt.apply_update(obj, probe, res, update_probe=True)
    parts = [Partial.of(r, b) for r, b in zip(res, blocks)]
    tree = combine(combine(parts[0], combine(parts[1], parts[2])), combine(parts[3], parts[4]))
    # one tile per object tile at most (the object's own size, up to the tiles' padding)
    most = -(-shape[0] // TILE) * -(-shape[1] // TILE)
    assert 0 < len(tree.obj_num) <= most and len(tree.obj_den) == len(tree.obj_num)
    folded = pt.apply_update(obj, probe, [tree], update_probe=True)
    for a, b in zip(ordered, folded):
        assert np.linalg.norm(a - b) <= 1e-6 * np.linalg.norm(a)
    steps = np.zeros((len(scan.positions), 2))
    for r, b in zip(res, blocks):
        steps[b] = r.steps
    np.testing.assert_array_equal(tree.per_position(len(scan.positions)), steps)
    assert tree.error == pytest.approx(sum(r.error.sum() for r in res), rel=1e-12)


def test_momentum_moves_on_by_the_velocity():
    """mPIE's momentum: from rest the step is the gain times the iteration's change; the
    velocity keeps FRICTION of its last value; a held probe is left as it is."""
    from lensfree.engine.ptycho.parallel import FRICTION

    rng = np.random.default_rng(0)
    before = (rng.normal(size=(8, 8)).astype(np.complex64),
              rng.normal(size=(1, 4, 4)).astype(np.complex64))
    obj, probe = before[0] + 1, before[1] + 2
    rest = (np.zeros_like(obj), np.zeros_like(probe))
    o, p, (vo, vp) = pt.momentum_step(obj, probe, before, rest, 0.5, True)
    np.testing.assert_allclose(o, obj + 0.5, rtol=1e-6)
    np.testing.assert_allclose(p, probe + 1.0, rtol=1e-6)
    o2, p2, (vo2, _) = pt.momentum_step(o, probe, (o, probe), (vo, vp), 0.5, False)
    np.testing.assert_allclose(vo2, FRICTION * vo, rtol=1e-6)
    np.testing.assert_allclose(o2, o + 0.5 * FRICTION, rtol=1e-6)
    assert p2 is probe


def test_dm_block_is_the_difference_map_and_the_overlap_projection(scan):
    """One block of the difference map against plain numpy: the new exit waves are
    ``psi + P_F(2 P O_j - psi) - P O_j`` (two modes, sub-pixel positions, a masked pixel),
    the object's sums those of the overlap projection of ``psi - P O_j``, and
    :func:`project_probe` is ``P + sum conj(O_j) (psi_j - P_j O_j) / (sum |O_j|^2 + r)``."""
    from lensfree.engine.ptycho.dm import dm_block, dm_probe_block, project_probe

    obj, probe, crops, fractions, amp, valid = _start(scan, modes=2)
    block = np.arange(5)
    valid = valid.copy()
    valid[:, 1, 2] = False
    h, w = probe.shape[-2:]
    rng = np.random.default_rng(0)
    exits = (rng.normal(size=(5, 2, h, w)) + 1j * rng.normal(size=(5, 2, h, w))
             ).astype(np.complex64) * np.abs(probe).max()
    qy, qx = np.fft.fftfreq(h)[:, None], np.fft.fftfreq(w)[None, :]
    want_exits, want_num = [], np.zeros(obj.shape, complex)
    for i in block:
        ramp = np.exp(-2j * np.pi * (qy * fractions[i, 0] + qx * fractions[i, 1]))
        moved = np.fft.ifft2(np.fft.fft2(probe.astype(np.complex128)) * ramp)
        (y, x) = crops[i]
        model = moved * obj[y:y + h, x:x + w]
        spec = np.fft.fft2(2 * model - exits[i])
        mod = np.sqrt(np.sum(np.abs(spec) ** 2, axis=0))
        projected = np.fft.ifft2(spec * np.where(valid[i], amp[i] / mod, 1))
        new = exits[i] + projected - model
        want_exits.append(new)
        want_num[y:y + h, x:x + w] += np.sum(np.conj(moved) * (new - model), axis=0)
    got_exits = exits[block].copy()
    result = dm_block(obj, probe, got_exits, crops[block], fractions[block], amp[block],
                      valid[block])
    want_exits = np.array(want_exits)
    assert np.linalg.norm(got_exits - want_exits) <= 1e-5 * np.linalg.norm(want_exits)
    got_num = np.zeros(obj.shape, complex)
    result.add_into(got_num)
    assert np.linalg.norm(got_num - want_num) <= 1e-5 * np.linalg.norm(want_num)
    # first: the exit waves start as P O_j, so the update is the Fourier projection
    first = dm_block(obj, probe, np.empty_like(exits[block]), crops[block],
                     fractions[block], amp[block], valid[block], first=True)
    plain = pt.block_update(obj, probe, crops[block], fractions[block], amp[block],
                            valid[block])
    first_num, plain_num = np.zeros(obj.shape, complex), np.zeros(obj.shape, complex)
    first.add_into(first_num)
    plain.add_into(plain_num)
    assert np.linalg.norm(first_num - plain_num) <= 1e-5 * np.linalg.norm(plain_num)
    # the probe's half, against the object as it is
    pnum, pden = dm_probe_block(obj, probe, got_exits, crops[block], fractions[block])
    new_probe = project_probe(probe, [type("S", (), {"probe_num": pnum, "probe_den": pden})],
                              regularisation=0.0)
    want_pnum, want_pden = np.zeros(probe.shape, complex), np.zeros((h, w))
    for k, i in enumerate(block):
        ramp = np.exp(-2j * np.pi * (qy * fractions[i, 0] + qx * fractions[i, 1]))
        moved = np.fft.ifft2(np.fft.fft2(probe.astype(np.complex128)) * ramp)
        (y, x) = crops[i]
        patch = obj[y:y + h, x:x + w]
        want_pnum += np.conj(patch) * (want_exits[k] - moved * patch)
        want_pden += np.abs(patch) ** 2
    want_probe = probe + want_pnum / want_pden
    assert np.linalg.norm(new_probe - want_probe) <= 1e-5 * np.linalg.norm(want_probe)


def test_orthogonal_modes_come_back_with_their_own_phases():
    """Orthogonalising modes that already are orthogonal changes nothing, whatever their
    phases: the SVD's arbitrary phase per mode would make an iteration's change (the
    momentum's velocity) of a multi-mode probe meaningless."""
    rng = np.random.default_rng(3)
    raw = (rng.normal(size=(3, 16, 16)) + 1j * rng.normal(size=(3, 16, 16))).astype(np.complex64)
    modes = orthogonalise_modes(raw)
    turned = modes * np.exp(1j * np.array([0.5, 2.0, -2.5]))[:, None, None].astype(np.complex64)
    again = orthogonalise_modes(turned)
    assert np.allclose(again, turned, atol=1e-5 * np.abs(turned).max())
    power = np.sum(np.abs(raw) ** 2, axis=0)
    assert np.allclose(np.sum(np.abs(modes) ** 2, axis=0), power, rtol=1e-4)


def test_rests_lie_on_the_subpixel_grid_within_half_a_step():
    rng = np.random.default_rng(7)
    positions = rng.uniform(0, 40, (500, 2))
    crops, rests = pt.corners(positions, np.zeros(2), (80, 80), (32, 32))
    steps = pt.geometry.SUBPIXEL_STEPS
    assert np.allclose(rests * steps, np.rint(rests * steps))
    assert np.abs(positions - crops - rests).max() <= 0.5 / steps + 1e-12
    assert len({tuple(r) for r in rests}) <= (steps + 1) ** 2


def test_moved_probes_are_kept_per_rest_until_the_probe_changes(scan):
    """A probe moved for one rest is given again for the next position with that rest
    (no FFT), the same numbers as moving it afresh; a new probe drops what was kept."""
    probe = scan.probe
    kernel = PositionKernel((1, 32, 32))
    rest = np.array([[0.25, -0.375]])
    ry, rx = ramp_factors(rest, (32, 32))
    spectrum = kernel.spectrum(probe)
    fresh = kernel.shift_probe(spectrum, ry[0], rx[0]).copy()  # no rest given: not kept
    first = kernel.shift_probe(spectrum, ry[0], rx[0], rest=(0.25, -0.375))
    np.testing.assert_array_equal(first, fresh)
    again = kernel.shift_probe(spectrum, ry[0], rx[0], rest=(0.25, -0.375))
    assert again is not kernel.shifted and np.array_equal(again, fresh)
    np.testing.assert_allclose(again[0], fourier_shift(probe[0], (0.25, -0.375)), atol=1e-5)
    other = probe * np.complex64(1j)
    moved = kernel.shift_probe(kernel.spectrum(other), ry[0], rx[0], rest=(0.25, -0.375))
    np.testing.assert_allclose(moved, 1j * fresh, atol=1e-6)
