"""lensfree.io.frames: opening, reading and writing frame stores on disk."""

from __future__ import annotations

import os

import numpy as np
import pytest
import zarr

from lensfree.errors import LensfreeError
from lensfree.io.frames import (
    Geometry,
    chunk_frames_for,
    chunk_reader,
    create_frame_store,
    open_frames,
    partial_path,
    publish,
    read_frames,
    read_rows,
)

GEOMETRY = {"wavelength_m": 1e-10, "distance_m": 2.0, "pixel_size_m": 75e-6}


def _store(path, n=10, shape=(6, 5), *, chunk=4, dtype=np.uint16, mask=None, attrs=None,
           seed=0) -> np.ndarray:
    """A frame store at ``path`` filled chunk by chunk, as ingest and simulate write one."""
    frames = np.random.default_rng(seed).poisson(20.0, (n, *shape)).astype(dtype)
    array = create_frame_store(str(path), n, shape, dtype, chunk_frames=chunk, mask=mask,
                               attrs=GEOMETRY if attrs is None else attrs)
    for start in range(0, n, chunk):
        array[start : start + chunk] = frames[start : start + chunk]
    return frames


# ---- open_frames ------------------------------------------------------------------------

def test_open_frames_reads_shape_chunks_mask_and_geometry(tmp_path):
    mask = np.ones((6, 5), dtype=bool)
    mask[2:4, 1:3] = False
    _store(tmp_path / "f.zarr", mask=mask, attrs={**GEOMETRY, "note": "kept"})
    store = open_frames(str(tmp_path / "f.zarr"))
    assert store.path == str(tmp_path / "f.zarr")
    assert (store.n_frames, store.frame_shape, store.chunk_frames) == (10, (6, 5), 4)
    assert store.dtype == np.uint16
    np.testing.assert_array_equal(store.mask, mask)
    assert store.mask.dtype == bool and store.mask.sum() == 26
    assert store.geometry == Geometry(1e-10, 2.0, 75e-6) and store.geometry.known
    assert store.attrs["note"] == "kept"


def test_a_store_without_mask_measures_every_pixel(tmp_path):
    _store(tmp_path / "f.zarr")
    store = open_frames(str(tmp_path / "f.zarr"))
    assert store.mask.shape == (6, 5) and store.mask.all()


def test_a_given_mask_replaces_the_stores(tmp_path):
    _store(tmp_path / "f.zarr", mask=np.ones((6, 5), dtype=bool))
    given = np.zeros((6, 5), dtype=bool)
    given[0, 0] = True
    store = open_frames(str(tmp_path / "f.zarr"), mask=given)
    assert store.mask.sum() == 1 and store.mask[0, 0]


def test_missing_geometry_needs_allow_pixels(tmp_path):
    path = str(tmp_path / "f.zarr")
    _store(path, attrs={})
    with pytest.raises(LensfreeError, match="no geometry attrs") as err:
        open_frames(path)
    assert path in str(err.value) and "--pixels" in str(err.value)
    store = open_frames(path, allow_pixels=True)
    assert store.geometry == Geometry() and not store.geometry.known
    given = Geometry(2e-10, 1.5, 55e-6)  # geometry given on the command line is used as is
    assert open_frames(path, geometry=given).geometry == given


def test_given_geometry_overrides_the_stores(tmp_path):
    _store(tmp_path / "f.zarr")
    given = Geometry(wavelength_m=3e-10, distance_m=0.5, pixel_size_m=172e-6)
    assert open_frames(str(tmp_path / "f.zarr"), geometry=given).geometry == given


@pytest.mark.parametrize("attrs, words", [
    ({"wavelength_m": 1e-10}, "incomplete geometry attrs, missing distance_m, pixel_size_m"),
    ({**GEOMETRY, "distance_m": "far"}, "attr distance_m='far' is not a number"),
    ({**GEOMETRY, "pixel_size_m": -75e-6}, "attr pixel_size_m=-7.5e-05 must be a positive"),
    ({**GEOMETRY, "wavelength_m": 0}, "attr wavelength_m=0.0 must be a positive finite"),
])
def test_bad_geometry_is_refused_naming_the_store(tmp_path, attrs, words):
    path = str(tmp_path / "f.zarr")
    _store(path, attrs=attrs)
    with pytest.raises(LensfreeError) as err:
        open_frames(path, allow_pixels=True)
    assert str(err.value).startswith(path) and words in str(err.value)


