"""The ``lensfree`` command line: the entry point. Only the command line prints.

The sub-commands, their flags, defaults and help come from the command registry
(`lensfree.launch.registry`) and each command's options dataclass
(`lensfree.launch.options`); ``run`` and ``batch`` drive the others.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from contextlib import ExitStack

from lensfree.errors import LensfreeError
from lensfree.io import sidecar
from lensfree.launch import backends, options
from lensfree.launch.console import ServedCluster, report
from lensfree.launch.stage import Execution

log = logging.getLogger("lensfree")


def build_parser() -> argparse.ArgumentParser:
    from lensfree.launch.registry import COMMANDS

    parser = argparse.ArgumentParser(
        prog="lensfree",
        description="Distributed reconstruction for lensless coherent imaging "
                    "(ensemble CDI, GHIO phase retrieval, ptychography).")
    parser.add_argument("--version", action="version", version=_version())
    parser.add_argument("--debug", action="store_true", help="full tracebacks on errors")
    sub = parser.add_subparsers(dest="command_name", required=True, metavar="COMMAND")
    nested = {}
    for name, command in COMMANDS.items():
        head, _, tail = name.partition(".")
        if tail:
            if head not in nested:
                group = sub.add_parser(head, help=f"{head} commands")
                nested[head] = group.add_subparsers(dest=f"{head}_kind", required=True,
                                                    metavar="KIND")
            p = nested[head].add_parser(tail, help=command.help)
        else:
            p = sub.add_parser(name, help=command.help)
        options.add_arguments(p, command.Options)
        p.set_defaults(command=command)

    p = sub.add_parser("run", help="stages and their parameters from one TOML file")
    p.add_argument("config", help="TOML file: [execution] and one table per stage")
    options.add_arguments(p.add_argument_group("overrides of the file's [execution] table"),
                          Execution, no_defaults=True)
    p.add_argument("--var", action="append", default=[], metavar="NAME=VALUE",
                   help="fill {NAME} placeholders in the file's strings")
    p.set_defaults(handler=_cmd_run)

    p = sub.add_parser("batch", help="many datasets from a manifest, resumably")
    p.add_argument("manifest", help="TOML ([[dataset]] tables) or CSV (name,input,output,config)")
    p.add_argument("--config", help="config for rows that name none")
    p.add_argument("--jobs", type=int, default=1, help="datasets at once [1]")
    g = p.add_argument_group("passed on to every dataset's run")
    g.add_argument("--backend", choices=tuple(backends.BACKENDS), default=None)
    g.add_argument("--workers", type=int, default=None)
    g.add_argument("--scheduler", default=None)
    p.set_defaults(handler=_cmd_batch)
    return parser


def _version() -> str:
    import lensfree

    return f"lensfree {lensfree.__version__}"


def _options(command, args):
    """The command's options built from the parsed flags; bad values are one-line errors
    naming the command, its input and the flag."""
    cls = command.Options
    try:
        return options.build(cls, options.values_of(args, cls))
    except LensfreeError as exc:
        first = next((o.name for o in options.options(cls) if o.flag is None), None)
        where = f" {getattr(args, first)}" if first else ""
        raise LensfreeError(f"{command.name.replace('.', ' ')}{where}: {exc}") from None


def _cmd_run(args) -> int:
    from lensfree.io import runstore
    from lensfree.launch import config
    from lensfree.launch.registry import COMMANDS

    overrides = {k: getattr(args, k) for k in config.EXECUTION}
    bad = [v for v in args.var if "=" not in v]
    if bad:
        raise LensfreeError(f"--var {bad[0]}: expected NAME=VALUE")
    variables = dict(v.split("=", 1) for v in args.var)
    doc = config.substitute(config.load(args.config), variables, args.config)
    planned = config.plan(args.config, doc, COMMANDS, overrides)
    resolved = {command.name: flat for command, _, flat in planned}
    for command, opts, _ in planned:  # every run store keeps the config that made it
        path = command.run_path(opts)
        if path and _rank(opts) == 0:  # one writer: the root (MPI ranks all read the config)
            runstore.open_run(path).attrs["config"] = runstore.jsonable(
                {"file": os.path.abspath(args.config), "stages": resolved})
    shared = {opts.execution for _, opts, _ in planned if hasattr(opts, "execution")}
    with ExitStack() as stack:
        backend = None
        if len(shared) == 1:  # one cluster for every stage, not one each
            from lensfree.launch.console import open_backend

            backend = stack.enter_context(open_backend(shared.pop()))
        for command, opts, _ in planned:
            takes_backend = hasattr(opts, "execution")
            if _rank(opts) == 0:
                report([f"== {command.name} =="])
            code = (command.handler(opts, backend) if takes_backend and backend is not None
                    else command.handler(opts))
            if code:
                return code
    return 0


def _rank(opts) -> int:
    """This process's rank under the back end of a command's options (0 without one)."""
    return backends.rank_of(opts.execution.backend if hasattr(opts, "execution") else None)


def _cmd_batch(args) -> int:
    from lensfree.launch.batch import read_manifest, run_batch

    datasets = read_manifest(args.manifest, args.config)
    with ExitStack() as stack:
        if args.backend == "dask" and args.scheduler is None:
            # one cluster for every dataset, not one per dataset and stage
            cluster = stack.enter_context(backends.make_backend(
                "dask", workers=args.workers, progress=False))
            args.scheduler = cluster.client.scheduler.address
            report([f"backend dask: {cluster.n_workers} worker(s) for every dataset, "
                    f"dashboard {cluster.dashboard_link}"])
        overrides = ["--quiet"]
        for flag in ("backend", "workers", "scheduler"):
            if getattr(args, flag) is not None:
                overrides += [f"--{flag}", str(getattr(args, flag))]
        results = run_batch(datasets, overrides, jobs=args.jobs,
                            report=lambda line: report([line]))
    width = max(len(ds.name) for ds, _, _ in results)
    lines = [f"\n{'dataset':{width}s}  status   reason"]
    lines += [f"{ds.name:{width}s}  {status:7s}  {reason}" for ds, status, reason in results]
    counts = {s: sum(r[1] == s for r in results) for s in ("done", "skipped", "failed")}
    lines.append(f"{counts['done']} done, {counts['skipped']} skipped, {counts['failed']} failed")
    report(lines)
    return 1 if counts["failed"] else 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="lensfree: %(levelname)s: %(message)s")
    for handler in logging.getLogger().handlers:  # the terminal gets warnings and errors only
        handler.setLevel(logging.WARNING)
    if args.debug:
        os.environ["LENSFREE_DEBUG"] = "1"
    command = getattr(args, "command", None)
    backend_name = getattr(args, "backend", None)
    store_log = None
    with ExitStack() as stack:
        try:
            _refuse_mpirun_without_mpi(backend_name)
            if command is None:
                return args.handler(args)
            opts = _options(command, args)
            run_path = command.run_path(opts)
            if run_path and backends.rank_of(backend_name) == 0:
                store_log = stack.enter_context(sidecar.store_log(run_path))
            log.info("lensfree %s", " ".join(sys.argv[1:] if argv is None else argv))
            code = command.handler(opts)
            log.info("finished with exit code %d", code)
            return code
        except ServedCluster:
            return 0  # a scheduler's or worker's rank of a Dask cluster inside mpirun
        except KeyboardInterrupt:
            code, message = 130, "interrupted; rerun the same command to resume"
        except (LensfreeError, FileNotFoundError) as exc:
            code, message = 2, str(exc)
        except Exception as exc:  # an unexpected failure: say it plainly, keep the traceback
            if os.environ.get("LENSFREE_DEBUG"):
                raise
            code = 1
            message = f"{exc.__class__.__name__}: {exc} (rerun with --debug for the traceback)"
        if store_log is not None:  # into the store's log; the terminal gets the line below
            store_log.emit(logging.makeLogRecord({"msg": message, "levelname": "ERROR",
                                                  "levelno": logging.ERROR,
                                                  "name": "lensfree"}))
    # inside mpirun the job is MPI's even where no --backend flag says so (`lensfree run`
    # takes its back end from the config)
    job = backend_name or ("mpi" if backends.mpi_world_size() > 1 else None)
    rank = backends.rank_of(job)
    prefix = f"lensfree: error (rank {rank}): " if rank else "lensfree: error: "
    print(prefix + message, file=sys.stderr, flush=True)
    backends.abort_job(job, code)  # one failing MPI rank must not leave others hanging
    return code


def _refuse_mpirun_without_mpi(backend_name: str | None) -> None:
    """Under mpirun, a command without ``--backend mpi`` (or dask) would run N colliding
    copies of itself."""
    size = backends.mpi_world_size()
    if size > 1 and backend_name == "local":
        raise LensfreeError(f"started under mpirun/mpiexec with {size} ranks but with "
                            "--backend local: add --backend mpi (or --backend dask)")
