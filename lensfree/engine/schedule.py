"""Phasing schedules: which algorithm runs for how many iterations, and the algorithms.

A schedule is a string such as ``"HIO:400,ER:100;shrinkwrap=50"`` or
``"(HIO:9,ER:1)*80,ER:200"``, parsed once into a tuple of :class:`Step` objects (the
lensfree counterpart of PyNX's ``ER()**100 * HIO()**400``). The same steps serve every
back end: they are small, immutable and picklable. Each step applies its own algorithm
(:meth:`Step.iterate`) to the state of one run (:class:`PhasingState`), as PyNX's operators
apply themselves to a CDI object: a new algorithm is one subclass with a ``name``, which
also makes it known to :func:`parse_schedule`. :mod:`lensfree.engine.phasing` runs
schedules and re-exports these names.

An iteration starts with ``state.fourier(scale)``, which leaves ``w = scale rho_m`` with
``rho_m = F^-1 P_M F rho``, then updates ``rho`` in place from ``rho`` and ``w``. The
scalar (``-beta`` for HIO) rides on the modulus factor rather than costing a pass. With
positivity, and for RAAR, the general (slower, numpy) forms run; without positivity ER
and HIO update ``rho`` in one compiled pass (:mod:`lensfree.engine.kernels`) that
computes the same iterate.

References
----------
J. R. Fienup, Appl. Opt. 21, 2758 (1982) (ER, HIO). D. R. Luke, Inverse Problems 21, 37
(2005) (RAAR).
"""

from __future__ import annotations

import math
import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Protocol

import numpy as np

from . import kernels
from .projections import constrain

__all__ = ["ER", "HIO", "RAAR", "PhasingState", "Step", "as_schedule", "n_iterations",
           "parse_schedule"]

_ALGORITHMS: dict[str, type[Step]] = {}  # name (upper case) -> class, filled by subclassing


class PhasingState(Protocol):
    """What a step works on: the preallocated arrays of one run (made by
    :func:`lensfree.engine.phasing.run`); every array has the pattern's shape and is
    updated in place.

    Attributes
    ----------
    rho : complex64
        The iterate.
    w : complex64
        ``scale rho_m`` after :meth:`fourier`; free to overwrite afterwards.
    inside, outside : bool
        The support ``S`` and its complement.
    inside_f : float32
        ``S`` as 1.0 / 0.0.
    good : bool
        Scratch.
    scratch : complex64
        Scratch (allocated on first use).
    terms : (float32, float32)
        Scratch for the compiled passes' per-pixel error terms.
    beta : float
        The run's feedback, for steps that give none.
    positivity : {"none", "real", "real-nonneg"}
        The object constraint inside ``S``.
    """

    rho: np.ndarray
    w: np.ndarray
    inside: np.ndarray
    outside: np.ndarray
    inside_f: np.ndarray
    good: np.ndarray
    scratch: np.ndarray
    terms: tuple[np.ndarray, np.ndarray]
    beta: float
    positivity: str

    def fourier(self, scale: float, record: bool = True) -> tuple[float, float]:
        """``w <- scale rho_m``; returns ``(R_F of rho, ||w||^2)``, NaNs unless ``record``."""

    def outside_energy(self) -> float:
        """``||w outside S||^2`` (uses ``scratch``)."""


def _ratio(outside: float, total: float) -> float:
    """``E_S`` from the energy outside ``S`` and the total."""
    return math.sqrt(outside / total) if total > 0 else 0.0


def _general_fourier(state: PhasingState, record: bool) -> tuple[float, float]:
    """``w <- rho_m``; returns ``(R_F, E_S)`` (NaNs unless ``record``)."""
    r, total = state.fourier(1.0, record)
    return r, _ratio(state.outside_energy(), total) if record else math.nan


