"""Command-line flags and run-config keys generated from parameter dataclasses.

A command's options are one frozen dataclass whose fields are declared with
`lensfree.engine.params.param` (default, help, check); a field whose type is itself such a
dataclass is flattened into its parent's options. From that one tree come the argparse
flags (`add_arguments`), the TOML keys of ``lensfree run`` (`check_table`) and the built
parameter objects (`build`), so every option has one default, one help text and one check.

Field metadata the command line reads (all optional): ``flag`` (spelling when it is not
the field's name, without dashes), ``positional``, ``required``, ``action``
(``store_true``, ``store_false``, ``store_const`` with ``const``), ``nargs``, ``metavar``,
``choices``, ``parse`` (turns the text given into the field's value, may raise
LensfreeError), ``default_help`` (how to show a None default), ``group`` (argparse group
title of a nested dataclass), ``execution`` (the field takes the execution option of that
name, such as the run ``seed``, and is no option of its own). A command's top dataclass
may also declare ``option_groups = {"shrinkwrap_sigma": Together(...)}`` to take several
fields from one flag with ``nargs``.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from dataclasses import dataclass

from lensfree.errors import LensfreeError


@dataclass(frozen=True)
class Together:
    """Several fields set by one flag: ``--shrinkwrap-sigma START END``."""

    fields: tuple[str, ...]
    help: str
    metavar: tuple[str, ...]


@dataclass(frozen=True)
class Option:
    """One flag or positional argument, and the dataclass fields it sets."""

    name: str                  # dest and resolved-config key (the field's name)
    flag: str | None           # "--bin"; None for a positional argument
    fields: tuple              # the dataclass fields it sets (several for a `Together`)
    kind: type                 # int, float, str or bool
    default: object
    help: str
    metadata: dict

    @property
    def action(self) -> str | None:
        """How a flag without a value acts: a bool field defaulting to False is a switch."""
        if self.metadata.get("action"):
            return self.metadata["action"]
        return "store_true" if self.kind is bool and self.default is False else None

    @property
    def key(self) -> str:
        """The TOML key: the flag's spelling with underscores, else the name."""
        return self.flag.lstrip("-").replace("-", "_") if self.flag else self.name

    def spelled(self, value, toml: bool) -> str:
        """The option as the user wrote it, for error messages."""
        if toml:
            return f"{self.key}={value!r}" + (f" ({self.flag})" if self.flag else "")
        shown = " ".join(map(str, value)) if isinstance(value, (list, tuple)) else value
        return f"{self.flag} {shown}" if self.flag else f"{self.name} {shown}"


def _kind(hint) -> type:
    """The scalar type of an annotation such as ``float | None`` or ``tuple[float, ...]``."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return _kind(args[0])
    if origin in (tuple, list):
        return _kind(args[0]) if args else str
    return hint if hint in (int, float, str, bool) else str


def _walk(cls, title=None):
    """(field, annotation, owning dataclass, argparse group title) of every leaf field of a
    dataclass tree; a nested dataclass field's ``group`` metadata titles its leaves."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint):
            yield from _walk(hint, f.metadata.get("group", title))
        else:
            yield f, hint, cls, title


def options(cls) -> list[Option]:
    """Every option of the dataclass tree ``cls``, in declaration order."""
    groups = getattr(cls, "option_groups", {})
    grouped = {name: [] for name in groups}
    out = []
    for f, hint, _, _ in _walk(cls):
        group = next((g for g, t in groups.items() if f.name in t.fields), None)
        if group is not None:
            grouped[group].append((f, hint))
        elif not f.metadata.get("execution"):
            m = dict(f.metadata)
            flag = None if m.get("positional") else "--" + m.get("flag", f.name).replace("_", "-")
            out.append(Option(f.name, flag, (f,), _kind(hint), _default(f), m.get("help", ""),
                              m))
    for group, members in grouped.items():
        together = groups[group]
        m = {"nargs": len(members), "metavar": together.metavar}
        out.append(Option(group, "--" + group.replace("_", "-"), tuple(f for f, _ in members),
                          _kind(members[0][1]), tuple(_default(f) for f, _ in members),
                          together.help, m))
    return out


def _default(f):
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def add_arguments(parser: argparse.ArgumentParser, cls, *, no_defaults: bool = False) -> None:
    """Add the options of ``cls`` to ``parser``; ``no_defaults``: every default is None
    (for overrides that apply only when given)."""
    titles = {f.name: title for f, _, _, title in _walk(cls)}
    sections = {}
    for opt in options(cls):
        title = titles.get(opt.fields[0].name)
        target = parser
        if title:
            if title not in sections:
                sections[title] = parser.add_argument_group(title)
            target = sections[title]
        _add(target, opt, no_defaults)


