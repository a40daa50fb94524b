"""Bragg CDI: a rocking scan (a stack of detector frames along the rocking angle) to a
finished 3D ``ensemble/`` (``lensfree ingest FILE --bragg --out RUN.zarr``).

The steps, in order (cohere's preprocessing, with the masks kept as unmeasured voxels
rather than zeros, so that phasing lets the field float there):

1. frames (n, h, w) from an NPZ or HDF5 file, or a TIFF series (a directory or a glob of
   frame files in name order, or one multi-page file, read with tifffile; its dark and
   white fields and mask are TIFF files); dark and white fields of the frames' shape, or
   of a larger detector with ``roi`` (the frames' top-left corner on it).
2. The dark field is subtracted (clipped at 0); pixels whose dark is an outlier are hot.
3. The white field: pixels at or below 0 or below ``mean - 3 sigma`` (seams, dead
   columns) are unmeasured; elsewhere the frames are divided by ``white / mean(white)``.
4. Hot pixels (bright in most frames, ten times their neighbours), dead pixels (never a
   count where the neighbours count), saturated voxels (``saturation``) and the file's
   mask are unmeasured; counts at or below ``floor`` are set to 0.
5. Aliens: connected bright blobs that do not hold the peak and have no centrosymmetric
   counterpart about it (a Bragg peak's fringes come in pairs, ``I(q) ~ I(-q)``; a
   parasitic reflection does not) are unmeasured, with a one-voxel margin.
6. Bin the detector axes by ``binning``; crop a cube of ``size`` (default the largest
   FFT-friendly size that fits) with the maximum at its centre ``(n // 2,) * 3``.

The phase of a Bragg reconstruction is the projection of the displacement field on the
scattering vector, ``phi(r) = Q . u(r)``, in radians. The cube stays in detector
coordinates (rocking angle, detector y, detector x); the geometry is stored so that a
conversion to orthogonal laboratory coordinates (xrayutilities) can follow.
"""

from __future__ import annotations

import glob
import os
import re

import numpy as np
from scipy import ndimage

from lensfree.errors import LensfreeError

__all__ = ["PHASE_MEANING", "fft_friendly", "ingest_bragg", "prepare_rocking_scan",
           "tiff_series"]

PHASE_MEANING = ("the phase is the projection of the displacement field on the scattering "
                 "vector, phi = Q . u, in radians")

_HOT_RATIO = 10.0    # a hot pixel's median over the scan, against its neighbours'
_ALIEN_LEVEL = 1e-3  # blobs are looked for above this fraction of the peak
_ALIEN_PAIR = 0.1    # ... and are aliens when their mirror image holds less than this share


def fft_friendly(limit: int) -> int:
    """The largest even ``2^a 3^b 5^c`` at most ``limit``."""
    for n in range(int(limit) - int(limit) % 2, 1, -2):
        m = n
        for p in (2, 3, 5):
            while m % p == 0:
                m //= p
        if m == 1:
            return n
    raise LensfreeError(f"no FFT-friendly size at most {limit}")


_TIFF = (".tif", ".tiff")


def tiff_series(path: str) -> list[str] | None:
    """The frame files of a TIFF series, in order, or None when ``path`` is no series: a
    directory (its ``*.tif``/``*.tiff`` files), a glob pattern, or one (multi-page) TIFF
    file. Names sort with their numbers read as numbers (``frame_9`` before ``frame_10``)."""
    if os.path.isdir(path):
        files = [os.path.join(path, f) for f in os.listdir(path) if f.lower().endswith(_TIFF)]
        if not files:
            raise LensfreeError(f"{path}: a directory without .tif or .tiff files")
    elif glob.has_magic(path):
        files = [f for f in glob.glob(path) if os.path.isfile(f)]
        if not files:
            raise LensfreeError(f"{path}: no file matches")
    elif path.lower().endswith(_TIFF):
        files = [path]
    else:
        return None
    return sorted(files, key=lambda f: [int(t) if t.isdigit() else t
                                        for t in re.split(r"(\d+)", os.path.basename(f))])


def _read_tiff(path: str) -> np.ndarray:
    import tifffile

    try:
        return np.asarray(tifffile.imread(path))
    except (OSError, ValueError, tifffile.TiffFileError) as exc:
        raise LensfreeError(f"{path}: cannot read as TIFF: {exc}") from None


