"""Alignment: sub-pixel translation, centre inversion and twin, global phase."""

from __future__ import annotations

import numpy as np
import pytest

from lensfree.engine import align, shapes


@pytest.fixture(scope="module")
def ref():
    return shapes.letter(64, 3.0)


@pytest.mark.parametrize("shift", [(3.3, -1.7), (-0.45, 0.8), (12.6, 20.05)])
def test_register_recovers_subpixel_shift(ref, shift):
    rng = np.random.default_rng(0)
    moved = align.fourier_shift(ref, shift)
    moved = moved + 0.02 * (rng.standard_normal(ref.shape) + 1j * rng.standard_normal(ref.shape))
    found = align.register_translation(moved, ref, upsample=20)
    # the shift that maps `moved` back onto `ref` is minus the one applied
    assert np.allclose(found, (-shift[0], -shift[1]), atol=0.05)


def test_register_finds_the_shift_skimage_finds(ref):
    """Ours is skimage's unnormalised phase_cross_correlation, kept for speed (see _register)."""
    registration = pytest.importorskip("skimage.registration")
    rng = np.random.default_rng(1)
    for shift in [(3.3, -1.7), (-7.85, 12.4)]:
        moved = align.fourier_shift(ref, shift) + 0.05 * rng.standard_normal(ref.shape)
        for img in (moved, align.twin(moved)):
            theirs, _, _ = registration.phase_cross_correlation(
                ref.astype(np.complex128), img, upsample_factor=20, normalization=None)
            assert np.allclose(align.register_translation(img, ref, 20), theirs, atol=1e-9)


def test_fourier_shift_integer_is_roll(ref):
    assert np.allclose(align.fourier_shift(ref, (5, -3)), np.roll(ref, (5, -3), axis=(0, 1)),
                       atol=1e-5)


@pytest.mark.parametrize("n", [8, 9])
def test_centre_inversion_maps_r_to_minus_r(n):
    img = np.arange(n * n).reshape(n, n)
    out = align.centre_inversion(img)
    c = n // 2
    for i in range(n):
        for j in range(n):
            assert out[i, j] == img[(2 * c - i) % n, (2 * c - j) % n]
    # the centre pixel stays put, and inversion is an involution
    assert out[c, c] == img[c, c]
    assert np.array_equal(align.centre_inversion(out), img)


def test_twin_has_the_same_fourier_modulus(ref):
    a = np.abs(np.fft.fft2(ref))
    b = np.abs(np.fft.fft2(align.twin(ref)))
    assert np.allclose(a, b, rtol=1e-4, atol=1e-4 * a.max())
    assert not np.allclose(align.twin(ref), ref, atol=0.1)  # the letter is asymmetric


def test_align_undoes_twin_shift_and_phase_exactly(ref):
    phase = 2.1
    img = np.roll(align.twin(ref), (2, 5), axis=(0, 1)) * np.exp(1j * phase)
    aligned, info = align.align(img, ref)
    assert info.twin is True
    assert np.allclose(info.shift, (2.0, 5.0), atol=1e-6)
    # conj() turns +phase into -phase, which the global-phase step removes
    assert info.phase == pytest.approx(-phase, abs=1e-5)
    assert np.abs(aligned - ref).max() <= 1e-5
    assert info.correlation == pytest.approx(1.0, abs=1e-6)


def test_align_keeps_the_direct_image_and_removes_phase(ref):
    img = align.fourier_shift(ref, (-4.25, 3.5)) * np.exp(-0.8j)
    aligned, info = align.align(img, ref)
    assert info.twin is False
    assert np.allclose(info.shift, (4.25, -3.5), atol=0.05)
    assert info.phase == pytest.approx(-0.8, abs=1e-3)
    assert np.linalg.norm(aligned - ref) / np.linalg.norm(ref) < 1e-3
    # the removed phase is exactly the angle of the overlap: none remains
    assert abs(np.angle(np.vdot(ref, aligned))) < 1e-6


def test_align_rejects_shape_mismatch(ref):
    with pytest.raises(ValueError, match="shapes differ"):
        align.align(ref[:32], ref)


# ----------------------------------------------------------------------------- 3D


@pytest.fixture(scope="module")
def volume():
    """An asymmetric complex blob in 24^3: an ellipsoid with a phase ramp and a bump."""
    z, y, x = (np.indices((24, 24, 24)) - 12).astype(np.float64)
    body = ((x / 6) ** 2 + (y / 4) ** 2 + (z / 3) ** 2 <= 1) | (
        (x - 4) ** 2 + (y + 3) ** 2 + (z - 1) ** 2 <= 4)
    return (body * np.exp(1j * (0.3 * x + 0.2 * z + 0.05 * x * y))).astype(np.complex64)


@pytest.mark.parametrize("shift", [(1.35, -2.6, 0.45), (-0.3, 4.05, -3.7)])
def test_register_recovers_a_subvoxel_shift_in_3d(volume, shift):
    moved = align.fourier_shift(volume, shift)
    found = align.register_translation(moved, volume, upsample=20)
    assert len(found) == 3 and np.allclose(found, [-s for s in shift], atol=0.05), found


def test_3d_twin_is_the_point_inversion_conjugated(volume):
    tw = align.twin(volume)
    assert tw[12 + 2, 12 - 3, 12 + 1] == np.conj(volume[12 - 2, 12 + 3, 12 - 1])
    np.testing.assert_array_equal(align.twin(tw), volume)
    # the same |F g|: the twin cannot be told from the data
    np.testing.assert_allclose(np.abs(np.fft.fftn(tw)), np.abs(np.fft.fftn(volume)),
                               atol=1e-3 * np.abs(np.fft.fftn(volume)).max())


def test_align_undoes_twin_shift_and_phase_in_3d(volume):
    moved = np.exp(1.1j) * align.fourier_shift(align.twin(volume), (2.4, -1.15, 3.0))
    aligned, info = align.align(moved.astype(np.complex64), volume)
    assert info.twin and len(info.shift) == 3 and info.correlation > 0.999
    assert np.linalg.norm(aligned - volume) <= 0.02 * np.linalg.norm(volume)
    plain, info = align.align(volume, volume)
    assert not info.twin and np.allclose(info.shift, 0) and abs(info.phase) < 1e-6
