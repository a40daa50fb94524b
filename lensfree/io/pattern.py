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
                   support_key: str | None = None,
                   geometry: Geometry | None = None, amplitude: bool = False,
                   fft_shifted: bool = False, center: tuple[float, float] | None = None,
                   zeros: str = "connected", no_support: bool = False,
                   mask_key: str | None = None, mask_good: bool = False,
                   saturation: float | None = None, binning: int = 1) -> dict:
    """Write one summed far-field pattern as the ``ensemble/`` group of the run store ``out``.

    The group holds what phasing reads, as a finished stage 1 leaves it: ``amplitude``
    (h, w) float32 ``= sqrt(I)`` on measured pixels and 0 elsewhere, ``valid`` (h, w) bool,
    ``support`` when the file has one, and, in the file's pixels, ``sum`` (the intensity
    as float64) and ``mask``; ``complete: true`` is written last.

    Hawk (libspimage) files, with ``real`` (or ``intensities``, the raw files), ``mask``
    and ``scaled`` datasets, need no keys: ``key`` defaults to ``real``, ``mask_key`` to
    ``mask`` with 1 = good, and the file's ``scaled`` and ``shifted`` flags set
    ``amplitude`` and ``fft_shifted``.

    A pattern (binned, with ``binning``) that is not square is cropped to the largest
    square window about its centre, so that real-space pixels (``lambda z / (N p)`` per
    axis) stay square and the object is not stretched; ``window_origin`` says where the
    window lies.

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
        Trailing (and leading) axes of length 1 are squeezed: Hawk's (98, 98, 1).
    valid_key : array of measured pixels (nonzero = measured) in the same file.
    support_key : real-space support (nonzero = inside); a .npz's ``support`` by default.
    zeros : which exact zeros are unmeasured. ``"connected"`` (the default, as ``lensfree
        ingest --pattern``): only those joined to the beam stop, to a detector gap or to
        the array edges (`connected_zeros`), as PyNX masks the ESRF logo; an isolated
        zero count at high q is measured. ``"all"``: every exact zero. ``"measured"``:
        none (the NADIA planar data, 90 % zeros, no beam stop).
    no_support : ignore a support the file ships (a .npz's ``support``).
    mask_key : array of unmeasured pixels (nonzero = bad) in the same file; with
        ``mask_good`` its nonzero pixels are the good ones (Hawk: 1 = good).
    saturation : pixels whose value in the file is at or above it are unmeasured (the
        saturated centre of a raw pattern), in the file's units.
    binning : ``b x b`` binning (`lensfree.engine.pattern.prepare_pattern`: a binned pixel
        sums its measured pixels, onto a grid whose middle pixel holds the centre).
    geometry : recorded in the attrs when given; patterns carry none.
    amplitude : the file holds amplitudes ``|F|`` rather than intensities.
    fft_shifted : the file has zero frequency at pixel (0, 0).
    center : (cy, cx) of zero frequency in the file's pixels, skipping the estimate.
    """
    input = os.fspath(input)
    if zeros not in ZEROS:
        raise LensfreeError(f"zeros {zeros!r}: expected one of {', '.join(ZEROS)}")
    if input.lower().endswith((".npy", ".tif", ".tiff")) and (valid_key or support_key
                                                             or mask_key):
        raise LensfreeError(f"{input}: holds one array; --valid-key, --mask-key and "
                            "--support-key need a file with named arrays (.npz, .h5, .zarr)")
    if no_support and support_key is not None:
        raise LensfreeError("--no-support and --support-key: choose one")
    if saturation is not None and not saturation > 0:
        raise LensfreeError(f"--saturation {saturation}: must be > 0")
    if not (isinstance(binning, int | np.integer) and binning >= 1):
        raise LensfreeError(f"--bin {binning}: must be an integer >= 1")
    hawk = _hawk_defaults(input) if key is None else None
    if hawk is not None:
        key = hawk["key"]
        if mask_key is None and valid_key is None:
            mask_key, mask_good = "mask", True
        amplitude = amplitude or hawk["scaled"]
        fft_shifted = fft_shifted or (hawk["shifted"] and center is None)
        log.info("%s: a Hawk (libspimage) file: key %r, mask 'mask' (1 = good)%s%s",
                 input, key, ", amplitudes" if hawk["scaled"] else "",
                 ", fft-shifted" if hawk["shifted"] else "")
    if mask_good and mask_key is None:
        raise LensfreeError("--mask-good: name the mask with --mask-key")
    key, support_key = _npz_defaults(input, key, None if no_support else support_key)
    if no_support:
        support_key = None
    data = _pattern_array(input, load_image(input, key), key, "pattern")
    if data.dtype.kind not in "iuf":
        raise LensfreeError(f"{input}: dtype {data.dtype}, expected real intensities")
    h, w = data.shape
    valid = np.ones((h, w), dtype=bool)
    if valid_key is not None:
        valid = _pattern_array(input, load_image(input, valid_key), valid_key, "valid") != 0
    if mask_key is not None:
        mask = _pattern_array(input, load_image(input, mask_key), mask_key, "mask")
        if mask.shape != (h, w):
            raise LensfreeError(f"{input}: mask {mask_key!r} shape {mask.shape} differs from "
                                f"the pattern's {(h, w)}")
        good = mask != 0 if mask_good else mask == 0
        if good.mean() < 0.5:
            # a detector mask marks a few bad pixels: most of them bad is the other
            # convention (Hawk's 1 = good), not a measurement worth phasing
            flip = "without" if mask_good else "with"
            raise LensfreeError(f"{input}: mask {mask_key!r} leaves {good.mean():.0%} of the "
                                f"pixels measured; if its 1 means "
                                f"{'bad' if mask_good else 'good'}, run {flip} --mask-good")
        valid = valid & good
    data = np.asarray(data, dtype=np.float64)
    _check_values(input, data, valid, (h, w))
    if saturation is not None:
        saturated = valid & (data >= saturation)
        valid &= ~saturated
        log.info("%s: %d pixels at or above --saturation %g are unmeasured", input,
                 int(saturated.sum()), saturation)
    data = np.where(valid, data, 0.0)  # unmeasured pixels may hold NaN or flags
    if fft_shifted:
        data, valid = np.fft.fftshift(data), np.fft.fftshift(valid)
    intensity = data**2 if amplitude else data
    n_zero = int((valid & (intensity == 0)).sum())
    if zeros == "all":
        valid &= intensity != 0
    elif zeros == "connected":
        # the beam stop sits at the centre: the one given, else the pattern's centroid
        # (the centrosymmetry search needs the mask this decides)
        middle = center if center is not None else _centroid(np.where(valid, intensity, 0.0))
        valid &= ~connected_zeros(np.where(valid, intensity, 0.0), middle)
    dropped = n_zero - int((valid & (intensity == 0)).sum())
    if zeros != "measured" and dropped > 0.5 * intensity.size:
        log.warning("%s: %.0f%% of pixels are zeros taken as unmeasured; if they are "
                    "measured low counts, keep them (--zeros-measured)",
                    input, 100 * dropped / intensity.size)
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
    prepared = prepare_pattern(intensity, valid, center=(cy, cx), patch=False,
                               binning=int(binning), speckle_diameter=0.0)
    amp_c, valid_c = prepared.amplitude, prepared.valid
    shift = (-prepared.origin[0], -prepared.origin[1])
    origin = list(prepared.origin)
    bh, bw = amp_c.shape
    if bh != bw:
        # square real-space pixels: the largest square window about the centre
        n = min(bh, bw)
        r0, c0 = bh // 2 - n // 2, bw // 2 - n // 2
        amp_c, valid_c = amp_c[r0 : r0 + n, c0 : c0 + n], valid_c[r0 : r0 + n, c0 : c0 + n]
        b = int(binning)
        origin = [origin[0] + r0 * b, origin[1] + c0 * b]
        log.info("%s: %dx%d cropped to the square %dx%d about the centre (square real-space "
                 "pixels)", input, bh, bw, n, n)
    support = None
    if support_key is not None:
        support = _pattern_array(input, load_image(input, support_key), support_key, "support")
        if support.shape != (h, w):
            raise LensfreeError(f"{input}: support {support_key!r} shape {support.shape} "
                                f"differs from the pattern's {(h, w)}")
        support = support != 0

    run = runstore.open_run(os.fspath(out))
    params = {"key": key, "valid_key": valid_key, "support_key": support_key,
              "zero_is_missing": zeros != "measured", "zeros": zeros,
              "no_support": no_support, "mask_key": mask_key, "mask_good": mask_good,
              "saturation": saturation, "binning": int(binning), "amplitude": amplitude,
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
             "shift": list(shift), "binning": int(binning), "window_origin": origin,
             "n_valid": int(valid_c.sum()), "has_support": support is not None,
             "zeros_unmeasured": int(n_zero - (valid & (intensity == 0)).sum())}
    if geometry is not None:
        attrs.update(geometry.as_attrs())
        if geometry.known:
            attrs["binned_pixel_size_m"] = geometry.pixel_size_m * int(binning)
            attrs["real_space_pixel_m"] = geometry.real_space_pixel(amp_c.shape[0],
                                                                    int(binning))
    runstore.finish_stage(group, **attrs)
    return {"shape": (h, w), "center": (cy, cx), "shift": shift, "n_valid": attrs["n_valid"],
            "has_support": support is not None, "quantity": attrs["quantity"],
            "window": tuple(amp_c.shape), "zeros_unmeasured": attrs["zeros_unmeasured"]}


