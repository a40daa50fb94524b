"""`lensfree report`: PNG figures a test opens, and the Markdown summary."""

from __future__ import annotations

import os

import numpy as np
import pytest
import zarr
from PIL import Image

from lensfree.errors import LensfreeError
from lensfree.io.report import write_report
from lensfree.launch.cli import main

FIGURES = ("pattern.png", "frame_status.png", "members.png", "errors.png", "average.png",
           "prtf.png", "fit.png")


@pytest.fixture(scope="module")
def full_run(ensemble_store, tmp_path_factory):
    """The shared ensemble through every stage: sum, a small phasing, gather, fit."""
    run = str(tmp_path_factory.mktemp("report") / "run.zarr")
    assert main(["sum", ensemble_store, "--out", run, "--quiet"]) == 0
    assert main(["phase", run, "--population", "6", "--generations", "2", "--schedule",
                 "HIO:100,ER:50;shrinkwrap=50", "--positivity", "real", "--quiet"]) == 0
    assert main(["gather", run, "--fraction", "0.5", "--quiet"]) == 0
    assert main(["fit", "core-shell", run, "--quiet"]) == 0
    return run


def _picture(path) -> np.ndarray:
    img = Image.open(path)
    assert img.format == "PNG"
    assert img.size[0] >= 500 and img.size[1] >= 300, img.size
    rgb = np.asarray(img.convert("RGB"), dtype=float)
    assert rgb.std() > 10  # a picture, not a blank canvas
    return rgb


def _has_colour(rgb, colour, tol=40) -> bool:
    return bool((np.abs(rgb - np.asarray(colour, float)).max(axis=-1) < tol).sum() > 20)


def test_report_draws_every_stage(full_run, tmp_path):
    out = tmp_path / "report"
    paths = write_report(full_run, str(out))
    assert sorted(os.path.basename(p) for p in paths) == sorted([*FIGURES, "summary.md"])
    pictures = {name: _picture(out / name) for name in FIGURES}
    assert _has_colour(pictures["prtf.png"], (214, 39, 40))  # the red 1/e line
    assert _has_colour(pictures["fit.png"], (255, 0, 0))  # the red star at the minimum
    text = (out / "summary.md").read_text()
    a = zarr.open_group(full_run, mode="r")
    res_nm = a["gather"].attrs["resolution_m"] * 1e9
    assert f"({res_nm:.2f} nm)" in text
    fit = a["fit"].attrs
    assert f"inner {fit['best_inner']:g} nm, outer {fit['best_outer']:g} nm" in text
    assert "R-factor of the average" in text and "accepted" in text
    for name in FIGURES:
        assert f"({name})" in text


def test_report_of_the_groups_a_caller_names_in_its_order(full_run, tmp_path):
    out = tmp_path / "some"
    paths = write_report(full_run, str(out), groups=["gather", "fit", "phasing"])
    # fit.png draws on ensemble/ too, which was not asked for
    assert [os.path.basename(p) for p in paths] == ["average.png", "prtf.png", "members.png",
                                                    "errors.png", "summary.md"]
    text = (out / "summary.md").read_text()
    assert text.index("## Gather") < text.index("## Core-shell fit") < text.index("## Phasing")
    assert "## Ensemble" not in text and "| ensemble |" not in text
    with pytest.raises(LensfreeError, match="no finished stage to report on"):
        write_report(full_run, str(tmp_path / "none"), groups=["ptycho"])


def test_report_of_a_store_with_ensemble_only(tmp_path, capsys):
    run = str(tmp_path / "obj.zarr")
    assert main(["simulate", "object", "--out", run, "--size", "64"]) == 0
    assert main(["report", run]) == 0
    out = tmp_path / "obj-report"  # next to the store by default
    assert sorted(os.listdir(out)) == ["pattern.png", "summary.md"]
    _picture(out / "pattern.png")
    assert "## Phasing" not in (out / "summary.md").read_text()


