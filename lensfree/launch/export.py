"""``lensfree export RUN.zarr OUT.cxi``: finished results of a run store as CXI 1.6."""

from __future__ import annotations

from dataclasses import dataclass

from lensfree.engine.params import param
from lensfree.launch.console import report
from lensfree.launch.stage import Command


@dataclass(frozen=True)
class ExportOptions:
    """``lensfree export RUN.zarr OUT.cxi [--groups G ...]``."""

    run: str = param(None, "run store (RUN.zarr)", positional=True)
    out: str = param(None, "CXI file to write (OUT.cxi)", positional=True)
    groups: tuple[str, ...] | None = param(None, "groups to export", nargs="+",
                                           choices=("ptycho", "gather"),
                                           default_help="every finished one")


class Export(Command):
    name = "export"
    help = "finished ptycho and gather results of a run store as a CXI 1.6 file"
    Options = ExportOptions

    def handler(self, o) -> int:
        from lensfree.io.cxi_export import export_cxi

        written = export_cxi(o.run, o.out, o.groups)
        report([f"{o.out}: CXI 1.6 from {o.run}: {', '.join(g + '/' for g in written)}"])
        return 0
