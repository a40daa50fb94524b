"""N-dimensional (2D, 3D) complex FFTs with cached pyFFTW plans and persisted FFTW wisdom.

Conventions: zero frequency at index ``[0, 0]`` (``[0, 0, 0]``; no shift), forward transform
over every axis ``X[k] = sum_n x[n] exp(-2 pi i k n / N)`` (the same as
:func:`numpy.fft.fft2`, :func:`numpy.fft.fftn`), inverse
normalised by ``1 / N`` unless asked otherwise, so ``inverse(forward(x)) == x``.

Plans are made once per ``(shape, dtype, threads)`` and per thread: an FFTW object is not
safe to share between threads, so the cache lives in a :class:`threading.local`. Plans are
made with ``FFTW_MEASURE`` (``LENSFREE_FFTW_PLANNER=estimate`` for quick throw-away runs),
and the wisdom FFTW learns while measuring is kept in a per-user cache file, keyed by CPU
model, so that each machine pays for planning once. The file lives in ``$LENSFREE_CACHE``,
else ``$XDG_CACHE_HOME/lensfree``, else ``~/.cache/lensfree``.

Set ``LENSFREE_FFT=numpy`` (or uninstall pyFFTW) to use :mod:`numpy.fft` instead; that path
allocates on every call and is meant for portability, not speed.
"""

from __future__ import annotations

import logging
import os
import pickle
import platform
import re
import sys
import tempfile
import threading
from pathlib import Path

import numpy as np


def _import_pyfftw():
    """pyFFTW, or None. Its package imports ``dask.array`` for an interface lensfree does
    not use (lensfree runs plans), half a second of every process's start, so unless
    something has imported dask already that import is refused for the moment."""
    blocked = [name for name in ("dask", "dask.array") if name not in sys.modules]
    for name in blocked:
        sys.modules[name] = None  # `import dask` raises ImportError, which pyFFTW allows
    try:
        import pyfftw
    except ImportError:  # pragma: no cover
        return None
    finally:
        for name in blocked:
            del sys.modules[name]
    return pyfftw


pyfftw = _import_pyfftw()

log = logging.getLogger(__name__)

__all__ = [
    "FFT2",
    "FFTN",
    "backend",
    "empty_aligned",
    "get_fft2",
    "get_fftn",
    "load_wisdom",
    "save_wisdom",
    "wisdom_path",
]

_DTYPES = (np.dtype(np.complex64), np.dtype(np.complex128))

# The per-thread plan cache. The wisdom lock and flag below are process-wide on purpose:
# FFTW's wisdom is itself process-wide state, and we load the cache file once per process.
_plans = threading.local()
_wisdom_lock = threading.RLock()  # FFTW's planner and wisdom are not thread-safe
_wisdom_loaded: list[bool] = [False]


def backend() -> str:
    """Name of the FFT implementation in use: ``"pyfftw"`` or ``"numpy"``."""
    if pyfftw is None or os.environ.get("LENSFREE_FFT", "").strip().lower() == "numpy":
        return "numpy"
    return "pyfftw"


def _planner() -> str:
    value = os.environ.get("LENSFREE_FFTW_PLANNER", "measure").strip().lower()
    if value not in ("estimate", "measure"):
        raise ValueError(
            f"LENSFREE_FFTW_PLANNER={value!r}: expected 'estimate' or 'measure'"
        )
    return value


def empty_aligned(shape: tuple[int, ...], dtype=np.complex64) -> np.ndarray:
    """An uninitialised array aligned for SIMD, so FFTW plans can run on it directly."""
    if pyfftw is None:
        return np.empty(shape, dtype=dtype)
    return pyfftw.empty_aligned(shape, dtype=dtype)


