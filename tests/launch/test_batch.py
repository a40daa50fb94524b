"""`lensfree batch`: three datasets, one corrupt; failures isolated, reruns skip."""

from lensfree.engine.simulate import EnsembleParams
from lensfree.launch.backends import LocalBackend
from lensfree.launch.cli import main
from lensfree.launch.stage_simulate import simulate_ensemble


def test_batch_isolates_failures_and_skips_finished(tmp_path, capsys):
    backend = LocalBackend(1, progress=False)
    for name in ("a", "b"):
        params = EnsembleParams(n_frames=120, shape=(64, 64), distance_m=0.0625, seed=ord(name))
        simulate_ensemble(backend, params, str(tmp_path / f"{name}.zarr"), chunk_frames=32)
    (tmp_path / "c.zarr").write_text("not a store")  # corrupt dataset
    (tmp_path / "sum.toml").write_text(
        '[sum]\nframes = "{input}"\nout = "{output}"\n')
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("name,input,output,config\n"
                        "a,a.zarr,out/a.zarr,sum.toml\n"
                        "c,c.zarr,out/c.zarr,sum.toml\n"
                        "b,b.zarr,out/b.zarr,\n")
    code = main(["batch", str(manifest), "--config", "sum.toml"])
    out = capsys.readouterr().out
    assert code == 1
    assert "2 done, 0 skipped, 1 failed" in out
    failed = [ln for ln in out.splitlines() if ln.startswith("c ") and "failed" in ln]
    assert failed and "c.zarr" in failed[0]
    assert (tmp_path / "out" / "a.zarr").is_dir() and (tmp_path / "out" / "b.zarr").is_dir()

    code = main(["batch", str(manifest), "--config", "sum.toml"])
    out = capsys.readouterr().out
    assert code == 1 and "0 done, 2 skipped, 1 failed" in out


def test_manifest_errors_name_the_problem(tmp_path, capsys):
    manifest = tmp_path / "m.toml"
    manifest.write_text('[[dataset]]\nname = "x"\ninput = "x.zarr"\n')
    assert main(["batch", str(manifest)]) == 2
    err = capsys.readouterr().err
    assert "m.toml" in err and "output" in err and "config" in err


def test_batch_reruns_a_dataset_whose_config_changed(tmp_path, capsys):
    params = EnsembleParams(n_frames=100, shape=(64, 64), distance_m=0.0625, seed=3)
    simulate_ensemble(LocalBackend(1, progress=False), params, str(tmp_path / "a.zarr"),
                      chunk_frames=32)
    config = tmp_path / "sum.toml"
    config.write_text('[sum]\nframes = "{input}"\nout = "{output}"\nbin = 2\n')
    manifest = tmp_path / "m.csv"
    manifest.write_text("name,input,output,config\na,a.zarr,out/a.zarr,sum.toml\n"
                        "b,a.zarr,out/b.zarr,sum.toml\n")
    assert main(["batch", str(manifest)]) == 0
    assert "2 done, 0 skipped" in capsys.readouterr().out
    config.write_text('[sum]\nframes = "{input}"\nout = "{output}"\nbin = 4\n')
    assert main(["batch", str(manifest)]) == 0
    assert "2 done, 0 skipped" in capsys.readouterr().out  # not "already complete"
    assert main(["batch", str(manifest)]) == 0
    assert "0 done, 2 skipped" in capsys.readouterr().out


def test_batch_reruns_a_dataset_whose_input_was_rewritten(tmp_path, capsys):
    params = EnsembleParams(n_frames=100, shape=(64, 64), distance_m=0.0625, seed=3)
    frames = str(tmp_path / "a.zarr")
    simulate_ensemble(LocalBackend(1, progress=False), params, frames, chunk_frames=32)
    (tmp_path / "sum.toml").write_text('[sum]\nframes = "{input}"\nout = "{output}"\n')
    manifest = tmp_path / "m.csv"
    manifest.write_text("name,input,output,config\na,a.zarr,out/a.zarr,sum.toml\n")
    assert main(["batch", str(manifest)]) == 0
    capsys.readouterr()
    simulate_ensemble(LocalBackend(1, progress=False), params, frames, chunk_frames=32)
    assert main(["batch", str(manifest)]) == 0  # same path, a new store: not "complete"
    assert "1 done, 0 skipped" in capsys.readouterr().out
