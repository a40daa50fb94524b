"""lensfree.io.ingest: CXI / Eiger / HDF5 files to frame stores, single patterns to run stores."""

from __future__ import annotations

import os
import types
from pathlib import Path

import h5py
import hdf5plugin
import numpy as np
import pytest
import scipy.constants
import zarr

import lensfree.io.ingest as ingest_mod
from lensfree.errors import LensfreeError
from lensfree.io import readers
from lensfree.io.frames import Geometry, open_frames
from lensfree.io.ingest import ingest, ingest_pattern
from lensfree.io.readers.common import frames_source
from lensfree.launch.cli import main

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
P25 = DATA / "p25_nearfield_ptycho_cxi" / "PETRAIII_P25_Near_Field_Ptycho.cxi"
ESRF = DATA / "esrf_logo_cdi" / "logo5mu_20sec.npz"
NADIA = DATA / "nadia_planar_cdi" / "planar_data.tif"

DISTANCE, PIXEL, ENERGY_J = 0.7531, 75e-6, 8000.0 * scipy.constants.e
WAVELENGTH = scipy.constants.h * scipy.constants.c / ENERGY_J


def _frames(rng, n=10, h=16, w=12):
    return rng.poisson(30.0, size=(n, h, w)).astype(np.uint16)


def make_cxi(path, rng, *, frames=None, flags=None, translation=None, basis=None, probe=None,
             with_data=True, y_pixel=PIXEL):
    """A CXI 1.6 file as beamlines write it: data soft-linked, energy in J, uint32 mask flags."""
    frames = _frames(rng) if frames is None else frames
    with h5py.File(path, "w") as f:
        f["cxi_version"] = 160
        det = f.create_group("entry_1/instrument_1/detector_1")
        if with_data:
            det.create_dataset("data", data=frames, chunks=(3, *frames.shape[1:]),
                               compression="gzip")
            f["entry_1/data_1/data"] = h5py.SoftLink("/entry_1/instrument_1/detector_1/data")
        det["distance"] = DISTANCE
        det["x_pixel_size"] = PIXEL
        det["y_pixel_size"] = y_pixel
        if flags is not None:
            det["mask"] = flags
        if basis is not None:
            det["basis_vectors"] = basis
        f["entry_1/instrument_1/source_1/energy"] = ENERGY_J
        if probe is not None:
            f["entry_1/instrument_1/source_1/illumination"] = probe
        if translation is not None:
            f["entry_1/sample_1/geometry_1/translation"] = translation
    return frames


def _flags(rng, shape):
    flags = np.zeros(shape, dtype=np.uint32)
    flags[rng.random(shape) < 0.1] = 1  # bad
    flags[0, :] = 4  # another flag bit, also bad
    return flags


def test_cxi_round_trip(tmp_path):
    rng = np.random.default_rng(11)
    flags = _flags(rng, (16, 12))
    translation = rng.uniform(-50e-6, 50e-6, size=(10, 3))
    probe = (rng.normal(size=(8, 8)) + 1j * rng.normal(size=(8, 8))).astype(np.complex128)
    frames = make_cxi(tmp_path / "scan.cxi", rng, flags=flags, translation=translation,
                      probe=probe)
    out = str(tmp_path / "scan.zarr")

    info = ingest(str(tmp_path / "scan.cxi"), out, chunk_frames=4, progress=False)

    assert info["n_frames"] == 10 and info["frame_shape"] == (16, 12)
    assert info["has_mask"] and info["has_positions"] and info["has_probe"]
    g = zarr.open_group(out, mode="r")
    assert g["frames"].chunks == (4, 16, 12)
    assert g["frames"].dtype == np.uint16
    np.testing.assert_array_equal(g["frames"][:], frames)  # bit for bit
    for key, want in (("distance_m", DISTANCE), ("pixel_size_m", PIXEL),
                      ("wavelength_m", WAVELENGTH)):
        assert g.attrs[key] == pytest.approx(want, rel=1e-12)
    np.testing.assert_array_equal(g["mask"][:], flags == 0)
    assert g["mask"].dtype == bool
    # CXI default detector axes (rows -y, cols -x) and the probe at minus the sample
    # translation: positions (y, x) = (t_y, t_x).
    assert g["positions"].dtype == np.float64
    np.testing.assert_array_equal(g["positions"][:], translation[:, [1, 0]])
    np.testing.assert_allclose(g["probe"][:], probe[None].astype(np.complex64))
    assert g.attrs["source"]["format"] == "cxi"
    assert not os.path.exists(out + ".partial")
    store = open_frames(out)
    assert store.geometry.wavelength_m == pytest.approx(WAVELENGTH, rel=1e-12)
    assert store.chunk_frames == 4


