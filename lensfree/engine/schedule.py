"""Phasing schedules: which algorithm runs for how many iterations.

A schedule is a string such as ``"HIO:400,ER:100;shrinkwrap=50"`` or
``"(HIO:9,ER:1)*80,ER:200"``, parsed once into a tuple of :class:`Step` objects (the
lensfree counterpart of PyNX's ``ER()**100 * HIO()**400``). The same steps serve every
back end; :mod:`lensfree.engine.phasing` runs them and re-exports these names.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

__all__ = ["ER", "HIO", "RAAR", "Step", "as_schedule", "parse_schedule"]


@dataclass(frozen=True)
class Step:
    """``iterations`` of one algorithm; shrinkwrap every ``shrinkwrap`` iterations
    (counted over the whole schedule; 0 = never)."""

    iterations: int
    shrinkwrap: int = 0
    name: ClassVar[str] = ""

    def __post_init__(self):
        if int(self.iterations) != self.iterations or self.iterations < 1:
            raise ValueError(f"{self.name}: iterations must be a positive integer")
        if self.shrinkwrap < 0:
            raise ValueError(f"{self.name}: shrinkwrap must be >= 0")
        beta = getattr(self, "beta", None)
        if beta is not None and not 0 < beta <= 1.5:
            raise ValueError(f"{self.name}: beta must be in (0, 1.5], got {beta}")


@dataclass(frozen=True)
class ER(Step):
    """Error reduction: ``rho <- P_S rho_m``."""

    name: ClassVar[str] = "ER"


@dataclass(frozen=True)
class HIO(Step):
    """Hybrid input-output; ``beta`` None takes :attr:`PhasingParams.beta`."""

    beta: float | None = None
    name: ClassVar[str] = "HIO"


@dataclass(frozen=True)
class RAAR(Step):
    """Relaxed averaged alternating reflections; ``beta`` None: :attr:`PhasingParams.beta`."""

    beta: float | None = None
    name: ClassVar[str] = "RAAR"


_ALGORITHMS = {"ER": ER, "HIO": HIO, "RAAR": RAAR}
_ITEM = re.compile(r"^([A-Za-z]+):(\d+)(?::([0-9.eE+-]+))?$")
_GROUP = re.compile(r"^\((.*)\)[*x](\d+)$")


def _split_top(text: str, sep: str) -> list[str]:
    """Split at ``sep`` outside parentheses."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        depth += (ch == "(") - (ch == ")")
        if depth < 0:
            raise ValueError(f"unbalanced ')' in schedule {text!r}")
        if ch == sep and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    if depth:
        raise ValueError(f"unbalanced '(' in schedule {text!r}")
    return parts + [text[start:]]


def _parse_steps(text: str, shrinkwrap: int, whole: str) -> list[Step]:
    steps: list[Step] = []
    for token in _split_top(text, ","):
        group = _GROUP.match(token)
        item = _ITEM.match(token)
        if group and int(group.group(2)) > 0:
            steps += _parse_steps(group.group(1), shrinkwrap, whole) * int(group.group(2))
        elif item and item.group(1).upper() in _ALGORITHMS and int(item.group(2)) > 0:
            cls = _ALGORITHMS[item.group(1).upper()]
            try:
                if item.group(3) is not None and cls is ER:
                    raise ValueError("ER takes no beta")
                kwargs = {} if item.group(3) is None else {"beta": float(item.group(3))}
                steps.append(cls(int(item.group(2)), shrinkwrap, **kwargs))
            except ValueError as exc:
                raise ValueError(f"schedule {whole!r}: bad step {token!r}: {exc}") from None
        else:
            raise ValueError(
                f"schedule {whole!r}: cannot parse {token!r}; expected ALG:N or ALG:N:BETA "
                f"(ALG one of {', '.join(_ALGORITHMS)}, N > 0) or (STEPS)*K"
            )
    return steps


def parse_schedule(text: str, shrinkwrap: int | None = None) -> tuple[Step, ...]:
    """Parse a schedule string into steps.

    Grammar (whitespace ignored, names case-insensitive)::

        schedule := steps [";" option]...      option := "shrinkwrap=" K
        steps    := item ["," item]...         item   := ALG ":" N [":" BETA] | "(" steps ")*" R

    ``ALG`` is ER, HIO or RAAR, ``N`` its iterations, ``BETA`` overrides the feedback
    parameter, a group repeats ``R`` times, and ``shrinkwrap=K`` updates the support every
    ``K`` iterations of the whole schedule. Examples: ``"HIO:400,ER:100;shrinkwrap=50"``;
    the hu2025 baseline ``"(HIO:9,ER:1)*80,ER:200;shrinkwrap=100"``.

    Parameters
    ----------
    text : str
        The schedule.
    shrinkwrap : int, optional
        Shrinkwrap period; overrides the ``shrinkwrap=`` option in ``text``.

    Raises
    ------
    ValueError
        Naming the token that does not parse.
    """
    compact = re.sub(r"\s+", "", text)
    body, *options = compact.split(";")
    period = 0
    for option in options:
        key, _, value = option.partition("=")
        if key.lower() != "shrinkwrap" or not value.isdigit():
            raise ValueError(f"schedule {text!r}: unknown option {option!r}; "
                             "expected shrinkwrap=K")
        period = int(value)
    if shrinkwrap is not None:
        period = int(shrinkwrap)
    if not body:
        raise ValueError(f"schedule {text!r} has no steps")
    return tuple(_parse_steps(body, period, text))


def as_schedule(schedule: str | Sequence[Step]) -> tuple[Step, ...]:
    """A schedule string (see :func:`parse_schedule`) or a sequence of steps, as a tuple."""
    if isinstance(schedule, str):
        return parse_schedule(schedule)
    steps = tuple(schedule)
    if not steps or not all(isinstance(s, Step) for s in steps):
        raise ValueError(f"schedule must be a string or a non-empty list of steps: {schedule}")
    return steps