def _load_tiff(files: list[str], keys: dict, where: str) -> dict:
    """Frames from a TIFF series (one frame a file, or the pages of one file) and the dark
    and white fields and mask from the TIFF files their keys name (relative to the working
    directory, else to the series' directory; those files are no frames)."""
    if keys["frames"] != "frames":
        raise LensfreeError(f"--frames-key {keys['frames']}: a TIFF series has no keys")
    fields = {}
    for role in ("dark", "white", "mask"):
        name = keys[role]
        if name is not None:
            found = name if os.path.isfile(name) else os.path.join(where, name)
            if not os.path.isfile(found):
                raise LensfreeError(f"--{role}-key {name}: with a TIFF series, a TIFF file "
                                    f"(none here or in {where})")
            fields[role] = found
    named = {os.path.realpath(f) for f in fields.values()}
    files = [f for f in files if os.path.realpath(f) not in named]  # fields are no frames
    if not files:
        raise LensfreeError(f"{where}: no frame files besides the fields")
    frames = [_read_tiff(f) for f in files]
    if len(frames) == 1 and frames[0].ndim == 3:  # the pages of one file
        out = {"frames": frames[0]}
    else:
        for f, frame in zip(files, frames):
            if frame.shape != frames[0].shape or frame.ndim != 2:
                raise LensfreeError(f"{f}: a frame of {frame.shape}; {files[0]} is "
                                    f"{frames[0].shape} (every frame one 2D image)")
        out = {"frames": np.stack(frames)}
    out.update({role: _read_tiff(f) for role, f in fields.items()})
    return out


def _load(path: str, keys: dict) -> dict:
    """The arrays named in ``keys`` (role -> key or None) from an NPZ or HDF5 file, or a
    TIFF series (:func:`tiff_series`)."""
    files = tiff_series(path)
    if files is not None:
        where = path if os.path.isdir(path) else os.path.dirname(files[0])
        return _load_tiff(files, keys, where)
    lower = path.lower()
    out = {}
    try:
        if lower.endswith(".npz"):
            with np.load(path) as f:
                for role, key in keys.items():
                    if key is not None:
                        if key not in f:
                            raise LensfreeError(f"{path}: no array '{key}' (has: "
                                                f"{', '.join(f.files)})")
                        out[role] = np.asarray(f[key])
        elif lower.endswith((".h5", ".hdf5", ".cxi", ".nxs")):
            import h5py

            with h5py.File(path, "r") as f:
                for role, key in keys.items():
                    if key is not None:
                        if key not in f:
                            raise LensfreeError(f"{path}: no dataset '{key}'")
                        out[role] = np.asarray(f[key][...])
        else:
            raise LensfreeError(f"{path}: a rocking scan is read from .npz or HDF5 files, or "
                                "a TIFF series (a directory, a glob or a .tif)")
    except OSError as exc:
        raise LensfreeError(f"{path}: cannot read: {exc}") from None
    return out


def _field(name: str, field, shape, roi) -> np.ndarray:
    """A dark or white field cut to the frames' pixels."""
    field = np.asarray(field, np.float64)
    if field.ndim == 3 and field.shape[0] == 1:
        field = field[0]
    if field.shape == tuple(shape):
        return field
    if field.ndim != 2 or roi is None:
        raise LensfreeError(f"{name} field is {field.shape}, the frames {tuple(shape)}"
                            + ("" if field.ndim != 2 else "; give --roi Y X, the frames' "
                               "corner on the larger detector"))
    y, x = roi
    if y < 0 or x < 0 or y + shape[0] > field.shape[0] or x + shape[1] > field.shape[1]:
        raise LensfreeError(f"--roi {y} {x}: frames of {tuple(shape)} do not fit in the "
                            f"{name} field of {field.shape}")
    return field[y:y + shape[0], x:x + shape[1]]