# ----------------------------------------------------------------------------- wisdom


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.lower().startswith(("model name", "hardware", "cpu model")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown-cpu"


def wisdom_path() -> Path:
    """The per-user FFTW wisdom cache file for this CPU model and pyFFTW version."""
    root = os.environ.get("LENSFREE_CACHE")
    if root:
        base = Path(root)
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        base = (Path(xdg) if xdg else Path.home() / ".cache") / "lensfree"
    slug = re.sub(r"[^A-Za-z0-9]+", "-", _cpu_model()).strip("-").lower() or "cpu"
    version = getattr(pyfftw, "__version__", "none")
    return base / f"fftw-wisdom-{slug}-pyfftw{version}.pkl"


def _read_wisdom(path: Path) -> tuple[bytes, ...] | None:
    try:
        with open(path, "rb") as fh:
            wisdom = pickle.load(fh)
    except FileNotFoundError:
        return None
    except Exception as exc:  # a truncated or foreign file must not stop a run
        log.warning("ignoring unreadable FFTW wisdom file %s: %s", path, exc)
        return None
    if not (isinstance(wisdom, tuple) and all(isinstance(w, bytes) for w in wisdom)):
        log.warning("ignoring FFTW wisdom file %s: not a tuple of bytes", path)
        return None
    return wisdom


def load_wisdom(path: Path | None = None) -> bool:
    """Import FFTW wisdom from the cache file; True when something was imported."""
    if pyfftw is None:
        return False
    path = wisdom_path() if path is None else Path(path)
    wisdom = _read_wisdom(path)
    if wisdom is None:
        return False
    with _wisdom_lock:
        ok = pyfftw.import_wisdom(wisdom)
    log.debug("imported FFTW wisdom from %s (%s)", path, ok)
    return any(ok)


def save_wisdom(path: Path | None = None) -> Path | None:
    """Merge this process's FFTW wisdom into the cache file, atomically.

    The file is re-read and imported first, so plans that another process saved in the
    meantime are kept; the write goes to a temporary file that then replaces the old one.
    Returns the path written, or None when it could not be written (logged, not raised).
    """
    if pyfftw is None:
        return None
    path = wisdom_path() if path is None else Path(path)
    with _wisdom_lock:
        return _save_wisdom(path)


def _save_wisdom(path: Path) -> Path | None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        previous = _read_wisdom(path)
        if previous is not None:
            pyfftw.import_wisdom(previous)
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                pickle.dump(pyfftw.export_wisdom(), fh)
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
    except OSError as exc:
        log.warning("could not save FFTW wisdom to %s: %s", path, exc)
        return None
    return path


def _ensure_wisdom_loaded() -> None:
    with _wisdom_lock:
        if not _wisdom_loaded[0]:
            load_wisdom()
            _wisdom_loaded[0] = True


# ----------------------------------------------------------------------------- plans


class FFT2:
    """A pair of transforms over every axis (forward, inverse) for one shape (2D or 3D)
    and dtype, for one thread.

    Obtain it from :func:`get_fft2` (2D) or :func:`get_fftn`; do not share it between
    threads. ``x`` and ``out`` are caller-owned arrays of the planned shape and dtype.
    When both are C-contiguous and SIMD-aligned (see :func:`empty_aligned`) the transform
    runs directly on them with no copy; ``x is out`` runs in place. Other arrays go
    through internal buffers (correct, but slower). The input of an out-of-place transform
    is preserved. Each plan keeps a reference to the last arrays it ran on (pyFFTW does),
    until its next call.
    """

    def __init__(self, shape: tuple[int, ...], dtype=np.complex64, threads: int = 1):
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self.threads = int(threads)
        self.size = int(np.prod(self.shape))
        self.backend = backend()
        self._plans: dict[tuple[str, bool], object] = {}
        self._buffers: tuple[np.ndarray, np.ndarray] | None = None

    def __repr__(self) -> str:
        return f"FFT2(shape={self.shape}, dtype={self.dtype}, threads={self.threads})"

    def _check(self, x: np.ndarray, out: np.ndarray | None) -> np.ndarray:
        if x.shape != self.shape:
            raise ValueError(f"FFT2 planned for shape {self.shape}, got {x.shape}")
        if out is None:
            out = empty_aligned(self.shape, self.dtype)
        elif out.shape != self.shape or out.dtype != self.dtype:
            raise ValueError(
                f"FFT2 output must be {self.shape} {self.dtype}, got {out.shape} {out.dtype}"
            )
        return out

    def _plan(self, direction: str, inplace: bool):
        key = (direction, inplace)
        plan = self._plans.get(key)
        if plan is None:
            if self._buffers is None:  # scratch shared by all four plans
                self._buffers = (empty_aligned(self.shape, self.dtype),
                                 empty_aligned(self.shape, self.dtype))
            a, b = self._buffers
            plan = self._plans[key] = _make_plan(a, a if inplace else b, self.threads,
                                                 direction)
        return plan

    def _run(self, direction: str, x: np.ndarray, out: np.ndarray) -> None:
        inplace = x is out
        if not inplace and np.may_share_memory(x, out):
            if x.ctypes.data != out.ctypes.data or x.strides != out.strides:
                raise ValueError("FFT2: input and output overlap without being the same array")
            inplace = True
        if not out.flags.writeable:
            raise ValueError("FFT2: output array is read-only")
        plan = self._plan(direction, inplace)
        try:  # checks dtype, shape, strides and alignment, and raises when they differ
            plan.update_arrays(x, out)
        except ValueError:  # go through the aligned scratch buffers
            buf_in = self._buffers[0]
            buf_out = buf_in if inplace else self._buffers[1]
            np.copyto(buf_in, x)
            plan.update_arrays(buf_in, buf_out)
            plan.execute()
            np.copyto(out, buf_out)
        else:
            plan.execute()

    def prepare(self) -> FFT2:
        """Make (or load from wisdom) all four plans now, forward and inverse, in place
        and out of place, rather than at first use. Run it once on the root before
        starting workers, so that they all load the same wisdom and so the same plans
        (bitwise the same results)."""
        if self.backend == "pyfftw":
            for direction in ("FFTW_FORWARD", "FFTW_BACKWARD"):
                for inplace in (False, True):
                    self._plan(direction, inplace)
        return self

    def bind(self, x: np.ndarray, out: np.ndarray, direction: str = "forward"):
        """A callable that runs one transform from ``x`` to ``out`` (``x is out``: in
        place) with no per-call checks: ``"forward"`` is :meth:`forward`, ``"inverse"``
        is :meth:`inverse` unnormalised. For loops that transform the same arrays many
        times; the arrays must outlive it. With pyFFTW it is a plan of its own made from
        the same wisdom as the cached ones (the same algorithm, so the same bits); bind
        before filling ``x``, since measuring a plan without wisdom overwrites it."""
        if direction not in ("forward", "inverse"):
            raise ValueError(f"direction must be 'forward' or 'inverse', got {direction!r}")
        self._check(x, out)
        if self.backend == "numpy":
            if direction == "forward":
                return lambda: self.forward(x, out)
            return lambda: self.inverse(x, out, normalise=False)
        fftw = "FFTW_FORWARD" if direction == "forward" else "FFTW_BACKWARD"
        self._plan(fftw, x is out)  # wisdom for this transform exists from here on
        try:
            with _wisdom_lock:
                plan = pyfftw.FFTW(x, out, axes=tuple(range(x.ndim)), direction=fftw,
                                   threads=self.threads, flags=_bound_flags())
        except (RuntimeError, ValueError):  # unaligned arrays: the checked path
            return lambda: self._run(fftw, x, out)
        return plan.execute

    def forward(self, x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """``out = F x`` (unnormalised, as :func:`numpy.fft.fft2`); returns ``out``."""
        out = self._check(x, out)
        if self.backend == "numpy":
            out[...] = np.fft.fftn(x)  # over every axis: fft2 in 2D
            return out
        self._run("FFTW_FORWARD", x, out)
        return out

    def inverse(
        self, x: np.ndarray, out: np.ndarray | None = None, normalise: bool = True
    ) -> np.ndarray:
        """``out = F^-1 x``, scaled by ``1/N`` when ``normalise``; returns ``out``.

        ``normalise=False`` gives ``N F^-1 x`` and saves a pass over the array when the
        caller folds the scale into its own arithmetic.
        """
        out = self._check(x, out)
        if self.backend == "numpy":
            out[...] = np.fft.ifftn(x)
            if not normalise:
                out *= self.size
            return out
        self._run("FFTW_BACKWARD", x, out)
        if normalise:
            np.multiply(out, 1.0 / self.size, out=out)
        return out


def _bound_flags() -> tuple[str, ...]:
    if _planner() == "estimate":
        return ("FFTW_ESTIMATE",)
    return ("FFTW_MEASURE", "FFTW_WISDOM_ONLY")


def _make_plan(buf_in: np.ndarray, buf_out: np.ndarray, threads: int, direction: str):
    """One FFTW plan on the given scratch arrays (planning overwrites them), from wisdom
    when possible, else measured (and the wisdom saved)."""
    _ensure_wisdom_loaded()
    kwargs = dict(axes=tuple(range(buf_in.ndim)), direction=direction, threads=threads)
    with _wisdom_lock:
        if _planner() == "estimate":
            return pyfftw.FFTW(buf_in, buf_out, flags=("FFTW_ESTIMATE",), **kwargs)
        try:
            return pyfftw.FFTW(
                buf_in, buf_out, flags=("FFTW_MEASURE", "FFTW_WISDOM_ONLY"), **kwargs
            )
        except RuntimeError:  # no wisdom for this transform yet: measure and keep it
            log.info("planning FFT %s %s %s (FFTW_MEASURE)", buf_in.shape, buf_in.dtype,
                     direction)
            plan = pyfftw.FFTW(buf_in, buf_out, flags=("FFTW_MEASURE",), **kwargs)
            save_wisdom()
            return plan


def get_fft2(shape: tuple[int, int], dtype=np.complex64, threads: int | None = None) -> FFT2:
    """The calling thread's cached :class:`FFT2` for ``shape`` and ``dtype``.

    Parameters
    ----------
    shape : (int, int)
        Array shape.
    dtype : complex64 or complex128
        Transform precision.
    threads : int, optional
        FFTW threads per transform; default ``$LENSFREE_FFT_THREADS`` or 1 (parallelise
        over members and frames instead: FFTW's own threads do not pay on small machines).
    """
    dtype = np.dtype(dtype)
    if dtype not in _DTYPES:
        raise ValueError(f"FFT dtype must be complex64 or complex128, got {dtype}")
    if len(shape) != 2:
        raise ValueError(f"FFT2 needs a 2D shape, got {shape}")
    return get_fftn(shape, dtype, threads)


#: the transform class is the same in every dimension
FFTN = FFT2


def get_fftn(shape: tuple[int, ...], dtype=np.complex64, threads: int | None = None) -> FFT2:
    """The calling thread's cached transform over every axis of a 2D or 3D ``shape``;
    otherwise as :func:`get_fft2`."""
    dtype = np.dtype(dtype)
    if dtype not in _DTYPES:
        raise ValueError(f"FFT dtype must be complex64 or complex128, got {dtype}")
    if len(shape) not in (2, 3):
        raise ValueError(f"FFT needs a 2D or 3D shape, got {shape}")
    if threads is None:
        threads = int(os.environ.get("LENSFREE_FFT_THREADS", "1"))
    if threads < 1:
        raise ValueError(f"FFT threads must be >= 1, got {threads}")
    key = (tuple(int(s) for s in shape), dtype.str, threads, backend(), _planner())
    cache = _plans.__dict__.setdefault("cache", {})
    fft = cache.get(key)
    if fft is None:
        fft = cache[key] = FFT2(key[0], dtype, threads)
    return fft
