"""Far-field detector geometry: the one place where ``p / (lambda z)`` is written.

A detector pixel of size ``p`` at distance ``z`` spans ``p / (lambda z)`` cycles per metre
of the sample plane; an ``n``-pixel array of such pixels therefore samples real space at
``dx = lambda z / (n p)`` (SCIENCE.md, section 1).
"""

from __future__ import annotations

import numpy as np


def frequency_spacing(pixel_size_m, wavelength_m: float, distance_m: float):
    """Spatial frequency of one detector pixel, ``p / (lambda z)``, in cycles per metre
    (per axis when ``pixel_size_m`` is a (py, px) pair)."""
    spacing = np.asarray(pixel_size_m, np.float64) / (wavelength_m * distance_m)
    return float(spacing) if spacing.ndim == 0 else spacing


def real_space_pixel(n: int, pixel_size_m: float, wavelength_m: float,
                     distance_m: float) -> float:
    """Real-space pixel ``dx = lambda z / (n p)`` of an ``n``-pixel array of pixels ``p``."""
    return 1.0 / (n * frequency_spacing(pixel_size_m, wavelength_m, distance_m))
