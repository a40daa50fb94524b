"""Propagators: the angular spectrum against the analytic Fresnel kernel, unitarity, the
Fresnel-scaling geometry, and near-field ptychography (true and perturbed positions)."""

from __future__ import annotations

import numpy as np
import pytest

from lensfree.engine import ptycho as pt
from lensfree.engine import simulate_ptycho as sp
from lensfree.engine.ptycho.kernel import PositionKernel, scaled_amplitudes

#: a P25-like near-field geometry (sample-plane pixel, effective distance)
WAVELENGTH, PIXEL = 1e-10, 2e-7
DISTANCE = 8e-3


def near(n=32) -> pt.Propagator:
    return pt.Propagator("near-field", WAVELENGTH, DISTANCE, PIXEL)


def test_fresnel_scaling_of_the_p25_geometry():
    """Focus 3.65 mm before the sample, detector 1.12 m after it, 55 um pixels: M = 307.8,
    the sample-plane pixel ~179 nm (the issue's number) and z_eff = z2 / M."""
    g = pt.fresnel_scaling(3.65e-3, 1.12, 55e-6)
    assert g["magnification"] == pytest.approx(1123.65 / 3.65, rel=1e-12)
    assert g["pixel_size_m"] == pytest.approx(178.7e-9, rel=1e-3)
    assert g["distance_m"] == pytest.approx(1.12 / g["magnification"], rel=1e-12)
    with pytest.raises(ValueError):
        pt.fresnel_scaling(0, 1.12, 55e-6)


def test_angular_spectrum_is_unitary_and_matches_the_fresnel_kernel():
    rng = np.random.default_rng(0)
    psi = rng.normal(size=(64, 64)) + 1j * rng.normal(size=(64, 64))
    prop = near()
    d = prop.to_detector(psi)
    assert np.sum(np.abs(d) ** 2) == pytest.approx(np.sum(np.abs(psi) ** 2), rel=1e-5)
    assert np.allclose(prop.to_sample(d), psi, atol=1e-5)
    # paraxial: H ~ exp(-i pi lambda z f^2) (Goodman eq. 4-21), equal to 1e-6 here
    f2 = (np.fft.fftfreq(64, PIXEL)[:, None] ** 2 + np.fft.fftfreq(64, PIXEL)[None] ** 2)
    fresnel = np.exp(-1j * np.pi * WAVELENGTH * DISTANCE * f2)
    assert np.abs(prop.transfer((64, 64)) * 64 * 64 - fresnel).max() < 1e-4
    # the bound (kernel) form: forward as to_detector, backward h w times to_sample
    bound = prop.bind((64, 64))
    x = psi.astype(np.complex64)
    out = np.empty_like(x)
    assert np.allclose(bound.forward(x, out), d, atol=1e-3)
    assert np.allclose(bound.backward(d.astype(np.complex64), out) / 64 ** 2, psi, atol=1e-3)


def test_impossible_geometries_are_refused():
    with pytest.raises(ValueError, match="near-field propagation needs"):
        pt.Propagator("near-field", WAVELENGTH, None, PIXEL)
    with pytest.raises(ValueError, match="propagation"):
        pt.Propagator("fresnel")
    with pytest.raises(ValueError, match="sampling limit"):
        pt.Propagator("near-field", WAVELENGTH, 1.0, PIXEL).check((32, 32))
    near().check((32, 32))


def _near_field_scan(n_positions=64, size=32, seed=1):
    """A noise-free near-field scan: a diffuser-like probe (structured, as near-field
    ptychography needs one) over the test object, whole-pixel true positions."""
    rng = np.random.default_rng(seed)
    yy, xx = np.indices((size, size)) - size / 2
    smooth = np.fft.ifft2(np.fft.fft2(rng.normal(size=(size, size)))
                          * np.exp(-(np.fft.fftfreq(size)[:, None] ** 2
                                     + np.fft.fftfreq(size)[None] ** 2) / 0.01))
    probe = (np.exp(-(yy ** 2 + xx ** 2) / (2 * (size / 3) ** 2))
             * np.exp(2j * smooth.real / np.abs(smooth.real).max()))[None].astype(np.complex64)
    positions = sp.fermat_scan(n_positions, 2.5)
    positions = np.rint(positions - positions.min(axis=0) + 4)
    shape = tuple(int(s) for s in positions.max(axis=0) + size + 4)
    obj = sp.test_object(shape).astype(np.complex64)
    prop = near()
    frames = np.stack([np.abs(prop.to_detector(probe[0] * obj[int(y):int(y) + size,
                                                              int(x):int(x) + size])) ** 2
                       for y, x in positions]).astype(np.float32)
    return obj, probe, positions, frames, prop


