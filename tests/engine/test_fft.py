"""FFT plans: correctness against numpy.fft, wisdom persistence, one plan per thread."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import threading

import numpy as np
import pytest

from lensfree.engine import fft

pyfftw = pytest.importorskip("pyfftw")


def _random(shape, dtype, seed=0):
    rng = np.random.default_rng(seed)
    x = fft.empty_aligned(shape, dtype)
    x[...] = rng.standard_normal(shape) + 1j * rng.standard_normal(shape)
    return x


@pytest.mark.parametrize("dtype, tol", [(np.complex64, 1e-5), (np.complex128, 1e-12)])
@pytest.mark.parametrize("shape", [(64, 64), (48, 80)])
def test_round_trip_matches_numpy(shape, dtype, tol):
    f = fft.get_fft2(shape, dtype)
    x = _random(shape, dtype)
    spectrum = f.forward(x, fft.empty_aligned(shape, dtype))
    reference = np.fft.fft2(x.astype(np.complex128))
    assert spectrum.dtype == np.dtype(dtype)
    assert np.abs(spectrum - reference).max() <= tol * np.abs(reference).max()
    back = f.inverse(spectrum, fft.empty_aligned(shape, dtype))
    assert np.abs(back - x).max() <= tol * np.abs(x).max()
    # unnormalised inverse is N times the normalised one
    raw = f.inverse(spectrum, fft.empty_aligned(shape, dtype), normalise=False)
    assert np.allclose(raw, back * x.size, rtol=0, atol=tol * x.size * np.abs(x).max())


def test_in_place_and_input_preserved():
    shape = (64, 32)
    f = fft.get_fft2(shape)
    x = _random(shape, np.complex64, seed=1)
    keep = x.copy()
    out = fft.empty_aligned(shape)
    f.forward(x, out)
    assert np.array_equal(x, keep), "out-of-place forward must not touch its input"
    y = fft.empty_aligned(shape)
    y[...] = x
    f.forward(y, y)  # in place
    assert np.abs(y - out).max() <= 1e-5 * np.abs(out).max()
    f.inverse(y, y)
    assert np.abs(y - keep).max() <= 1e-5 * np.abs(keep).max()


def test_unaligned_and_strided_arrays_are_copied_correctly():
    shape = (40, 40)
    f = fft.get_fft2(shape)
    base = _random((80, 41), np.complex64, seed=2)
    x = base[::2, 1:]  # neither contiguous nor (in general) aligned
    out = np.empty(shape, np.complex64, order="F")
    f.forward(x, out)
    reference = np.fft.fft2(x.astype(np.complex128))
    assert np.abs(out - reference).max() <= 1e-5 * np.abs(reference).max()


@pytest.mark.parametrize("shape", [(24, 20), (8, 12, 10)])
def test_bound_transforms_give_the_checked_paths_bits(shape):
    f = fft.get_fftn(shape)
    x, y = fft.empty_aligned(shape), fft.empty_aligned(shape)
    forward, inverse = f.bind(x, y, "forward"), f.bind(y, y, "inverse")
    rng = np.random.default_rng(3)
    x[...] = rng.standard_normal(shape) + 1j * rng.standard_normal(shape)
    start = x.copy()
    forward()
    assert np.array_equal(x, start)  # the input of an out-of-place transform is kept
    assert np.array_equal(y, f.forward(start))
    expected = f.inverse(y, normalise=False)
    inverse()  # in place, unnormalised
    assert np.array_equal(y, expected)
    np.testing.assert_allclose(y / x.size, start, atol=1e-5)
    with pytest.raises(ValueError, match="direction"):
        f.bind(x, y, "backward")


def test_prepare_makes_all_plans():
    f = fft.get_fft2((24, 40)).prepare()
    assert set(f._plans) == {(d, i) for d in ("FFTW_FORWARD", "FFTW_BACKWARD")
                             for i in (False, True)}


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="complex64 or complex128"):
        fft.get_fft2((8, 8), np.float32)
    f = fft.get_fft2((8, 8))
    with pytest.raises(ValueError, match="shape"):
        f.forward(np.zeros((8, 9), np.complex64))
    x = fft.empty_aligned((8, 16))
    with pytest.raises(ValueError, match="overlap"):
        f.forward(x[:, :8], x[:, 4:12])


def test_numpy_fallback(monkeypatch):
    monkeypatch.setenv("LENSFREE_FFT", "numpy")
    f = fft.get_fft2((32, 32))
    assert f.backend == "numpy"
    x = _random((32, 32), np.complex64, seed=3)
    out = f.forward(x, fft.empty_aligned((32, 32)))
    assert np.abs(out - np.fft.fft2(x)).max() <= 1e-5 * np.abs(out).max()
    assert np.abs(f.inverse(out) - x).max() <= 1e-5


def test_bad_planner_setting(monkeypatch):
    monkeypatch.setenv("LENSFREE_FFTW_PLANNER", "patient")
    with pytest.raises(ValueError, match="LENSFREE_FFTW_PLANNER"):
        fft.get_fft2((8, 8))


def test_plan_cache_is_per_thread():
    shape = (64, 64)
    main = fft.get_fft2(shape)
    assert fft.get_fft2(shape) is main
    seen, errors = {}, []

    def work(index: int) -> None:
        try:
            f = fft.get_fft2(shape)
            seen[index] = f
            out = fft.empty_aligned(shape)
            for k in range(200):  # long enough for the two threads to overlap
                x = _random(shape, np.complex64, seed=100 * index + k % 5)
                f.forward(x, out)
                reference = np.fft.fft2(x)
                err = np.abs(out - reference).max() / np.abs(reference).max()
                if err > 1e-5:
                    errors.append((index, k, err))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append((index, exc))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert seen[0] is not seen[1] and main not in (seen[0], seen[1])


_PLAN = """
import sys, numpy as np
from lensfree.engine import fft
f = fft.get_fft2((40, 56))
x = fft.empty_aligned((40, 56)); x[...] = 1
f.forward(x, fft.empty_aligned((40, 56)))
print(fft.wisdom_path())
"""

_CHECK = """
import sys, numpy as np, pyfftw
from lensfree.engine import fft
a = pyfftw.empty_aligned((40, 56), dtype=np.complex64)
b = pyfftw.empty_aligned((40, 56), dtype=np.complex64)
if sys.argv[1] == "load":
    assert fft.load_wisdom()