def test_cxi_positions_follow_basis_vectors(tmp_path):
    rng = np.random.default_rng(12)
    translation = rng.uniform(-5e-6, 5e-6, size=(10, 3))
    # rows along +x, columns along +y of the lab: a detector turned by 90 degrees, as
    # cdtools writes it (vectors as the columns of a (3, 2) array)
    basis = np.array([[PIXEL, 0.0], [0.0, PIXEL], [0.0, 0.0]])
    make_cxi(tmp_path / "turned.cxi", rng, translation=translation, basis=basis)
    ingest(str(tmp_path / "turned.cxi"), str(tmp_path / "t.zarr"), progress=False)
    positions = zarr.open_group(str(tmp_path / "t.zarr"), mode="r")["positions"][:]
    np.testing.assert_allclose(positions, -translation[:, [0, 1]], rtol=0, atol=1e-18)


def test_geometry_given_overrides_file(tmp_path):
    rng = np.random.default_rng(13)
    make_cxi(tmp_path / "scan.cxi", rng)
    info = ingest(tmp_path / "scan.cxi", tmp_path / "s.zarr",  # os.PathLike works too
                  geometry=Geometry(distance_m=2.0), progress=False)
    assert info["geometry"]["distance_m"] == 2.0
    assert info["geometry"]["pixel_size_m"] == pytest.approx(PIXEL, rel=1e-12)
    assert not info["has_mask"] and not info["has_positions"]


def test_non_square_pixels_can_be_overridden(tmp_path):
    make_cxi(tmp_path / "rect.cxi", np.random.default_rng(21), y_pixel=2 * PIXEL)
    with pytest.raises(LensfreeError, match="non-square"):
        ingest(str(tmp_path / "rect.cxi"), str(tmp_path / "r.zarr"), progress=False)
    info = ingest(str(tmp_path / "rect.cxi"), str(tmp_path / "r.zarr"),
                  geometry=Geometry(pixel_size_m=1e-4), progress=False)
    assert info["geometry"]["pixel_size_m"] == 1e-4


def test_plain_hdf5_through_cli(tmp_path):
    rng = np.random.default_rng(14)
    frames = rng.normal(5.0, 1.0, size=(7, 10, 14)).astype(np.float32)
    bad = np.zeros((10, 14), dtype=np.uint8)
    bad[3, 4] = bad[9, 0] = 1
    path = tmp_path / "run.h5"
    with h5py.File(path, "w") as f:
        f["scan/frames"] = frames
        f["scan/bad"] = bad
    out = str(tmp_path / "run.zarr")
    rc = main(["ingest", str(path), "--out", out, "--dataset", "/scan/frames",
               "--mask-dataset", "/scan/bad", "--wavelength", "1.5e-10", "--distance", "2.5",
               "--pixel-size", "7.5e-5", "--chunk", "3", "--quiet"])
    assert rc == 0
    store = open_frames(out)
    assert store.geometry == Geometry(1.5e-10, 2.5, 7.5e-5)
    assert store.chunk_frames == 3 and store.n_frames == 7
    np.testing.assert_array_equal(store.mask, bad == 0)
    np.testing.assert_array_equal(zarr.open_group(out, mode="r")["frames"][:], frames)


def test_plain_2d_dataset_is_one_frame_without_geometry(tmp_path):
    image = np.arange(48, dtype=np.int32).reshape(6, 8)
    with h5py.File(tmp_path / "one.h5", "w") as f:
        f["image"] = image
    info = ingest(str(tmp_path / "one.h5"), str(tmp_path / "one.zarr"), dataset="image",
                  progress=False)
    assert info["n_frames"] == 1 and info["geometry"] == {}
    store = open_frames(str(tmp_path / "one.zarr"), allow_pixels=True)
    assert not store.geometry.known
    np.testing.assert_array_equal(zarr.open_group(str(tmp_path / "one.zarr"))["frames"][0],
                                  image)


def test_a_file_no_reader_recognises_names_its_datasets(tmp_path):
    with h5py.File(tmp_path / "plain.h5", "w") as f:
        f["scan/frames"] = np.zeros((2, 4, 4))
        f["energies"] = np.ones(5)
    with pytest.raises(LensfreeError) as err:
        ingest(str(tmp_path / "plain.h5"), str(tmp_path / "out.zarr"), progress=False)
    assert str(err.value) == (f"{tmp_path / 'plain.h5'}: not CXI (no /entry_1) nor an Eiger "
                              "master; name the frames with --dataset PATH (2D/3D datasets "
                              "here: scan/frames)")


