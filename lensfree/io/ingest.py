"""Bring measured data in: CXI / HDF5 frames to a frame store, one summed pattern to a run store.

`ingest` streams frames ``chunk_frames`` at a time from HDF5 into a Zarr frame store
(DESIGN.md, "Stores"); it never holds all frames in memory. Three layouts are read:

- **CXI 1.6** (``.cxi`` or any file with ``/entry_1``): frames at ``/entry_1/data_1/data``
  (else ``/entry_1/instrument_1/detector_1/data``); geometry from ``detector_1/{distance,
  x_pixel_size, y_pixel_size}`` and ``source_1/{wavelength | energy}`` (wavelength preferred,
  else ``h c / E``); ``detector_1/mask`` (nonzero = bad); translations; an initial probe at
  ``source_1/{probe, illumination, data_illumination}`` or ``detector_1/probe``.
- **Eiger master** (``/entry/data/data_*``, usually external links): the linked blocks in
  name order; geometry and ``pixel_mask`` under ``/entry/instrument/``. ``hdf5plugin`` is
  imported so bitshuffle-LZ4 chunks decode.
- **Plain HDF5** with ``dataset``: (N, H, W) frames or one (H, W) frame; geometry only from
  the ``geometry`` argument.

Conventions fixed here:

- *Masks*: ``mask_dataset`` and the file masks follow CXI/Eiger, nonzero = bad pixel; the
  store's ``mask`` is True where measured.
- *Geometry*: fields given in ``geometry`` override the file's. Geometry attrs are written
  only when all three are known (a partial set goes to attr ``geometry_partial`` with a
  warning, so the store still opens with ``--pixels`` or with overrides). Pixels must be
  square within 1e-6: otherwise a `LensfreeError`, since a mean would silently distort the
  real-space grid; pass ``--pixel-size`` to override.
- *Positions*: a CXI translation is the *sample's* displacement (lab x, y, z; metres). The
  probe's position on the sample is its negative, expressed along the detector's row and
  column directions (``detector_1/basis_vectors``; the far-field and Fresnel-scaled object
  grids keep the detector's orientation). With the CXI default basis (rows along -y,
  columns along -x, as in the PETRA III P25 file) the two signs cancel:
  ``positions = (translation[:, 1], translation[:, 0])``. This matches cdtools, which negates
  the translations and maps them through the same basis.
- *Completeness*: the store is written to ``OUT.partial`` and renamed to ``OUT`` after its
  last write, so a store at ``OUT`` is always whole; a failed run removes its partial
  store. An existing ``OUT`` is replaced only if it is a Zarr store.

`ingest_pattern` writes an already summed pattern as the ``ensemble/`` group of a run
store, as a finished stage 1 would for phasing; see its docstring for the conventions.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
from dataclasses import dataclass, field

import numpy as np
import scipy.constants

import lensfree
from lensfree.errors import LensfreeError
from lensfree.io.frames import (
    DEFAULT_CHUNK_FRAMES,
    GEOMETRY_KEYS,
    Geometry,
    create_frame_store,
    partial_path,
    publish,
)

log = logging.getLogger(__name__)

HC = scipy.constants.h * scipy.constants.c  # J m
_LENGTH = {"m": 1.0, "meter": 1.0, "metre": 1.0, "mm": 1e-3, "um": 1e-6, "µm": 1e-6,
           "micron": 1e-6, "nm": 1e-9, "a": 1e-10, "å": 1e-10, "angstrom": 1e-10}
_ENERGY = {"j": 1.0, "ev": scipy.constants.e, "kev": 1e3 * scipy.constants.e}
_CXI_DATA = ("entry_1/data_1/data", "entry_1/instrument_1/detector_1/data")
_CXI_TRANSLATION = ("entry_1/data_1/translation", "entry_1/sample_1/geometry_1/translation")
_CXI_PROBE = ("entry_1/instrument_1/source_1/probe", "entry_1/instrument_1/source_1/illumination",
              "entry_1/instrument_1/source_1/data_illumination",
              "entry_1/instrument_1/detector_1/probe")
_CXI_DEFAULT_AXES = np.array([[0.0, -1.0, 0.0], [-1.0, 0.0, 0.0]])  # +row, +col in lab x, y, z


@dataclass
class _Source:
    """What was found in the input file, checked, before anything is written."""

    kind: str
    blocks: list  # [(hdf5 path, h5py.Dataset)] holding the frames in order
    n_frames: int
    frame_shape: tuple[int, int]
    dtype: np.dtype
    mask: np.ndarray | None = None
    geometry: dict = field(default_factory=dict)
    positions: np.ndarray | None = None
    probe: np.ndarray | None = None
    attrs: dict = field(default_factory=dict)


def ingest(input: str, out: str, *, dataset: str | None = None, mask_dataset: str | None = None,
           geometry: Geometry | None = None, chunk_frames: int = DEFAULT_CHUNK_FRAMES,
           progress: bool = True) -> dict:
    """Convert a CXI, Eiger or plain HDF5 file into the frame store ``out``, chunk by chunk.

    Parameters
    ----------
    input : the HDF5 file.
    out : frame store directory to write (``X.zarr``).
    dataset : HDF5 path of the frames; given, the file is read as plain HDF5.
    mask_dataset : HDF5 path of an (H, W) mask, nonzero = bad; replaces the file's mask.
    geometry : fields that are not None override the file's geometry.
    chunk_frames : frames per chunk of ``frames``, and per read.
    progress : tqdm bar on stderr.

    Returns
    -------
    dict with n_frames, frame_shape, dtype, geometry (the attrs written), has_mask,
    has_positions, has_probe, format.
    """
    import hdf5plugin  # noqa: F401  (registers the Eiger bitshuffle-LZ4 filter with h5py)

    if chunk_frames < 1:
        raise LensfreeError(f"chunk_frames {chunk_frames}: must be at least 1")
    input, out = os.fspath(input), os.fspath(out).rstrip("/")
    f = _open_hdf5(input)
    with f:
        src = _inspect(f, input, dataset)
        if mask_dataset is not None:
            src.mask = _read_mask(f, input, mask_dataset, src.frame_shape)
        attrs, geometry_attrs = _store_attrs(src, input, geometry)
        partial = partial_path(out)
        try:
            frames = create_frame_store(partial, src.n_frames, src.frame_shape, src.dtype,
                                        chunk_frames=chunk_frames, mask=src.mask, attrs=attrs)
            _stream(src, frames, input, chunk_frames, progress)
            group = _zarr_group(partial)
            if src.positions is not None:
                group.create_array("positions", data=src.positions)
            if src.probe is not None:
                group.create_array("probe", data=src.probe)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
    publish(partial, out)
    log.info("%s: %d frames from %s", out, src.n_frames, input)
    return {"n_frames": src.n_frames, "frame_shape": src.frame_shape, "dtype": str(src.dtype),
            "geometry": geometry_attrs, "has_mask": src.mask is not None,
            "has_positions": src.positions is not None, "has_probe": src.probe is not None,
            "format": src.kind}


def _open_hdf5(path: str):
    import h5py

    if not os.path.exists(path):
        raise LensfreeError(f"{path}: no such file or directory")
    if os.path.isdir(path):
        raise LensfreeError(f"{path}: is a directory, expected a CXI/HDF5 file")
    if not h5py.is_hdf5(path):
        hint = "; for one summed pattern use --pattern" if path.lower().endswith(
            (".npz", ".npy", ".tif", ".tiff")) else ""
        raise LensfreeError(f"{path}: not an HDF5 file (expected CXI, Eiger master or HDF5)"
                            + hint)
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise LensfreeError(f"{path}: cannot open as HDF5 ({exc})") from None


def _inspect(f, path: str, dataset: str | None) -> _Source:
    if dataset is not None:
        ds = _get_dataset(f, path, dataset)
        return _source("hdf5", [(dataset, ds)], path)
    if "entry_1" in f or path.lower().endswith(".cxi"):
        return _cxi(f, path)
    if "entry/data" in f and any(k.startswith("data_") for k in f["entry/data"]):
        return _eiger(f, path)
    found = []
    f.visititems(lambda name, obj: found.append(name) if getattr(obj, "ndim", 0) in (2, 3)
                 and len(found) < 5 else None)
    hint = f" (2D/3D datasets here: {', '.join(found)})" if found else ""
    raise LensfreeError(f"{path}: not CXI (no /entry_1) nor an Eiger master; name the frames "
                        f"with --dataset PATH{hint}")


def _get_dataset(f, path: str, name: str):
    import h5py

    try:
        obj = f.get(name)
    except (KeyError, OSError) as exc:  # a dangling external link
        raise LensfreeError(f"{path}:{name}: cannot read ({exc})") from None
    if obj is None:
        try:
            link = f.get(name, getlink=True)
        except (KeyError, OSError):
            link = None
        if isinstance(link, h5py.ExternalLink):
            raise LensfreeError(f"{path}:{name}: external link to {link.filename}:{link.path} "
                                "cannot be read (file missing?)")
        raise LensfreeError(f"{path}: no dataset {name}")
    if not isinstance(obj, h5py.Dataset):
        raise LensfreeError(f"{path}:{name}: is a group, not a dataset")
    return obj


def _source(kind: str, blocks: list, path: str) -> _Source:
    shape, dtype, n = None, None, 0
    for name, ds in blocks:
        if ds.ndim not in (2, 3):
            raise LensfreeError(f"{path}:{name}: shape {ds.shape}, expected frames (N, H, W) "
                                "or one frame (H, W)")
        if ds.dtype.kind not in "iuf":
            raise LensfreeError(f"{path}:{name}: dtype {ds.dtype}, expected integers or floats")
        if shape is not None and (ds.shape[-2:] != shape or ds.dtype != dtype):
            raise LensfreeError(f"{path}:{name}: {ds.shape} {ds.dtype} differs from the first "
                                f"block's frames {shape} {dtype}")
        shape, dtype = ds.shape[-2:], ds.dtype
        n += 1 if ds.ndim == 2 else ds.shape[0]
    if n == 0 or 0 in shape:
        raise LensfreeError(f"{path}:{blocks[0][0]}: holds no frames (shape {blocks[0][1].shape})")
    return _Source(kind, blocks, n, tuple(int(s) for s in shape), dtype.newbyteorder("="),
                   attrs={"dataset": [name for name, _ in blocks]})


def _cxi(f, path: str) -> _Source:
    name = next((p for p in _CXI_DATA if p in f), None)
    if name is None:
        raise LensfreeError(f"{path}: CXI file without frames at /{_CXI_DATA[0]} or "
                            f"/{_CXI_DATA[1]}; name them with --dataset PATH")
    src = _source("cxi", [(name, _get_dataset(f, path, name))], path)
    det, source = "entry_1/instrument_1/detector_1", "entry_1/instrument_1/source_1"
    geometry = {"distance_m": _scalar(f, path, f"{det}/distance", _LENGTH, "m")}
    px = _scalar(f, path, f"{det}/x_pixel_size", _LENGTH, "m")
    py = _scalar(f, path, f"{det}/y_pixel_size", _LENGTH, "m")
    geometry["pixel_size_m"] = _square(px, py)
    wavelength = _scalar(f, path, f"{source}/wavelength", _LENGTH, "m")
    energy = _scalar(f, path, f"{source}/energy", _ENERGY, "j")
    if wavelength is None and energy:
        wavelength = HC / energy
    geometry["wavelength_m"] = wavelength
    src.geometry = geometry
    if f"{det}/mask" in f:
        src.mask = _read_mask(f, path, f"{det}/mask", src.frame_shape)
    translation = next((p for p in _CXI_TRANSLATION if p in f), None)
    if translation is not None:
        src.positions = _cxi_positions(f, path, translation, src.n_frames)
        src.attrs["positions_from"] = translation
    probe = next((p for p in _CXI_PROBE if p in f), None)
    if probe is not None:
        src.probe = _probe(f, path, probe)
        src.attrs["probe_from"] = probe
    return src


def _eiger(f, path: str) -> _Source:
    group = f["entry/data"]
    names = sorted(k for k in group if k.startswith("data_"))
    blocks = [(f"entry/data/{k}", _get_dataset(f, path, f"entry/data/{k}")) for k in names]
    src = _source("eiger", blocks, path)
    det = "entry/instrument/detector"
    px = _scalar(f, path, f"{det}/x_pixel_size", _LENGTH, "m")
    py = _scalar(f, path, f"{det}/y_pixel_size", _LENGTH, "m")
    src.geometry = {
        "distance_m": _scalar(f, path, f"{det}/detector_distance", _LENGTH, "m"),
        "pixel_size_m": _square(px, py),
        "wavelength_m": _scalar(f, path, "entry/instrument/beam/incident_wavelength", _LENGTH,
                                "angstrom"),
    }
    mask = next((p for p in (f"{det}/pixel_mask", f"{det}/detectorSpecific/pixel_mask")
                 if p in f), None)
    if mask is not None:
        src.mask = _read_mask(f, path, mask, src.frame_shape)
    return src


def _scalar(f, path: str, name: str, units: dict, default_unit: str) -> float | None:
    """A positive scalar in SI units, or None when absent; a per-frame array gives its mean."""
    if name not in f:
        return None
    ds = f[name]
    try:
        values = np.asarray(ds[()], dtype=np.float64).ravel()
    except (TypeError, ValueError):
        raise LensfreeError(f"{path}:{name}: not a number ({ds.dtype})") from None
    unit = ds.attrs.get("units", default_unit)
    unit = (unit.decode() if isinstance(unit, bytes) else str(unit)).strip().lower()
    if unit not in units:
        raise LensfreeError(f"{path}:{name}: unknown unit {unit!r} (know {', '.join(units)})")
    if values.size == 0 or not np.all(np.isfinite(values)) or not np.all(values > 0):
        log.warning("%s:%s: %s is not a positive number; ignored (give the geometry on the "
                    "command line)", path, name, values[:4])
        return None
    if ds.dtype == np.float32:  # float32 1.12 reads 1.1200000047683716: keep the written value
        values = np.array([float(str(np.float32(v))) for v in values])
    if np.ptp(values) > 1e-6 * values.mean():
        log.warning("%s:%s varies over %d values; using the mean", path, name, values.size)
    return float(values.mean()) * units[unit]


def _square(px: float | None, py: float | None) -> float | tuple | None:
    """The pixel size, or (px, py) when not square: refused unless overridden."""
    if px is None or py is None:
        return px if py is None else py
    if abs(px - py) > 1e-6 * max(px, py):
        return (px, py)
    return (px + py) / 2


def _read_mask(f, path: str, name: str, shape: tuple[int, int]) -> np.ndarray:
    """CXI / Eiger flags (nonzero = bad) to True = measured."""
    flags = np.asarray(_get_dataset(f, path, name)[()])
    if flags.shape != shape:
        raise LensfreeError(f"{path}:{name}: mask shape {flags.shape} differs from the "
                            f"frames' {shape}")
    mask = flags == 0
    if not mask.any():
        raise LensfreeError(f"{path}:{name}: every pixel is flagged bad (nonzero = bad)")
    return mask


def _detector_axes(f, path: str) -> np.ndarray:
    """Unit vectors (lab x, y, z) of +row and +col of the detector, shape (2, 3)."""
    name = "entry_1/instrument_1/detector_1/basis_vectors"
    if name not in f:
        return _CXI_DEFAULT_AXES
    basis = np.asarray(f[name][()], dtype=np.float64)
    if basis.shape == (3, 2):  # cdtools writes the vectors as columns
        basis = basis.T
    norms = np.linalg.norm(basis, axis=1, keepdims=True) if basis.shape == (2, 3) else None
    if norms is None or not np.all(norms > 0):
        log.warning("%s:%s: shape %s unusable; assuming the CXI default axes",
                    path, name, basis.shape)
        return _CXI_DEFAULT_AXES
    return basis / norms


def _cxi_positions(f, path: str, name: str, n_frames: int) -> np.ndarray:
    t = np.asarray(_get_dataset(f, path, name)[()], dtype=np.float64)
    if t.ndim != 2 or t.shape[1] not in (2, 3):
        raise LensfreeError(f"{path}:{name}: shape {t.shape}, expected translations (N, 3)")
    if t.shape[0] != n_frames:
        raise LensfreeError(f"{path}:{name}: {t.shape[0]} translations for {n_frames} frames")
    if not np.all(np.isfinite(t)):
        raise LensfreeError(f"{path}:{name}: translations are not all finite")
    t = np.pad(t, ((0, 0), (0, 3 - t.shape[1])))
    # The sample moves by +t, so the probe sits at -t on it; read along +row, +col.
    return np.ascontiguousarray(-(t @ _detector_axes(f, path).T))


def _probe(f, path: str, name: str) -> np.ndarray:
    probe = np.asarray(_get_dataset(f, path, name)[()])
    if probe.ndim < 2 or probe.dtype.kind not in "iufc":
        raise LensfreeError(f"{path}:{name}: probe shape {probe.shape} {probe.dtype}, "
                            "expected (py, px) or (modes, py, px)")
    return probe.reshape(-1, *probe.shape[-2:]).astype(np.complex64)


def _store_attrs(src: _Source, path: str, given: Geometry | None) -> tuple[dict, dict]:
    geometry = dict(src.geometry)
    for key in GEOMETRY_KEYS:
        value = getattr(given, key, None) if given is not None else None
        if value is not None:
            geometry[key] = float(value)
    if isinstance(geometry.get("pixel_size_m"), tuple):
        px, py = geometry["pixel_size_m"]
        raise LensfreeError(f"{path}: non-square pixels {px:g} x {py:g} m are not supported; "
                            "pass --pixel-size (with --wavelength and --distance) to override")
    known = {k: v for k, v in geometry.items() if v is not None}
    attrs = {"source": {"file": os.fspath(path), "format": src.kind, **src.attrs},
             "lensfree_version": lensfree.__version__}
    if len(known) == len(GEOMETRY_KEYS):
        attrs.update(known)
    elif known:
        missing = sorted(set(GEOMETRY_KEYS) - set(known))
        log.warning("%s: geometry lacks %s; stored as attr geometry_partial only (give all "
                    "of --wavelength, --distance, --pixel-size)", path, ", ".join(missing))
        attrs["geometry_partial"] = known
        known = {}
    if src.positions is not None:
        attrs["positions_convention"] = (
            "probe position on the sample, (y, x) = (row, col) directions of the frames, "
            "metres: minus the CXI sample translation projected on the detector axes")
    return attrs, known


def _zarr_group(path: str):
    import zarr

    return zarr.open_group(path, mode="r+")


def _blocks(src: _Source, chunk: int):
    """Yield (start, frames) of ``chunk`` frames (the last may be short), across HDF5 blocks."""
    pending, n_pending, start = [], 0, 0
    for name, ds in src.blocks:
        n = 1 if ds.ndim == 2 else ds.shape[0]
        i = 0
        while i < n:
            take = min(chunk - n_pending, n - i)
            pending.append((name, ds, i, i + take))
            n_pending += take
            i += take
            if n_pending == chunk:
                yield start, pending
                start, pending, n_pending = start + chunk, [], 0
    if pending:
        yield start, pending


def _read(path: str, name: str, ds, i: int, j: int, dtype) -> np.ndarray:
    try:
        block = ds[()][None] if ds.ndim == 2 else ds[i:j]
    except (OSError, ValueError) as exc:  # a corrupt chunk or a missing HDF5 filter
        raise LensfreeError(f"{path}:{name}: cannot read frames {i}-{j - 1} ({exc})") from None
    return np.asarray(block, dtype=dtype)


def _stream(src: _Source, frames, path: str, chunk: int, progress: bool) -> None:
    from tqdm import tqdm

    with tqdm(total=src.n_frames, unit="frame", desc="ingest", file=sys.stderr,
              disable=not progress) as bar:
        for start, parts in _blocks(src, chunk):
            data = [_read(path, name, ds, i, j, src.dtype) for name, ds, i, j in parts]
            block = data[0] if len(data) == 1 else np.concatenate(data)
            frames[start : start + len(block)] = block
            bar.update(len(block))


def ingest_pattern(input: str, out: str, *, key: str | None = None, valid_key: str | None = None,
                   support_key: str | None = None, zero_is_missing: bool = True,
                   geometry: Geometry | None = None, amplitude: bool = False,
                   fft_shifted: bool = False, center: tuple[float, float] | None = None) -> dict:
    """Write one summed far-field pattern as the ``ensemble/`` group of the run store ``out``.

    The group holds what phasing reads, as a finished stage 1 leaves it: ``amplitude``
    (h, w) float32 ``= sqrt(I)`` on measured pixels and 0 elsewhere, ``valid`` (h, w) bool,
    ``support`` when the file has one, and, in the file's pixels, ``sum`` (the intensity
    as float64) and ``mask``; ``complete: true`` is written last.

    Centre: lensfree stores zero frequency at (h // 2, w // 2). The centre of the pattern
    is found from its centrosymmetry (`lensfree.engine.ensemble.find_center`) unless
    ``center`` is given, and the pattern is moved by whole pixels so that the centre lands
    there; pixels moved in are not measured. The ESRF logo is centred at (256.0, 256.0)
    and is not moved; the NADIA planar pattern is centred at (511.1, 511.4) and moves by
    (+1, +1). A pattern whose intensity sits in the corners is refused as fft-shifted
    unless ``fft_shifted`` (then it is ``fftshift``-ed first) or ``center`` is given.

    Parameters
    ----------
    input : .npz, .npy, .tif, .h5 or .zarr file (`lensfree.io.images.load_image`).
    out : run store to write (``RUN.zarr``); other stages in it are left alone.
    key : array name; in a .npz holding several, ``intensity`` or ``data`` by default.
    valid_key : array of measured pixels (nonzero = measured) in the same file.
    support_key : real-space support (nonzero = inside); a .npz's ``support`` by default.
    zero_is_missing : exact zeros are unmeasured (beam stop, gaps: the ESRF logo). Turn
        off where zeros are measured low counts (the NADIA planar data, 90 % zeros).
    geometry : recorded in the attrs when given; patterns carry none.
    amplitude : the file holds amplitudes ``|F|`` rather than intensities.
    fft_shifted : the file has zero frequency at pixel (0, 0).
    center : (cy, cx) of zero frequency in the file's pixels, skipping the estimate.
    """
    from lensfree.engine.ensemble import find_center
    from lensfree.io import runstore
    from lensfree.io.images import load_image

    input = os.fspath(input)
    if input.lower().endswith((".npy", ".tif", ".tiff")) and (valid_key or support_key):
        raise LensfreeError(f"{input}: holds one array; valid and support keys need a file "
                            "with named arrays (.npz, .h5, .zarr)")
    key, support_key = _npz_defaults(input, key, support_key)
    data = _pattern_array(input, load_image(input, key), key, "pattern")
    if data.dtype.kind not in "iuf":
        raise LensfreeError(f"{input}: dtype {data.dtype}, expected real intensities")
    h, w = data.shape
    valid = np.ones((h, w), dtype=bool)
    if valid_key is not None:
        valid = _pattern_array(input, load_image(input, valid_key), valid_key, "valid") != 0
    data = np.asarray(data, dtype=np.float64)
    _check_values(input, data, valid, (h, w))
    data = np.where(valid, data, 0.0)  # unmeasured pixels may hold NaN or flags
    if fft_shifted:
        data, valid = np.fft.fftshift(data), np.fft.fftshift(valid)
    intensity = data**2 if amplitude else data
    if zero_is_missing:
        valid &= intensity != 0
        if (intensity == 0).mean() > 0.5:
            log.warning("%s: %.0f%% of pixels are zero and taken as unmeasured; if they are "
                        "measured low counts, keep them (--zeros-measured)",
                        input, 100 * (intensity == 0).mean())
    if not valid.any():
        raise LensfreeError(f"{input}: no measured pixel left")
    center_given = center is not None
    if center is None:
        if not fft_shifted and _looks_fft_shifted(intensity, valid):
            raise LensfreeError(f"{input}: most intensity lies in the corners, so the pattern "
                                "looks fft-shifted; pass --fft-shifted, or --center Y X")
        try:
            center = find_center(intensity, valid)
        except ValueError as exc:
            raise LensfreeError(
                f"{input}: cannot find the centre ({exc}); pass --center Y X") from None
    cy, cx = (float(c) for c in center)
    if not (0 <= cy < h and 0 <= cx < w):
        raise LensfreeError(f"{input}: centre ({cy}, {cx}) lies outside the {h}x{w} pattern")
    shift = (h // 2 - int(round(cy)), w // 2 - int(round(cx)))
    amp = np.sqrt(np.where(valid, intensity, 0.0)).astype(np.float32)
    amp_c, valid_c = _shift(amp, shift), _shift(valid, shift)
    support = None
    if support_key is not None:
        support = _pattern_array(input, load_image(input, support_key), support_key, "support")
        if support.shape != (h, w):
            raise LensfreeError(f"{input}: support {support_key!r} shape {support.shape} "
                                f"differs from the pattern's {(h, w)}")
        support = support != 0

    run = runstore.open_run(os.fspath(out))
    params = {"key": key, "valid_key": valid_key, "support_key": support_key,
              "zero_is_missing": zero_is_missing, "amplitude": amplitude,
              "fft_shifted": fft_shifted, "center_given": center_given}
    group = runstore.begin_stage(run, "ensemble", params=params,
                                 inputs={"file": input, "key": key, "shape": [h, w]})
    runstore.write_array(group, "sum", intensity)
    runstore.write_array(group, "mask", valid)
    runstore.write_array(group, "amplitude", amp_c)
    runstore.write_array(group, "valid", valid_c)
    if support is not None:
        runstore.write_array(group, "support", support)
    attrs = {"source": {"file": input, "key": key, "kind": "pattern"},
             "quantity": "amplitude" if amplitude else "intensity",
             "center": [cy, cx], "center_binned": [cy + shift[0], cx + shift[1]],
             "shift": list(shift), "binning": 1, "window_origin": [-shift[0], -shift[1]],
             "n_valid": int(valid_c.sum()), "has_support": support is not None}
    if geometry is not None:
        attrs.update(geometry.as_attrs())
        if geometry.known:
            attrs["binned_pixel_size_m"] = geometry.pixel_size_m
            attrs["real_space_pixel_m"] = geometry.real_space_pixel(h)
    runstore.finish_stage(group, **attrs)
    return {"shape": (h, w), "center": (cy, cx), "shift": shift, "n_valid": attrs["n_valid"],
            "has_support": support is not None, "quantity": attrs["quantity"]}


def _npz_defaults(path: str, key, support_key):
    if not path.lower().endswith(".npz") or not os.path.isfile(path):
        return key, support_key
    try:
        with np.load(path) as data:
            names = data.files
    except Exception:  # load_image reports unreadable files
        return key, support_key
    if key is None and len(names) > 1:
        key = next((k for k in ("intensity", "data") if k in names), None)
    if support_key is None and "support" in names and key != "support":
        support_key = "support"
    return key, support_key


def _pattern_array(path: str, array, key, what: str) -> np.ndarray:
    array = np.asarray(array)
    if array.ndim == 3 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 2:
        name = f" {key!r}" if key else ""
        raise LensfreeError(f"{path}: {what}{name} has shape {array.shape}, expected (h, w)")
    return array


def _check_values(path: str, data: np.ndarray, valid: np.ndarray, shape) -> None:
    if valid.shape != shape:
        raise LensfreeError(f"{path}: valid shape {valid.shape} differs from the pattern's {shape}")
    bad = valid & ~np.isfinite(data)
    if bad.any():
        raise LensfreeError(f"{path}: {int(bad.sum())} measured pixels are not finite")
    negative = valid & (data < 0)
    if negative.any():
        raise LensfreeError(f"{path}: {int(negative.sum())} pixels are negative (min "
                            f"{data[negative].min():g}); expected intensities >= 0")


def _looks_fft_shifted(intensity: np.ndarray, valid: np.ndarray) -> bool:
    """More measured intensity in the outer three quarters of the area than in the middle."""
    h, w = intensity.shape
    inner = np.zeros_like(valid)
    inner[h // 4 : h - h // 4, w // 4 : w - w // 4] = True
    weighted = np.where(valid, intensity, 0.0)
    return weighted[~inner].sum() > weighted[inner].sum()


def _shift(array: np.ndarray, shift: tuple[int, int]) -> np.ndarray:
    """Move ``array`` by whole pixels, filling with zeros (False) rather than wrapping."""
    out = np.zeros_like(array)
    (dy, dx), (h, w) = shift, array.shape
    src = array[max(-dy, 0) : h - max(dy, 0), max(-dx, 0) : w - max(dx, 0)]
    out[max(dy, 0) : max(dy, 0) + src.shape[0], max(dx, 0) : max(dx, 0) + src.shape[1]] = src
    return out
