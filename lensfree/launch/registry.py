"""Every command and stage of ``lensfree``, in one place.

A new stage is one module declaring a `lensfree.launch.stage.Stage` and one line here;
the command line, run configs, batch and the report find it through this registry.
"""

from __future__ import annotations

from lensfree.launch import commands, stage_fit, stage_gather, stage_phase, stage_ptycho, stage_sum

#: stages in pipeline order: command name -> Stage (its ``group`` is what it writes)
STAGES = {s.name: s for s in (stage_sum.STAGE, stage_phase.STAGE, stage_gather.STAGE,
                              stage_fit.STAGE, stage_ptycho.STAGE)}

#: every command that takes options (and may be a table of a run config)
COMMANDS = {c.name: c for c in (commands.Demo(), commands.SimulateEnsemble(),
                                commands.SimulateObject(), commands.SimulatePtycho(),
                                commands.Ingest(), *STAGES.values(), commands.Report())}