def test_mask_of_the_wrong_shape(tmp_path):
    path = str(tmp_path / "f.zarr")
    _store(path, mask=np.ones((5, 6), dtype=bool))
    with pytest.raises(LensfreeError, match=r"/mask: shape \(5, 6\) differs from the frames' "
                                            r"\(6, 5\)") as err:
        open_frames(path)
    assert str(err.value).startswith(os.path.join(path, "mask"))
    with pytest.raises(LensfreeError, match=r"the given mask: shape \(6, 6\) differs"):
        open_frames(path, mask=np.ones((6, 6), dtype=bool))


def test_a_mask_without_a_measured_pixel(tmp_path):
    path = str(tmp_path / "f.zarr")
    _store(path, mask=np.zeros((6, 5), dtype=bool))
    with pytest.raises(LensfreeError, match="no pixel is marked measured"):
        open_frames(path)


def test_no_frames_array(tmp_path):
    path = str(tmp_path / "f.zarr")
    zarr.open_group(path, mode="w").create_array("mask", data=np.ones((4, 4), dtype=bool))
    with pytest.raises(LensfreeError, match=r"no 'frames' array \(expected frames \(N, H, W\)\)"):
        open_frames(path)


@pytest.mark.parametrize("shape, words", [
    ((4, 4), r"'frames' has shape \(4, 4\), expected \(N, H, W\)"),
    ((0, 4, 4), "'frames' holds no frames"),
])
def test_frames_of_the_wrong_shape(tmp_path, shape, words):
    path = str(tmp_path / "f.zarr")
    group = zarr.open_group(path, mode="w")
    group.create_array("frames", shape=shape, chunks=(1,) * len(shape), dtype="uint16")
    group.attrs.update(GEOMETRY)
    with pytest.raises(LensfreeError, match=words):
        open_frames(path)


def test_no_store_at_all(tmp_path):
    with pytest.raises(LensfreeError, match="no such file or directory"):
        open_frames(str(tmp_path / "absent.zarr"))
    (tmp_path / "plain.zarr").write_text("not a store")
    with pytest.raises(LensfreeError, match="not a Zarr v3 store"):
        open_frames(str(tmp_path / "plain.zarr"))


# ---- read_frames ------------------------------------------------------------------------

def test_read_frames_gives_any_range_as_stored(tmp_path):
    path = str(tmp_path / "f.zarr")
    frames = _store(path, n=11, chunk=4, dtype=np.int32, seed=3)
    block = read_frames(path, 3, 9)  # across two chunk boundaries
    assert block.dtype == np.int32 and block.shape == (6, 6, 5)
    np.testing.assert_array_equal(block, frames[3:9])
    np.testing.assert_array_equal(read_frames(path, 8, 11), frames[8:])  # the short last chunk
    np.testing.assert_array_equal(read_frames(path, 0, 11), frames)


def test_read_frames_sees_a_store_rewritten_at_the_same_path(tmp_path):
    path = str(tmp_path / "f.zarr")
    _store(path, n=8, shape=(4, 4), dtype=np.uint16, seed=1)
    assert read_frames(path, 0, 8).shape == (8, 4, 4)
    frames = _store(path, n=5, shape=(3, 7), dtype=np.float32, seed=2)
    again = read_frames(path, 0, 5)
    assert again.dtype == np.float32 and again.shape == (5, 3, 7)
    np.testing.assert_array_equal(again, frames)


# ---- create_frame_store, partial_path, publish -------------------------------------------

