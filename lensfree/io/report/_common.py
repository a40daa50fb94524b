"""What every report section shares: how it declares its figures, and matplotlib helpers."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Figure:
    """One PNG of a report.

    name : file name in the report directory.
    plot : ``plot(run_path, out_png) -> out_png``.
    title : its caption in ``summary.md``.
    needs : other finished groups it draws on (the fit figure reads ``ensemble/``); it is
        listed with the earliest of them.
    array : run-store path of an array without which it is not drawn (``frame_status``
        is absent where another tool wrote ``ensemble/``).
    """

    name: str
    plot: Callable[[str, str], str]
    title: str
    needs: tuple[str, ...] = ()
    array: str | None = None


@dataclass(frozen=True)
class Section:
    """What a report shows of one run-store group: its figures and its summary lines.

    summary : ``summary(run) -> lines`` of Markdown, ending in a blank line; ``run`` is
        the opened run store.
    """

    group: str
    figures: tuple[Figure, ...]
    summary: Callable[[object], list[str]]


def pyplot():
    """matplotlib's pyplot on the Agg back end: reports are written without a display."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig, out_png: str) -> str:
    """Write ``fig`` to ``out_png`` (making its directory) and close it."""
    os.makedirs(os.path.dirname(os.path.abspath(out_png)), exist_ok=True)
    fig.savefig(out_png, dpi=100)
    pyplot().close(fig)
    return out_png


def bare(ax) -> None:
    """No ticks: for images, whose pixel indices say nothing."""
    ax.set_xticks([])
    ax.set_yticks([])


def num(x) -> str:
    """A score with four decimals, or ``n/a`` when the stage recorded none."""
    return "n/a" if x is None else f"{x:.4f}"
