"""Where a stage's time goes: seconds per part (read, compute, reduce, write)."""

from __future__ import annotations

import time
from collections import defaultdict
from contextlib import contextmanager


class Clock:
    """Adds up wall seconds per named part: ``with clock("read"): ...``.

    Tasks return ``clock.seconds`` (a plain dict) with their results; the root adds them
    up with `merge`, so the split covers the work of every worker.
    """

    def __init__(self):
        self.seconds: dict[str, float] = defaultdict(float)

    @contextmanager
    def __call__(self, part: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[part] += time.perf_counter() - t0

    def merge(self, seconds: dict) -> None:
        for part, s in seconds.items():
            self.seconds[part] += s

    def as_attrs(self) -> dict:
        return {part: round(s, 4) for part, s in sorted(self.seconds.items())}
