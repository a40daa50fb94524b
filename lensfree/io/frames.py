"""Frame stores: Zarr v3 groups holding detector frames, a mask and the geometry.

Layout (DESIGN.md, "Stores"): array ``frames`` (N, H, W) chunked (k, H, W); optional
``mask`` (H, W) bool, True where measured; attrs ``wavelength_m``, ``distance_m``,
``pixel_size_m``; for ptychography ``positions`` (N, 2).
"""

from __future__ import annotations

import functools
import os
import shutil
import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass

import numcodecs.blosc
import numpy as np
import zarr

from lensfree.engine import geometry as geo
from lensfree.errors import LensfreeError
from lensfree.io import runstore

GEOMETRY_KEYS = ("wavelength_m", "distance_m", "pixel_size_m")
DEFAULT_CHUNK_FRAMES = 64
#: decoded bytes per chunk that `chunk_frames_for` aims at: tens of MB keep the per-chunk
#: overhead small (NOTES.md: per-frame chunks of 256^2 frames read 5-10x slower) while a
#: worker holding one decoded chunk stays far below a cluster node's memory per core
TARGET_CHUNK_BYTES = 32 * 2**20


def chunk_frames_for(frame_shape: tuple[int, int], dtype) -> int:
    """Frames per chunk for frames of this shape and type: about `TARGET_CHUNK_BYTES`
    decoded, at least one frame (256^2 uint16: 256 frames; 4150 x 4371 uint32: 1)."""
    frame_bytes = int(np.prod(frame_shape)) * np.dtype(dtype).itemsize
    return max(1, TARGET_CHUNK_BYTES // max(frame_bytes, 1))


def frame_codec():
    """Blosc-zstd level 1 with bit shuffle: ~1 GB/s to decode Poisson uint16 frames here."""
    return zarr.codecs.BloscCodec(cname="zstd", clevel=1, shuffle="bitshuffle")


@dataclass(frozen=True)
class Geometry:
    """Far-field geometry in SI units; all None when unknown (then work in pixels)."""

    wavelength_m: float | None = None
    distance_m: float | None = None
    pixel_size_m: float | None = None

    @property
    def known(self) -> bool:
        return None not in (self.wavelength_m, self.distance_m, self.pixel_size_m)

    def real_space_pixel(self, n: int, binning: int = 1) -> float | None:
        """Real-space pixel ``dx = lambda z / (n p)`` of an n-pixel array of binned pixels."""
        if not self.known:
            return None
        return geo.real_space_pixel(n, self.pixel_size_m * binning, self.wavelength_m,
                                    self.distance_m)

    def as_attrs(self) -> dict:
        return {k: getattr(self, k) for k in GEOMETRY_KEYS if getattr(self, k) is not None}


@dataclass(frozen=True)
class FrameStore:
    """An opened, validated frame store. Frames are read lazily, shard by shard."""

    path: str
    n_frames: int
    frame_shape: tuple[int, int]
    chunk_frames: int
    dtype: np.dtype
    mask: np.ndarray
    geometry: Geometry
    attrs: dict


def _open_group(path: str) -> zarr.Group:
    if not os.path.exists(path):
        raise LensfreeError(f"{path}: no such file or directory")
    try:
        return zarr.open_group(path, mode="r")
    except Exception as exc:  # zarr raises several types for "not a store"
        raise LensfreeError(f"{path}: not a Zarr v3 store ({exc.__class__.__name__})") from None


def open_frames(
    path: str,
    *,
    geometry: Geometry | None = None,
    allow_pixels: bool = False,
    mask: np.ndarray | None = None,
) -> FrameStore:
    """Open and check a frame store.

    Parameters
    ----------
    path : frame store directory.
    geometry : overrides the store's geometry attrs when given.
    allow_pixels : accept a store without geometry and work in detector pixels.
    mask : (H, W) bool, True = measured; replaces the store's own mask.
    """
    group = _open_group(path)
    if "frames" not in group:
        raise LensfreeError(f"{path}: no 'frames' array (expected frames (N, H, W))")
    frames = group["frames"]
    if frames.ndim != 3:
        raise LensfreeError(f"{path}: 'frames' has shape {frames.shape}, expected (N, H, W)")
    n, h, w = frames.shape
    if n == 0:
        raise LensfreeError(f"{path}: 'frames' holds no frames")
    attrs = dict(group.attrs)
    if geometry is None:
        present = [k for k in GEOMETRY_KEYS if attrs.get(k) is not None]
        if present and len(present) < len(GEOMETRY_KEYS):
            missing = sorted(set(GEOMETRY_KEYS) - set(present))
            raise LensfreeError(f"{path}: incomplete geometry attrs, missing {', '.join(missing)}")
        if not present and not allow_pixels:
            raise LensfreeError(
                f"{path}: no geometry attrs ({', '.join(GEOMETRY_KEYS)}); pass --wavelength, "
                "--distance and --pixel-size, or --pixels to work in detector pixels"
            )
        geometry = Geometry(**{k: _positive(path, k, attrs.get(k)) for k in GEOMETRY_KEYS})
    if mask is None:
        mask = np.asarray(group["mask"][...], dtype=bool) if "mask" in group else None
        where = f"{path}/mask"
    else:
        where = "the given mask"
    if mask is None:
        mask = np.ones((h, w), dtype=bool)
    if mask.shape != (h, w):
        raise LensfreeError(f"{where}: shape {mask.shape} differs from the frames' {(h, w)}")
    if not mask.any():
        raise LensfreeError(f"{where}: no pixel is marked measured")
    return FrameStore(
        path=path,
        n_frames=n,
        frame_shape=(h, w),
        chunk_frames=frames.chunks[0],
        dtype=frames.dtype,
        mask=mask,
        geometry=geometry,
        attrs=attrs,
    )


def _positive(path: str, key: str, value) -> float | None:
    if value is None:
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise LensfreeError(f"{path}: attr {key}={value!r} is not a number") from None
    if not (np.isfinite(value) and value > 0):
        raise LensfreeError(f"{path}: attr {key}={value} must be a positive finite number")
    return value


@functools.lru_cache(maxsize=8)
def _open_frames_array(path: str, version: int):
    return zarr.open_array(os.path.join(path, "frames"), mode="r")


def _frames_array(path: str):
    # One open handle per process and store (workers read many blocks), reopened when
    # the store's metadata changes (a store rewritten at the same path).
    meta = os.path.join(path, "frames", "zarr.json")
    version = os.stat(meta).st_mtime_ns if os.path.exists(meta) else 0
    return _open_frames_array(path, version)


def read_frames(path: str, start: int, stop: int) -> np.ndarray:
    """Frames [start, stop) of a store, as stored (no dtype conversion)."""
    return _frames_array(path)[start:stop]


class ChunkReader:
    """Reads a store's frames chunk by chunk into one reused buffer (one per process).

    Where ``frames`` is plain Blosc (the layout `create_frame_store` writes), a chunk's
    bytes are decompressed straight into the buffer: no decode buffer, no copy, and no
    fresh memory to page-fault per chunk (which made Dask workers, whose nanny sets
    ``MALLOC_TRIM_THRESHOLD_``, read ~1.6x slower). Any other layout (sharding, other
    codecs) is read through Zarr. `absent` finds the chunks missing from the store, which
    Zarr would silently return as the fill value.
    """

    def __init__(self, path: str):
        self.path = path
        self.array = _frames_array(path)
        # the unit of storage: a shard when the array is sharded, else a chunk
        self.unit = (self.array.shards or self.array.chunks)[0]
        self._local = threading.local()  # a buffer per thread (local back end's pool)
        codecs = self.array.metadata.codecs
        self._direct = (
            len(codecs) == 2 and isinstance(codecs[0], zarr.codecs.BytesCodec)
            and isinstance(codecs[1], zarr.codecs.BloscCodec)
            and self.array.shards is None
            and (self.array.dtype.itemsize == 1 or self.array.dtype.byteorder in "=|"
                 or codecs[0].endian.value == ("little" if np.little_endian else "big")))

    def _key_path(self, index: int) -> str:
        key = self.array.metadata.encode_chunk_key((index, 0, 0))
        return os.path.join(self.path, "frames", key)

    def absent(self, start: int, stop: int) -> list[tuple[int, int]]:
        """Frame ranges of [start, stop) whose chunk is not in the store: one listing of
        the folder per call, and for a sharded store the index of each shard file (a few
        bytes at its end), never a chunk's data. Zarr would return the fill value there."""
        units = range(start // self.unit, (stop - 1) // self.unit + 1)
        folders = {}
        missing = []
        for u in units:
            where = self._key_path(u)
            folder, name = os.path.split(where)
            if folder not in folders:
                folders[folder] = set(os.listdir(folder)) if os.path.isdir(folder) else set()
            lo, hi = max(start, u * self.unit), min(stop, (u + 1) * self.unit)
            if name not in folders[folder]:
                holes = [(lo, hi)]
            elif self.array.shards is not None:
                holes = [(max(lo, a), min(hi, b)) for a, b in self._shard_holes(u, where)
                         if a < hi and b > lo]
            else:
                holes = []
            for a, b in holes:
                if missing and missing[-1][1] == a:
                    missing[-1] = (missing[-1][0], b)
                else:
                    missing.append((a, b))
        return missing

    def _shard_holes(self, index: int, where: str) -> list[tuple[int, int]]:
        """Frame ranges of shard ``index`` (file ``where``) whose inner chunks the shard's
        index lists as empty (offset and length 2**64 - 1): a chunk lost inside a shard
        file that exists. The index layouts Zarr writes are read: little- or big-endian
        bytes, with or without a CRC32C; any other layout cannot be checked here."""
        codec = self.array.metadata.codecs[0]
        inner = codec.chunk_shape
        grid = tuple(-(-s // c) for s, c in zip(self.array.shards, inner))
        codecs = codec.index_codecs
        names = [type(c).__name__ for c in codecs]
        if names not in (["BytesCodec"], ["BytesCodec", "Crc32cCodec"]):
            return []
        n = int(np.prod(grid)) * 16
        size = n + 4 * (len(names) == 2)
        with open(where, "rb") as f:
            if codec.index_location.value == "end":
                f.seek(-size, os.SEEK_END)
            raw = f.read(size)
        order = "<" if codecs[0].endian is None or codecs[0].endian.value == "little" else ">"
        table = np.frombuffer(raw[:n], dtype=f"{order}u8").reshape(*grid, 2)
        empty = (table == np.iinfo(np.uint64).max).all(axis=-1)
        empty = empty.reshape(grid[0], -1).any(axis=1)  # any part of a frame lost
        base = index * self.array.shards[0]
        return [(base + i * inner[0], min(base + (i + 1) * inner[0], self.array.shape[0]))
                for i in np.flatnonzero(empty)]

    def read(self, start: int, stop: int) -> np.ndarray:
        """Frames [start, stop) of one chunk. On the direct path the result is a view of
        the reused buffer: valid until the next `read`, and the caller may overwrite it."""
        k = self.array.chunks[0]
        index = start // k
        if not self._direct or (stop - 1) // k != index:
            return self.array[start:stop]
        shape = (k, *self.array.shape[1:])
        buffer = getattr(self._local, "buffer", None)
        if buffer is None or buffer.shape != shape:
            buffer = self._local.buffer = None  # the old one goes before the new comes
            buffer = self._local.buffer = np.empty(shape, dtype=self.array.dtype)
        with open(self._key_path(index), "rb") as f:
            data = f.read()
        numcodecs.blosc.decompress(data, buffer)
        return buffer[start - index * k : stop - index * k]

    def release(self) -> None:
        """Let go of this thread's decode buffer (before the root's whole-pattern steps)."""
        self._local.buffer = None


#: decoded chunks a process keeps for `read_rows` (LRU): the scan's blocks go in spatial
#: order, and neighbouring blocks share chunks, so each chunk is decoded about once
ROW_CHUNK_CACHE_BYTES = 64 * 2**20

_row_chunks: OrderedDict = OrderedDict()
_row_chunks_bytes = [0]
_row_lock = threading.Lock()


def read_rows(path: str, index: np.ndarray) -> np.ndarray:
    """Frames ``index`` (any order) of a store, as stored: each chunk they fall in decoded
    once (`ChunkReader`) and kept in this process's LRU of decoded chunks
    (`ROW_CHUNK_CACHE_BYTES`), where Zarr's fancy selection decodes a chunk once per
    call. A chunk absent from the store is an error naming its frames, never the fill
    value."""
    reader = chunk_reader(path)
    index = np.asarray(index, np.int64)
    k = reader.array.chunks[0]
    out = np.empty((len(index), *reader.array.shape[1:]), reader.array.dtype)
    for c in np.unique(index // k):
        chunk = _row_chunk(reader, int(c))
        rows = np.flatnonzero(index // k == c)
        out[rows] = chunk[index[rows] - c * k]
    return out


def _row_chunk(reader: ChunkReader, c: int) -> np.ndarray:
    k = reader.array.chunks[0]
    key = (reader, c)  # the reader: one per store version
    with _row_lock:
        hit = _row_chunks.get(key)
        if hit is not None:
            _row_chunks.move_to_end(key)
            return hit
    start, stop = c * k, min((c + 1) * k, reader.array.shape[0])
    if reader.absent(start, stop):
        raise LensfreeError(f"{reader.path}: the chunk of frames {start}-{stop - 1} is missing "
                            "from the store (lost in a copy?); every frame must be present")
    chunk = np.array(reader.read(start, stop))  # a copy: the reader's buffer is reused
    with _row_lock:
        _row_chunks[key] = chunk
        _row_chunks_bytes[0] += chunk.nbytes
        while _row_chunks_bytes[0] > ROW_CHUNK_CACHE_BYTES and len(_row_chunks) > 1:
            _row_chunks_bytes[0] -= _row_chunks.popitem(last=False)[1].nbytes
    return chunk


@functools.lru_cache(maxsize=4)
def _open_reader(path: str, version: int) -> ChunkReader:
    return ChunkReader(path)


def chunk_reader(path: str) -> ChunkReader:
    """This process's `ChunkReader` of the store at ``path`` (reopened when rewritten)."""
    meta = os.path.join(path, "frames", "zarr.json")
    version = os.stat(meta).st_mtime_ns if os.path.exists(meta) else 0
    return _open_reader(path, version)


def create_frame_store(
    path: str,
    n_frames: int,
    frame_shape: tuple[int, int],
    dtype,
    *,
    chunk_frames: int = DEFAULT_CHUNK_FRAMES,
    mask: np.ndarray | None = None,
    attrs: dict | None = None,
) -> zarr.Array:
    """Create (overwrite) a frame store and return its empty ``frames`` array.

    The caller fills ``frames`` chunk by chunk, so nothing needs all frames in memory.
    The store's attr ``store_id`` is new every time.
    """
    group = zarr.open_group(path, mode="w")
    frames = runstore.create_array(
        group, "frames", shape=(n_frames, *frame_shape),
        chunks=(min(chunk_frames, n_frames), *frame_shape), dtype=dtype,
        compressors=frame_codec(),
        # an all-zero chunk is written too: a chunk absent from the store is always lost
        config={"write_empty_chunks": True})
    if mask is not None:
        runstore.create_array(group, "mask", data=np.asarray(mask, dtype=bool))
    # a new id for every store written, so a stage (and batch) can tell a store rewritten
    # at the same path from the one it read
    group.attrs.update({**(attrs or {}), "store_id": uuid.uuid4().hex})
    return frames


def partial_path(out: str) -> str:
    """Where to build the store ``out``: ``out + ".partial"``, renamed by `publish`.

    A store at ``out`` is then always whole: a run killed half-way leaves only the
    partial, which the next run clears. Refuses to replace anything but a Zarr store.
    """
    out = os.fspath(out).rstrip("/")
    if os.path.isfile(out):
        raise LensfreeError(f"{out}: is a file; expected a store directory to write")
    is_store = os.path.exists(os.path.join(out, "zarr.json"))
    if os.path.isdir(out) and os.listdir(out) and not is_store:
        raise LensfreeError(f"{out}: exists and is not a Zarr store; refusing to replace it")
    partial = out + ".partial"
    shutil.rmtree(partial, ignore_errors=True)  # left by a run that was killed
    return partial


def publish(partial: str, out: str) -> None:
    """Replace ``out`` by the finished ``partial`` store."""
    out = os.fspath(out).rstrip("/")
    if os.path.exists(out):
        shutil.rmtree(out)
    os.replace(partial, out)
