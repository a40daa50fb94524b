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
    k = frames.chunks[0]
    # shards hold whole chunks, so no two workers ever write the same chunk; one chunk
    # at a time, so a task holds one chunk of frames whatever the frame size
    for start in range(shard.start, shard.stop, k):
        stop = min(start + k, shard.stop)
        frames[start:stop] = simulate.simulate_frames(params, start, stop, kinds)
    return shard.stop - shard.start


def simulate_ensemble(backend: Backend, params: simulate.EnsembleParams, out: str,
                      chunk_frames: int | None = None) -> dict | None:
    """Write an ensemble frame store; the truth (planted kinds, centre) goes in its attrs.

    ``chunk_frames``: frames per chunk; None chooses it from the frame size
    (`lensfree.io.frames.chunk_frames_for`: ~32 MB a chunk, at least one frame).

    The store is built at ``out.partial`` and renamed to ``out`` when every frame is in,
    so a killed simulation never leaves a store that looks whole.
    """
    kinds = simulate.plant(params)
    if chunk_frames is None:
        chunk_frames = frame_io.chunk_frames_for(params.shape, params.dtype)
    attrs = partial = None
    if backend.is_root:
        partial = frame_io.partial_path(out)
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
            partial, params.n_frames, params.shape, params.dtype, chunk_frames=chunk_frames,
            mask=simulate.detector_mask(params), attrs=attrs)
    partial = backend.bcast(partial)  # the store exists before anyone writes into it
    shards = frame_shards(params.n_frames, min(chunk_frames, params.n_frames))
    backend.map(_simulate_shard, shards, (partial, params, kinds),
                names=[f"simulate-{s.name}" for s in shards], desc="simulate")
    if backend.is_root:
        frame_io.publish(partial, out)
    return backend.bcast(attrs)  # every rank returns once the store is published


def simulate_object(out: str, *, name: str = "letter", size: int = 128,
                    oversampling: float = 3.0, photons: float = 1e9,
                    missing_radius: float = 3.0, seed: int = 0) -> dict:
    """Write a run store holding an isolated object's noisy far-field amplitude.

    ``ensemble/amplitude`` and ``ensemble/valid`` (complete, as stage 1 leaves them) feed
    ``lensfree phase``; the truth (object, support) goes into ``truth/``.
    """
    from lensfree.engine import shapes

    rho = shapes.make_object(name, size, oversampling)
    rng = np.random.default_rng([seed, 4])
    amplitude, valid = shapes.far_field(rho, photons, rng, missing_radius)
    run = runstore.open_run(out, mode="w")
    params = {"object": name, "size": size, "oversampling": oversampling, "photons": photons,
              "missing_radius": missing_radius, "seed": seed}
    truth = runstore.begin_stage(run, "truth", params=params, inputs={})
    runstore.write_array(truth, "object", rho.astype(np.complex64))
    runstore.write_array(truth, "support", np.abs(rho) > 0)
    runstore.finish_stage(truth)
    group = runstore.begin_stage(run, "ensemble", params=params, inputs={"simulated": name})
    runstore.write_array(group, "amplitude", amplitude)
    runstore.write_array(group, "valid", valid)
    attrs = {"n_valid": int(valid.sum()), "missing_fraction": float(1 - valid.mean())}
    runstore.finish_stage(group, **attrs)
    return attrs
