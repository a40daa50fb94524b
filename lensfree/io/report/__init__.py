"""PNG figures and a Markdown summary of a run store (matplotlib, no display needed).

One module per run-store group declares what the report shows of it (a `Section`: its
figures and its summary lines); `SECTIONS` lists them in stage order and `write_report`
walks it for the groups a store has finished. A new stage's report is a module with a
``SECTION`` and one line in `SECTIONS`.
"""

from __future__ import annotations

import logging
import os

from lensfree.io.report import ensemble, fit, gather, phasing, ptycho
from lensfree.io.report._common import Figure, Section

log = logging.getLogger(__name__)

__all__ = ["SECTIONS", "Figure", "Section", "summary_markdown", "write_report"]

#: What the report shows of each group, in the order of the stages.
SECTIONS: dict[str, Section] = {s.group: s for s in (
    ensemble.SECTION, phasing.SECTION, gather.SECTION, fit.SECTION, ptycho.SECTION)}


def write_report(run_path: str, out_dir: str, groups=None) -> list[str]:
    """Figures for every finished group of a run store and ``summary.md``; returns the paths.

    Parameters
    ----------
    run_path : the run store.
    out_dir : directory for the PNGs and ``summary.md`` (made when absent).
    groups : ordered group names to look for (say, from the CLI's stages); None means
        every group in `SECTIONS`. A finished group without a section gets its line in
        the summary's table and nothing else.

    Raises LensfreeError when the store has none of them finished.
    """
    import zarr

    from lensfree.errors import LensfreeError
    from lensfree.io import runstore

    run = runstore.open_run(run_path, mode="r")
    states = {name: runstore.state(run, name) for name in (SECTIONS if groups is None
                                                          else groups)}
    done = [name for name, state in states.items() if state == "complete"]
    left = [(name, state) for name, state in states.items() if state in ("stale",
                                                                          "unfinished")]
    for name, state in left:  # never a silent omission
        log.warning("%s: %s/ is %s and is left out of the report", run_path, name, state)
    if not done:
        raise LensfreeError(f"{run_path}: no finished stage to report on")
    os.makedirs(out_dir, exist_ok=True)
    figures = _figures(run, done)
    written = [figure.plot(run_path, os.path.join(out_dir, figure.name)) for figure in figures]
    summary = os.path.join(out_dir, "summary.md")
    with open(summary, "w") as f:
        f.write(summary_markdown(run_path, zarr.open_group(run_path, mode="r"), done,
                                 [(figure.title, figure.name) for figure in figures], left))
    return [*written, summary]


def _figures(run, done: list[str]) -> list[Figure]:
    """The figures that apply, each listed with the earliest finished group it draws on."""
    rank = {name: i for i, name in enumerate(done)}
    chosen = []
    for name in done:
        section = SECTIONS.get(name)
        for figure in section.figures if section else ():
            if all(g in rank for g in figure.needs) and (figure.array is None
                                                         or figure.array in run):
                chosen.append((min(rank[g] for g in (name, *figure.needs)), figure))
    return [figure for _, figure in sorted(chosen, key=lambda c: c[0])]


def summary_markdown(run_path: str, run, done: list[str], figures, left=()) -> str:
    """A short Markdown account of a run: stages, parameters, scores, figures.

    ``figures`` are (title, file name) pairs; ``left``: (group, state) of the groups left
    out because they are stale or unfinished.
    """
    lines = [f"# lensfree run `{os.path.basename(os.path.normpath(run_path))}`", ""]
    lines.append("| stage | finished | lensfree |")
    lines.append("| --- | --- | --- |")
    for name in done:
        a = run[name].attrs
        lines.append(f"| {name} | {a.get('finished', '?')} | {a.get('lensfree_version', '?')} |")
    for name, state in left:
        lines.append(f"| {name} | {state}: left out | |")
    lines.append("")
    for name in done:
        if name in SECTIONS:
            lines += SECTIONS[name].summary(run)
    if figures:
        lines.append("## Figures")
        lines += [f"- {title}: ![{title}]({name})" for title, name in figures]
        lines.append("")
    return "\n".join(lines)
