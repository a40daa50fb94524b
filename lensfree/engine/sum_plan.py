"""Stage 1 with each accepted frame read once: predicted classes, then corrections.

A frame's status needs thresholds set by all frames (`ensemble.screen`), so a sum made in
the same pass as the statistics cannot know which frames it will keep. Instead:

1. a *pilot*, a few chunks spread over the store, gives estimates of the thresholds
   (`predict`);
2. the one pass over every frame computes its statistics and adds it, as it is read, to
   the float64 sum of its predicted *class* (`classify`): -1 (predicted weak or chi2, not
   summed), or 0..len(edges) by its total between the ``edges`` placed around the
   estimated background threshold (class 0: the weakest, likely background; the last:
   likely accepted). Classes are bins, so a threshold that falls inside one costs only
   that bin's minority;
3. once the statuses are decided, every class takes the status most of its frames have
   (`resolve`), and only the frames whose status differs from their class's are read
   again and added or subtracted (``coef``).

Every frame ends up counted once in the accepted or the background sum or in neither,
exactly as `ensemble.screen` decided: integer frames give the same float64 sums, bit for
bit, as summing the accepted frames directly (every partial sum is an exact integer);
float frames agree to rounding. The prediction affects only how many frames are read
twice, never the result.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

import numpy as np

from lensfree.engine.ensemble import ACCEPTED, BACKGROUND, ScreenParams, screen

#: the third label besides ACCEPTED and BACKGROUND: a class whose sum is dropped
DROPPED = -1
#: the pilot reads PILOT_SHARE of the frames, and at least PILOT_FRAMES of them or
#: PILOT_MAX_SHARE of a small store, whichever is fewer
PILOT_FRAMES, PILOT_SHARE, PILOT_MAX_SHARE = 256, 0.02, 0.1
#: standard errors of the pilot's background quantile that the bins span on each side
BAND_SIGMAS = 3.0
#: bytes of class sums one shard may return: small frames get many bins (few frames read
#: twice), large frames few (they come in small chunks, so a second read costs little)
CLASS_BYTES = 16 * 2**20
MAX_CLASSES = 16


@dataclass(frozen=True)
class Prediction:
    """Estimated thresholds: weak below ``weak_total``, chi2 above ``chi2_max``; the
    survivors' class is the number of ``edges`` at or below their total."""

    weak_total: float
    chi2_max: float
    edges: tuple[float, ...]

    @property
    def n_classes(self) -> int:
        return len(self.edges) + 1


