"""CXI 1.6 files (``.cxi``, or any file with ``/entry_1``).

Frames at ``/entry_1/data_1/data`` (else ``/entry_1/instrument_1/detector_1/data``);
geometry from ``detector_1/{distance, x_pixel_size, y_pixel_size}`` and
``source_1/{wavelength | energy}`` (wavelength preferred, else ``h c / E``);
``detector_1/mask`` (nonzero = bad); translations; an initial probe at
``source_1/{probe, illumination, data_illumination}`` or ``detector_1/probe``.

Positions: a CXI translation is the *sample's* displacement (lab x, y, z; metres). The
probe's position on the sample is its negative, expressed along the detector's row and
column directions (``detector_1/basis_vectors``; the far-field and Fresnel-scaled object
grids keep the detector's orientation). With the CXI default basis (rows along -y,
columns along -x, as in the PETRA III P25 file) the two signs cancel:
``positions = (translation[:, 1], translation[:, 0])``. This matches cdtools, which
negates the translations and maps them through the same basis.
"""

from __future__ import annotations

import logging

import numpy as np

from lensfree.errors import LensfreeError
from lensfree.io.readers.common import (
    ENERGY,
    HC,
    LENGTH,
    Source,
    frames_source,
    get_dataset,
    read_mask,
    scalar,
    square,
)

log = logging.getLogger(__name__)

_DATA = ("entry_1/data_1/data", "entry_1/instrument_1/detector_1/data")
_TRANSLATION = ("entry_1/data_1/translation", "entry_1/sample_1/geometry_1/translation")
_PROBE = ("entry_1/instrument_1/source_1/probe", "entry_1/instrument_1/source_1/illumination",
          "entry_1/instrument_1/source_1/data_illumination",
          "entry_1/instrument_1/detector_1/probe")
_DEFAULT_AXES = np.array([[0.0, -1.0, 0.0], [-1.0, 0.0, 0.0]])  # +row, +col in lab x, y, z


def guess(f, path: str) -> bool:
    """A CXI entry, or a file named ``.cxi``."""
    return "entry_1" in f or path.lower().endswith(".cxi")


def open(f, path: str, dataset: str | None = None) -> Source:
    """Frames, geometry, mask, positions and probe of a CXI file (``dataset`` is unused:
    named frames are read as plain HDF5)."""
    name = next((p for p in _DATA if p in f), None)
    if name is None:
        raise LensfreeError(f"{path}: CXI file without frames at /{_DATA[0]} or "
                            f"/{_DATA[1]}; name them with --dataset PATH")
    src = frames_source("cxi", [(name, get_dataset(f, path, name))], path)
    det, source = "entry_1/instrument_1/detector_1", "entry_1/instrument_1/source_1"
    geometry = {"distance_m": scalar(f, path, f"{det}/distance", LENGTH, "m")}
    px = scalar(f, path, f"{det}/x_pixel_size", LENGTH, "m")
    py = scalar(f, path, f"{det}/y_pixel_size", LENGTH, "m")
    geometry["pixel_size_m"] = square(px, py)
    wavelength = scalar(f, path, f"{source}/wavelength", LENGTH, "m")
    energy = scalar(f, path, f"{source}/energy", ENERGY, "j")
    if wavelength is None and energy:
        wavelength = HC / energy
    geometry["wavelength_m"] = wavelength
    src.geometry = geometry
    if f"{det}/mask" in f:
        src.mask = read_mask(f, path, f"{det}/mask", src.frame_shape)
    translation = next((p for p in _TRANSLATION if p in f), None)
    if translation is not None:
        src.positions = _positions(f, path, translation, src.n_frames)
        src.attrs["positions_from"] = translation
    probe = next((p for p in _PROBE if p in f), None)
    if probe is not None:
        src.probe = _probe(f, path, probe)
        src.attrs["probe_from"] = probe
    return src


def _detector_axes(f, path: str) -> np.ndarray:
    """Unit vectors (lab x, y, z) of +row and +col of the detector, shape (2, 3)."""
    name = "entry_1/instrument_1/detector_1/basis_vectors"
    if name not in f:
        return _DEFAULT_AXES
    basis = np.asarray(f[name][()], dtype=np.float64)
    if basis.shape == (3, 2):  # cdtools writes the vectors as columns
        basis = basis.T
    norms = np.linalg.norm(basis, axis=1, keepdims=True) if basis.shape == (2, 3) else None
    if norms is None or not np.all(norms > 0):
        log.warning("%s:%s: shape %s unusable; assuming the CXI default axes",
                    path, name, basis.shape)
        return _DEFAULT_AXES
    return basis / norms


def _positions(f, path: str, name: str, n_frames: int) -> np.ndarray:
    t = np.asarray(get_dataset(f, path, name)[()], dtype=np.float64)
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
    probe = np.asarray(get_dataset(f, path, name)[()])
    if probe.ndim < 2 or probe.dtype.kind not in "iufc":
        raise LensfreeError(f"{path}:{name}: probe shape {probe.shape} {probe.dtype}, "
                            "expected (py, px) or (modes, py, px)")
    return probe.reshape(-1, *probe.shape[-2:]).astype(np.complex64)
