"""``lensfree batch MANIFEST``: reprocess many datasets, resumably.

A manifest lists datasets, one per row, each with a name, an input, an output run store
and a config (see `lensfree.launch.config`). String values in the config may use
``{name}``, ``{input}`` and ``{output}``, filled in per dataset. As TOML::

    config = "reprocess.toml"          # default for every dataset
    [[dataset]]
    name = "run042"
    input = "raw/run042.zarr"
    output = "out/run042.zarr"

or as CSV with the header ``name,input,output,config`` (an empty config cell takes the
``--config`` given on the command line).

Each dataset runs as its own ``lensfree run`` process, so one that fails or crashes
cannot take the others down; ``--jobs K`` runs K at once (give them one cluster with
``--scheduler``). A dataset whose output already holds every configured stage, complete,
is skipped. The summary lists done, skipped and failed (with the reason), and the exit
code is non-zero when any failed.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from lensfree.errors import LensfreeError
from lensfree.launch import config as config_mod


@dataclass(frozen=True)
class Dataset:
    name: str
    input: str
    output: str
    config: str


def read_manifest(path: str, default_config: str | None = None) -> list[Dataset]:
    """The datasets of a TOML or CSV manifest; paths are relative to the manifest."""
    if not os.path.isfile(path):
        raise LensfreeError(f"{path}: no such manifest")
    base = os.path.dirname(os.path.abspath(path))
    if path.lower().endswith(".csv"):
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        default = default_config
    else:
        doc = config_mod.load(path)
        rows = doc.get("dataset", [])
        default = doc.get("config", default_config)
    if not rows:
        raise LensfreeError(f"{path}: lists no dataset")
    datasets, names = [], set()
    for i, row in enumerate(rows, 1):
        missing = [k for k in ("name", "input", "output") if not row.get(k)]
        cfg = row.get("config") or default
        if cfg is None:
            missing.append("config")
        if missing:
            raise LensfreeError(f"{path}: dataset {i} lacks {', '.join(missing)}")
        if row["name"] in names:
            raise LensfreeError(f"{path}: dataset name {row['name']!r} appears twice")
        names.add(row["name"])
        datasets.append(Dataset(row["name"], *(os.path.join(base, row[k]) if k != "name"
                                               else row[k] for k in ("input", "output")),
                                os.path.join(base, cfg)))
    return datasets


def is_done(dataset: Dataset, doc: dict) -> bool:
    """True when the output holds every configured stage's group, complete and current,
    made by this very configuration (the same options and inputs, execution aside)."""
    from lensfree.io import runstore
    from lensfree.launch.registry import COMMANDS, STAGES

    if not os.path.isdir(dataset.output):
        return False
    try:
        planned = config_mod.plan(dataset.config, doc, COMMANDS, {})
        run = runstore.open_run(dataset.output, mode="r")
    except LensfreeError:
        return False  # the run itself will say what is wrong
    groups = [STAGES[c.name].group for c, _, _ in planned if c.name in STAGES]
    stored = (run.attrs.get("config") or {}).get("stages", {})
    same = all(_without_execution(stored.get(c.name)) == _without_execution(runstore.jsonable(v))
               for c, _, v in planned)
    if not (groups and same and all(runstore.state(run, g) == "complete" for g in groups)):
        return False
    return all(_same_input(STAGES[c.name], opts, run) for c, opts, _ in planned
               if c.name in STAGES)


def _same_input(stage, opts, run) -> bool:
    """The stage's input now is what its group recorded (a frame store rewritten at the
    same path has another ``store_id``)."""
    from lensfree.io import runstore

    try:
        now = runstore.jsonable(stage.inputs(opts, stage.open(opts)))
    except LensfreeError:
        return False
    return run[stage.group].attrs.get("input") == now


def _without_execution(values: dict | None) -> dict | None:
    if values is None:
        return None
    return {k: v for k, v in values.items() if k not in config_mod.EXECUTION}


def run_dataset(dataset: Dataset, overrides: list[str]) -> tuple[str, str]:
    """('done' | 'skipped' | 'failed', reason) for one dataset."""
    variables = {"name": dataset.name, "input": dataset.input, "output": dataset.output}
    try:
        doc = config_mod.substitute(config_mod.load(dataset.config), variables,
                                    dataset.config)
    except LensfreeError as exc:
        return "failed", str(exc)
    if is_done(dataset, doc):
        return "skipped", "already complete"
    os.makedirs(os.path.dirname(dataset.output) or ".", exist_ok=True)
    cmd = [sys.executable, "-m", "lensfree", "run", dataset.config, *overrides]
    for key, value in variables.items():
        cmd += ["--var", f"{key}={value}"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode == 0:
        return "done", ""
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    reason = lines[-1] if lines else f"exit code {proc.returncode}"
    return "failed", reason.removeprefix("lensfree: error: ")


def run_batch(datasets: list[Dataset], overrides: list[str], jobs: int = 1, report=print):
    """Run every dataset; returns [(dataset, status, reason)] in manifest order."""
    if jobs < 1:
        raise LensfreeError(f"--jobs {jobs}: must be at least 1")

    def one(ds):
        status, reason = run_dataset(ds, overrides)
        report(f"{ds.name}: {status}{' (' + reason + ')' if reason else ''}")
        return ds, status, reason

    with ThreadPoolExecutor(jobs) as pool:
        return list(pool.map(one, datasets))