def test_a_new_format_is_one_reader_in_the_registry(tmp_path, monkeypatch):
    """A reader module (guess, open) put in READERS is asked, in its order, before the others."""
    frames = np.arange(3 * 4 * 5, dtype=np.uint16).reshape(3, 4, 5)
    with h5py.File(tmp_path / "mine.cxi", "w") as f:  # would be CXI by its name alone
        f["mine/frames"] = frames

    def open_mine(f, path, dataset):
        src = frames_source("mine", [("mine/frames", f["mine/frames"])], path)
        src.geometry = {"wavelength_m": 1e-10, "distance_m": 1.0, "pixel_size_m": 1e-4}
        return src

    mine = types.SimpleNamespace(guess=lambda f, path: "mine" in f, open=open_mine)
    monkeypatch.setattr(readers, "READERS", (mine, *readers.READERS))
    out = str(tmp_path / "mine.zarr")
    info = ingest(str(tmp_path / "mine.cxi"), out, progress=False)
    assert info["format"] == "mine" and info["n_frames"] == 3
    assert open_frames(out).geometry == Geometry(1e-10, 1.0, 1e-4)
    np.testing.assert_array_equal(zarr.open_group(out, mode="r")["frames"][:], frames)
    # a named dataset is read as plain HDF5, whichever reader would recognise the file
    info = ingest(str(tmp_path / "mine.cxi"), out, dataset="mine/frames", progress=False)
    assert info["format"] == "hdf5" and info["geometry"] == {}


def test_eiger_master_with_external_links(tmp_path):
    rng = np.random.default_rng(15)
    parts = [rng.poisson(3.0, size=(n, 8, 8)).astype(np.uint32) for n in (3, 5)]
    for i, part in enumerate(parts, start=1):
        with h5py.File(tmp_path / f"s_data_00000{i}.h5", "w") as f:
            f.create_dataset("entry/data/data", data=part, chunks=(1, 8, 8),
                             **hdf5plugin.Bitshuffle(cname="lz4"))
    pixel_mask = np.zeros((8, 8), dtype=np.uint32)
    pixel_mask[2, 5] = 8
    with h5py.File(tmp_path / "s_master.h5", "w") as f:
        for i in (1, 2):
            f[f"entry/data/data_00000{i}"] = h5py.ExternalLink(f"s_data_00000{i}.h5",
                                                               "entry/data/data")
        det = f.create_group("entry/instrument/detector")
        det["detector_distance"] = 0.3
        det["x_pixel_size"] = det["y_pixel_size"] = 75e-6
        det["detectorSpecific/pixel_mask"] = pixel_mask
        f["entry/instrument/beam/incident_wavelength"] = 1.2
        f["entry/instrument/beam/incident_wavelength"].attrs["units"] = "angstrom"
    out = str(tmp_path / "e.zarr")
    info = ingest(str(tmp_path / "s_master.h5"), out, chunk_frames=4, progress=False)
    assert info["format"] == "eiger" and info["n_frames"] == 8
    np.testing.assert_array_equal(zarr.open_group(out)["frames"][:], np.concatenate(parts))
    assert info["geometry"]["wavelength_m"] == pytest.approx(1.2e-10, rel=1e-12)
    np.testing.assert_array_equal(zarr.open_group(out)["mask"][:], pixel_mask == 0)


def test_eiger_master_with_a_missing_data_file(tmp_path):
    with h5py.File(tmp_path / "s_data_000001.h5", "w") as f:
        f["entry/data/data"] = np.ones((2, 4, 4), dtype=np.uint16)
    with h5py.File(tmp_path / "s_master.h5", "w") as f:
        for i in (1, 2):
            f[f"entry/data/data_00000{i}"] = h5py.ExternalLink(f"s_data_00000{i}.h5",
                                                               "entry/data/data")
    with pytest.raises(LensfreeError, match="data_000002: external link to s_data_000002.h5"):
        ingest(str(tmp_path / "s_master.h5"), str(tmp_path / "e.zarr"), progress=False)
    assert not (tmp_path / "e.zarr").exists()


@pytest.mark.skipif(not P25.exists(), reason=f"real data absent: {P25}")
def test_real_p25_cxi(tmp_path):
    out = str(tmp_path / "p25.zarr")
    info = ingest(str(P25), out, progress=False)
    assert info["n_frames"] == 200 and info["frame_shape"] == (100, 100)
    store = open_frames(out)
    assert all(v > 0 for v in store.geometry.as_attrs().values()) and store.geometry.known
    assert store.geometry.distance_m == pytest.approx(1.12, rel=1e-6)
    assert store.geometry.wavelength_m == pytest.approx(9.7949e-11, rel=1e-4)
    assert (~store.mask).sum() == 5  # README: 5 flagged pixels
    g = zarr.open_group(out, mode="r")
    positions = g["positions"][:]
    assert positions.shape == (200, 2)
    # README: x in [-62.8, -42.7] um, y in [-47.8, -28.8] um; positions are (y, x)
    assert positions[:, 0].min() == pytest.approx(-47.8e-6, abs=0.1e-6)
    assert positions[:, 1].max() == pytest.approx(-42.7e-6, abs=0.1e-6)
    with h5py.File(P25, "r") as f:
        np.testing.assert_array_equal(g["frames"][150:200], f["entry_1/data_1/data"][150:200])


