"""The Backend interface, the options the command line gives every back end, and the fold.

Stages describe work as a list of small picklable tasks and a module-level function; a
back end runs ``fn(task, shared)`` for every task somewhere and hands the results back
to the root, in task order (`Backend.map`), or folds them in one fixed tree
(`Backend.reduce`). Because neither the order of results nor the shape of the fold ever
depends on who computed what, a stage gets the same numbers, bit for bit, on every back
end and worker count.
"""

from __future__ import annotations

import sys
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from tqdm.auto import tqdm

from lensfree.errors import LensfreeError

#: where a LocalCluster's dashboard listens unless told otherwise
DASHBOARD_ADDRESS = "127.0.0.1:8787"  # this machine only, unless an interface is named


@dataclass(frozen=True)
class BackendOptions:
    """What the command line says about where work runs; each back end takes what it uses.

    ``workers``: threads (local) or worker processes (dask), None for the default;
    ``scheduler``: a Dask scheduler to join; ``shutdown``: close that scheduler with the
    back end (a cluster booted for this run alone); ``progress``: progress bars;
    ``security``: a folder with the TLS credentials to join ``scheduler``.
    """

    workers: int | None = None
    scheduler: str | None = None
    progress: bool = True
    dashboard_address: str = DASHBOARD_ADDRESS
    shutdown: bool = False
    security: str | None = None

    def __post_init__(self):
        if self.workers is not None and self.workers < 1:
            raise LensfreeError(f"--workers {self.workers}: must be at least 1")


class Backend(ABC):
    """Where tasks run. ``is_root`` is True on the one process that combines and writes.

    A new back end is one subclass (with its ``name``, `map`, `reduce` and, where it
    needs options, `from_options`) and one line in the registry `BACKENDS`.
    """

    name: str = ""
    n_workers: int = 1
    is_root: bool = True

    def __init__(self, *, progress: bool = True):
        self.progress = progress

    @classmethod
    def from_options(cls, options: BackendOptions) -> Backend:
        """This back end as the command line's options describe it."""
        return cls(progress=options.progress)

    @classmethod
    def process_rank(cls) -> int:
        """This process's rank in the job (0 where the back end has one process)."""
        return 0

    @classmethod
    def abort_job(cls, code: int) -> None:
        """Stop every process of the job with exit code ``code`` after a failure on one.

        Nothing to do where one process is the whole job: it returns ``code`` itself.
        """

    @abstractmethod
    def map(self, fn: Callable, tasks: Sequence, shared=None, *,
            names: Sequence[str] | None = None, desc: str = "") -> list | None:
        """``[fn(t, shared) for t in tasks]`` computed on the workers.

        ``shared`` (say, a detector mask) travels to each worker once, not with every
        task. Returns the list, in task order, on the root, and None elsewhere.
        """

    @abstractmethod
    def reduce(self, fn: Callable, tasks: Sequence, shared=None, *, combine: Callable,
               names: Sequence[str] | None = None, desc: str = "", everywhere: bool = True):
        """``fn(t, shared)`` for every task, folded by ``combine(a, b)`` in the fixed tree.

        The tree over task indices is the same on every back end and worker count
        (`lensfree.partitioning.fold_split`), so floating-point results are bit-identical
        everywhere. ``combine`` must be a module-level function (picklable). No back end
        holds every partial result at once. Returns the folded value on every process
        (with ``everywhere=False`` on the root, None elsewhere: no broadcast where only
        the root uses it); raises ValueError on an empty task list.
        """

    def bcast(self, obj):
        """``obj`` from the root, on every process (identity where there is one process)."""
        return obj

    def placement(self, n_tasks: int) -> list[range] | None:
        """The tasks of an ``n_tasks`` `map` or `reduce` that each process runs, the same
        every time (a worker may then read once what its tasks share); None where a
        scheduler places them."""
        return None

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _bar(self, total: int, desc: str):
        return tqdm(total=total, desc=desc, unit="task", file=sys.stderr, leave=False,
                    disable=not (self.progress and self.is_root), dynamic_ncols=True)


def check_tasks(tasks: Sequence) -> None:
    """A reduce has no value to return over no tasks (a fold has no neutral element)."""
    if not len(tasks):
        raise ValueError("reduce over an empty task list: there is nothing to fold")


def fold_in_order(values: Iterable, combine: Callable):
    """Fold ``values`` (given in task order) in the fixed tree, holding O(log n) partials.

    The tree splits [lo, hi) so that its left part is a full power of two, hence it is
    a binary counter: a stack of complete subtrees of decreasing sizes, two of equal size
    merged as soon as they meet; the complete subtrees left at the end are the tree's
    right spine, folded from the right.
    """
    stack = []  # (size, value), sizes strictly decreasing powers of two
    for value in values:
        size = 1
        while stack and stack[-1][0] == size:
            value = combine(stack.pop()[1], value)
            size *= 2
        stack.append((size, value))
    value = stack.pop()[1]
    while stack:
        value = combine(stack.pop()[1], value)
    return value
