"""``lensfree run CONFIG.toml``: stages and all their parameters in one TOML file.

Each table names a command and holds its options, spelled as on the command line with
underscores (``background_fraction = 0.02`` for ``--background-fraction 0.02``);
positional arguments by their name (``frames``, ``run``). Strings may hold ``{NAME}``
placeholders, filled from ``--var NAME=VALUE`` (batch manifests use this).
``[execution]`` holds what every stage shares (``backend``, ``workers``, ``scheduler``,
``dashboard_address``, ``seed``, ``quiet``). Stages run in the order of their tables; a
stage that reads a run store and does not name one takes the previous stage's. The whole
file is checked before any work starts, and every problem is reported at once, each
naming its table and key.
"""

from __future__ import annotations

import argparse
import os
import tomllib

from lensfree.errors import LensfreeError

EXECUTION = ("backend", "workers", "scheduler", "dashboard_address", "seed", "quiet")
#: keys that name the run store a stage reads or writes, in order of preference
RUN_KEYS = ("run", "out")


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


def _subparsers(parser: argparse.ArgumentParser) -> dict:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices
    return {}


def _stages(config: dict, commands: dict, prefix: str = ""):
    """(name, subparser, table) for every stage table, descending into nested commands
    such as ``[fit.core-shell]``."""
    for name, table in config.items():
        if not prefix and name == "execution":
            continue
        full = f"{prefix}{name}"
        if name not in commands or not isinstance(table, dict):
            yield full, None, table
            continue
        sub = commands[name]
        nested = _subparsers(sub)
        if nested:
            yield from _stages(table, nested, prefix=f"{full}.")
        else:
            yield full, sub, table


def _check_value(action: argparse.Action, value) -> str | None:
    """Why ``value`` does not fit ``action``, or None."""
    if isinstance(action, argparse._StoreTrueAction):
        return None if isinstance(value, bool) else f"expected true or false, got {value!r}"
    kind = action.type or str
    values = value if action.nargs not in (None, "?") else [value]
    if action.nargs not in (None, "?"):
        if not isinstance(value, list):
            return f"expected a list of {action.nargs}, got {value!r}"
        if isinstance(action.nargs, int) and len(value) != action.nargs:
            return f"expected {action.nargs} values, got {len(value)}"
    for v in values:
        if isinstance(v, bool) or not (
            (kind is str and isinstance(v, str))
            or (kind is int and isinstance(v, int))
            or (kind is float and isinstance(v, (int, float)))
        ):
            name = getattr(kind, "__name__", str(kind))
            return f"expected {name}, got {type(v).__name__} {v!r}"
        if action.choices is not None and v not in action.choices:
            return f"{v!r} is not one of {', '.join(map(str, action.choices))}"
    return None


def plan(path: str, config: dict, parser: argparse.ArgumentParser, overrides: dict,
         checks: dict) -> list[tuple[str, argparse.Namespace]]:
    """Turn a config into (stage, arguments) pairs, or raise one error listing every problem.

    ``overrides``: execution options given on the command line (they win over the file).
    ``checks``: stage name -> function that builds and validates the stage's parameters
    from its arguments (raising `LensfreeError`), so impossible values are caught up front.
    """
    problems = []
    execution = dict(config.get("execution", {}))
    for key in execution:
        if key not in EXECUTION:
            problems.append(f"[execution] unknown key '{key}'")
    execution.update({k: v for k, v in overrides.items() if v is not None})
    commands = _subparsers(parser)
    planned, previous_run = [], None
    stages = list(_stages(config, commands))
    if not stages:
        problems.append("no stage tables (e.g. [sum], [phase])")
    for name, sub, table in stages:
        if sub is None:
            problems.append(f"[{name}] is not a lensfree command")
            continue
        actions = {}  # by the flag's spelling with underscores ("bin"), else by dest
        for a in sub._actions:
            if a.dest in ("help", "handler"):
                continue
            names = [o.lstrip("-").replace("-", "_") for o in a.option_strings if
                     o.startswith("--")] or [a.dest]
            actions[names[-1]] = a
        values = {k: v for k, v in execution.items() if k in actions and k not in table}
        before = len(problems)
        for key, value in table.items():
            if key not in actions or key in ("debug",):
                problems.append(f"[{name}] unknown key '{key}'")
                continue
            why = _check_value(actions[key], value)
            if why:
                problems.append(f"[{name}] {key}: {why}")
            values[key] = value
        if "run" in actions and "run" not in values and previous_run:
            values["run"] = previous_run
        previous_run = next((values[k] for k in RUN_KEYS if k in values), previous_run)
        missing = [d for d, a in actions.items()
                   if (a.required or not a.option_strings) and d not in values]
        if missing:
            problems.append(f"[{name}] missing {', '.join(repr(m) for m in missing)}")
        if len(problems) > before:
            continue
        argv = []
        for dest, value in values.items():
            action = actions[dest]
            if not action.option_strings:
                continue
            flag = action.option_strings[-1]
            if isinstance(action, argparse._StoreTrueAction):
                argv += [flag] if value else []
            else:
                argv += [flag, *map(str, value if isinstance(value, list) else [value])]
        argv += [str(values[d]) for d, a in actions.items() if not a.option_strings]
        try:
            args = sub.parse_args(argv)
        except SystemExit:
            problems.append(f"[{name}] options rejected: {' '.join(argv)}")
            continue
        args.debug = False
        check = checks.get(name)
        if check is not None:
            try:
                check(args)
            except LensfreeError as exc:
                problems.append(f"[{name}] {str(exc).removeprefix(name + ': ')}")
        planned.append((name, args))
    if problems:
        raise LensfreeError(f"{path}: " + "; ".join(problems))
    return planned


def effective(planned: list[tuple[str, argparse.Namespace]]) -> dict:
    """The resolved configuration, as it will run: every option of every stage."""
    out = {}
    for name, args in planned:
        out[name] = {k: v for k, v in vars(args).items()
                     if k not in ("handler", "debug") and not callable(v)}
    return out