def _hot_and_dead(frames: np.ndarray, bad: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixels bright in most frames against their neighbours; pixels that never count
    where their neighbours do (at least one count a frame on average). Pixels already
    ``bad`` are neither (a masked seam reads 0 and is no dead pixel)."""
    median = np.median(frames, axis=0)
    around = ndimage.median_filter(median, size=3, mode="nearest")
    hot = (median > _HOT_RATIO * np.maximum(around, 1.0)) & (median >= 5) & ~bad
    total = frames.sum(axis=0)
    dead = (total == 0) & (ndimage.median_filter(total, size=3, mode="nearest")
                           >= frames.shape[0]) & ~bad
    return hot, dead


def _aliens(volume: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Voxels of bright blobs without a centrosymmetric counterpart about the peak.

    A voxel is a candidate when it is above `_ALIEN_LEVEL` of the peak and its mirror
    ``2 p - q`` holds less than `_ALIEN_PAIR` of it (read through a 3-voxel maximum: the
    peak voxel is the centre of symmetry only to a voxel); candidates joined to the peak
    are fringes, the other blobs are aliens, masked with a one-voxel margin.
    """
    shown = np.where(valid, volume, 0)
    peak = np.unravel_index(int(np.argmax(shown)), shown.shape)
    near = ndimage.maximum_filter(shown, size=3, mode="constant")
    mirror = np.zeros(shown.shape)
    known = np.zeros(shown.shape, bool)
    dst, src = [], []
    for p, n in zip(peak, shown.shape):
        # q -> 2p - q maps [max(0, 2p - n + 1), min(n, 2p + 1)) onto itself reversed
        lo, hi = max(0, 2 * p - n + 1), min(n, 2 * p + 1)
        dst.append(slice(lo, hi))
        src.append(slice(2 * p - lo, 2 * p - hi if 2 * p - hi >= 0 else None, -1))
    mirror[tuple(dst)] = near[tuple(src)]
    known[tuple(dst)] = True
    candidate = (known & (shown > _ALIEN_LEVEL * shown[peak])
                 & (_ALIEN_PAIR * shown > mirror))
    labels, _ = ndimage.label(candidate, structure=np.ones((3, 3, 3), bool))
    aliens = (labels > 0) & (labels != labels[peak])
    return ndimage.binary_dilation(aliens, structure=np.ones((3, 3, 3), bool))


def prepare_rocking_scan(frames, *, dark=None, white=None, mask=None, roi=None,
                         saturation=None, floor: float = 0.0) -> tuple[np.ndarray, np.ndarray,
                                                                        dict]:
    """Steps 1-5 of the module docstring: (intensity (n, h, w) float64, valid, counts)."""
    frames = np.asarray(frames)
    if frames.ndim != 3:
        raise LensfreeError(f"the frames are {frames.shape}: a rocking scan is (n, h, w)")
    if frames.shape[0] < 2:
        raise LensfreeError(f"the stack holds {frames.shape[0]} frame: a rocking scan needs "
                            "at least 2")
    data = frames.astype(np.float64)
    if not np.isfinite(data).all():
        raise LensfreeError(f"the frames hold {int((~np.isfinite(data)).sum())} NaN or inf "
                            "values")
    shape = data.shape[1:]
    bad = np.zeros(shape, bool)
    counts = {}
    saturated = np.zeros(data.shape, bool)
    if saturation is not None:
        saturated = frames >= saturation
    if mask is not None:
        mask = np.asarray(mask)
        if mask.shape != shape:
            mask = _field("mask", mask, shape, roi)
        bad |= mask != 0
    if dark is not None:
        dark = _field("dark", dark, shape, roi)
        centre = float(np.median(dark))
        spread = 1.4826 * float(np.median(np.abs(dark - centre)))
        hot_dark = dark > centre + 10 * (spread + 1)
        counts["hot_dark"] = int(hot_dark.sum())
        bad |= hot_dark
        data = np.maximum(data - dark, 0)
    if white is not None:
        white = _field("white", white, shape, roi)
        good = white > 0
        mean, std = float(white[good].mean()), float(white[good].std())
        good &= white >= mean - 3 * std
        counts["white_unmeasured"] = int((~good).sum())
        bad |= ~good
        mean = float(white[good].mean())
        data = np.where(good, data / np.where(good, white / mean, 1.0), 0)
    hot, dead = _hot_and_dead(data, bad)
    counts.update(hot=int(hot.sum()), dead=int(dead.sum()), saturated=int(saturated.sum()))
    bad |= hot | dead
    if floor > 0:
        data[data <= floor] = 0
    valid = ~bad[None] & ~saturated
    aliens = _aliens(data, valid) & valid
    counts["alien_voxels"] = int(aliens.sum())
    valid &= ~aliens
    return data, valid, counts


def _bin(data: np.ndarray, valid: np.ndarray, binning: int):
    """Sum ``binning x binning`` detector pixels; a binned pixel is measured when all of
    its pixels are (a partly measured sum would read low)."""
    if binning == 1:
        return data, valid
    n, h, w = data.shape
    h, w = h // binning * binning, w // binning * binning
    shape = (n, h // binning, binning, w // binning, binning)
    data = np.where(valid, data, 0)[:, :h, :w].reshape(shape).sum(axis=(2, 4))
    valid = valid[:, :h, :w].reshape(shape).all(axis=(2, 4))
    return data, valid


def crop_about_peak(data, valid, size: int | None):
    """The cube of ``size`` with the (measured) maximum at ``(size // 2,) * 3``; returns
    (data, valid, start, peak)."""
    peak = np.unravel_index(int(np.argmax(np.where(valid, data, -np.inf))), data.shape)
    fits = min(min(2 * p, 2 * (n - p) - 1) for p, n in zip(peak, data.shape))
    if size is None:
        size = fft_friendly(fits)
    if size > fits:
        raise LensfreeError(f"--size {size}: a cube about the peak at {tuple(map(int, peak))} "
                            f"of the data {data.shape} holds at most {fits} voxels a side")
    start = tuple(int(p) - size // 2 for p in peak)
    window = tuple(slice(s, s + size) for s in start)
    return data[window], valid[window], start, tuple(int(p) for p in peak)


def ingest_bragg(path: str, out: str, *, frames_key: str = "frames", dark_key=None,
                 white_key=None, mask_key=None, roi=None, saturation=None, floor: float = 0.0,
                 size: int | None = None, binning: int = 1, geometry=None,
                 rocking_step_deg=None, detector_angles_deg=None) -> dict:
    """Read a rocking scan and write a finished 3D ``out/ensemble/``; returns its attrs."""
    from lensfree.io import runstore

    arrays = _load(path, {"frames": frames_key, "dark": dark_key, "white": white_key,
                          "mask": mask_key})
    data, valid, counts = prepare_rocking_scan(
        arrays["frames"], dark=arrays.get("dark"), white=arrays.get("white"),
        mask=arrays.get("mask"), roi=roi, saturation=saturation, floor=floor)
    data, valid = _bin(data, valid, int(binning))
    cube, cube_valid, start, peak = crop_about_peak(data, valid, size)
    if not cube_valid.any():
        raise LensfreeError(f"{path}: no measured voxel in the cropped cube")
    attrs = {"bragg": True, "quantity": "amplitude", "source": path,
             "n_frames": int(arrays["frames"].shape[0]),
             "frame_shape": list(arrays["frames"].shape[1:]), "binning": int(binning),
             "crop_start": list(start), "crop_size": int(cube.shape[0]), "peak": list(peak),
             "axes": ["rocking angle", "detector y", "detector x"],
             "n_valid": int(cube_valid.sum()), "masked": counts,
             "phase_meaning": PHASE_MEANING}
    if rocking_step_deg is not None:
        attrs["rocking_step_deg"] = float(rocking_step_deg)
    if detector_angles_deg is not None:
        attrs["detector_delta_deg"], attrs["detector_gamma_deg"] = map(float,
                                                                       detector_angles_deg)
    if geometry is not None:
        attrs.update(geometry.as_attrs())
        attrs["detector_pixel_m"] = float(geometry.pixel_size_m) * int(binning)
    run = runstore.open_run(out, mode="a")
    params = {"frames_key": frames_key, "dark_key": dark_key, "white_key": white_key,
              "mask_key": mask_key, "roi": roi, "saturation": saturation, "floor": floor,
              "size": size, "binning": binning}
    group = runstore.begin_stage(run, "ensemble", params, {"file": path})
    amplitude = np.sqrt(np.where(cube_valid, np.maximum(cube, 0), 0)).astype(np.float32)
    runstore.write_array(group, "amplitude", amplitude)
    runstore.write_array(group, "valid", cube_valid)
    runstore.finish_stage(group, **attrs)
    return attrs