#: what ``zeros`` may be (see `ingest_pattern`)
ZEROS = ("connected", "all", "measured")


def connected_zeros(intensity: np.ndarray, middle=None, gap_pixels: int = 25,
                    gap_fill: float = 0.5) -> np.ndarray:
    """Exact zeros that are unmeasured pixels rather than zero counts.

    A region of zeros (4-connected) is unmeasured when it touches the array's edge, comes
    within ``max(2, min(h, w) // 32)`` px of ``middle`` (the beam stop; default the
    array's middle, ``(h // 2, w // 2)``), or is a detector
    gap: at least ``gap_pixels`` pixels filling at least ``gap_fill`` of its bounding box
    (a straight strip or a block; the zero counts of a faint high-q region are scattered
    and fill little of theirs). An isolated zero count is measured: masking it would keep
    only the upward noise of the weak signal there. This follows PyNX, which masks the
    zeros joined to the beam stop and the edges of the ESRF logo.
    """
    from scipy import ndimage

    zero = np.asarray(intensity) == 0
    labels, n = ndimage.label(zero)
    if n == 0:
        return zero
    h, w = zero.shape
    keep = np.zeros(n + 1, bool)
    keep[np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))] = True
    r = max(2, min(h, w) // 32)
    cy, cx = (h // 2, w // 2) if middle is None else (int(round(c)) for c in middle)
    keep[np.unique(labels[max(0, cy - r) : max(0, cy + r + 1),
                          max(0, cx - r) : max(0, cx + r + 1)])] = True
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    for i, box in enumerate(ndimage.find_objects(labels), start=1):
        area = (box[0].stop - box[0].start) * (box[1].stop - box[1].start)
        if sizes[i] >= gap_pixels and sizes[i] >= gap_fill * area:
            keep[i] = True
    keep[0] = False
    return keep[labels]


def _centroid(intensity: np.ndarray) -> tuple[float, float]:
    """Intensity-weighted mean position: near the centre of a far-field pattern."""
    total = intensity.sum()
    if not total > 0:
        return intensity.shape[0] // 2, intensity.shape[1] // 2
    yy, xx = np.indices(intensity.shape)
    return float((yy * intensity).sum() / total), float((xx * intensity).sum() / total)


def _hawk_defaults(path: str) -> dict | None:
    """``{"key", "scaled", "shifted"}`` of a Hawk (libspimage) file, None for any other."""
    if not path.lower().endswith((".h5", ".hdf5")) or not os.path.isfile(path):
        return None
    try:
        import h5py

        with h5py.File(path, "r") as f:
            data = next((k for k in ("real", "intensities") if k in f), None)
            if data is None or not all(k in f for k in ("mask", "scaled")):
                return None
            flag = {k: bool(np.asarray(f[k][()]).ravel()[0]) if k in f else False
                    for k in ("scaled", "shifted")}
    except Exception:  # load_image reports unreadable files
        return None
    return {"key": data, **flag}


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
    if array.ndim > 2:
        # (1, h, w) stacks and Hawk's (h, w, 1) volumes are one 2D pattern
        array = array.reshape([n for n in array.shape if n != 1] or [1])
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
