"""The one shape of every command and stage, and the one driver that runs a stage.

A `Command` is a name, a help line, an options dataclass (the single source of its flags,
TOML keys, defaults, help and checks: `lensfree.launch.options`) and a handler. A `Stage`
is a command that computes one run-store group on a back end. It declares

- ``group``: the group it writes, and ``resumable``: whether a rerun continues it;
- `open`: read and check its input (on every process), `params` and `inputs`: what the
  group records as ``parameters`` and ``input``;
- its work: either `tasks`, a module-level per-task function ``work(task, shared)`` with
  `shared`, `fold` and `write` (the default `execute`), or an own `execute` that calls
  ``ctx.map`` / ``ctx.reduce`` as often as it needs (two passes, generations, iterations);
- `summary`: the lines the command line prints.

`run_stage` alone owns the group's lifecycle: it opens the run store, resumes a group
whose parameters and input match (or returns a complete one untouched), starts a fresh
group otherwise (`runstore.begin_stage`, a new ``run_id``), broadcasts that decision to
every rank, times the stage (``timing_s``), logs, writes ``complete: true`` last and returns
the group's attrs on every process.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from typing import ClassVar

from lensfree.engine.params import at_least, check_fields, optional, param, positive
from lensfree.errors import LensfreeError
from lensfree.io import runstore, sidecar
from lensfree.launch.backends import BACKENDS, Backend
from lensfree.launch.timing import Clock

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Execution:
    """Where and how a command runs (the ``[execution]`` table of a run config)."""

    backend: str = param("local", "where work runs: this process, a Dask cluster, or MPI "
                         "ranks (under mpirun -n N)", choices=tuple(BACKENDS))
    workers: int | None = param(None, "local: threads; dask: LocalCluster worker processes",
                                check=optional(at_least(1)), default_help="1; dask: cores")
    scheduler: str | None = param(None, "dask: address of an existing scheduler to join "
                                  "instead", default_help="none")
    dashboard_address: str = param("127.0.0.1:8787", "dask: where the LocalCluster dashboard "
                                   "listens (this machine only; name an interface, e.g. "
                                   ":8787, to open it to the network)")
    security: str | None = param(None, "dask: folder with ca.pem, cert.pem and key.pem to join "
                                 "a --scheduler over TLS", default_help="the Dask config's")
    seed: int = param(0, "run seed")
    quiet: bool = param(False, "no progress bars", action="store_true")

    def __post_init__(self):
        check_fields(self)
        if self.security and not self.scheduler:
            raise ValueError(f"--security {self.security} goes with --scheduler")
        if self.scheduler and self.backend != "dask":
            raise ValueError(f"--scheduler {self.scheduler} needs --backend dask "
                             f"(not {self.backend})")


@dataclass(frozen=True)
class GeometryOptions:
    """Far-field geometry given on the command line (overrides a store's attrs)."""

    wavelength: float | None = param(None, "wavelength in metres", check=optional(positive),
                                     default_help="the store's")
    distance: float | None = param(None, "sample-detector distance in metres",
                                   check=optional(positive), default_help="the store's")
    pixel_size: float | None = param(None, "detector pixel size in metres",
                                     check=optional(positive), default_help="the store's")
    pixels: bool = param(False, "accept a store without geometry and work in pixels",
                         action="store_true")

    def geometry(self):
        """The `Geometry` given, or None when none of the three is."""
        from lensfree.io.frames import Geometry

        given = [self.wavelength, self.distance, self.pixel_size]
        if all(v is None for v in given):
            return None
        if any(v is None for v in given):
            raise LensfreeError("give all of --wavelength, --distance and --pixel-size, or none")
        return Geometry(*given)


class Command:
    """A ``lensfree`` sub-command: ``name`` (``"fit.core-shell"`` for ``lensfree fit
    core-shell``), ``help``, its ``Options`` dataclass and a `handler`."""

    name: ClassVar[str]
    help: ClassVar[str]
    Options: ClassVar[type]

    def run_path(self, opts) -> str | None:
        """The run store this command writes into (its log goes there), if any."""
        return getattr(opts, "run", None)

    def handler(self, opts, backend=None) -> int:
        """Run the command; ``backend``: one already open (a run config's stages share it)."""
        raise NotImplementedError


@dataclass
class Context:
    """What a stage's `Stage.execute` works with: the back end, the run store, the group
    (on the root; None elsewhere), whether this run resumes, and a clock for ``timing_s``."""

    backend: Backend
    run_path: str
    group: object
    run_id: str
    resumed: bool
    clock: Clock

    @property
    def is_root(self) -> bool:
        return self.backend.is_root

    def map(self, fn, tasks, shared=None, *, names=None, desc=""):
        return self.backend.map(fn, tasks, shared, names=names, desc=desc)

    def reduce(self, fn, tasks, shared=None, *, combine, names=None, desc="", everywhere=True):
        return self.backend.reduce(fn, tasks, shared, combine=combine, names=names, desc=desc,
                                   everywhere=everywhere)

    def bcast(self, obj):
        return self.backend.bcast(obj)


class Stage(Command):
    """A command that computes the run-store group ``group`` on a back end."""

    group: ClassVar[str]
    resumable: ClassVar[bool] = False
    #: run-store groups it reads: recorded with their run_id, so a rewrite makes it stale
    reads: ClassVar[tuple[str, ...]] = ()

    def open(self, opts):
        """Read and check the stage's input; runs on every process, before any write."""
        raise NotImplementedError

    def params(self, opts):
        """The parameter dataclass recorded as the group's ``parameters``."""
        return opts.params

    def inputs(self, opts, inp) -> dict:
        """What the group records as its ``input`` (a rerun resumes only on the same)."""
        return {"run": self.run_path(opts)}

    def begin(self, group, opts, inp) -> None:
        """Create the arrays of a fresh group (root only); most stages need nothing."""

    def execute(self, ctx: Context, opts, inp) -> dict | None:
        """The stage's work; returns the summary attrs on the root. The default: one map of
        `work` over `tasks`, results folded by `fold` and written by `write` on the root."""
        tasks = self.tasks(opts, inp)
        results = ctx.map(self.work, tasks, self.shared(opts, inp), names=self.names(tasks),
                          desc=self.name)
        if not ctx.is_root:
            return None
        return self.write(ctx, opts, inp, self.fold(results))

    def tasks(self, opts, inp) -> list:
        raise NotImplementedError

    def names(self, tasks) -> list[str] | None:
        """Task names shown on the Dask task stream."""
        return None

    def shared(self, opts, inp):
        """What every task needs besides itself, sent to each worker once."""
        return None

    work = None  # a module-level function ``work(task, shared)`` (picklable for Dask)

    def fold(self, results):
        return results

    def write(self, ctx: Context, opts, inp, folded) -> dict:
        raise NotImplementedError

    def summary(self, attrs: dict, opts, seconds: float) -> list[str]:
        return [f"{self.run_path(opts)}: {self.group}/ written in {seconds:.1f} s"]

    def handler(self, opts, backend=None) -> int:
        from lensfree.launch.console import open_backend, report

        t0 = time.perf_counter()
        inp = self.open(opts)  # bad input is refused before any cluster starts
        with open_backend(opts.execution, backend) as backend:
            attrs = run_stage(self, backend, opts, inp=inp)
            if backend.is_root:
                lines = self.summary(attrs, opts, time.perf_counter() - t0)
                if attrs.get("resumed_from"):
                    lines.insert(1, f"  resumed the interrupted run of {attrs['resumed_from']}")
                report(lines)
        return 0


def run_stage(stage: Stage, backend: Backend, opts, *, inp=None) -> dict:
    """Run (or resume) ``stage`` with options ``opts`` on ``backend``; every process returns
    the group's attrs once the root has completed it. ``inp``: the input already opened by
    a library caller (else `Stage.open` reads it, refusing unfinished or stale groups)."""
    path = stage.run_path(opts)
    if not backend.is_root:
        return _run(stage, backend, opts, inp, path)
    with sidecar.lock(path), sidecar.store_log(path):
        try:
            return _run(stage, backend, opts, inp, path)
        except BaseException as exc:
            # INFO: the log file gets it; the terminal gets the command line's one line
            log.info("%s: %s/ stopped: %s", path, stage.group,
                     "interrupted" if isinstance(exc, KeyboardInterrupt) else exc)
            raise


def _run(stage: Stage, backend: Backend, opts, inp, path: str) -> dict:
    t_start = time.perf_counter()
    inp = stage.open(opts) if inp is None else inp
    record = runstore.jsonable(dataclasses.asdict(stage.params(opts)))
    inputs = runstore.jsonable(stage.inputs(opts, inp))
    decision = group = None
    if backend.is_root:
        run = runstore.open_run(path)
        read = runstore.read_record(run, stage.reads)
        group = run[stage.group] if stage.group in run else None
        same = (stage.resumable and group is not None
                and group.attrs.get("parameters") == record and group.attrs.get("input") == inputs
                and (group.attrs.get("read") or {}) == read)
        if same and group.attrs.get("complete"):
            decision = ("complete", dict(group.attrs))
        elif same:
            decision = ("resume", group.attrs.get("run_id"))
            log.info("%s: resuming the unfinished %s/ started %s", path, stage.group,
                     group.attrs.get("started"))
        else:
            group = runstore.begin_stage(run, stage.group, params=record, inputs=inputs,
                                         read=read, command=stage.name)
            stage.begin(group, opts, inp)
            decision = ("new", group.attrs["run_id"])
            log.info("%s: %s/ started", path, stage.group)
    kind, value = backend.bcast(decision)
    if kind == "complete":
        log.info("%s: %s/ already complete, nothing recomputed", path, stage.group)
        return {**value, "resumed_complete": True}
    ctx = Context(backend, path, group, value, kind == "resume", Clock())
    attrs = stage.execute(ctx, opts, inp)
    final = None
    if backend.is_root:
        if ctx.resumed:
            attrs = {**attrs, "resumed_from": f"{stage.group}/ started {group.attrs['started']}"}
        ctx.clock.merge({"wall": time.perf_counter() - t_start})
        runstore.finish_stage(group, **attrs, timing_s=ctx.clock.as_attrs())
        final = dict(group.attrs)
        log.info("%s: %s/ complete in %.1f s", path, stage.group, ctx.clock.seconds["wall"])
    return backend.bcast(final)  # no rank returns before the group is complete