def n_classes_for(frame_shape: tuple[int, int], params: ScreenParams) -> int:
    """Class sums per shard for frames of this shape (1 without background frames)."""
    if params.background_fraction == 0:
        return 1
    per_class = 8 * int(np.prod(frame_shape))
    return int(np.clip(CLASS_BYTES // per_class, 2, MAX_CLASSES))


def pilot_chunks(n_frames: int, chunk_frames: int) -> list[tuple[int, int]]:
    """Frame ranges of the pilot: whole chunks, evenly spread over the store."""
    n_chunks = -(-n_frames // chunk_frames)
    want = max(PILOT_SHARE * n_frames, min(PILOT_FRAMES, PILOT_MAX_SHARE * n_frames))
    count = int(min(n_chunks, max(1, np.ceil(want / chunk_frames))))
    picks = np.unique(np.round(np.linspace(0, n_chunks - 1, count)).astype(int))
    return [(int(c) * chunk_frames, min((int(c) + 1) * chunk_frames, n_frames)) for c in picks]


def predict(total, chi2, invalid, params: ScreenParams, n_classes: int) -> Prediction:
    """Thresholds estimated from the pilot's statistics, and the class edges."""
    status, th = screen(total, chi2, invalid, params)
    weak = th["weak_total"] if th["weak_total"] is not None else -np.inf
    chi2_max = th["chi2_max"] if th["chi2_max"] is not None else np.inf
    survivors = np.sort(total[np.isin(status, (ACCEPTED, BACKGROUND))])
    if n_classes < 2 or survivors.size == 0:
        return Prediction(float(weak), float(chi2_max), ())
    p = params.background_fraction
    spread = BAND_SIGMAS * np.sqrt(p * (1 - p) / survivors.size)
    if n_classes == 2:
        levels = np.array([p])
    else:
        levels = np.linspace(p - spread, p + spread, n_classes - 1)
    levels = np.clip(levels, 0.0, 1.0)
    edges = np.unique(np.quantile(survivors, levels))
    return Prediction(float(weak), float(chi2_max), tuple(float(e) for e in edges))


def classify(total, chi2, invalid, prediction: Prediction) -> np.ndarray:
    """Each frame's class: -1 for invalid or predicted weak/chi2 (not summed), else the
    number of edges at or below its total."""
    classes = np.searchsorted(np.asarray(prediction.edges, np.float64), total,
                              side="right").astype(np.int16)
    with np.errstate(invalid="ignore"):
        dropped = invalid | (total < prediction.weak_total) | (chi2 > prediction.chi2_max)
    classes[dropped] = -1
    return classes


def resolve(classes: np.ndarray, status: np.ndarray, n_classes: int):
    """Each class's label (ACCEPTED, BACKGROUND or DROPPED: what most of its frames are)
    and the per-frame corrections that make the labelled sums exact.

    Returns
    -------
    labels : (n_classes,) int
    coef : (N, 2) int8, what to add of each frame to the (accepted, background) sums
        (-1: summed under its class but not that; +1: that but not summed so)
    """
    kind = np.where(status == ACCEPTED, ACCEPTED,
                    np.where(status == BACKGROUND, BACKGROUND, DROPPED))
    labels = np.full(n_classes, ACCEPTED)
    for c in range(n_classes):
        members = kind[classes == c]
        if members.size:
            options = (ACCEPTED, BACKGROUND, DROPPED)
            labels[c] = options[int(np.argmax([(members == o).sum() for o in options]))]
    given = np.where(classes >= 0, labels[np.maximum(classes, 0)], DROPPED)
    coef = np.zeros((classes.size, 2), dtype=np.int8)
    for col, name in enumerate((ACCEPTED, BACKGROUND)):
        coef[:, col] = (kind == name).astype(np.int8) - (given == name).astype(np.int8)
    return labels, coef


def screen_and_sum(frames: np.ndarray, mask: np.ndarray, annulus: np.ndarray,
                   prediction: Prediction, sums: np.ndarray):
    """`ensemble.frame_stats` of a block fused with pass 1's sums: each frame is cast to
    float64 once, into one work array, which gives its total, its ring and its addition
    to ``sums[class]`` (in index order). Returns total, chi2, invalid, classes.

    Integer frames (up to 32 bits) go through the compiled loops of
    `lensfree.engine.kernels`, one pass for the statistics and one for the sum: the totals
    are exact, the same as `ensemble.frame_stats` gives, and unmeasured pixels are left as
    stored (their sums are never used). Float frames:
    unmeasured pixels are set to 0 first, so NaN or inf there do not spoil the total.
    """
    k = frames.shape[0]
    total, chi2 = np.full(k, np.nan), np.full(k, np.nan)
    invalid = np.zeros(k, dtype=bool)
    classes = np.full(k, -1, dtype=np.int16)
    kind = frames.dtype.kind
    ring_index = np.flatnonzero(annulus)
    edges = list(prediction.edges)
    if kind in "uib" and frames.dtype.itemsize <= 4:  # compiled: exact integers
        from lensfree.engine import kernels

        for i in range(k):
            t, c2, negative = kernels.frame_stats(frames[i], mask, ring_index)
            if negative:
                invalid[i] = True
                continue
            total[i], chi2[i] = t, c2
            if t < prediction.weak_total or c2 > prediction.chi2_max:
                continue
            c = bisect.bisect_right(edges, t)  # = classify's searchsorted
            classes[i] = c
            kernels.add_frame(sums[c], frames[i], 1)
        return total, chi2, invalid, classes
    unmeasured = ~mask
    bad_pixels = np.flatnonzero(unmeasured)
    work = np.empty(mask.shape, dtype=np.float64)
    flat = work.reshape(-1)
    for i in range(k):
        np.copyto(work, frames[i])
        if kind == "f" and bad_pixels.size:
            np.copyto(work, 0.0, where=unmeasured)
            t = float(work.sum())
        else:  # exact integers: subtract what the unmeasured pixels hold
            t = float(work.sum()) - float(flat[bad_pixels].sum())
        bad = False
        if kind == "f":  # NaN or inf show in the total; unmeasured pixels hold 0
            bad = not np.isfinite(t) or work.min() < 0
        elif kind == "i" and work.min() < 0:  # junk on unmeasured pixels may be negative
            bad = bool((work[mask] < 0).any())
        if bad:
            invalid[i] = True
            continue
        ring = flat[ring_index]
        mean = ring.sum() / ring.size  # ring.mean()'s very bits, without its overhead
        c2 = ((ring - mean) ** 2).sum() / mean if mean > 0 else 0.0
        total[i], chi2[i] = t, c2
        if t < prediction.weak_total or c2 > prediction.chi2_max:
            continue
        c = bisect.bisect_right(edges, t)  # = classify's searchsorted, without its overhead
        classes[i] = c
        np.add(sums[c], work, out=sums[c])
    return total, chi2, invalid, classes
