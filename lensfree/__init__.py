"""lensfree: distributed reconstruction for lensless coherent imaging."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("lensfree")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0"
