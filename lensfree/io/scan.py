"""Ptychography frame stores: write, simulate, convert, read and check a scan; score a run.

A scan is a frame store (:mod:`lensfree.io.frames`) with ``positions`` (N, 2), in metres
(y, x), or in object pixels with attr ``positions_unit: "px"``, and an optional ``probe``
(modes, h, w). A simulated scan also holds its truth in ``truth/`` (``object``, ``probe``,
``positions`` in px, attr ``object_origin``), against which :func:`score_run` scores a run.
Metres and object pixels meet in one place, :meth:`ScanInput.to_px` and
:meth:`ScanInput.to_unit`.

Propagation (attr ``propagation``, ``far-field`` when absent): a ``near-field`` store's
``wavelength_m``, ``distance_m`` (effective, after Fresnel scaling) and ``pixel_size_m``
(the sample plane's) set the angular-spectrum propagator, and its object pixel is that
pixel; :func:`set_propagation` writes them, from the detector's geometry and a focus
distance when the beam diverges (Fresnel scaling).
"""

from __future__ import annotations

import bz2
import os
from dataclasses import asdict, dataclass, replace

import numpy as np
import zarr

from lensfree.engine import ptycho as pt
from lensfree.engine import simulate_ptycho as sim
from lensfree.errors import LensfreeError
from lensfree.io import frames as frame_io
from lensfree.io import runstore

__all__ = ["MAX_OBJECT_SIDE", "ScanInput", "load_npz_scan", "read_scan", "score_run",
           "set_propagation", "simulate_ptycho", "write_ptycho_frames"]

#: largest object side (px) accepted: beyond it the positions are surely in another unit
MAX_OBJECT_SIDE = 16384


def write_ptycho_frames(path: str, frames: np.ndarray, positions: np.ndarray,
                        probe: np.ndarray | None = None, *, fft_shifted: bool = False,
                        mask: np.ndarray | None = None, attrs: dict | None = None,
                        chunk_frames: int = frame_io.DEFAULT_CHUNK_FRAMES) -> zarr.Group:
    """Write a ptychography frame store: ``frames`` centred, ``positions`` (px), ``probe``.

    ``fft_shifted``: the frames have zero frequency at pixel (0, 0) (as Tike's test data);
    they are moved to (h // 2, w // 2) before writing, since stores hold them centred.
    """
    frames = np.asarray(frames)
    if fft_shifted:
        frames = np.fft.fftshift(frames, axes=(-2, -1))
    n, h, w = frames.shape
    out = frame_io.create_frame_store(path, n, (h, w), frames.dtype, chunk_frames=chunk_frames,
                                      mask=mask, attrs={"positions_unit": "px",
                                                        **(attrs or {})})
    out[...] = frames
    group = zarr.open_group(path, mode="r+")
    runstore.create_array(group, "positions", data=np.asarray(positions, np.float64))
    if probe is not None:
        runstore.create_array(group, "probe",
                              data=np.asarray(probe, np.complex64).reshape(-1, h, w))
    return group


def simulate_ptycho(out: str, params: sim.PtychoSimParams) -> dict:
    """Simulate a scan into frame store ``out``; the truth goes to ``truth/`` (object,
    probe, positions, with object pixel (0, 0) at position (0, 0))."""
    scan = sim.simulate_scan(params)
    attrs = {"simulation": runstore.jsonable(asdict(params))}
    if params.propagation == "near-field":
        attrs.update(propagation="near-field", wavelength_m=params.wavelength_m,
                     distance_m=params.distance_m, pixel_size_m=params.pixel_size_m)
    group = write_ptycho_frames(out, scan.frames, scan.positions, scan.probe_guess,
                                attrs=attrs)
    truth = group.create_group("truth")
    runstore.create_array(truth, "object", data=scan.object)
    runstore.create_array(truth, "probe", data=scan.probe)
    runstore.create_array(truth, "positions", data=scan.true_positions)
    truth.attrs["object_origin"] = [0.0, 0.0]
    return {"n_positions": params.n_positions, "object_shape": list(scan.object.shape),
            "position_error": pt.position_error(scan.positions, scan.true_positions)}


def load_npz_scan(source: str, out: str, *, fft_shifted: bool = True) -> dict:
    """Convert a Tike-style ``.npz`` (or ``.npz.bz2``) scan to a frame store.

    Arrays: ``data`` (..., N, h, w) counts, ``scan`` (..., N, 2) positions in object
    pixels (y, x), optional ``probe`` (..., h, w). Leading singleton axes are dropped.
    """
    opener = bz2.open if str(source).endswith(".bz2") else open
    try:
        with opener(source, "rb") as fh:
            z = dict(np.load(fh))
    except (OSError, ValueError, EOFError) as exc:
        raise LensfreeError(f"{source}: not a readable .npz scan ({exc})") from None
    for key in ("data", "scan"):
        if key not in z:
            raise LensfreeError(f"{source}: no '{key}' array (have {', '.join(z)})")
    h, w = z["data"].shape[-2:]
    frames = z["data"].reshape(-1, h, w)
    positions = z["scan"].reshape(-1, 2)
    probe = z["probe"].reshape(-1, *z["probe"].shape[-2:]) if "probe" in z else None
    write_ptycho_frames(out, frames, positions, probe, fft_shifted=fft_shifted,
                        attrs={"source": os.path.basename(str(source))})
    return {"n_frames": len(frames), "frame_shape": [h, w], "has_probe": probe is not None}


