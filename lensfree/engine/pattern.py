"""From a summed diffraction pattern to the amplitude phasing reads (stage 1, steps 5-8).

One function serves every way a pattern enters lensfree: the ensemble sum of stage 1 and
a single measured pattern brought in by ``lensfree ingest --pattern``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lensfree.engine import ensemble


@dataclass(frozen=True)
class Pattern:
    """A pattern ready for phasing, and what each step did.

    center : (cy, cx) zero frequency in the input's pixels.
    patched, filled : the input after centrosymmetric patching, and the pixels it filled.
    amplitude, valid : (h, w) ``sqrt`` of the binned intensity (float32, 0 where missing),
        centred at (h // 2, w // 2), and the pixels phasing may trust.
    origin : input pixel of the binned window's first corner.
    center_binned : the centre in ``amplitude`` pixels.
    speckle_diameter : diameter of the central disk set missing, binned px.
    """

    center: tuple[float, float]
    patched: np.ndarray
    filled: np.ndarray
    amplitude: np.ndarray
    valid: np.ndarray
    origin: tuple[int, int]
    center_binned: tuple[float, float]
    speckle_diameter: float


def prepare_pattern(intensity: np.ndarray, measured: np.ndarray, *, center=None,
                    patch: bool = True, binning: int = 1,
                    speckle_diameter: float | None = None) -> Pattern:
    """Centre, patch, bin and drop the central speckle of a summed intensity pattern.

    Parameters
    ----------
    intensity : (H, W) float64 summed intensity (background already subtracted).
    measured : (H, W) bool, True where ``intensity`` was measured.
    center : (cy, cx) of zero frequency; None finds it from the pattern's
        centrosymmetry (`ensemble.find_center`).
    patch : fill a missing pixel from its measured mirror (Friedel symmetry).
    binning : ``b x b`` binning onto a grid whose pixel (h // 2, w // 2) holds the centre
        (b = 1 moves the pattern by whole pixels).
    speckle_diameter : central disk set missing, in binned px (0: none); None means the beam
        stop's diameter (`ensemble.beamstop_diameter` of ``measured``) / b + 4.

    Returns
    -------
    Pattern

    Notes
    -----
    A binned pixel is dropped only when its binned value is negative: dropping negative
    pixels before binning would keep only the upward noise of a background subtraction
    and lift a floor under the weak high-q signal. Then ``A = sqrt(S)``.
    """
    if center is None:
        center = ensemble.find_center(intensity, measured)
    center = (float(center[0]), float(center[1]))
    if patch:
        patched, usable, filled = ensemble.centro_patch(intensity, measured, center)
    else:
        patched, usable, filled = intensity, measured, np.zeros(intensity.shape, bool)
    b = int(binning)
    # The window's corner is the centre rounded to the binned grid; snap the centre there
    # first, so a tie (a centre half-way between two grid points) is broken by the centre
    # alone and not by the parity of the output size (b = 1 is then exactly the whole-pixel
    # move ``round(c) - h // 2`` of the pattern).
    snapped = tuple(round(c - (b - 1) / 2) + (b - 1) / 2 for c in center)
    binned, valid, origin = ensemble.bin_pattern(patched, usable, snapped, b)
    valid &= binned >= 0
    if speckle_diameter is None:
        speckle_diameter = ensemble.beamstop_diameter(measured) / b + 4
    if speckle_diameter > 0:  # a disk of diameter 0 drops nothing, not the centre pixel
        valid &= ~ensemble.central_disk(valid.shape, speckle_diameter)
    center_binned = tuple((c - o - (b - 1) / 2) / b for c, o in zip(center, origin))
    return Pattern(center, patched, filled, ensemble.to_amplitude(binned, valid), valid,
                   tuple(int(o) for o in origin), center_binned, float(speckle_diameter))
