"""`lensfree run CONFIG.toml`: validation before any work, overrides, stored config."""

import zarr

from lensfree.launch.cli import main


def _write(tmp_path, text):
    path = tmp_path / "run.toml"
    path.write_text(text)
    return str(path)


def test_config_runs_stages_in_order_and_is_stored(tmp_path, capsys):
    frames, run = tmp_path / "frames.zarr", tmp_path / "run.zarr"
    cfg = _write(tmp_path, f"""
[execution]
quiet = true

[simulate.ensemble]
out = "{frames}"
frames = 200
size = 128

[sum]
frames = "{frames}"
out = "{run}"
bin = 2

[phase]
population = 3
generations = 2
schedule = "HIO:40,ER:10"
""")
    assert main(["run", cfg, "--seed", "5"]) == 0
    out = capsys.readouterr().out
    assert out.index("== sum ==") < out.index("== phase ==")
    group = zarr.open_group(str(run), mode="r")
    assert group["phasing"].attrs["complete"] is True
    assert group["phasing/errors"].shape == (2, 3)
    stored = group.attrs["config"]["stages"]
    assert stored["phase"]["run"] == str(run)          # taken from the previous stage
    assert stored["phase"]["seed"] == 5                 # the command line wins
    assert stored["sum"]["binning"] == 2


def test_every_problem_is_named_before_any_work(tmp_path, capsys):
    out = tmp_path / "never.zarr"
    cfg = _write(tmp_path, f"""
[sum]
frames = "x.zarr"
out = "{out}"
binnig = 2
weak_factor = "low"

[phase]
population = 4
generations = -1
schedule = "HIO:10"
""")
    assert main(["run", cfg]) == 2
    err = capsys.readouterr().err
    assert "unknown key 'binnig'" in err
    assert "[sum] weak_factor: expected float, got str 'low'" in err
    assert "[phase]" in err and "generations=-1" in err
    assert not out.exists()


def test_unknown_table_and_bad_toml(tmp_path, capsys):
    assert main(["run", _write(tmp_path, "[summ]\nx = 1\n")]) == 2
    assert "[summ] is not a lensfree command" in capsys.readouterr().err
    assert main(["run", _write(tmp_path, "[sum\n")]) == 2
    assert "not valid TOML" in capsys.readouterr().err


def test_later_stages_are_checked_up_front_too(tmp_path, capsys):
    cfg = _write(tmp_path, """
[gather]
run = "r.zarr"
fraction = 2.0

["fit".core-shell]
run = "r.zarr"
inner = "21:16:0.5"

[ptycho]
frames = "f.zarr"
out = "p.zarr"
iterations = 0
""")
    assert main(["run", cfg]) == 2
    err = capsys.readouterr().err
    assert "[gather]" in err and "fraction" in err
    assert "[fit.core-shell]" in err and "--inner" in err
    assert "[ptycho]" in err and "iterations" in err
