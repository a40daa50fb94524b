"""Stage 3 across workers: average the best members of a phased population and score it.

The root picks the best ``fraction`` of the last generation by final error
(``phasing/errors[-1]``); the best one is the reference. The selected members, in order
of error, are cut into blocks of ``members_per_task``: a block is one task, whose worker
reads its members from the store one at a time, aligns each to the reference and returns
partial sums (of the aligned objects and of their transforms). The partial sums fold in
the back end's fixed tree (`Backend.reduce`, on the workers), so every back end and
worker count gives the same numbers, and no process ever holds more than one member
besides a few partial sums.

Store layout (``gather/``): ``average`` (h, w) complex64 ((d, h, w) for a 3D pattern),
``prtf`` and ``q`` (shells, spherical in 3D; q in cycles per pixel), ``selected`` (n,)
member indices in order of error, ``shifts`` (n, 2) ((n, 3) in 3D), ``twin`` (n,),
``correlation`` (n,) from the alignment; attrs ``resolution_px``, ``resolution_m`` (when
the geometry is known), ``r_factor``, ``ssim`` (with a model) and the rest listed in README.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import zarr

from lensfree.engine import scoring
from lensfree.engine.params import at_least, check_fields, optional, param, within
from lensfree.errors import LensfreeError
from lensfree.io import runstore
from lensfree.launch.backends import Backend
from lensfree.launch.stage import Context, Execution, Stage, run_stage

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GatherParams:
    """Stage 3 parameters.

    fraction : share of the members averaged, the best by final error (the paper: 0.2).
    upsample : alignment precision, ``1 / upsample`` pixel.
    members_per_task : members one task aligns; fixes the summation order, not the workers.
    ssim_margin : pixels kept around the model's extent for SSIM (None: the whole field).
    """

    fraction: float = param(0.2, "share of members averaged, the best by final error",
                            check=within(0, 1, closed="hi"))
    upsample: int = param(20, "alignment precision, 1/N pixel", check=at_least(1))
    members_per_task: int = param(8, "members one task aligns and sums", check=at_least(1))
    ssim_margin: int | None = param(4, "pixels kept around the model's extent for SSIM",
                                    check=optional(at_least(0)))

    def __post_init__(self):
        check_fields(self)


@dataclass(frozen=True)
class GatherOptions:
    """``lensfree gather RUN.zarr [options]``."""

    run: str = param(None, "run store with a finished phasing/ group (RUN.zarr)",
                     positional=True)
    model: str | None = param(None, "model image for SSIM (.npy/.npz/.tif/.h5/.zarr)",
                              default_help="the store's truth/object when present")
    model_key: str | None = param(None, "array name inside the model file", default_help="auto")
    params: GatherParams = param(default_factory=GatherParams)
    execution: Execution = param(default_factory=Execution, group="execution")


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


def combine_sums(a: scoring.AlignedSums, b: scoring.AlignedSums) -> scoring.AlignedSums:
    """Two blocks' partial sums as one, ``a``'s members first (the fold of `reduce`)."""
    return scoring.combine([a, b])


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


@dataclass(frozen=True)
class GatherInput:
    amplitude: np.ndarray
    valid: np.ndarray
    ensemble_attrs: dict
    model: np.ndarray | None
    model_source: str | None
    selected: np.ndarray       # member indices, best first
    errors: np.ndarray         # their final errors
    n_members: int
    reference: np.ndarray      # the best member, which every other is aligned to
    phasing_finished: str | None


class GatherStage(Stage):
    name = "gather"
    help = "stage 3: average the best members, PRTF, R-factor, SSIM"
    group = "gather"
    reads = ("ensemble", "phasing")
    Options = GatherOptions

    def open(self, opts, model=None) -> GatherInput:
        source = opts.model
        if model is None and opts.model:
            from lensfree.io.images import load_image

            model = load_image(opts.model, opts.model_key)
        amplitude, valid, ens_attrs, model, source = read_gather_input(opts.run, model, source)
        phasing = zarr.open_group(opts.run, mode="r")["phasing"]
        final = np.asarray(phasing["errors"][-1, :], np.float64)
        if not np.isfinite(final).any():
            raise LensfreeError(f"{opts.run}: phasing/errors holds no finite final error")
        selected = select_members(final, opts.params.fraction)
        reference = np.asarray(phasing["objects"][int(selected[0])])
        return GatherInput(amplitude, valid, ens_attrs, model, source, selected,
                           final[selected], final.size, reference,
                           phasing.attrs.get("finished"))

    def inputs(self, opts, inp: GatherInput) -> dict:
        return {"run": opts.run, "phasing_finished": inp.phasing_finished,
                "model": inp.model_source}

    def tasks(self, opts, inp: GatherInput) -> list:
        return blocks(inp.selected, opts.params.members_per_task)

    def names(self, tasks) -> list[str]:
        return [f"gather-block-{i:03d}" for i in range(len(tasks))]

    def shared(self, opts, inp: GatherInput):
        return (opts.run, inp.reference, opts.params.upsample)

    work = staticmethod(gather_block)

    def execute(self, ctx: Context, opts, inp: GatherInput) -> dict | None:
        # the blocks' sums fold in the fixed tree on the workers: the root never holds
        # every block's sums, and every back end gets the same numbers
        tasks = self.tasks(opts, inp)
        total = ctx.reduce(gather_block, tasks, self.shared(opts, inp), combine=combine_sums,
                           names=self.names(tasks), desc=self.name)
        if not ctx.is_root:
            return None
        return self.write(ctx, opts, inp, total)

    def write(self, ctx: Context, opts, inp: GatherInput, total) -> dict:
        params = opts.params
        average = total.average
        q, curve = scoring.prtf(total.mean_phasor, inp.amplitude, inp.valid)
        res = scoring.resolution(q, curve)
        attrs = {
            "n_members": inp.n_members,
            "n_selected": int(total.n),
            "reference_member": int(inp.selected[0]),
            "selected_errors": [float(e) for e in inp.errors],
            "r_factor": scoring.r_factor(average, inp.amplitude, inp.valid),
            "prtf_threshold": scoring.INV_E,
            "q_cut": res.q_cut,
            "q_unit": "cycles per pixel",
            "resolution_px": res.half_period_px,
            "resolution_reached": res.reached,
            "prtf_edge": res.edge,
            "prtf_floor": scoring.prtf_floor(total.n),
        }
        if attrs["prtf_floor"] >= scoring.INV_E:
            log.warning("%s: %d member(s) average to a PRTF of about %.2f by chance alone, "
                        "above 1/e: the resolution is not meaningful; average more members "
                        "(a larger --fraction or population)", opts.run, total.n,
                        attrs["prtf_floor"])
        pixel = inp.ensemble_attrs.get("real_space_pixel_m")
        if pixel:
            attrs["real_space_pixel_m"] = float(pixel)
            attrs["resolution_m"] = res.half_period_px * float(pixel)
        if inp.model is not None:
            attrs["ssim"] = scoring.ssim_to_model(average, inp.model, upsample=params.upsample,
                                                  margin=params.ssim_margin)
            attrs["model"] = inp.model_source
        arrays = {"average": average.astype(np.complex64), "prtf": curve, "q": q,
                  "selected": np.asarray(inp.selected, np.int64),
                  "shifts": np.asarray(total.shifts, np.float64).reshape(
                      -1, inp.amplitude.ndim),
                  "twin": np.asarray(total.twins, bool),
                  "correlation": np.asarray(total.correlations, np.float64)}
        for name, data in arrays.items():
            runstore.write_array(ctx.group, name, data)
        return attrs

    def summary(self, a: dict, opts, seconds: float) -> list[str]:
        res = scoring.describe_resolution(a["resolution_px"], a["resolution_reached"],
                                          a.get("real_space_pixel_m"), a.get("prtf_edge"))
        return [f"{opts.run}: gather/ written in {seconds:.1f} s; best {a['n_selected']} of "
                f"{a['n_members']} members averaged",
                f"  resolution {res}; R-factor {a['r_factor']:.4f}"
                + (f"; SSIM {a['ssim']:.4f}" if a.get("ssim") is not None else "")]


STAGE = GatherStage()


def run_gather(backend: Backend, run_path: str, params: GatherParams,
               model: np.ndarray | None = None, model_source: str | None = None) -> dict:
    """Run stage 3 on ``backend``; return the ``gather`` attrs, on every process once written."""
    opts = GatherOptions(run=run_path, model=model_source, params=params)
    return run_stage(STAGE, backend, opts, inp=STAGE.open(opts, model))