def _bad_cxi_without_data(tmp_path):
    path = tmp_path / "nodata.cxi"
    make_cxi(path, np.random.default_rng(0), with_data=False)
    return [str(path)], "without frames"


def _bad_not_hdf5(tmp_path):
    path = tmp_path / "notes.h5"
    path.write_text("not HDF5\n")
    return [str(path)], "not an HDF5 file"


def _bad_missing(tmp_path):
    return [str(tmp_path / "absent.cxi")], "no such file"


def _bad_dataset_absent(tmp_path):
    path = tmp_path / "plain.h5"
    with h5py.File(path, "w") as f:
        f["frames"] = np.zeros((2, 4, 4))
    return [str(path), "--dataset", "/frame"], "no dataset /frame"


def _bad_dataset_1d(tmp_path):
    path = tmp_path / "plain.h5"
    with h5py.File(path, "w") as f:
        f["energies"] = np.ones(5)
    return [str(path), "--dataset", "energies"], "expected frames"


def _bad_mask_shape(tmp_path):
    path = tmp_path / "mask.cxi"
    make_cxi(path, np.random.default_rng(1), flags=np.zeros((12, 16), dtype=np.uint32))
    return [str(path)], "mask shape"


def _bad_mask_dataset_shape(tmp_path):
    path = tmp_path / "plain.h5"
    with h5py.File(path, "w") as f:
        f["frames"] = np.zeros((2, 4, 4))
        f["mask"] = np.zeros((4, 5))
    return [str(path), "--dataset", "frames", "--mask-dataset", "mask"], "mask shape"


def _bad_translation_count(tmp_path):
    path = tmp_path / "scan.cxi"
    make_cxi(path, np.random.default_rng(2), translation=np.zeros((9, 3)))
    return [str(path)], "9 translations for 10 frames"


def _bad_non_square(tmp_path):
    path = tmp_path / "rect.cxi"
    make_cxi(path, np.random.default_rng(3), y_pixel=2 * PIXEL)
    return [str(path)], "non-square pixels"


@pytest.mark.parametrize("case", [_bad_missing, _bad_not_hdf5, _bad_cxi_without_data,
                                  _bad_dataset_absent, _bad_dataset_1d, _bad_mask_shape,
                                  _bad_mask_dataset_shape, _bad_translation_count,
                                  _bad_non_square])