def test_create_frame_store_layout(tmp_path):
    path = str(tmp_path / "f.zarr")
    mask = np.ones((6, 5), dtype=np.uint8)  # stored as bool whatever it came as
    _store(path, n=3, chunk=64, mask=mask, attrs={**GEOMETRY, "source": {"file": "x.h5"}})
    group = zarr.open_group(path, mode="r")
    assert group["frames"].shape == (3, 6, 5) and group["frames"].chunks == (3, 6, 5)
    assert group["mask"].dtype == bool and group["mask"][...].all()
    assert group.attrs["source"] == {"file": "x.h5"}
    assert group.attrs["pixel_size_m"] == 75e-6


def test_a_partial_store_is_never_seen_at_out(tmp_path):
    out = str(tmp_path / "f.zarr")
    partial = partial_path(out + "/")  # a trailing slash names the same store
    assert partial == out + ".partial"
    frames = _store(partial, n=6)
    assert not os.path.exists(out)
    with pytest.raises(LensfreeError, match="no such file or directory"):
        open_frames(out)
    publish(partial, out)
    assert not os.path.exists(partial)
    assert open_frames(out).n_frames == 6
    np.testing.assert_array_equal(read_frames(out, 0, 6), frames)


def test_publish_replaces_a_finished_store_only_when_the_new_one_is_whole(tmp_path):
    out = str(tmp_path / "f.zarr")
    _store(out, n=4)
    partial = partial_path(out)
    _store(partial, n=9, seed=5)
    assert open_frames(out).n_frames == 4  # the old store stays whole until the rename
    publish(partial, out)
    assert open_frames(out).n_frames == 9 and not os.path.exists(partial)


def test_partial_path_clears_what_a_killed_run_left(tmp_path):
    out = str(tmp_path / "f.zarr")
    os.makedirs(out + ".partial")
    (tmp_path / "f.zarr.partial" / "junk").write_text("half written")
    assert partial_path(out) == out + ".partial"
    assert not os.path.exists(out + ".partial")


def test_partial_path_refuses_to_replace_what_is_not_a_store(tmp_path):
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "keep.txt").write_text("mine")
    with pytest.raises(LensfreeError, match="exists and is not a Zarr store"):
        partial_path(str(tmp_path / "results"))
    (tmp_path / "file.zarr").write_text("mine")
    with pytest.raises(LensfreeError, match="is a file"):
        partial_path(str(tmp_path / "file.zarr"))
    (tmp_path / "empty").mkdir()  # an empty directory may be replaced
    assert partial_path(str(tmp_path / "empty")) == str(tmp_path / "empty") + ".partial"
    assert (tmp_path / "results" / "keep.txt").read_text() == "mine"


# ---- Geometry -----------------------------------------------------------------------------

def test_real_space_pixel_is_lambda_z_over_n_p():
    g = Geometry(wavelength_m=1e-10, distance_m=2.0, pixel_size_m=75e-6)
    # 1e-10 m * 2 m / (512 * 75e-6 m) = 5.208 nm; binned x2: pixels of 150 um
    assert g.real_space_pixel(512) == pytest.approx(5.2083333e-9, rel=1e-7)
    assert g.real_space_pixel(256, binning=2) == pytest.approx(5.2083333e-9, rel=1e-7)
    assert g.real_space_pixel(512, binning=2) == pytest.approx(2.6041667e-9, rel=1e-7)
    assert g.as_attrs() == GEOMETRY


def test_unknown_geometry_has_no_real_space_pixel():
    partial = Geometry(wavelength_m=1e-10, distance_m=2.0)
    assert not partial.known and partial.real_space_pixel(512) is None
    assert partial.as_attrs() == {"wavelength_m": 1e-10, "distance_m": 2.0}
    assert Geometry().as_attrs() == {} and Geometry().real_space_pixel(64) is None


