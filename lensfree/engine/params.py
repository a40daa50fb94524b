"""Parameters that document and check themselves.

Every parameter dataclass of lensfree declares its fields with `param`: the default, a
one-line help text and, where a value can be impossible, a check. `check_fields` runs the
checks (each parameter dataclass calls it from ``__post_init__``); the command line and the
run configs read the same metadata, so a parameter has one default, one help text and one
check wherever it is given.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

#: a check returns why a value is impossible, or None when it is fine
Check = Callable[[object], "str | None"]


def param(default=dataclasses.MISSING, help: str = "", *, check: Check | None = None,
          default_factory=dataclasses.MISSING, **extra):
    """A dataclass field with its help text and check in the metadata.

    ``extra`` holds hints for the command line (``flag``, ``nargs``, ``metavar``,
    ``choices``, ``parse``, ``default_help``); the numerics never read them.
    """
    return dataclasses.field(default=default, default_factory=default_factory,
                             metadata={"help": help, "check": check, **extra})


def check_fields(obj) -> None:
    """Raise ValueError ``"name=value: reason"`` for the first field that fails its check."""
    for f in dataclasses.fields(obj):
        check = f.metadata.get("check")
        value = getattr(obj, f.name)
        why = check(value) if check is not None else None
        if why:
            raise ValueError(f"{f.name}={value!r}: {why}")


def at_least(lo) -> Check:
    return lambda v: None if v >= lo else f"must be at least {lo}"


def positive(v) -> str | None:
    return None if v > 0 else "must be positive"


def non_negative(v) -> str | None:
    return None if v >= 0 else "must be >= 0"


def within(lo, hi, *, closed: str = "") -> Check:
    """``lo < v < hi``; ``closed`` says which ends belong: "", "lo", "hi" or "both"."""
    left = closed in ("lo", "both")
    right = closed in ("hi", "both")

    def check(v):
        ok = (v >= lo if left else v > lo) and (v <= hi if right else v < hi)
        return None if ok else f"must be in {'[' if left else '('}{lo}, {hi}{']' if right else ')'}"
    return check


def one_of(*choices) -> Check:
    return lambda v: None if v in choices else f"choose one of {', '.join(map(str, choices))}"


def optional(check: Check) -> Check:
    """``check`` for a value that may also be None (then it means "choose for me")."""
    return lambda v: None if v is None else check(v)