def test_bad_input_is_one_line_naming_the_file(tmp_path, capsys, case):
    argv, words = case(tmp_path)
    out = str(tmp_path / "out.zarr")
    rc = main(["ingest", *argv, "--out", out, "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc != 0
    assert len(err) == 1 and err[0].startswith("lensfree: error: ")
    assert argv[0] in err[0] and words in err[0]
    assert not os.path.exists(out) and not os.path.exists(out + ".partial")


def test_failure_while_streaming_leaves_no_store(tmp_path, monkeypatch):
    rng = np.random.default_rng(16)
    make_cxi(tmp_path / "scan.cxi", rng)
    out = str(tmp_path / "scan.zarr")
    ingest(str(tmp_path / "scan.cxi"), out, chunk_frames=4, progress=False)
    before = zarr.open_group(out, mode="r")["frames"][:]
    make_cxi(tmp_path / "scan.cxi", rng)  # new frames
    calls = []
    real_read = ingest_mod._read

    def failing_read(*args):
        calls.append(args)
        if len(calls) == 2:
            raise LensfreeError("scan.cxi: cannot read frames 4-7 (simulated)")
        return real_read(*args)

    monkeypatch.setattr(ingest_mod, "_read", failing_read)
    with pytest.raises(LensfreeError, match="simulated"):
        ingest(str(tmp_path / "scan.cxi"), out, chunk_frames=4, progress=False)
    assert not os.path.exists(out + ".partial")
    np.testing.assert_array_equal(zarr.open_group(out, mode="r")["frames"][:], before)


def test_refuses_to_replace_a_directory_that_is_not_a_store(tmp_path):
    make_cxi(tmp_path / "scan.cxi", np.random.default_rng(17))
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "keep.txt").write_text("mine")
    with pytest.raises(LensfreeError, match="not a Zarr store"):
        ingest(str(tmp_path / "scan.cxi"), str(tmp_path / "results"), progress=False)
    assert (tmp_path / "results" / "keep.txt").read_text() == "mine"


# ---- single summed patterns -------------------------------------------------------------

def _centred_pattern(rng, n=64):
    """|F|^2 of a real object: centrosymmetric about (n // 2, n // 2)."""
    obj = np.zeros((n, n))
    obj[24:40, 26:38] = rng.random((16, 12))
    return np.abs(np.fft.fftshift(np.fft.fft2(obj))) ** 2


def test_pattern_off_centre_is_moved_to_the_middle(tmp_path):
    intensity = _centred_pattern(np.random.default_rng(18))
    moved = np.roll(intensity, (-3, 2), axis=(0, 1))  # centre now at (29, 34)
    np.save(tmp_path / "p.npy", moved)
    info = ingest_pattern(str(tmp_path / "p.npy"), str(tmp_path / "run.zarr"))
    assert info["shift"] == (3, -2)
    assert info["center"] == pytest.approx((29, 34), abs=0.05)
    e = zarr.open_group(str(tmp_path / "run.zarr"), mode="r")["ensemble"]
    assert e.attrs["complete"] is True
    amp, valid = e["amplitude"][:], e["valid"][:]
    assert amp.dtype == np.float32 and valid.dtype == bool
    assert not valid[:3].any() and not valid[:, -2:].any()  # moved in: unmeasured
    inner = (slice(3, 64), slice(0, 62))
    np.testing.assert_allclose(amp[inner], np.sqrt(intensity)[inner].astype(np.float32),
                               rtol=1e-6)


def test_pattern_half_way_between_pixels_moves_by_the_rounded_centre(tmp_path):
    """A centre half-way between two pixels lands by ``round(c) - h // 2`` (Python's round,
    half to even) on either size parity; the centre pixel itself stays measured."""
    intensity = _centred_pattern(np.random.default_rng(21), n=62)  # h // 2 = 31, odd
    np.save(tmp_path / "p.npy", intensity)
    out = str(tmp_path / "run.zarr")
    info = ingest_pattern(str(tmp_path / "p.npy"), out, center=(30.5, 31.5))
    assert info["shift"] == (1, -1)  # round(30.5) = 30, round(31.5) = 32
    e = zarr.open_group(out, mode="r")["ensemble"]
    assert e.attrs["center_binned"] == [31.5, 30.5] and e.attrs["window_origin"] == [-1, 1]
    amp, valid = e["amplitude"][:], e["valid"][:]
    assert valid[31, 31] and not valid[0].any() and not valid[:, -1].any()
    np.testing.assert_array_equal(amp[1:, :-1], np.sqrt(intensity)[:-1, 1:].astype(np.float32))


def test_pattern_fft_shifted_needs_the_flag(tmp_path):
    intensity = _centred_pattern(np.random.default_rng(19))
    np.save(tmp_path / "s.npy", np.fft.ifftshift(intensity))
    with pytest.raises(LensfreeError, match="fft-shifted"):
        ingest_pattern(str(tmp_path / "s.npy"), str(tmp_path / "run.zarr"))
    info = ingest_pattern(str(tmp_path / "s.npy"), str(tmp_path / "run.zarr"), fft_shifted=True)
    assert info["shift"] == (0, 0)
    amp = zarr.open_group(str(tmp_path / "run.zarr"), mode="r")["ensemble/amplitude"][:]
    np.testing.assert_allclose(amp, np.sqrt(intensity), rtol=1e-6)


def test_pattern_through_cli_with_keys(tmp_path, capsys):
    rng = np.random.default_rng(20)
    intensity = _centred_pattern(rng)
    measured = np.ones_like(intensity, dtype=bool)
    measured[30:35, 30:35] = False
    intensity[~measured] = np.nan  # outside the measured pixels anything goes
    support = np.zeros(intensity.shape, dtype=np.uint8)
    support[20:44, 20:44] = 1
    np.savez(tmp_path / "p.npz", I=intensity, ok=measured, sup=support)
    out = str(tmp_path / "run.zarr")
    rc = main(["ingest", str(tmp_path / "p.npz"), "--out", out, "--pattern", "--key", "I",
               "--valid-key", "ok", "--support-key", "sup"])
    assert rc == 0, capsys.readouterr().err
    e = zarr.open_group(out, mode="r")["ensemble"]
    np.testing.assert_array_equal(e["valid"][:], measured)
    np.testing.assert_array_equal(e["support"][:], support == 1)
    assert e.attrs["source"]["file"] == str(tmp_path / "p.npz")
    assert e.attrs["center"] == pytest.approx([32.0, 32.0], abs=0.05)
    assert e.attrs["shift"] == [0, 0]
    # a centre given is used as is
    rc = main(["ingest", str(tmp_path / "p.npz"), "--out", out, "--pattern", "--key", "I",
               "--valid-key", "ok", "--center", "30", "33"])
    e = zarr.open_group(out, mode="r")["ensemble"]
    assert rc == 0 and e.attrs["center"] == [30.0, 33.0] and e.attrs["shift"] == [2, -1]
    assert "support" not in e


@pytest.mark.parametrize("bad, words", [
    (np.full((8, 8), -1.0), "negative"),
    (np.full((8, 8), np.inf), "not finite"),
    (np.ones((2, 8, 8)), "expected (h, w)"),
])
def test_pattern_bad_values(tmp_path, capsys, bad, words):
    np.save(tmp_path / "bad.npy", bad)
    rc = main(["ingest", str(tmp_path / "bad.npy"), "--out", str(tmp_path / "r.zarr"),
               "--pattern"])
    err = capsys.readouterr().err
    assert rc != 0 and str(tmp_path / "bad.npy") in err and words in err


@pytest.mark.skipif(not ESRF.exists(), reason=f"real data absent: {ESRF}")
def test_real_esrf_logo_pattern(tmp_path):
    out = str(tmp_path / "esrf.zarr")
    info = ingest_pattern(str(ESRF), out, zeros="all")  # every zero: the README's count
    assert info["shape"] == (512, 512) and info["shift"] == (0, 0) and info["has_support"]
    e = zarr.open_group(out, mode="r")["ensemble"]
    assert e.attrs["complete"] is True
    amp, valid = e["amplitude"][:], e["valid"][:]
    raw = np.load(ESRF)["intensity"]
    np.testing.assert_array_equal(valid, raw != 0)  # README: unmeasured pixels hold 0
    assert valid.sum() == raw.size - 21687
    peak = np.unravel_index(np.argmax(amp), amp.shape)
    assert np.hypot(peak[0] - 256, peak[1] - 256) < 12  # README: max at (247, 257)
    assert e["support"][:].sum() == 7577


@pytest.mark.skipif(not NADIA.exists(), reason=f"real data absent: {NADIA}")
def test_real_nadia_pattern(tmp_path):
    out = str(tmp_path / "nadia.zarr")
    info = ingest_pattern(str(NADIA), out, zeros="measured")
    assert info["shape"] == (1024, 1024)
    assert info["shift"] == (1, 1)  # README: centred at (511, 511); lensfree at (512, 512)
    e = zarr.open_group(out, mode="r")["ensemble"]
    assert e.attrs["complete"] is True
    amp, valid = e["amplitude"][:], e["valid"][:]
    assert np.unravel_index(np.argmax(amp), amp.shape) == (512, 512)
    assert amp.max() == pytest.approx(np.sqrt(65534), rel=1e-6)
    assert not valid[0].any() and not valid[:, 0].any() and valid[1:, 1:].all()


# ---- which zeros are unmeasured, shipped supports, Hawk files, saturation, square windows ---

HAWK = DATA / "hawk_ring_cdi" / "ring.h5"


def _pattern_with_zeros(rng, n=96):
    """A speckled pattern (counts >= 1 everywhere) with a beam stop, a detector gap and an
    edge strip of zeros, and isolated zero counts at high q."""
    counts = 1.0 + rng.poisson(50.0, size=(n, n)).astype(np.float64)
    counts[n // 2 - 3 : n // 2 + 4, n // 2 - 3 : n // 2 + 4] = 0  # beam stop
    counts[:, 20] = 0  # a gap across the detector
    counts[n - 2 :, 60:80] = 0  # a dead strip at the edge
    isolated = [(10, 70), (80, 40), (70, 85), (30, 35)]
    for p in isolated:
        counts[p] = 0
    return counts, isolated


def test_pattern_zeros_joined_to_the_beam_stop_gaps_and_edges_only(tmp_path, capsys):
    counts, isolated = _pattern_with_zeros(np.random.default_rng(30))
    np.save(tmp_path / "p.npy", counts)
    zero = counts == 0
    runs = {}
    for flags in ([], ["--zeros-missing"], ["--zeros-measured"]):
        out = str(tmp_path / f"run{len(runs)}.zarr")
        rc = main(["ingest", str(tmp_path / "p.npy"), "--pattern", "--center", "48", "48",
                   "--out", out, *flags])
        assert rc == 0, capsys.readouterr().err
        runs[" ".join(flags)] = zarr.open_group(out, mode="r")["ensemble/valid"][...]
    default = runs[""]
    # by default: the beam stop, the gap and the edge strip are unmeasured, the isolated
    # zero counts are measured
    lone = np.zeros_like(zero)
    lone[tuple(np.transpose(isolated))] = True
    assert not default[zero & ~lone].any() and default[lone].all()
    assert default.sum() == 96 * 96 - zero.sum() + len(isolated)
    np.testing.assert_array_equal(runs["--zeros-missing"], ~zero)
    assert runs["--zeros-measured"].all()


@pytest.mark.skipif(not ESRF.exists(), reason=f"real data absent: {ESRF}")
def test_real_esrf_logo_zero_counts_at_high_q_are_measured(tmp_path, capsys):
    out = str(tmp_path / "esrf.zarr")
    assert main(["ingest", str(ESRF), "--pattern", "--out", out]) == 0
    assert "zeros unmeasured" in capsys.readouterr().out
    valid = zarr.open_group(out, mode="r")["ensemble/valid"][...]
    raw = np.load(ESRF)["intensity"]
    zero = raw == 0
    # the beam stop and the blocks at the detector's edges stay unmeasured ...
    assert not valid[248:265, 248:265][zero[248:265, 248:265]].any()
    assert zero[:14, 249:270].all() and not valid[:14, 249:270].any()
    # ... while most of the 21687 zeros, scattered zero counts at high q, are measured
    assert 15000 < valid[zero].sum() < 19000, valid[zero].sum()
    assert valid[~zero].all()


def test_pattern_no_support_ignores_the_shipped_one(tmp_path, capsys):
    intensity = _centred_pattern(np.random.default_rng(31))
    support = np.zeros(intensity.shape, bool)
    support[20:44, 20:44] = True
    np.savez(tmp_path / "p.npz", intensity=intensity, support=support)
    out = str(tmp_path / "run.zarr")
    assert main(["ingest", str(tmp_path / "p.npz"), "--pattern", "--out", out]) == 0
    assert "support" in zarr.open_group(out, mode="r")["ensemble"]
    assert main(["ingest", str(tmp_path / "p.npz"), "--pattern", "--out", out,
                 "--no-support"]) == 0
    e = zarr.open_group(out, mode="r")["ensemble"]
    assert "support" not in e and e.attrs["has_support"] is False
    capsys.readouterr()
    rc = main(["ingest", str(tmp_path / "p.npz"), "--pattern", "--out", out, "--no-support",
               "--support-key", "support"])
    err = capsys.readouterr().err
    assert rc == 2 and "--no-support" in err and "--support-key" in err


@pytest.mark.skipif(not HAWK.exists(), reason=f"real data absent: {HAWK}")
def test_real_hawk_ring_needs_no_keys(tmp_path, capsys):
    """Hawk's ring.h5: (98, 98, 1) amplitudes, fft-shifted, a mask with 1 = good."""
    out = str(tmp_path / "ring.zarr")
    rc = main(["ingest", str(HAWK), "--pattern", "--out", out])
    assert rc == 0, capsys.readouterr().err
    e = zarr.open_group(out, mode="r")["ensemble"]
    amp, valid = e["amplitude"][...], e["valid"][...]
    assert amp.shape == (98, 98) and e.attrs["quantity"] == "amplitude"
    with h5py.File(HAWK, "r") as f:
        real, mask = f["real"][..., 0], f["mask"][..., 0]
    good = np.fft.fftshift(mask == 1)
    shift = tuple(e.attrs["shift"])
    good = np.roll(good, shift, axis=(0, 1))
    assert not valid[~good].any()  # the 463 masked pixels (the saturated centre) stay out
    assert valid.sum() > 0.8 * good.sum()
    assert np.abs(amp.max() - real.max()) < 1e-3 * real.max()
    # the same by hand: the mask is 1 = good, so it needs --mask-good; without it lensfree
    # stops and says so
    capsys.readouterr()
    argv = ["ingest", str(HAWK), "--pattern", "--out", str(tmp_path / "r2.zarr"), "--key",
            "real", "--mask-key", "mask", "--amplitude", "--fft-shifted"]
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 2 and "--mask-good" in err and str(HAWK) in err
    assert main([*argv, "--mask-good"]) == 0
    np.testing.assert_array_equal(zarr.open_group(str(tmp_path / "r2.zarr"),
                                                  mode="r")["ensemble/valid"][...], valid)


def test_pattern_saturation_and_trailing_axes(tmp_path, capsys):
    intensity = _centred_pattern(np.random.default_rng(32))
    raw = np.minimum(intensity, np.percentile(intensity, 99.5))  # a clipped detector
    level = raw.max()
    np.save(tmp_path / "p.npy", raw[..., None])  # (64, 64, 1)
    out = str(tmp_path / "run.zarr")
    rc = main(["ingest", str(tmp_path / "p.npy"), "--pattern", "--out", out, "--center", "32",
               "32", "--saturation", str(level)])
    assert rc == 0, capsys.readouterr().err
    valid = zarr.open_group(out, mode="r")["ensemble/valid"][...]
    np.testing.assert_array_equal(valid, raw < level)
    assert 0 < (~valid).sum() <= 0.01 * raw.size
    for bad, words in (("0", "--saturation 0"), ("-5", "--saturation -5")):
        rc = main(["ingest", str(tmp_path / "p.npy"), "--pattern", "--out", out,
                   "--saturation", bad])
        err = capsys.readouterr().err
        assert rc == 2 and words in err, err


def test_pattern_that_is_not_square_is_cropped_to_a_square_window(tmp_path, capsys):
    """Real-space pixels are lambda z / (N p) per axis: a 64 x 48 window would stretch the
    object by 4/3; the largest square about the centre keeps them square."""
    full = _centred_pattern(np.random.default_rng(33), n=64)
    rect = full[:, 8:56]  # 64 x 48, centre at (32, 24)
    np.save(tmp_path / "r.npy", rect)
    out = str(tmp_path / "run.zarr")
    rc = main(["ingest", str(tmp_path / "r.npy"), "--pattern", "--out", out, "--center", "32",
               "24", "--wavelength", "1e-10", "--distance", "1", "--pixel-size", "75e-6"])
    assert rc == 0, capsys.readouterr().err
    assert "cropped to 48x48" in capsys.readouterr().out
    e = zarr.open_group(out, mode="r")["ensemble"]
    amp = e["amplitude"][...]
    assert amp.shape == (48, 48)
    np.testing.assert_allclose(amp, np.sqrt(full[8:56, 8:56]).astype(np.float32), rtol=1e-6)
    assert e.attrs["window_origin"] == [8, 0]
    assert e.attrs["real_space_pixel_m"] == pytest.approx(1e-10 * 1 / (48 * 75e-6))


def test_pattern_conflicting_flags_exit_2_naming_them(tmp_path, capsys):
    np.save(tmp_path / "p.npy", _centred_pattern(np.random.default_rng(34)))
    base = ["ingest", str(tmp_path / "p.npy"), "--pattern", "--out", str(tmp_path / "r.zarr")]
    for extra, words in ((["--zeros-measured", "--zeros-missing"], "--zeros-missing"),
                         (["--mask-good"], "--mask-key")):
        rc = main([*base, *extra])
        err = capsys.readouterr().err
        assert rc == 2 and words in err and len(err.strip().splitlines()) == 1, err
    rc = main(["ingest", str(tmp_path / "p.npy"), "--out", str(tmp_path / "f.zarr"),
               "--no-support"])
    err = capsys.readouterr().err
    assert rc == 2 and "--no-support" in err and "--pattern" in err


def test_pattern_binned_window_stays_square_and_raw_hawk_files_need_no_keys(tmp_path, capsys):
    """A raw libspimage file (``intensities``, ``mask`` all ones, ``scaled`` 0), 96 x 64 with
    a saturated centre: --saturation drops it, --bin 4 gives 24 x 16, cropped to 16 x 16."""
    full = _centred_pattern(np.random.default_rng(35), n=96)
    raw = full[:, 16:80].astype(np.float32)  # 96 x 64, centre (48, 32)
    level = np.float32(np.percentile(raw, 98))  # ~120 px, most of them about the centre
    raw = np.minimum(raw, level)
    path = tmp_path / "raw.h5"
    with h5py.File(path, "w") as f:
        f["intensities"] = raw
        f["mask"] = np.ones_like(raw)
        f["scaled"] = np.zeros(1, np.float32)
        f["shifted"] = np.zeros(1, np.float32)
    out = str(tmp_path / "run.zarr")
    rc = main(["ingest", str(path), "--pattern", "--out", out, "--center", "48", "32",
               "--saturation", str(level), "--bin", "4", "--wavelength", "1e-10",
               "--distance", "1", "--pixel-size", "75e-6"])
    assert rc == 0, capsys.readouterr().err
    assert "cropped to 16x16" in capsys.readouterr().out
    e = zarr.open_group(out, mode="r")["ensemble"]
    assert e["amplitude"].shape == (16, 16) and e.attrs["binning"] == 4
    assert e.attrs["quantity"] == "intensity" and e.attrs["source"]["key"] == "intensities"
    assert e.attrs["real_space_pixel_m"] == pytest.approx(1e-10 / (16 * 4 * 75e-6))
    # the saturated centre is unmeasured: binned pixels mostly holding it are missing
    # (a binned pixel needs half its pixels measured)
    assert not e["valid"][8, 8] and e["valid"][...].mean() > 0.9
    assert not np.asarray(e["mask"][...])[raw >= level].any()
    rc = main(["ingest", str(path), "--pattern", "--out", out, "--bin", "0"])
    err = capsys.readouterr().err
    assert rc == 2 and "--bin 0" in err


def test_pattern_beam_stop_off_the_middle_is_found_about_the_centroid(tmp_path):
    """A small beam stop (16 px: too small for a gap) about a centre 10 px off the middle."""
    intensity = 1.0 + np.roll(_centred_pattern(np.random.default_rng(36)), (8, -6), (0, 1))
    intensity[38:42, 24:28] = 0  # the beam stop, about the centre (40, 26)
    intensity[5, 50] = 0  # a zero count at high q
    np.save(tmp_path / "p.npy", intensity)
    out = str(tmp_path / "run.zarr")
    info = ingest_pattern(str(tmp_path / "p.npy"), out, zeros="connected")
    assert info["zeros_unmeasured"] == 16
    mask = zarr.open_group(out, mode="r")["ensemble/mask"][...]
    assert not mask[38:42, 24:28].any() and mask[5, 50]
