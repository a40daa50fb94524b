"""Schedules: parsing, iteration counts, errors, step objects, a new algorithm as one class."""

from __future__ import annotations

import dataclasses
import math
import pickle

import numpy as np
import pytest

from lensfree.engine import phasing, schedule, shapes
from lensfree.engine.schedule import (
    ER,
    HIO,
    RAAR,
    Step,
    as_schedule,
    n_iterations,
    parse_schedule,
)


def test_parse_simple_schedule_and_shrinkwrap_option():
    steps = parse_schedule("HIO:400, er:100 ;shrinkwrap=50")
    assert steps == (HIO(400, 50), ER(100, 50))
    assert parse_schedule("HIO:400,ER:100") == (HIO(400), ER(100))
    assert parse_schedule("HIO:400,ER:100", shrinkwrap=20) == (HIO(400, 20), ER(100, 20))
    # the argument overrides the option, 0 included
    assert parse_schedule("HIO:4;shrinkwrap=50", shrinkwrap=0) == (HIO(4),)


def test_parse_groups_and_beta():
    steps = parse_schedule("(HIO:9,ER:1)*3,RAAR:50:0.75,ER:20")
    assert steps == (HIO(9), ER(1)) * 3 + (RAAR(50, beta=0.75), ER(20))
    nested = parse_schedule("((HIO:2,ER:1)x2,ER:5)*2")
    assert sum(s.iterations for s in nested) == 2 * (2 * 3 + 5)


def test_groups_repeat_and_shrinkwrap_reaches_every_step():
    steps = parse_schedule("(HIO:9,ER:1)*20;shrinkwrap=50")
    assert steps == (HIO(9, 50), ER(1, 50)) * 20
    assert all(s.shrinkwrap == 7 for s in parse_schedule("((HIO:2,ER:1)*2,ER:5)*2;shrinkwrap=7"))


def test_alg_n_beta_sets_the_feedback_of_that_step_only():
    steps = parse_schedule("HIO:50:0.7,HIO:10,raar:20:1.2")
    assert steps == (HIO(50, beta=0.7), HIO(10), RAAR(20, beta=1.2))
    assert steps[1].beta is None  # takes PhasingParams.beta at run time
    assert parse_schedule("HIO:5:1e-1")[0].beta == pytest.approx(0.1)


@pytest.mark.parametrize("text, total", [
    ("HIO:400,ER:100", 500),
    ("(HIO:9,ER:1)*20", 200),
    ("(HIO:9,ER:1)*80,ER:200;shrinkwrap=100", 1000),
    ("((HIO:2,ER:1)x2,ER:5)*2", 22),
    ("RAAR:7:0.5", 7),
])
def test_iteration_counts(text, total):
    assert n_iterations(text) == total
    assert n_iterations(parse_schedule(text)) == total
    assert sum(s.iterations for s in parse_schedule(text)) == total


@pytest.mark.parametrize(
    "text, token",
    [
        ("HIO", "HIO"),
        ("HIO:400,ER:1x0", "ER:1x0"),
        ("HIO:0", "HIO:0"),
        ("FOO:10", "FOO:10"),
        ("HIO:10,,ER:5", "''"),
        ("(HIO:9,ER:1)", "(HIO:9,ER:1)"),
        ("(HIO:9,ER:1)*0", "(HIO:9,ER:1)*0"),
        ("ER:10:0.5", "ER:10:0.5"),
        ("HIO:10;shrinkwrap=often", "shrinkwrap=often"),
        ("HIO:10;sw=5", "sw=5"),
        ("(HIO:10", "unbalanced"),
        ("HIO:10:3", "beta"),
        ("", "no steps"),
        ("HIO:400,ER:100,RAAR:x", "RAAR:x"),
    ],
)
def test_parse_errors_name_the_bad_token(text, token):
    with pytest.raises(ValueError) as excinfo:
        parse_schedule(text)
    assert token in str(excinfo.value)


def test_step_values_are_checked():
    with pytest.raises(ValueError, match="iterations"):
        HIO(0)
    with pytest.raises(ValueError, match="shrinkwrap"):
        ER(5, -1)
    with pytest.raises(ValueError, match="beta"):
        RAAR(5, beta=1.6)
    with pytest.raises(TypeError):
        Step(5)  # abstract: only algorithms are steps


def test_as_schedule_takes_a_string_or_steps():
    steps = parse_schedule("HIO:40,ER:10;shrinkwrap=10")
    assert as_schedule("HIO:40,ER:10;shrinkwrap=10") == steps
    assert as_schedule(steps) is steps  # already parsed: nothing to do
    assert as_schedule(list(steps)) == steps
    for bad in ((), ["HIO:40"], (HIO(4), "ER:1")):
        with pytest.raises(ValueError, match="schedule must be"):
            as_schedule(bad)


def test_steps_are_picklable_immutable_and_hashable():
    steps = parse_schedule("(HIO:9,ER:1)*2,RAAR:50:0.75,HIO:5:0.6;shrinkwrap=5")
    again = pickle.loads(pickle.dumps(steps))
    assert again == steps and [type(s) for s in again] == [type(s) for s in steps]
    assert hash(again) == hash(steps)
    with pytest.raises(dataclasses.FrozenInstanceError):
        steps[0].iterations = 3
    assert HIO(5) != ER(5)  # the algorithm is part of a step's identity


def test_a_new_algorithm_is_one_class(monkeypatch):
    """A subclass with a name parses and runs; this one is ER without its shortcut for E_S,
    so its iterates are ER's, bit for bit."""
    monkeypatch.setattr(schedule, "_ALGORITHMS", dict(schedule._ALGORITHMS))

    @dataclasses.dataclass(frozen=True)
    class Plain(Step):
        name = "PLAIN"

        def iterate(self, state, record=True):
            r, _ = state.fourier(1.0, record)
            np.multiply(state.w, state.inside_f, out=state.rho)
            return r, math.nan

    assert parse_schedule("plain:3,ER:2") == (Plain(3), ER(2))
    truth = shapes.letter(32, 3.0)
    amplitude, valid = shapes.far_field(truth, np.inf, None, 2.0)
    support = phasing.autocorrelation_support(amplitude, valid)
    rho0 = np.where(support, 1.0, 0.0).astype(np.complex64)
    new = phasing.run(amplitude, valid, rho0, support, "PLAIN:6")
    er = phasing.run(amplitude, valid, rho0, support, "ER:6")
    assert new[0].tobytes() == er[0].tobytes()
    assert np.array_equal(new[2].r_fourier, er[2].r_fourier, equal_nan=True)
    assert np.all(np.isnan(new[2].e_support))
