"""Simulated data written to frame stores, chunk by chunk, by whichever worker is free."""

from __future__ import annotations

from dataclasses import asdict

import numpy as np
import zarr

from lensfree.engine import simulate
from lensfree.io import frames as frame_io
from lensfree.io import runstore
from lensfree.launch.backends import Backend
from lensfree.partitioning import Shard, frame_shards


def _simulate_shard(shard: Shard, shared) -> int:
    path, params, kinds = shared
    frames = zarr.open_array(f"{path}/frames", mode="r+")
    # shards hold whole chunks, so no two workers ever write the same chunk
    frames[shard.start : shard.stop] = simulate.simulate_frames(
        params, shard.start, shard.stop, kinds)
    return shard.stop - shard.start


def simulate_ensemble(backend: Backend, params: simulate.EnsembleParams, out: str,
                      chunk_frames: int = frame_io.DEFAULT_CHUNK_FRAMES) -> dict | None:
    """Write an ensemble frame store; the truth (planted kinds, centre) goes in its attrs."""
    kinds = simulate.plant(params)
    attrs = None
    if backend.is_root:
        center = simulate.center(params)
        attrs = {
            "wavelength_m": params.wavelength_m,
            "distance_m": params.distance_m,
            "pixel_size_m": params.pixel_size_m,
            "simulation": runstore.jsonable(asdict(params)),
            "truth": {
                "center": list(center),
                "weak": np.flatnonzero(kinds == simulate.WEAK).tolist(),
                "streak": np.flatnonzero(kinds == simulate.STREAK).tolist(),
                "invalid": np.flatnonzero(kinds == simulate.INVALID).tolist(),
            },
        }
        frame_io.create_frame_store(
            out, params.n_frames, params.shape, params.dtype, chunk_frames=chunk_frames,
            mask=simulate.detector_mask(params), attrs=attrs)
    backend.bcast(None)  # the store exists before anyone writes into it
    shards = frame_shards(params.n_frames, min(chunk_frames, params.n_frames))
    backend.map(_simulate_shard, shards, (out, params, kinds),
                names=[f"simulate-{s.name}" for s in shards], desc="simulate")
    return attrs
