"""One summed far-field pattern (.npz, .npy, TIFF, HDF5, Zarr) to the ``ensemble/`` group.

`ingest_pattern` writes it as a finished stage 1 would for phasing, through the same
pattern pipeline (`lensfree.engine.pattern.prepare_pattern`); see its docstring for the
conventions.
"""

from __future__ import annotations

import logging
import os

import numpy as np

from lensfree.engine.ensemble import find_center
from lensfree.engine.pattern import prepare_pattern
from lensfree.errors import LensfreeError
from lensfree.io import runstore
from lensfree.io.frames import Geometry
from lensfree.io.images import load_image

log = logging.getLogger(__name__)


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
    # a measured pattern goes in as it is: no Friedel patch, no binning, no speckle dropped
    prepared = prepare_pattern(intensity, valid, center=(cy, cx), patch=False, binning=1,
                               speckle_diameter=0.0)
    amp_c, valid_c = prepared.amplitude, prepared.valid
    shift = (-prepared.origin[0], -prepared.origin[1])
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
             "center": [cy, cx], "center_binned": list(prepared.center_binned),
             "shift": list(shift), "binning": 1, "window_origin": list(prepared.origin),
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
