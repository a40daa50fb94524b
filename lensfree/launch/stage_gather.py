"""Stage 3 across workers: average the best members of a phased population and score it.

The root picks the best ``fraction`` of the last generation by final error
(``phasing/errors[-1]``); the best one is the reference. The selected members, in order
of error, are cut into blocks of ``members_per_task``: a block is one task, whose worker
reads its members from the store one at a time, aligns each to the reference and returns
partial sums (of the aligned objects and of their transforms). The root folds the
partial sums in block order, so every back end and worker count gives the same numbers,
and no process ever holds more than one member besides its sums.

Store layout (``gather/``): ``average`` (h, w) complex64, ``prtf`` and ``q`` (shells; q in
cycles per pixel), ``selected`` (n,) member indices in order of error, ``shifts`` (n, 2),
``twin`` (n,), ``correlation`` (n,) from the alignment; attrs ``resolution_px``,
``resolution_m`` (when the geometry is known), ``r_factor``, ``ssim`` (with a model) and
the rest listed in README.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass

import numpy as np
import zarr

from lensfree.engine import scoring
from lensfree.errors import LensfreeError
from lensfree.io import runstore
from lensfree.launch.backends import Backend

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GatherParams:
    """Stage 3 parameters.

    fraction : share of the members averaged, the best by final error (the paper: 0.2).
    upsample : alignment precision, ``1 / upsample`` pixel.
    members_per_task : members one task aligns; fixes the summation order, not the workers.
    ssim_margin : pixels kept around the model's extent for SSIM (None: the whole field).
    """

    fraction: float = 0.2
    upsample: int = 20
    members_per_task: int = 8
    ssim_margin: int | None = 4

    def __post_init__(self):
        if not 0 < self.fraction <= 1:
            raise ValueError(f"--fraction {self.fraction}: must be in (0, 1]")
        if self.upsample < 1:
            raise ValueError(f"--upsample {self.upsample}: must be at least 1")
        if self.members_per_task < 1:
            raise ValueError(f"--members-per-task {self.members_per_task}: must be at least 1")


def select_members(final_errors: np.ndarray, fraction: float) -> np.ndarray:
    """Indices of the best ``ceil(fraction * M)`` members (at least one), best first.

    Members without a finite error are never selected.
    """
    final_errors = np.asarray(final_errors, np.float64)
    finite = np.flatnonzero(np.isfinite(final_errors))
    # round first: 0.2 * 100 is 20.000000000000004, which must stay 20
    n = max(1, math.ceil(round(fraction * final_errors.size, 9)))
    order = finite[np.argsort(final_errors[finite], kind="stable")]
    return order[:n]


def blocks(selected: np.ndarray, size: int) -> list[tuple[int, ...]]:
    """``selected`` cut into consecutive blocks of ``size`` members: one task each."""
    return [tuple(int(m) for m in selected[i : i + size])
            for i in range(0, len(selected), size)]


def gather_block(task: tuple[int, ...], shared) -> scoring.AlignedSums:
    """Align members ``task`` to the reference; return their partial sums."""
    run_path, reference, upsample = shared
    objects = zarr.open_group(run_path, mode="r")["phasing/objects"]
    members = (np.asarray(objects[m]) for m in task)  # one member in memory at a time
    return scoring.align_members(members, reference, upsample)


def read_gather_input(run_path: str, model: np.ndarray | None, model_source: str | None):
    """(amplitude, valid, ensemble attrs, model, model source) after every check.

    The model is ``model`` when given, else the store's ``truth/object`` when present.
    """
    group = runstore.require_complete(run_path, "ensemble")
    phasing = runstore.require_complete(run_path, "phasing")
    for name in ("objects", "errors"):
        if name not in phasing:
            raise LensfreeError(f"{run_path}: phasing/ has no '{name}' array")
    for name in ("amplitude", "valid"):
        if name not in group:
            raise LensfreeError(f"{run_path}: ensemble/ has no '{name}' array")
    amplitude = np.asarray(group["amplitude"][...], np.float32)
    valid = np.asarray(group["valid"][...], bool)
    shape = tuple(phasing["objects"].shape[1:])
    if amplitude.shape != shape or valid.shape != shape:
        raise LensfreeError(f"{run_path}: phasing/objects are {shape}, ensemble/amplitude "
                            f"{amplitude.shape}")
    if model is None:
        run = zarr.open_group(run_path, mode="r")
        if "truth" in run and "object" in run["truth"]:
            model = np.asarray(run["truth/object"][...])
            model_source = f"{run_path}/truth/object"
    if model is not None:
        model = np.asarray(model)
        source = model_source or "model"
        if model.shape != shape:
            raise LensfreeError(f"{source}: model has shape {model.shape}, the reconstruction "
                                f"is {shape}")
        if not np.isfinite(model).all():
            raise LensfreeError(f"{source}: model holds NaN or inf values")
        if not np.abs(model).max() > 0:
            raise LensfreeError(f"{source}: model is zero everywhere")
    return amplitude, valid, dict(group.attrs), model, model_source


def run_gather(backend: Backend, run_path: str, params: GatherParams,
               model: np.ndarray | None = None, model_source: str | None = None) -> dict:
    """Run stage 3 on ``backend``; return the ``gather`` attrs, on every process once written."""
    amplitude, valid, ens_attrs, model, model_source = read_gather_input(
        run_path, model, model_source)
    plan = None
    if backend.is_root:
        phasing = zarr.open_group(run_path, mode="r")["phasing"]
        final = np.asarray(phasing["errors"][-1, :], np.float64)
        if not np.isfinite(final).any():
            raise LensfreeError(f"{run_path}: phasing/errors holds no finite final error")
        selected = select_members(final, params.fraction)
        reference = np.asarray(phasing["objects"][int(selected[0])])
        plan = (selected, final[selected], final.size, reference, dict(phasing.attrs))
    selected, errors, n_members, reference, ph_attrs = backend.bcast(plan)
    tasks = blocks(selected, params.members_per_task)
    parts = backend.map(gather_block, tasks, (run_path, reference, params.upsample),
                        names=[f"gather-block-{i:03d}" for i in range(len(tasks))],
                        desc="align")
    if not backend.is_root:
        return backend.bcast(None)
    total = scoring.combine(parts)
    average = total.average
    q, curve = scoring.prtf(total.mean_spectrum, amplitude, valid)
    res = scoring.resolution(q, curve)
    attrs = {
        "n_members": n_members,
        "n_selected": int(total.n),
        "reference_member": int(selected[0]),
        "selected_errors": [float(e) for e in errors],
        "r_factor": scoring.r_factor(average, amplitude, valid),
        "prtf_threshold": scoring.INV_E,
        "q_cut": res.q_cut,
        "q_unit": "cycles per pixel",
        "resolution_px": res.half_period_px,
        "resolution_reached": res.reached,
        "prtf_floor": scoring.prtf_floor(total.n),
    }
    if attrs["prtf_floor"] >= scoring.INV_E:
        log.warning("%s: %d member(s) average to a PRTF of about %.2f by chance alone, above "
                    "1/e: the resolution is not meaningful; average more members "
                    "(a larger --fraction or population)", run_path, total.n,
                    attrs["prtf_floor"])
    pixel = ens_attrs.get("real_space_pixel_m")
    if pixel:
        attrs["real_space_pixel_m"] = float(pixel)
        attrs["resolution_m"] = res.half_period_px * float(pixel)
    if model is not None:
        attrs["ssim"] = scoring.ssim_to_model(average, model, upsample=params.upsample,
                                              margin=params.ssim_margin)
        attrs["model"] = model_source
    run = runstore.open_run(run_path)
    inputs = {"run": run_path, "phasing_finished": ph_attrs.get("finished"),
              "model": model_source}
    group = runstore.begin_stage(run, "gather", params=runstore.jsonable(asdict(params)),
                                 inputs=inputs)
    w = runstore.write_array
    w(group, "average", average.astype(np.complex64))
    w(group, "prtf", curve)
    w(group, "q", q)
    w(group, "selected", np.asarray(selected, np.int64))
    w(group, "shifts", np.asarray(total.shifts, np.float64).reshape(-1, 2))
    w(group, "twin", np.asarray(total.twins, bool))
    w(group, "correlation", np.asarray(total.correlations, np.float64))
    runstore.finish_stage(group, **attrs)
    return backend.bcast(dict(group.attrs))  # no rank returns before gather/ is complete
