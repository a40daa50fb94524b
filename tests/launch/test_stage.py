"""The stage contract: one driver, options from dataclasses, one default per parameter."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import pytest
import zarr

from lensfree.engine.params import at_least, check_fields, param
from lensfree.engine.phasing import PhasingParams
from lensfree.errors import LensfreeError
from lensfree.io import runstore
from lensfree.launch import options
from lensfree.launch.backends import LocalBackend
from lensfree.launch.cli import build_parser
from lensfree.launch.registry import COMMANDS, STAGES
from lensfree.launch.stage import Execution, Stage, run_stage
from lensfree.launch.stage_phase import PhaseOptions


@dataclass(frozen=True)
class SquaresParams:
    n: int = param(5, "numbers to square", check=at_least(1))

    def __post_init__(self):
        check_fields(self)


@dataclass(frozen=True)
class SquaresOptions:
    run: str = param(None, "run store", positional=True)
    params: SquaresParams = param(default_factory=SquaresParams)
    execution: Execution = param(default_factory=Execution)


def square(task, shared):
    return task * task + shared


class SquaresStage(Stage):
    """The smallest stage: squares 0..n-1 on the workers, writes their sum."""

    name = "squares"
    help = "sum of squares"
    group = "squares"
    Options = SquaresOptions

    def open(self, opts):
        return None

    def tasks(self, opts, inp):
        return list(range(opts.params.n))

    def shared(self, opts, inp):
        return 0

    work = staticmethod(square)

    def write(self, ctx, opts, inp, results):
        runstore.write_array(ctx.group, "squares", np.asarray(results))
        return {"total": int(sum(results))}


@pytest.mark.parametrize("workers", [1, 2])
def test_a_stage_is_one_class_and_the_driver_owns_the_group(tmp_path, workers):
    run = str(tmp_path / "run.zarr")
    opts = options.build(SquaresOptions, {"run": run, "n": 6})
    attrs = run_stage(SquaresStage(), LocalBackend(workers, progress=False), opts)
    assert attrs["total"] == sum(i * i for i in range(6)) and attrs["complete"] is True
    assert attrs["parameters"] == {"n": 6} and attrs["input"] == {"run": run}
    assert set(attrs["timing_s"]) == {"wall"} and len(attrs["run_id"]) == 32
    group = zarr.open_group(run, mode="r")["squares"]
    assert group["squares"][...].tolist() == [0, 1, 4, 9, 16, 25]
    again = run_stage(SquaresStage(), LocalBackend(1, progress=False), opts)
    assert again["run_id"] != attrs["run_id"]  # not resumable: a rerun starts afresh


def test_options_name_the_flag_or_the_toml_key():
    with pytest.raises(LensfreeError, match=r"--n 0: must be at least 1"):
        options.build(SquaresOptions, {"run": "r.zarr", "n": 0})
    with pytest.raises(LensfreeError, match=r"n=0 \(--n\): must be at least 1"):
        options.build(SquaresOptions, {"run": "r.zarr", "n": 0}, toml=True)
    values, problems = options.check_table(SquaresOptions, {"n": "three", "m": 1})
    assert problems == ["n: expected int, got str 'three'", "unknown key 'm'"]
    assert options.missing(SquaresOptions, {}) == ["run"]


def test_phase_help_shows_the_one_default_of_every_parameter(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["phase", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    text = text[text.index("positional arguments"):]  # the flags' help, not the usage line
    engine = PhasingParams()
    after = text.split("--shrinkwrap-threshold SHRINKWRAP_THRESHOLD")[1][:200]
    assert f"[{engine.shrinkwrap_threshold}]" in after
    sigma = f"[{engine.shrinkwrap_sigma_start} {engine.shrinkwrap_sigma_end}]"
    assert sigma in text.split("--shrinkwrap-sigma START END")[1][:120]
    built = options.build(PhaseOptions, {"run": "r.zarr"})
    assert built.params.phasing == engine  # no second set of defaults in the stage


def test_every_stage_is_registered_with_a_group_and_options():
    assert [s.group for s in STAGES.values()] == ["ensemble", "phasing", "gather", "fit",
                                                  "ptycho"]
    for command in COMMANDS.values():
        assert dataclasses.is_dataclass(command.Options)
        names = [o.name for o in options.options(command.Options)]
        assert len(names) == len(set(names)), command.name  # one flag per option
