"""Model fit across workers: a core-shell sphere against the measured ensemble amplitude.

Every (inner, outer) diameter pair of the grid is one task: the projected form factor of
a core-shell sphere, scaled by least squares (plus a constant amplitude offset, unless
``offset=False``) to ``ensemble/amplitude`` on the valid pixels outside the central
speckle, scored by ``erf%`` (Chen et al. 2024, Fig. 3). The amplitude and the frequency
grid travel once per worker as the shared value.

Store layout (``fit/``): ``erf`` (n_inner, n_outer) float64 percent (NaN where
inner >= outer), ``scale`` (n_inner, n_outer), ``inner`` and ``outer`` the grid axes,
``offset`` (n_inner, n_outer) the fitted amplitude offsets (0 with ``offset=False``),
``model`` (h, w) float32 the best fitted model amplitude, ``region`` (h, w) bool the
pixels compared; attrs ``best_inner``, ``best_outer``, ``best_erf``, ``best_scale``,
``unit`` ("nm" or "px"), the densities and the speckle diameter.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from lensfree.engine import ensemble, geometry, scoring
from lensfree.engine.params import check_fields, non_negative, optional, param
from lensfree.errors import LensfreeError
from lensfree.io import runstore
from lensfree.launch.backends import Backend
from lensfree.launch.stage import Context, Execution, Stage, run_stage

log = logging.getLogger(__name__)

UNITS = {"nm": 1e-9, "px": 1.0}


def parse_grid(text: str) -> tuple[float, ...]:
    """``"16:21:0.5"`` (start:stop:step, stop included), ``"19"`` or ``"18,19,20"``.

    Raises LensfreeError saying why the text gives no grid (the caller names the option).
    """
    text = str(text).strip()
    try:
        if ":" in text:
            parts = [float(p) for p in text.split(":")]
            if len(parts) != 3:
                raise ValueError
            start, stop, step = parts
            if not step > 0 or stop < start:
                raise LensfreeError("no grid points (need start <= stop and a positive step)")
            n = int(np.floor((stop - start) / step + 1e-9)) + 1
            values = start + step * np.arange(n)
        else:
            values = np.array([float(p) for p in text.split(",") if p.strip()])
    except ValueError:
        raise LensfreeError("expected START:STOP:STEP, a value or a comma-separated "
                            "list") from None
    if values.size == 0:
        raise LensfreeError("no grid points")
    if not (np.isfinite(values).all() and (values > 0).all()):
        raise LensfreeError("diameters must be positive")
    return tuple(float(round(v, 12)) for v in values)


@dataclass(frozen=True)
class FitParams:
    """Core-shell fit parameters.

    inner, outer : grids of core and particle diameters, in ``unit``.
    unit : "nm" (needs the geometry in ``ensemble/``) or "px" (real-space pixels).
    core_density, shell_density : projected densities of core and shell (their ratio
        shapes the pattern; the scale is fitted).
    speckle_diameter : central disk left out, binned px; None takes ``ensemble/``'s
        ``speckle_diameter`` attr (0 when absent).
    offset : fit a constant amplitude offset with the scale (see
        `scoring.fit_core_shell`); False is the paper's scale-only model.
    """

    inner: tuple[float, ...] = param(parse_grid("16:21:0.5"), "core diameters "
                                     "START:STOP:STEP (stop included), V or V1,V2",
                                     parse=parse_grid, default_help="16:21:0.5")
    outer: tuple[float, ...] = param(parse_grid("53:58:0.5"), "particle diameters",
                                     parse=parse_grid, default_help="53:58:0.5")
    unit: str = param("nm", "diameters in real-space pixels instead of nm", flag="pixels",
                      action="store_const", const="px")
    core_density: float = param(3.0, "projected density of the core")
    shell_density: float = param(1.0, "projected density of the shell")
    speckle_diameter: float | None = param(None, "central disk left out, binned px",
                                           check=optional(non_negative),
                                           default_help="ensemble/'s speckle_diameter")
    offset: bool = param(True, "scale the form factor only (the paper's model), no constant "
                         "amplitude offset for a residual background floor", flag="no-offset",
                         action="store_false")

    def __post_init__(self):
        check_fields(self)
        if self.unit not in UNITS:
            raise ValueError(f"unit={self.unit!r}: use one of {', '.join(UNITS)}")
        if not self.inner or not self.outer:
            raise ValueError("the diameter grid has no points")
        if not min(self.inner) < max(self.outer):
            raise ValueError(f"no grid point has inner < outer (inner from {min(self.inner)}, "
                             f"outer up to {max(self.outer)})")


@dataclass(frozen=True)
class FitOptions:
    """``lensfree fit core-shell RUN.zarr [options]``."""

    run: str = param(None, "run store with a finished ensemble/ group (RUN.zarr)",
                     positional=True)
    params: FitParams = param(default_factory=FitParams)
    execution: Execution = param(default_factory=Execution, group="execution")


def fit_point(task: tuple[int, int], shared) -> tuple[float, float, float]:
    """``(erf%, scale, offset)`` of grid point ``(i, j)``."""
    i, j = task
    q, measured, region, params = shared
    s = UNITS[params.unit]
    return scoring.fit_core_shell(q, measured, region, params.inner[i] * s,
                                  params.outer[j] * s, params.core_density,
                                  params.shell_density, params.offset)


def read_fit_input(run_path: str, params: FitParams):
    """(q, amplitude, region, ensemble attrs, speckle diameter) of a finished ``ensemble/``."""
    group = runstore.require_complete(run_path, "ensemble")
    for name in ("amplitude", "valid"):
        if name not in group:
            raise LensfreeError(f"{run_path}: ensemble/ has no '{name}' array")
    amplitude = np.asarray(group["amplitude"][...], np.float64)
    valid = np.asarray(group["valid"][...], bool)
    if amplitude.ndim != 2 or valid.shape != amplitude.shape:
        raise LensfreeError(f"{run_path}: ensemble/amplitude {amplitude.shape} and valid "
                            f"{valid.shape} do not match")
    attrs = dict(group.attrs)
    h, w = amplitude.shape
    center = attrs.get("center_binned") or (h // 2, w // 2)
    if params.unit == "nm":
        given = [attrs.get(k) for k in ("binned_pixel_size_m", "wavelength_m", "distance_m")]
        if any(v is None for v in given):
            raise LensfreeError(f"{run_path}: ensemble/ has no geometry (binned_pixel_size_m, "
                                "wavelength_m, distance_m); give the diameters in pixels "
                                "with --pixels")
        spacing = geometry.frequency_spacing(*given)  # cycles per metre
    else:
        spacing = (1.0 / h, 1.0 / w)  # cycles per real-space pixel
    q = scoring.frequency_grid((h, w), spacing, center)
    speckle = params.speckle_diameter
    if speckle is None:
        speckle = float(attrs.get("speckle_diameter") or 0.0)
    region = valid & np.isfinite(amplitude) & ~ensemble.central_disk((h, w), speckle)
    if not region.any() or not amplitude[region].sum() > 0:
        raise LensfreeError(f"{run_path}: no measured amplitude outside the central speckle "
                            f"(diameter {speckle} px)")
    return q, amplitude, region, attrs, speckle


class FitStage(Stage):
    name = "fit.core-shell"
    help = "core-shell sphere over a grid of diameters"
    group = "fit"
    reads = ("ensemble",)
    Options = FitOptions

    def open(self, opts):
        return read_fit_input(opts.run, opts.params)

    def inputs(self, opts, inp) -> dict:
        return {"run": opts.run, "ensemble_finished": inp[3].get("finished")}

    def tasks(self, opts, inp) -> list:
        return [(i, j) for i in range(len(opts.params.inner))
                for j in range(len(opts.params.outer))]

    def names(self, tasks) -> list[str]:
        return [f"fit-i{i:03d}-o{j:03d}" for i, j in tasks]

    def shared(self, opts, inp):
        q, amplitude, region, _, _ = inp
        return (q, amplitude, region, opts.params)

    work = staticmethod(fit_point)

    def write(self, ctx: Context, opts, inp, results) -> dict:
        params = opts.params
        q, _, region, _, speckle = inp
        ni, no = len(params.inner), len(params.outer)
        erf, scale, offset = (np.array([r[k] for r in results], np.float64).reshape(ni, no)
                              for k in range(3))
        if not np.isfinite(erf).any():
            raise LensfreeError("fit: no grid point has inner < outer")
        i, j = np.unravel_index(int(np.nanargmin(erf)), erf.shape)
        s = UNITS[params.unit]
        best = scale[i, j] * scoring.core_shell_amplitude(
            q, params.inner[i] * s, params.outer[j] * s, params.core_density,
            params.shell_density) + offset[i, j]
        arrays = {"erf": erf, "scale": scale, "offset": offset,
                  "inner": np.asarray(params.inner), "outer": np.asarray(params.outer),
                  "model": best.astype(np.float32), "region": region}
        for name, data in arrays.items():
            runstore.write_array(ctx.group, name, data)
        return dict(model="core-shell", unit=params.unit, best_inner=params.inner[i],
                    best_outer=params.outer[j], best_erf=float(erf[i, j]),
                    best_scale=float(scale[i, j]), best_offset=float(offset[i, j]),
                    core_density=params.core_density, shell_density=params.shell_density,
                    offset=params.offset, speckle_diameter=speckle,
                    n_pixels=int(region.sum()), n_points=int(np.isfinite(erf).sum()))

    def summary(self, a: dict, opts, seconds: float) -> list[str]:
        p = opts.params
        return [f"{opts.run}: fit/ written in {seconds:.1f} s; {len(p.inner)} x {len(p.outer)} "
                "grid points",
                f"  best inner {a['best_inner']:g} {a['unit']}, outer {a['best_outer']:g} "
                f"{a['unit']}: erf {a['best_erf']:.2f}%"]


STAGE = FitStage()


def run_fit(backend: Backend, run_path: str, params: FitParams) -> dict:
    """Score every grid point on ``backend``; the root writes ``fit/``; every process gets
    its attrs once it is complete."""
    return run_stage(STAGE, backend, FitOptions(run=run_path, params=params))