def test_report_bad_input_is_a_one_line_error(tmp_path, capsys):
    code = main(["report", str(tmp_path / "missing.zarr")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "missing.zarr" in err and len(err.splitlines()) == 1
    run = str(tmp_path / "obj.zarr")
    assert main(["simulate", "object", "--out", run, "--size", "32"]) == 0
    zarr.open_group(os.path.join(run, "ensemble"), mode="r+").attrs["complete"] = False
    code = main(["report", run, "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and run in err and "no finished stage" in err


def _captured(monkeypatch, module, plot, run, tmp_path):
    """The matplotlib figure ``plot`` draws, caught before it is saved and closed."""
    figures = []

    def keep(fig, out_png):
        figures.append(fig)
        return out_png

    monkeypatch.setattr(module, "save", keep)
    plot(run, str(tmp_path / "x.png"))
    return figures[0]


def _images(fig):
    return [(ax, ax.images[0]) for ax in fig.axes if ax.images and ax.get_label() != "<colorbar>"]


def test_real_space_panels_have_nm_axes_a_scale_bar_a_crop_and_colour_bars(full_run, tmp_path,
                                                                         monkeypatch):
    from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar

    from lensfree.io.report import gather, phasing

    run = zarr.open_group(full_run, mode="r")
    pixel_nm = run["ensemble"].attrs["real_space_pixel_m"] * 1e9
    h, w = run["gather/average"].shape
    for module, plot, n_panels in ((phasing, phasing.plot_members, 8),
                                   (gather, gather.plot_average, 2)):  # no model here
        fig = _captured(monkeypatch, module, plot, full_run, tmp_path)
        panels = _images(fig)
        assert len(panels) == n_panels
        for ax, im in panels:
            assert ax.get_xlabel() == "x (nm)" and ax.get_ylabel() == "y (nm)"
            bars = [a for a in ax.artists if isinstance(a, AnchoredSizeBar)]
            assert len(bars) == 1 and bars[0].txt_label.get_text().endswith(" nm")
            # cropped to the object (its support, here ~32 px across, plus 8 px a side)
            rows, cols = im.get_array().shape
            assert rows <= h - 12 and cols <= w - 12, (rows, cols)
            x0, x1 = im.get_extent()[:2]
            assert x1 - x0 == pytest.approx(cols * pixel_nm, rel=1e-6)
        # a colour bar beside every phase panel (and every amplitude one)
        phases = [im for _, im in panels if im.get_clim() == (-np.pi, np.pi)]
        assert len(phases) == (4 if module is phasing else 1)
        assert all(im.colorbar is not None for im in phases)
        monkeypatch.undo()


def test_missing_pixels_are_red_as_the_caption_says(tmp_path, monkeypatch):
    """Unmeasured pixels red, measured zero counts at the bottom of the scale (not blank)."""
    from lensfree.io.report import ensemble
    from lensfree.io.report._common import MISSING_RGBA

    run = str(tmp_path / "obj.zarr")
    assert main(["simulate", "object", "--out", run, "--size", "64", "--photons", "1e5",
                 "--missing-radius", "4"]) == 0
    e = zarr.open_group(run, mode="r")["ensemble"]
    amp, valid = e["amplitude"][...], e["valid"][...]
    assert (valid & (amp == 0)).any() and (~valid).any()  # zero counts and missing pixels
    fig = _captured(monkeypatch, ensemble, ensemble.plot_pattern, run, tmp_path)
    ax, im = _images(fig)[0]
    assert "red: missing" in ax.get_title()
    shown = im.get_array()
    np.testing.assert_array_equal(np.ma.getmaskarray(shown), ~valid)
    assert np.allclose(im.cmap.get_bad(), MISSING_RGBA)
    assert shown[valid & (amp == 0)].min() == shown.min()  # zeros at the bottom
    monkeypatch.undo()
    out = tmp_path / "p.png"
    ensemble.plot_pattern(run, str(out))
    assert _has_colour(_picture(out), tuple(int(255 * c) for c in MISSING_RGBA[:3]), tol=30)


def test_report_names_what_it_leaves_out(tmp_path, capsys, caplog):
    from lensfree.io import runstore

    run = str(tmp_path / "obj.zarr")
    assert main(["simulate", "object", "--out", run, "--size", "32"]) == 0
    runstore.begin_stage(runstore.open_run(run), "phasing", params={}, inputs={})
    capsys.readouterr()
    assert main(["report", run, "--out", str(tmp_path / "r")]) == 0
    assert "phasing/ is unfinished and is left out" in caplog.text
    assert "| phasing | unfinished: left out |" in (tmp_path / "r" / "summary.md").read_text()