def _reconstruct(frames, positions, prop, probe0, iterations, *, refine=False, engine="parallel"):
    amp, valid = pt.prepare_amplitudes(frames, centred=prop.centred_frames)
    size = frames.shape[-1]
    origin, shape = pt.object_frame(positions, (size, size), 4)
    obj = np.ones(shape, np.complex64)
    probe = pt.initial_probe(probe0, amp, 1, prop)
    pos = positions.copy()
    blocks = np.array_split(np.arange(len(pos)), 3)
    for it in range(iterations):
        crops, fractions = pt.corners(pos, origin, shape, (size, size))
        do_refine = refine and it >= 20
        if engine == "epie":
            order = np.random.default_rng(it).permutation(len(pos))
            obj, probe, _, steps = pt.pie_iteration(obj, probe, crops, fractions, amp, valid,
                                                    order, update_probe=it >= 2,
                                                    refine=do_refine, propagator=prop)
        else:
            res = [pt.block_update(obj, probe, crops[b], fractions[b], amp[b], valid[b],
                                   refine=do_refine, propagator=prop) for b in blocks]
            obj, probe = pt.apply_update(obj, probe, res, update_probe=it >= 2)
            steps = np.concatenate([r.steps for r in res]) if do_refine else None
        if do_refine:
            pos = pt.refine_positions(pos, steps, positions, max_step=0.5)
    return obj, probe, pos, origin


@pytest.mark.parametrize("engine, iterations, tolerance",
                         [("parallel", 100, 0.1), ("epie", 40, 0.03)])
def test_near_field_scan_recovers_the_object(engine, iterations, tolerance):
    obj_true, probe_true, positions, frames, prop = _near_field_scan()
    # the kernel's model of the true state is the data (the propagator is the simulator's)
    kernel = PositionKernel(probe_true.shape, np.complex64, prop)
    amp, _ = pt.prepare_amplitudes(frames, centred=False)
    y, x = (int(v) for v in positions[0])
    err = kernel.project(probe_true, obj_true, y, x, amp[0],
                         scaled_amplitudes(amp)[0], None)
    assert err < 1e-6 * float(np.sum(amp[0] ** 2))
    obj, probe, pos, origin = _reconstruct(frames, positions, prop, probe_true, iterations,
                                           engine=engine)
    s = pt.score(obj, probe, pos, positions, origin, obj_true, positions)
    assert s.object_error < tolerance


def test_near_field_refinement_cuts_position_errors():
    obj_true, probe_true, positions, frames, prop = _near_field_scan()
    rng = np.random.default_rng(7)
    recorded = positions + rng.normal(0, 1.0, positions.shape)
    before = pt.position_error(recorded, positions)
    obj, probe, pos, origin = _reconstruct(frames, recorded, prop, probe_true, 80, refine=True,
                                           engine="epie")
    after = pt.position_error(pos, positions)
    assert after < 0.4 * before
    s = pt.score(obj, probe, pos, recorded, origin, obj_true, positions)
    assert s.object_error < 0.15


def test_frc_of_identical_objects_is_one_and_of_independent_noise_zero():
    from lensfree.engine.ptycho.frc import fourier_ring_correlation, half_bit

    obj = sp.test_object((96, 96))
    lit = np.zeros((96, 96), bool)
    lit[10:86, 10:86] = True
    same = fourier_ring_correlation(obj, obj * np.exp(1j * 0.7), lit)
    assert np.allclose(same.frc[1:], 1.0, atol=1e-9)
    assert same.resolution_px == 2.0
    rng = np.random.default_rng(0)
    noise = [rng.normal(size=(96, 96)) + 1j * rng.normal(size=(96, 96)) for _ in range(2)]
    indep = fourier_ring_correlation(*noise, lit)
    assert abs(indep.frc[4:].mean()) < 0.03 and np.abs(indep.frc[4:]).max() < 0.35
    assert indep.resolution_px > 10  # crosses the threshold in the first rings
    # a reconstruction with noise: the object's signal, not noise, is correlated
    noisy = [obj + 0.3 * n for n in noise]
    both = fourier_ring_correlation(*noisy, lit)
    assert both.frc[1:6].min() > 0.9
    assert half_bit(np.array([1e12]))[0] == pytest.approx(0.2071 / 1.2071, rel=1e-5)


def test_near_field_sub_pixel_positions_move_the_sample_not_the_beam():
    """In the near field the hologram moves with the exit wave, so a sub-pixel rest must
    move the object under a beam fixed on the detector: the kernel's model of a scan
    simulated that way (noise-free, every position off the grid) matches its frames to
    6e-4 of their power (moving the probe, and the hologram with it, gives 1e-2; the rest
    is the frame's edge, where the engine's shift wraps)."""
    params = sp.PtychoSimParams(n_positions=30, frame_size=32, probe="diffuser",
                                propagation="near-field", photons=None, subpixel=True)
    s = sp.simulate_scan(params)
    assert s.probe_guess is None
    amp, valid = pt.prepare_amplitudes(s.frames, centred=False)
    crops, fractions = pt.corners(s.true_positions, np.zeros(2), s.object.shape, (32, 32))
    assert pt.geometry.is_shifted(fractions).mean() > 0.9  # the rests' 1/16 px grid
    r = pt.block_update(s.object, s.probe, crops, fractions, amp, valid,
                        propagator=params.propagator)
    assert r.error.sum() < 2e-3 * np.sum(amp.astype(np.float64) ** 2)