@dataclass(frozen=True)
class Step(ABC):
    """``iterations`` of one algorithm; shrinkwrap every ``shrinkwrap`` iterations
    (counted over the whole schedule; 0 = never)."""

    iterations: int
    shrinkwrap: int = 0
    name: ClassVar[str] = ""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.name:
            _ALGORITHMS[cls.name.upper()] = cls

    def __post_init__(self):
        if int(self.iterations) != self.iterations or self.iterations < 1:
            raise ValueError(f"{self.name}: iterations must be a positive integer")
        if self.shrinkwrap < 0:
            raise ValueError(f"{self.name}: shrinkwrap must be >= 0")
        beta = getattr(self, "beta", None)
        if beta is not None and not 0 < beta <= 1.5:
            raise ValueError(f"{self.name}: beta must be in (0, 1.5], got {beta}")

    @abstractmethod
    def iterate(self, state: PhasingState, record: bool = True) -> tuple[float, float]:
        """One iteration on ``state``, in place.

        Returns ``(R_F, E_S)``: ``R_F`` of the iterate entering the iteration and
        ``E_S = ||rho_m outside S|| / ||rho_m||``; NaNs unless ``record`` (the iterate
        does not depend on it).
        """


@dataclass(frozen=True)
class ER(Step):
    """Error reduction: ``rho <- P_S rho_m``."""

    name: ClassVar[str] = "ER"

    def iterate(self, state: PhasingState, record: bool = True) -> tuple[float, float]:
        if state.positivity != "none":
            r, e_s = _general_fourier(state, record)
            np.copyto(state.rho, state.w)
            constrain(state.rho, state.outside, state.positivity)
            return r, e_s
        r, total = state.fourier(1.0, record)  # w = rho_m
        terms = state.terms[0].reshape(-1)
        kernels.er_update(state.rho.reshape(-1), state.w.reshape(-1),
                          state.inside_f.reshape(-1), terms, record)
        return r, _ratio(float(terms.sum()), total) if record else math.nan


@dataclass(frozen=True)
class HIO(Step):
    """Hybrid input-output: ``rho <- rho_m`` where ``rho_m`` meets the constraints,
    ``rho - beta rho_m`` elsewhere; ``beta`` None takes :attr:`PhasingParams.beta`."""

    beta: float | None = None
    name: ClassVar[str] = "HIO"

    def iterate(self, state: PhasingState, record: bool = True) -> tuple[float, float]:
        beta = self.beta or state.beta
        if state.positivity != "none":
            return self._constrained(state, beta, record)
        r, total = state.fourier(-beta, record)  # w = -beta rho_m
        terms = state.terms[0].reshape(-1)
        kernels.hio_update(state.rho.reshape(-1), state.w.reshape(-1), state.inside.reshape(-1),
                           np.float32(-1.0 / beta), terms, record)
        return r, _ratio(float(terms.sum()), total) if record else math.nan

    @staticmethod
    def _constrained(state: PhasingState, beta: float, record: bool) -> tuple[float, float]:
        """Fienup's form with positivity: feedback wherever a constraint is violated."""
        r, e_s = _general_fourier(state, record)
        rho, w, psi, good = state.rho, state.w, state.scratch, state.good
        np.greater_equal(w.real, 0, out=good)
        np.logical_and(good, state.inside, out=good)
        np.multiply(w, -beta, out=psi)
        np.add(rho, psi, out=rho)
        if state.positivity == "real-nonneg":  # the imaginary part always takes feedback
            np.copyto(rho.real, w.real, where=good)
        else:
            np.copyto(rho, w, where=good)
        return r, e_s


@dataclass(frozen=True)
class RAAR(Step):
    """Relaxed averaged alternating reflections: ``rho <- beta P_C(2 rho_m - rho) +
    beta rho + (1 - 2 beta) rho_m``; ``beta`` None: :attr:`PhasingParams.beta`."""

    beta: float | None = None
    name: ClassVar[str] = "RAAR"

    def iterate(self, state: PhasingState, record: bool = True) -> tuple[float, float]:
        beta = self.beta or state.beta
        r, e_s = _general_fourier(state, record)
        rho, w, psi = state.rho, state.w, state.scratch
        np.multiply(w, 2, out=psi)
        np.subtract(psi, rho, out=psi)
        constrain(psi, state.outside, state.positivity)
        np.add(rho, psi, out=rho)
        np.multiply(rho, beta, out=rho)
        np.multiply(w, 1 - 2 * beta, out=psi)
        np.add(rho, psi, out=rho)
        return r, e_s


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
                if item.group(3) is not None and "beta" not in cls.__dataclass_fields__:
                    raise ValueError(f"{cls.name} takes no beta")
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


def n_iterations(schedule: str | Sequence[Step]) -> int:
    """Iterations of a whole schedule (a string or steps, as :func:`as_schedule`)."""
    return sum(step.iterations for step in as_schedule(schedule))
