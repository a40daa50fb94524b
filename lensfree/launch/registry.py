"""Every command and stage of ``lensfree``, in one place.

A new stage is one module declaring a `lensfree.launch.stage.Stage` and one line here;
the command line, run configs, batch and the report find it through this registry.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from lensfree.engine.params import param
from lensfree.launch import commands, stage_fit, stage_gather, stage_phase, stage_ptycho, stage_sum
from lensfree.launch.console import report
from lensfree.launch.stage import Command

#: stages in pipeline order: command name -> Stage (its ``group`` is what it writes)
STAGES = {s.name: s for s in (stage_sum.STAGE, stage_phase.STAGE, stage_gather.STAGE,
                              stage_fit.STAGE, stage_ptycho.STAGE)}


@dataclass(frozen=True)
class ReportOptions:
    """``lensfree report RUN.zarr [--out DIR]``."""

    run: str = param(None, "run store (RUN.zarr)", positional=True)
    out: str | None = param(None, "folder for the report",
                            default_help="RUN-report next to RUN")
    quiet: bool = param(False, "no progress output (the report has none)", action="store_true")


class Report(Command):
    """Draws every registered stage's group that a run store holds, complete."""

    name = "report"
    help = "PNG figures and a Markdown summary of a run store"
    Options = ReportOptions

    def handler(self, o, backend=None) -> int:
        from lensfree.io.report import write_report

        out = o.out or os.path.splitext(os.path.normpath(o.run))[0] + "-report"
        paths = write_report(o.run, out, groups=[s.group for s in STAGES.values()])
        report([f"{o.run}: report in {out}: {', '.join(os.path.basename(p) for p in paths)}"])
        return 0


@dataclass(frozen=True)
class StatusOptions:
    """``lensfree status RUN.zarr``."""

    run: str = param(None, "run store (RUN.zarr)", positional=True)


class Status(Command):
    """Every group of a run store: complete, stale (an input changed since) or unfinished."""

    name = "status"
    help = "each stage of a run store: complete, stale or unfinished"
    Options = StatusOptions

    def run_path(self, opts):
        return None  # reads only

    def handler(self, o, backend=None) -> int:
        from lensfree.io import runstore

        run = runstore.open_run(o.run, mode="r")
        order = [s.group for s in STAGES.values()]
        lines = [f"{o.run}:"]
        for name in sorted(run.group_keys(), key=lambda g: (order.index(g) if g in order
                                                             else len(order), g)):
            a = run[name].attrs
            command = a.get("command") or ""
            lines.append(f"  {name + '/':10s} {runstore.state(run, name):10s} "
                         f"{(command or '').replace('.', ' '):15s} {a.get('finished') or '-'}")
        report(lines)
        return 0


#: every command that takes options (and may be a table of a run config)
COMMANDS = {c.name: c for c in (commands.Demo(), commands.SimulateEnsemble(),
                                commands.SimulateObject(), commands.SimulatePtycho(),
                                commands.Ingest(), *STAGES.values(), Report(), Status())}
COMMANDS["export"] = __import__("lensfree.launch.export", fromlist=["Export"]).Export()