@dataclass(frozen=True)
class ScanInput:
    """A checked ptychography frame store.

    ``positions`` are as stored, in ``unit``; :meth:`to_px` and :meth:`to_unit` convert
    between that unit and object pixels (the engine's), with ``pixel_m`` metres per object
    pixel when the unit is ``"m"``.
    """

    store: frame_io.FrameStore
    positions: np.ndarray         # (N, 2) in the store's unit
    unit: str                     # the store's unit: "px" or "m"
    pixel_m: float | None         # metres per object pixel when unit is "m"
    probe: np.ndarray | None      # (modes, h, w) or None
    propagator: pt.Propagator = pt.Propagator()

    @property
    def positions_px(self) -> np.ndarray:
        """(N, 2) the positions in object pixels."""
        return self.to_px(self.positions)

    def to_px(self, positions) -> np.ndarray:
        """Positions in the store's unit -> object pixels."""
        positions = np.asarray(positions, np.float64)
        return positions / self.pixel_m if self.unit == "m" else positions

    def to_unit(self, positions_px) -> np.ndarray:
        """Positions in object pixels -> the store's unit (what the run store holds)."""
        positions_px = np.asarray(positions_px, np.float64)
        return positions_px * self.pixel_m if self.unit == "m" else positions_px


def read_scan(path: str, *, propagation: str | None = None, wavelength: float | None = None,
              distance: float | None = None, pixel_size: float | None = None) -> ScanInput:
    """Open a frame store for ptychography and check positions, probe and propagation
    (one-line errors). ``propagation`` and the geometry (metres; the pixel is the sample
    plane's for the near field) override the store's attrs."""
    store = frame_io.open_frames(path, allow_pixels=True)
    prop = _propagator(path, store, propagation, wavelength, distance, pixel_size)
    group = zarr.open_group(path, mode="r")
    if "positions" not in group:
        raise LensfreeError(f"{path}: no 'positions' array (N, 2); ptychography needs the "
                            "scan positions")
    positions = np.asarray(group["positions"][...], np.float64)
    n = store.n_frames
    if positions.ndim != 2 or positions.shape[1] != 2:
        raise LensfreeError(f"{path}: positions has shape {positions.shape}, expected ({n}, 2)")
    if len(positions) != n:
        raise LensfreeError(f"{path}: {len(positions)} positions for {n} frames; they must "
                            "match one to one")
    bad = np.flatnonzero(~np.isfinite(positions).all(axis=1))
    if len(bad):
        raise LensfreeError(f"{path}: positions of {len(bad)} frames are NaN or inf (first: "
                            f"frame {bad[0]})")
    lost = frame_io.chunk_reader(path).absent(0, n)
    if lost:
        more = f" and {len(lost) - 1} more ranges" if len(lost) > 1 else ""
        raise LensfreeError(f"{path}: frames {lost[0][0]}-{lost[0][1] - 1}{more} are missing "
                            "from the store (their chunks are absent); ptychography needs "
                            "every frame: restore them or write a store without them")
    unit = store.attrs.get("positions_unit", "m")
    pixel_m = None
    if unit == "m" and prop.kind == "near-field":
        pixel_m = prop.pixel_size_m
    elif unit == "m":
        pixel_m = store.geometry.real_space_pixel(store.frame_shape[0])
        if pixel_m is None:
            raise LensfreeError(f"{path}: positions are in metres but the store has no "
                                "geometry to convert them to pixels; set positions_unit: px "
                                "or the geometry attrs")
    elif unit != "px":
        raise LensfreeError(f"{path}: positions_unit {unit!r}: expected 'px' or 'm'")
    scan = ScanInput(store, positions, unit, pixel_m, probe=None, propagator=prop)
    span = np.ptp(scan.positions_px, axis=0) + np.asarray(store.frame_shape)
    if span.max() > MAX_OBJECT_SIDE:
        raise LensfreeError(
            f"{path}: the positions span {span[0]:.3g} x {span[1]:.3g} object pixels, beyond "
            f"any sensible object frame (max {MAX_OBJECT_SIDE}); check positions_unit")
    return replace(scan, probe=_read_probe(path, group, store.frame_shape))


def _propagator(path, store, propagation, wavelength, distance, pixel_size) -> pt.Propagator:
    """The store's propagation, or the one asked for; a far-field run of a near-field
    store, or a geometry the propagator cannot sample, is refused."""
    stored = store.attrs.get("propagation", "far-field")
    if stored not in pt.PROPAGATIONS:
        raise LensfreeError(f"{path}: propagation {stored!r}: expected one of "
                            f"{', '.join(pt.PROPAGATIONS)}")
    kind = propagation or stored
    if kind == "far-field" and stored == "near-field":
        raise LensfreeError(f"{path}: a near-field scan (attr propagation); the far-field "
                            "engine would fit a meaningless object: drop --propagation "
                            "far-field")
    if kind == "far-field":
        return pt.Propagator()
    g = store.geometry
    try:
        prop = pt.Propagator("near-field", wavelength or g.wavelength_m,
                             distance or g.distance_m, pixel_size or g.pixel_size_m)
        prop.check(store.frame_shape)
    except ValueError as exc:
        raise LensfreeError(f"{path}: {exc}") from None
    return prop


