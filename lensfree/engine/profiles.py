"""Radial profiles of centred 2D arrays: means over rings about (h // 2, w // 2)."""

from __future__ import annotations

import numpy as np

from lensfree.engine.scoring import shell_index


def radial_profile(image: np.ndarray, where: np.ndarray | None = None
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Mean of ``image`` over each ring of pixels about the centre ``(h // 2, w // 2)``.

    ``profile[k] = sum_{p in S_k} image[p] / |S_k|`` where ``S_k`` holds the pixels of
    ``where`` at distance ``k`` (rounded) from the centre, the shells of
    `lensfree.engine.scoring.shell_index`: full rings only, ``k = 0 .. min(h, w) // 2``.

    Parameters
    ----------
    image : (h, w) real array, centred (zero frequency at (h // 2, w // 2)).
    where : (h, w) bool, the pixels to average (say, measured ones); None takes all.

    Returns
    -------
    radius : (K + 1,) int64, the shell radii ``k`` in pixels.
    profile : (K + 1,) float64, NaN for a shell without a pixel of ``where``.
    """
    image = np.asarray(image, np.float64)
    shells = shell_index(image.shape)
    use = shells >= 0
    if where is not None:
        use &= np.asarray(where, bool)
    n = int(shells.max()) + 1
    counts = np.bincount(shells[use], minlength=n)
    with np.errstate(invalid="ignore", divide="ignore"):
        profile = np.bincount(shells[use], image[use], n) / counts
    return np.arange(n), profile
