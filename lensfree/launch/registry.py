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


class Report(Command):
    """Draws every registered stage's group that a run store holds, complete."""

    name = "report"
    help = "PNG figures and a Markdown summary of a run store"
    Options = ReportOptions

    def handler(self, o) -> int:
        from lensfree.io.report import write_report

        out = o.out or os.path.splitext(os.path.normpath(o.run))[0] + "-report"
        paths = write_report(o.run, out, groups=[s.group for s in STAGES.values()])
        report([f"{o.run}: report in {out}: {', '.join(os.path.basename(p) for p in paths)}"])
        return 0


#: every command that takes options (and may be a table of a run config)
COMMANDS = {c.name: c for c in (commands.Demo(), commands.SimulateEnsemble(),
                                commands.SimulateObject(), commands.SimulatePtycho(),
                                commands.Ingest(), *STAGES.values(), Report())}
