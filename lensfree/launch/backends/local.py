"""The local back end: a plain loop in this process, or a thread pool."""

from __future__ import annotations

from collections import deque
from concurrent.futures import ThreadPoolExecutor

from lensfree.launch.backends.base import Backend, BackendOptions, check_tasks, fold_in_order


class LocalBackend(Backend):
    """In this process: a plain loop, or a thread pool with ``workers > 1``."""

    name = "local"

    def __init__(self, workers: int = 1, **kw):
        super().__init__(**kw)
        self.n_workers = workers

    @classmethod
    def from_options(cls, options: BackendOptions) -> LocalBackend:
        return cls(options.workers or 1, progress=options.progress)

    def placement(self, n_tasks: int) -> list[range]:
        return [range(n_tasks)]  # one process, its threads

    def map(self, fn, tasks, shared=None, *, names=None, desc=""):
        with self._bar(len(tasks), desc) as bar:
            if self.n_workers == 1:
                results = []
                for task in tasks:
                    results.append(fn(task, shared))
                    bar.update()
                return results
            with ThreadPoolExecutor(self.n_workers) as pool:
                futures = [pool.submit(fn, t, shared) for t in tasks]
                for f in futures:
                    f.add_done_callback(lambda _: bar.update())
                return [f.result() for f in futures]

    def reduce(self, fn, tasks, shared=None, *, combine, names=None, desc="", everywhere=True):
        check_tasks(tasks)
        with self._bar(len(tasks), desc) as bar:
            if self.n_workers == 1:
                return fold_in_order(self._serial(fn, tasks, shared, bar), combine)
            with ThreadPoolExecutor(self.n_workers) as pool:
                return fold_in_order(self._pooled(pool, fn, tasks, shared, bar), combine)

    @staticmethod
    def _serial(fn, tasks, shared, bar):
        for task in tasks:
            yield fn(task, shared)
            bar.update()

    def _pooled(self, pool, fn, tasks, shared, bar):
        """Task results in task order, computed ahead on the pool by at most two tasks per
        thread: a slow first task must not leave every other result waiting in memory."""
        ahead = deque()
        for task in tasks:
            ahead.append(pool.submit(fn, task, shared))
            if len(ahead) > 2 * self.n_workers:
                yield ahead.popleft().result()
                bar.update()
        while ahead:
            yield ahead.popleft().result()
            bar.update()