def set_propagation(path: str, propagation: str, focus_distance: float | None = None) -> dict:
    """Record the propagation of the frame store ``path`` in its attrs.

    ``near-field`` with ``focus_distance`` (metres, focus to sample): the detector
    geometry the store holds becomes the Fresnel-scaled one
    (:func:`lensfree.engine.ptycho.fresnel_scaling`), the detector's kept under
    ``fresnel_scaling``. Returns the attrs written. One-line errors for what cannot be.
    """
    if propagation not in pt.PROPAGATIONS:
        raise LensfreeError(f"propagation {propagation!r}: expected one of "
                            f"{', '.join(pt.PROPAGATIONS)}")
    group = zarr.open_group(path, mode="r+")
    attrs = dict(group.attrs)
    new = {"propagation": propagation}
    if focus_distance is not None:
        if propagation != "near-field":
            raise LensfreeError("--focus-distance: only for a near-field scan")
        keys = ("wavelength_m", "distance_m", "pixel_size_m")
        missing = [k for k in keys if not isinstance(attrs.get(k), (int, float))]
        if missing:
            raise LensfreeError(f"{path}: Fresnel scaling needs the detector geometry; "
                                f"missing {', '.join(missing)} (give --wavelength, "
                                "--distance, --pixel-size)")
        try:
            g = pt.fresnel_scaling(focus_distance, attrs["distance_m"], attrs["pixel_size_m"])
        except ValueError as exc:
            raise LensfreeError(str(exc)) from None
        new.update(distance_m=g["distance_m"], pixel_size_m=g["pixel_size_m"],
                   fresnel_scaling={"focus_distance_m": float(focus_distance),
                                    "detector_distance_m": attrs["distance_m"],
                                    "detector_pixel_size_m": attrs["pixel_size_m"],
                                    "magnification": g["magnification"]})
    if propagation == "near-field":  # checked before anything is written
        merged = {**attrs, **new}
        try:
            pt.Propagator("near-field", *(merged.get(k) for k in (
                "wavelength_m", "distance_m", "pixel_size_m"))).check(group["frames"].shape[1:])
        except (ValueError, TypeError) as exc:
            raise LensfreeError(f"{path}: {exc}") from None
    group.attrs.update(new)
    return new


def _read_probe(path: str, group: zarr.Group, frame_shape) -> np.ndarray | None:
    """The store's ``probe`` as (modes, h, w), checked against the frames; None if absent."""
    if "probe" not in group:
        return None
    probe = np.asarray(group["probe"][...])
    if probe.ndim < 2 or probe.shape[-2:] != frame_shape:
        raise LensfreeError(f"{path}: probe has shape {probe.shape}, expected (modes, "
                            f"{frame_shape[0]}, {frame_shape[1]}) like the frames")
    probe = probe.reshape(-1, *frame_shape)
    if not np.isfinite(probe).all() or not np.abs(probe).any():
        raise LensfreeError(f"{path}: probe is all zero or holds NaN/inf")
    return probe


def score_run(frames_path: str, run_path: str) -> pt.Score:
    """Score the finished ``ptycho/`` of ``run_path`` against the ``truth/`` of the
    (simulated) scan ``frames_path`` it reconstructed: :func:`lensfree.engine.ptycho.score`.
    """
    scan = read_scan(frames_path)
    source = zarr.open_group(frames_path, mode="r")
    if "truth" not in source:
        raise LensfreeError(f"{frames_path}: no 'truth' group to score against (only "
                            "simulated scans have one)")
    truth = source["truth"]
    group = runstore.require_complete(run_path, "ptycho")
    return pt.score(np.asarray(group["object"][...]), np.asarray(group["probe"][...]),
                    scan.to_px(group["positions"][...]),
                    scan.to_px(group["positions_initial"][...]),
                    np.asarray(group.attrs["object_origin"]),
                    np.asarray(truth["object"][...]), np.asarray(truth["positions"][...]),
                    true_origin=truth.attrs.get("object_origin", (0.0, 0.0)))


def scan_power(path: str, mask: np.ndarray) -> float:
    """``sum_valid A^2`` over all of a scan's frames (the Fourier error's denominator),
    chunk by chunk."""
    frames = zarr.open_array(os.path.join(path, "frames"), mode="r")
    total = 0.0
    step = frames.chunks[0]
    for s in range(0, frames.shape[0], step):
        block = np.asarray(frames[s:s + step], np.float64)
        good = np.isfinite(block) & (block >= 0) & mask[None]
        total += float(np.sum(np.where(good, block, 0)))
    return max(total, 1e-30)
