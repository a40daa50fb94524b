"""``lensfree run CONFIG.toml``: stages and all their parameters in one TOML file.

Each table names a command and holds its options, spelled as on the command line with
underscores (``background_fraction = 0.02`` for ``--background-fraction 0.02``);
positional arguments by their name (``frames``, ``run``). Strings may hold ``{NAME}``
placeholders, filled from ``--var NAME=VALUE`` (batch manifests use this).
``[execution]`` holds what every stage shares (`lensfree.launch.stage.Execution`). Stages
run in the order of their tables; a stage that reads a run store and does not name one
takes the previous stage's. The whole file is checked before any work starts, and every
problem is reported at once, each naming its table and key. The keys, types, defaults and
checks all come from the commands' option dataclasses (`lensfree.launch.options`).
"""

from __future__ import annotations

import dataclasses
import os
import tomllib

from lensfree.errors import LensfreeError
from lensfree.launch import options
from lensfree.launch.stage import Execution

EXECUTION = tuple(f.name for f in dataclasses.fields(Execution))


def load(path: str) -> dict:
    """The TOML file as a dict (tables keep their order)."""
    if not os.path.isfile(path):
        raise LensfreeError(f"{path}: no such config file")
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise LensfreeError(f"{path}: not valid TOML ({exc})") from None


def substitute(doc, variables: dict, path: str = "config"):
    """``doc`` with ``{name}`` placeholders in its strings filled from ``variables``."""
    if isinstance(doc, str):
        try:
            return doc.format(**variables)
        except (KeyError, IndexError, ValueError) as exc:
            raise LensfreeError(f"{path}: placeholder {exc} in {doc!r} has no value "
                                "(give it with --var NAME=VALUE)") from None
    if isinstance(doc, dict):
        return {k: substitute(v, variables, path) for k, v in doc.items()}
    if isinstance(doc, list):
        return [substitute(v, variables, path) for v in doc]
    return doc


def tables(doc: dict, commands: dict, prefix: str = ""):
    """(name, command or None, table) of every stage table, descending into nested names
    such as ``[fit.core-shell]``."""
    for name, table in doc.items():
        if not prefix and name == "execution":
            continue
        full = f"{prefix}{name}"
        if full in commands or not isinstance(table, dict):
            yield full, commands.get(full), table
        elif any(c.startswith(full + ".") for c in commands):
            yield from tables(table, commands, prefix=f"{full}.")
        else:
            yield full, None, table


def plan(path: str, doc: dict, commands: dict, overrides: dict) -> list[tuple]:
    """``[(command, options, resolved values)]`` for every table, or one LensfreeError
    listing every problem. ``overrides``: execution options given on the command line
    (they win over the file's ``[execution]``; a table's own key wins over both)."""
    problems = []
    execution = dict(doc.get("execution", {}))
    problems += [f"[execution] unknown key '{k}'" for k in execution if k not in EXECUTION]
    execution.update({k: v for k, v in overrides.items() if v is not None})
    planned, previous_run = [], None
    found = list(tables(doc, commands))
    if not found:
        problems.append("no stage tables (e.g. [sum], [phase])")
    for name, command, table in found:
        if command is None:
            problems.append(f"[{name}] is not a lensfree command")
            continue
        cls = command.Options
        values, bad = options.check_table(cls, table)
        problems += [f"[{name}] {p}" for p in bad]
        names = {o.name for o in options.options(cls)}
        for key, value in execution.items():
            if key in names and key not in values:
                values[key] = value
        if "run" in names and values.get("run") is None and previous_run:
            values["run"] = previous_run
        previous_run = values.get("run") or values.get("out") or previous_run
        absent = options.missing(cls, values)
        if absent:
            problems.append(f"[{name}] missing {', '.join(repr(m) for m in absent)}")
        if bad or absent:
            continue
        try:
            opts = options.build(cls, values, toml=True)
        except LensfreeError as exc:
            problems.append(f"[{name}] {exc}")
            continue
        planned.append((command, opts, options.flat_values(opts)))
    if problems:
        raise LensfreeError(f"{path}: " + "; ".join(problems))
    return planned