try:
    pyfftw.FFTW(a, b, axes=(0, 1), flags=("FFTW_MEASURE", "FFTW_WISDOM_ONLY"))
    print("planned-from-wisdom")
except RuntimeError:
    print("no-wisdom")
"""


def test_wisdom_written_and_reloaded(tmp_path, monkeypatch):
    monkeypatch.setenv("LENSFREE_CACHE", str(tmp_path))
    monkeypatch.delenv("LENSFREE_FFT", raising=False)
    monkeypatch.delenv("LENSFREE_FFTW_PLANNER", raising=False)
    env = dict(os.environ)
    run = [sys.executable, "-c"]
    path = subprocess.run(run + [_PLAN], env=env, check=True, capture_output=True,
                          text=True).stdout.strip()
    assert os.path.dirname(path) == str(tmp_path)
    with open(path, "rb") as fh:
        wisdom = pickle.load(fh)
    assert isinstance(wisdom, tuple) and all(isinstance(w, bytes) for w in wisdom)
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]
    # a fresh process knows nothing until it loads the cache file, then plans from it
    fresh = subprocess.run(run + [_CHECK, "none"], env=env, check=True, capture_output=True,
                           text=True).stdout.strip()
    loaded = subprocess.run(run + [_CHECK, "load"], env=env, check=True, capture_output=True,
                            text=True).stdout.strip()
    assert (fresh, loaded) == ("no-wisdom", "planned-from-wisdom")


def test_corrupt_wisdom_file_is_ignored(tmp_path, monkeypatch):
    monkeypatch.setenv("LENSFREE_CACHE", str(tmp_path))
    path = fft.wisdom_path()
    path.write_bytes(b"not a pickle")
    assert fft.load_wisdom() is False
    assert fft.save_wisdom() == path  # replaced by a valid file
    assert fft.load_wisdom() is True