def _add(parser, opt: Option, no_defaults: bool) -> None:
    m = opt.metadata
    default = None if no_defaults else opt.default
    if opt.flag is None:
        parser.add_argument(opt.name, help=opt.help)
        return
    action = opt.action
    if action in ("store_true", "store_false"):
        parser.add_argument(opt.flag, dest=opt.name, help=opt.help,
                            action="store_const", const=action == "store_true",
                            default=default)
        return
    if action == "store_const":
        parser.add_argument(opt.flag, dest=opt.name, help=opt.help, action="store_const",
                            const=m["const"], default=default)
        return
    shown = m.get("default_help")
    if shown is None:
        shown = " ".join(map(str, opt.default)) if isinstance(opt.default, tuple) else opt.default
    kind = str if m.get("parse") else opt.kind
    parser.add_argument(
        opt.flag, dest=opt.name, type=kind, default=default, nargs=m.get("nargs"),
        metavar=m.get("metavar"), choices=m.get("choices"), required=bool(m.get("required")),
        help=f"{opt.help} [{shown}]".replace("%", "%%") if not m.get("required") else opt.help)


def values_of(namespace: argparse.Namespace, cls) -> dict:
    """The option values of ``cls`` in a parsed namespace, by option name."""
    return {o.name: getattr(namespace, o.name) for o in options(cls)
            if hasattr(namespace, o.name)}


def _type_error(opt: Option, value) -> str | None:
    m = opt.metadata
    if opt.action:
        return None if isinstance(value, bool) else f"expected true or false, got {value!r}"
    nargs = m.get("nargs")
    if nargs is not None:
        if not isinstance(value, list):
            return f"expected a list of {nargs}, got {value!r}"
        if isinstance(nargs, int) and len(value) != nargs:
            return f"expected {nargs} values, got {len(value)}"
    kind = str if m.get("parse") else opt.kind
    for v in value if nargs is not None else [value]:
        if isinstance(v, bool) or not (
            (kind is str and isinstance(v, str)) or (kind is int and isinstance(v, int))
            or (kind is float and isinstance(v, (int, float)))
        ):
            return f"expected {kind.__name__}, got {type(v).__name__} {v!r}"
        if m.get("choices") is not None and v not in m["choices"]:
            return f"{v!r} is not one of {', '.join(map(str, m['choices']))}"
    return None


def check_table(cls, table: dict) -> tuple[dict, list[str]]:
    """TOML ``table`` (keys spelled as flags with underscores) -> (values by option name,
    problems). Unknown keys and wrong types are problems; values are not built yet."""
    by_key = {o.key: o for o in options(cls)}
    values, problems = {}, []
    for key, value in table.items():
        opt = by_key.get(key)
        if opt is None:
            problems.append(f"unknown key '{key}'")
            continue
        why = _type_error(opt, value)
        if why:
            problems.append(f"{key}: {why}")
            continue
        m = opt.metadata
        if opt.action == "store_false":
            value = not value
        elif opt.action == "store_const":
            value = m["const"] if value else opt.default
        values[opt.name] = value
    return values, problems


def missing(cls, values: dict) -> list[str]:
    """Required options (positional or ``required``) without a value."""
    return [o.key for o in options(cls)
            if (o.flag is None or o.metadata.get("required")) and values.get(o.name) is None]


def build(cls, values: dict, *, toml: bool = False):
    """The dataclass tree ``cls`` from option values by name; every impossible value
    becomes a LensfreeError naming the option as the user wrote it (flag or TOML key)."""
    flat, problems = {}, []
    for opt in options(cls):
        if opt.name not in values or values[opt.name] is None and opt.flag is None:
            continue
        value = values[opt.name]
        parse = opt.metadata.get("parse")
        try:
            if parse is not None and isinstance(value, str):
                value = parse(value)
        except (LensfreeError, ValueError) as exc:
            problems.append(f"{opt.spelled(values[opt.name], toml)}: {exc}")
            continue
        parts = value if len(opt.fields) > 1 else [value]
        for f, v in zip(opt.fields, parts):
            flat[f.name] = tuple(v) if isinstance(v, list) else v
            check = f.metadata.get("check")
            why = check(flat[f.name]) if check is not None else None
            if why:
                problems.append(f"{opt.spelled(values[opt.name], toml)}: {why}")
                break
    if problems:
        raise LensfreeError("; ".join(problems))
    for f, _, _, _ in _walk(cls):
        if f.metadata.get("execution") and f.metadata["execution"] in values:
            flat[f.name] = values[f.metadata["execution"]]
    try:
        return _construct(cls, flat)
    except (ValueError, TypeError) as exc:
        raise LensfreeError(str(exc)) from None


def _construct(cls, flat: dict):
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            kwargs[f.name] = _construct(hints[f.name], flat)
        elif f.name in flat:
            kwargs[f.name] = flat[f.name]
    return cls(**kwargs)


def flat_values(obj) -> dict:
    """Option values of a built dataclass tree, by option name (the resolved config)."""
    out = _leaves(obj)
    for group, together in getattr(obj, "option_groups", {}).items():
        out[group] = [out.pop(m) for m in together.fields]
    return out


def _leaves(obj) -> dict:
    out = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            out.update(_leaves(value))
        elif not f.metadata.get("execution"):
            out[f.name] = list(value) if isinstance(value, tuple) else value
    return out