# ---- chunk_reader, chunk_frames_for ------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.uint16, np.uint32, np.float32])
def test_chunk_reader_decodes_into_one_buffer_what_zarr_reads(tmp_path, dtype):
    path = str(tmp_path / "f.zarr")
    frames = _store(path, n=11, chunk=4, dtype=dtype, seed=4)
    reader = chunk_reader(path)
    assert reader._direct  # plain Blosc: decoded straight into the reused buffer
    first = reader.read(0, 4)
    np.testing.assert_array_equal(first, frames[0:4])
    last = reader.read(8, 11)  # the short last chunk
    np.testing.assert_array_equal(last, frames[8:11])
    assert np.shares_memory(first, last)  # one buffer, reused
    reader.release()
    np.testing.assert_array_equal(reader.read(4, 8), frames[4:8])


def test_chunk_reader_lists_absent_chunks_once_without_reading(tmp_path):
    path = str(tmp_path / "f.zarr")
    _store(path, n=11, chunk=4)
    reader = chunk_reader(path)
    assert reader.absent(0, 11) == []
    os.remove(os.path.join(path, "frames", "c", "1", "0", "0"))
    os.remove(os.path.join(path, "frames", "c", "2", "0", "0"))
    # frames 4..10 are gone: Zarr would read them as the fill value, 0
    assert reader.absent(0, 11) == [(4, 11)]
    assert reader.absent(0, 4) == [] and reader.absent(5, 7) == [(5, 7)]
    assert (read_frames(path, 4, 8) == 0).all()


@pytest.mark.parametrize("location", ["end", "start"])
def test_chunk_reader_finds_inner_chunks_missing_from_a_shard(tmp_path, location):
    path = str(tmp_path / "s.zarr")
    group = zarr.open_group(path, mode="w")
    codec = zarr.codecs.ShardingCodec(chunk_shape=(2, 4, 2), index_location=location)
    frames = group.create_array("frames", shape=(12, 4, 4), dtype="uint16",
                                chunks=(6, 4, 4), serializer=codec, compressors=None,
                                config={"write_empty_chunks": False})
    assert frames.shards == (6, 4, 4) and frames.chunks == (2, 4, 2)
    data = np.arange(1, 12 * 16 + 1, dtype=np.uint16).reshape(12, 4, 4)
    data[2:4, :, 2:] = 0  # the right half of frames 2, 3: one inner chunk, never written
    data[10:12] = 0  # a whole inner chunk of the second shard
    frames[...] = data
    reader = chunk_reader(path)
    assert reader.absent(0, 12) == [(2, 4), (10, 12)]
    assert reader.absent(3, 11) == [(3, 4), (10, 11)]
    assert reader.absent(4, 10) == []


def test_chunk_frames_for_aims_at_tens_of_megabytes():
    assert chunk_frames_for((256, 256), np.uint16) == 256
    assert chunk_frames_for((2048, 2048), np.uint16) == 4
    assert chunk_frames_for((4150, 4371), np.uint32) == 1  # an Eiger 16M frame is 73 MB


def test_read_rows_decodes_each_chunk_once_and_refuses_a_lost_one(tmp_path, monkeypatch):
    import lensfree.io.frames as frame_io

    path = str(tmp_path / "f.zarr")
    frames = _store(path, n=11, chunk=4, seed=5)
    decoded = []
    read = frame_io.ChunkReader.read
    monkeypatch.setattr(frame_io.ChunkReader, "read",
                        lambda self, a, b: decoded.append(a) or read(self, a, b))
    rows = np.array([9, 0, 5, 3, 10, 4, 1])  # any order, three chunks
    np.testing.assert_array_equal(read_rows(path, rows), frames[rows])
    assert sorted(decoded) == [0, 4, 8]
    np.testing.assert_array_equal(read_rows(path, np.array([2, 6])), frames[[2, 6]])
    assert sorted(decoded) == [0, 4, 8]  # kept: decoded once per process
    other = str(tmp_path / "g.zarr")
    _store(other, n=11, chunk=4, seed=6)
    os.remove(os.path.join(other, "frames", "c", "1", "0", "0"))
    np.testing.assert_array_equal(read_rows(other, np.array([0, 10])).shape, (2, 6, 5))
    with pytest.raises(LensfreeError, match="frames 4-7 is missing"):
        read_rows(other, np.array([0, 5]))  # never the fill value
