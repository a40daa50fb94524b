"""Stage 4's parameters: the command line's ``lensfree ptycho`` options (`PtychoOptions`),
the stage's own (`PtychoStageParams`) around the engine's (`engine.ptycho.PtychoParams`),
and the propagation geometry that overrides a frame store's (`ScanGeometry`)."""

from __future__ import annotations

from dataclasses import dataclass

from lensfree.engine import ptycho as pt
from lensfree.engine.params import at_least, check_fields, optional, param, positive
from lensfree.launch.stage import Execution


@dataclass(frozen=True)
class ScanGeometry:
    """The propagation and its geometry, overriding the frame store's attrs."""

    propagation: str | None = param(None, "sample to detector", choices=pt.PROPAGATIONS,
                                    default_help="the store's, else far-field")
    wavelength: float | None = param(None, "wavelength in metres", check=optional(positive),
                                     default_help="the store's")
    distance: float | None = param(None, "near field: effective sample-detector distance in "
                                   "metres", check=optional(positive), default_help="the store's")
    pixel_size: float | None = param(None, "near field: sample-plane pixel in metres",
                                     check=optional(positive), default_help="the store's")


@dataclass(frozen=True)
class PtychoStageParams:
    """Stage 4 parameters: the engine's (`ptycho.PtychoParams`) and how the run is cut.

    blocks : position blocks of the parallel engine [ceil(N / (64 x batches)), at least
        1: 64 positions a block and batch]; the
        numbers depend on it, never on the workers.
    checkpoint_every : write object, probe, positions and errors every so many iterations.
    margin : object pixels around the outermost probe positions.
    split_frc : after the run, the even and the odd positions each reconstructed alone
        (same start and parameters), and the FRC of the two objects with its half-bit
        resolution stored (``frc``, ``frc_threshold``, ``frc_frequency``; attrs
        ``frc_resolution_px``, ``frc_resolution_m``).
    """

    engine: pt.PtychoParams = param(default_factory=pt.PtychoParams)
    geometry: ScanGeometry = param(default_factory=ScanGeometry,
                                   group="propagation (overrides the store's)")
    blocks: int | None = param(None, "position blocks of the parallel engine",
                               check=optional(at_least(1)), default_help="N / (64 x batches)")
    checkpoint_every: int = param(10, "iterations between checkpoints", check=at_least(1))
    margin: int = param(8, "object pixels around the outermost probe positions",
                        check=at_least(0))
    split_frc: bool = param(False, "also reconstruct the scan's two interleaved halves and "
                            "store the Fourier ring correlation of their objects",
                            action="store_true")

    def __post_init__(self):
        check_fields(self)


@dataclass(frozen=True)
class PtychoOptions:
    """``lensfree ptycho FRAMES.zarr --out RUN.zarr [options]``."""

    frames: str = param(None, "frame store with positions (X.zarr)", positional=True)
    out: str = param(None, "run store to write (RUN.zarr)", required=True)
    params: PtychoStageParams = param(default_factory=PtychoStageParams)
    execution: Execution = param(default_factory=Execution, group="execution")
