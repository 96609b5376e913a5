"""The CLI and the training loop on the inputs and accidents a user meets: non-zero torchrun
ranks, a run resumed after its last checkpoint, compress --from with training flags, run folders
that cannot be written, malformed sweep files, sweeps run in selections, Ctrl-C."""

import csv
import json
import math
from pathlib import Path

import pytest
import yaml

from edgegen.cli.main import main
from edgegen.config import to_dict
from edgegen.train import Trainer
from edgegen.train import checkpoint as ckpt
from edgegen.train.sweep import run_sweep
from tests.helpers import record_tracker_finishes
from tests.train.helpers import tiny


def strict_json(text):
    """json.loads refusing Infinity / NaN (Python's json reads them, other readers do not)."""
    def refuse(name):
        raise ValueError(f"not JSON: {name}")
    return json.loads(text, parse_constant=refuse)


def write_config(tmp_path, cfg, name="c.yaml", **changes):
    data = to_dict(cfg)
    data.update(changes)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return str(path)


def tracked(tmp_path):
    return {"enabled": True, "uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "experiment": "edges"}


def mlflow_runs(tmp_path):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name("edges")
    return [] if exp is None else client.search_runs([exp.experiment_id])


# --------------------------------------------------------------------------- torchrun ranks
@pytest.mark.integration
def test_a_non_zero_rank_opens_no_mlflow_run_and_prints_nothing(tmp_path):
    import os
    import subprocess
    import sys

    cfg = tiny("vae", tmp_path, train={"steps_per_epoch": 2, "threads": 1})
    path = write_config(tmp_path, cfg, tracking=tracked(tmp_path))
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1",
           "TMPDIR": str(tmp_path)}  # torchrun's log folders, removed with the test's
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                        "--master_addr", "127.0.0.1", "--master_port", "0", "--rdzv_backend", "c10d",
                        "--rdzv_endpoint", "127.0.0.1:0", "-m", "edgegen", "train", path, "--run-dir",
                        str(tmp_path / "run"), "--no-progress"], env=env, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    # Rank 0's result alone (one JSON document), one MLflow run, one link.
    assert strict_json(r.stdout)["steps"] == 2
    assert r.stderr.count("MLflow run") == 1
    assert len(mlflow_runs(tmp_path)) == 1 and (tmp_path / "run" / "mlflow_run.json").is_file()


def test_a_stray_rank_without_a_world_size_is_refused_before_anything_is_written(tmp_path, monkeypatch, capsys):
    cfg = tiny("vae", tmp_path, train={"steps_per_epoch": 2})
    path = write_config(tmp_path, cfg, tracking=tracked(tmp_path))
    # RANK left in the environment, WORLD_SIZE unset: one process that would train and write nothing.
    monkeypatch.setenv("RANK", "1")
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with pytest.raises(ValueError, match="RANK: 1 with WORLD_SIZE 1 .*expected 0 <= RANK < WORLD_SIZE"):
        Trainer(cfg, tmp_path / "r", progress=False)
    assert main(["train", path, "--run-dir", str(tmp_path / "run"), "--no-progress"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "RANK: 1 with WORLD_SIZE 1" in err
    assert not (tmp_path / "run").exists() and mlflow_runs(tmp_path) == []
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ValueError, match="WORLD_SIZE: expected an integer"):
        Trainer(cfg, tmp_path / "r", progress=False)
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert main(["train", path, "--run-dir", str(tmp_path / "run0"), "--no-progress"]) == 0
    assert strict_json(capsys.readouterr().out)["steps"] == 2
    assert (tmp_path / "run0" / "checkpoints" / "last.pt").is_file() and len(mlflow_runs(tmp_path)) == 1


# --------------------------------------------------------------------------- resume at the last step
def test_resume_after_a_checkpoint_at_the_last_step_validates_and_writes_best(tmp_path, capsys):
    cfg = tiny("vae", tmp_path, train={"steps_per_epoch": 4, "checkpoint_every": 4})

    def interrupt(trainer, metrics):  # right after the step-4 checkpoint, before the final validation
        if trainer.state.step == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        Trainer(cfg, tmp_path / "run", progress=False, callbacks=[interrupt]).fit()
    assert ckpt.load(tmp_path / "run" / "checkpoints" / "last.pt")["state"]["step"] == 4
    assert not (tmp_path / "run" / "checkpoints" / "best.pt").exists()
    path = write_config(tmp_path, cfg)
    assert main(["train", path, "--run-dir", str(tmp_path / "run"), "--resume", "--no-progress"]) == 0
    out = strict_json(capsys.readouterr().out)
    assert out["steps"] == 4 and out["final"]["step"] == 4 and out["best_val_loss"] == out["final"]["val_loss"]
    assert (tmp_path / "run" / "checkpoints" / "best.pt").is_file()
    state = ckpt.load(tmp_path / "run" / "checkpoints" / "last.pt")["state"]
    assert [h["step"] for h in state["history"]] == [4] and state["epoch"] == 1


def test_printed_results_are_strict_json(capsys):
    from edgegen.cli.main import _print_json

    _print_json({"a": float("inf"), "b": [float("nan"), 1.5], "c": Path("x")})
    assert strict_json(capsys.readouterr().out) == {"a": None, "b": [None, 1.5], "c": "x"}


# --------------------------------------------------------------------------- compress --from
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("src")
    cfg = tiny("vae", tmp, train={"steps_per_epoch": 1})
    Trainer(cfg, tmp / "src", progress=False).fit()
    return tmp / "src"


@pytest.mark.parametrize("flags, named", [
    (["--preset", "cpu-smoke"], "--preset"),
    (["--resume"], "--resume"),
    (["--set", "train.epochs=3"], "--set 'train.epochs=3'"),
])
def test_compress_from_refuses_flags_it_would_ignore(tmp_path, trained, capsys, flags, named):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"compress": {"ptq": {"kind": "Int8DynamicConfig"}},
                                    "tracking": {"enabled": False}}))
    assert main(["compress", str(path), "--from", str(trained), "--run-dir", str(tmp_path / "out"), *flags]) == 2
    assert f"edgegen compress: {named}:" in capsys.readouterr().err
    assert not (tmp_path / "out" / "checkpoints").exists()


def test_compress_from_applies_set_names_from_and_is_tracked(tmp_path, trained, capsys):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"compress": {"ptq": {"kind": "Int8DynamicConfig"}},
                                    "tracking": tracked(tmp_path)}))
    assert main(["compress", str(path), "--from", str(tmp_path / "nope")]) == 2
    assert "--from: " in capsys.readouterr().err
    assert main(["compress", str(path), "--from", str(trained), "--run-dir", str(tmp_path / "fp16"),
                 "--set", "compress.ptq.kind=Fp16Config"]) == 0
    out = strict_json(capsys.readouterr().out)
    assert out["steps"] == ["post-training Fp16Config"]
    runs = mlflow_runs(tmp_path)
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert runs[0].data.tags["edgegen.compressed_from"].endswith("last.pt")
    assert json.loads((tmp_path / "fp16" / "mlflow_run.json").read_text())["run_id"] == runs[0].info.run_id


def test_compress_from_accepts_set_for_the_tracking_section(tmp_path, trained, capsys):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"compress": {"ptq": {"kind": "Int8DynamicConfig"}},
                                    "tracking": tracked(tmp_path)}))
    assert main(["compress", str(path), "--from", str(trained), "--run-dir", str(tmp_path / "int8"),
                 "--set", "tracking.enabled=false"]) == 0
    assert strict_json(capsys.readouterr().out)["steps"] == ["post-training Int8DynamicConfig"]
    # tracking off: no MLflow store created, no run linked from the folder
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "int8" / "mlflow_run.json").exists()
    assert (tmp_path / "int8").is_dir()


# --------------------------------------------------------------------------- run folders
def test_a_run_dir_that_is_a_file_or_under_one_is_named_before_training(tmp_path, monkeypatch, capsys):
    import edgegen.train.loop as loop

    built = []
    monkeypatch.setattr(loop, "train_experiment", lambda *a, **k: built.append(1))
    path = write_config(tmp_path, tiny("vae", tmp_path))
    assert main(["train", path, "--run-dir", path, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"--run-dir: {path} is a file, expected a folder" in err and "Traceback" not in err
    assert main(["train", path, "--run-dir", str(Path(path) / "run"), "--no-progress"]) == 2
    assert "--run-dir: cannot create the folder" in capsys.readouterr().err
    cfg = tiny("vae", tmp_path)
    blocked = write_config(tmp_path, cfg, "b.yaml", output_dir=str(Path(path) / "runs"))
    assert main(["train", blocked, "--no-progress"]) == 2
    assert "output_dir: cannot create the folder" in capsys.readouterr().err
    assert built == []


def test_an_unwritable_run_dir_is_named_before_training(tmp_path, monkeypatch, capsys):
    # chmod does not stop root from writing, so the refusal of the file system is simulated.
    real = Path.write_bytes

    def refuse(self, data):
        if self.name.startswith(".edgegen-write-test"):
            raise PermissionError(13, "Permission denied", str(self))
        return real(self, data)

    monkeypatch.setattr(Path, "write_bytes", refuse)
    import edgegen.train.loop as loop

    built = []
    monkeypatch.setattr(loop, "train_experiment", lambda *a, **k: built.append(1))
    path = write_config(tmp_path, tiny("vae", tmp_path))
    assert main(["train", path, "--run-dir", str(tmp_path / "ro"), "--no-progress"]) == 2
    assert "--run-dir: cannot write in" in capsys.readouterr().err and built == []
    with pytest.raises(ValueError, match="run_dir: cannot write in"):
        Trainer(tiny("vae", tmp_path), tmp_path / "ro2", progress=False).fit()


def test_an_os_error_during_a_run_is_one_line(tmp_path, monkeypatch, capsys):
    import edgegen.train.loop as loop

    def full(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(loop, "train_experiment", full)
    path = write_config(tmp_path, tiny("vae", tmp_path))
    assert main(["train", path, "--run-dir", str(tmp_path / "run"), "--no-progress"]) == 1
    assert "edgegen train: [Errno 28] No space left on device" in capsys.readouterr().err


# --------------------------------------------------------------------------- command-line errors
def test_an_import_error_from_a_command_is_one_line_with_status_2(tmp_path, monkeypatch, capsys):
    import edgegen.train.loop as loop

    def needs_an_extra(*a, **k):
        raise ImportError("reading a Hugging Face dataset folder needs pyarrow (pip install pyarrow)")

    monkeypatch.setattr(loop, "train_experiment", needs_an_extra)
    path = write_config(tmp_path, tiny("vae", tmp_path))
    assert main(["train", path, "--run-dir", str(tmp_path / "run"), "--no-progress"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == "edgegen train: reading a Hugging Face dataset folder needs pyarrow (pip install pyarrow)\n"


def test_train_of_a_missing_config_file_names_it(tmp_path, capsys):
    missing = tmp_path / "nope.yaml"
    assert main(["train", str(missing), "--no-progress"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err == f"edgegen train: {missing}: config file not found\n"
    assert not (tmp_path / "runs").exists()


def test_set_values_are_yaml_and_reach_the_config(tmp_path, monkeypatch, capsys):
    import edgegen.train.loop as loop

    seen = []
    monkeypatch.setattr(loop, "train_experiment", lambda cfg, *a, **k: seen.append(cfg) or {"steps": 0})
    path = write_config(tmp_path, tiny("vae", tmp_path))  # betas 0.9, 0.999 in the file
    assert main(["train", path, "--set", "optim.betas=[0.9,0.95]", "--set", "train.epochs=3",
                 "--run-dir", str(tmp_path / "run"), "--no-progress"]) == 0
    (cfg,) = seen
    assert cfg.optim.betas == (0.9, 0.95) and [type(b) for b in cfg.optim.betas] == [float, float]
    assert to_dict(cfg)["optim"]["betas"] == [0.9, 0.95] and cfg.train.epochs == 3
    assert strict_json(capsys.readouterr().out) == {"steps": 0}


def test_set_below_a_key_that_is_not_a_section_is_named(tmp_path, monkeypatch, capsys):
    import edgegen.train.loop as loop

    built = []
    monkeypatch.setattr(loop, "train_experiment", lambda *a, **k: built.append(1))
    path = write_config(tmp_path, tiny("vae", tmp_path))  # optim.lr is a number
    assert main(["train", path, "--set", "optim.lr.scale=2", "--run-dir", str(tmp_path / "run"),
                 "--no-progress"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err == "edgegen train: --set 'optim.lr.scale=2': lr is not a section\n"
    assert built == [] and not (tmp_path / "run").exists()


# --------------------------------------------------------------------------- Ctrl-C
@pytest.mark.parametrize("extra", [["--set", "optim.lr=0.01"], ["--preset", "cpu-smoke"]], ids=["set", "preset"])
def test_ctrl_c_names_the_folder_and_the_resume_command(tmp_path, monkeypatch, capsys, extra):
    import edgegen.train.loop as loop

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(loop, "train_experiment", interrupted)
    path = write_config(tmp_path, tiny("vae", tmp_path))
    run = tmp_path / "run"
    assert main(["train", path, *extra, "--run-dir", str(run), "--no-progress"]) == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and "Traceback" not in err
    assert f"the run folder is {run}" in err
    assert f"continue with: edgegen train {path} {' '.join(extra)} --run-dir {run} --resume\n" in err


def test_ctrl_c_in_a_sweep_names_its_seeds_selection_and_preset(tmp_path, monkeypatch, capsys):
    import edgegen.train.sweep as sweep

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(sweep, "run_sweep", interrupted)
    path = tmp_path / "sw.yaml"
    path.write_text(yaml.safe_dump(_sweep(tmp_path, {"a": {}, "b": {}})))
    assert main(["sweep", str(path), "--preset", "cpu-smoke", "--seeds", "3", "4", "--only", "b",
                 "--no-progress"]) == 130
    err = capsys.readouterr().err
    assert f"continue with: edgegen sweep {path} --seeds 3 4 --only b --preset cpu-smoke --resume\n" in err


# --------------------------------------------------------------------------- sweeps
def _sweep(tmp_path, variants, **extra):
    base = to_dict(tiny("vae", tmp_path, train={"steps_per_epoch": 1}))
    return {"name": "sw", "metric": "val_loss", "base": base, "variants": variants, **extra}


@pytest.mark.parametrize("change, match", [
    ({"variants": {"a": [1]}}, r"variants\.a: expected a mapping of config keys \(or nothing\), got list"),
    ({"variants": {"a": 5}}, r"variants\.a: expected a mapping .* got int 5"),
    ({"base": [1]}, r"base: expected a mapping .* got list"),
    ({"alpha": "abc"}, r"alpha: expected a number strictly between 0 and 1, got 'abc'"),
    ({"name": ["x"]}, r"name: expected a non-empty string, got \['x'\]"),
    ({"metric": 3}, r"metric: expected a non-empty string, got 3"),
    ({"metric": "val_los"}, r"metric: 'val_los' is not a validation metric of variant 'a' \(task 'vae': val_loss"),
], ids=["variant-list", "variant-int", "base-list", "alpha-text", "name-list", "metric-int", "metric-typo"])
def test_malformed_sweep_files_name_the_key_before_training(tmp_path, monkeypatch, change, match):
    import edgegen.train.loop as loop

    built = []
    monkeypatch.setattr(loop, "train_experiment", lambda *a, **k: built.append(1))
    with pytest.raises(ValueError, match=match):
        run_sweep({**_sweep(tmp_path, {"a": {}}), **change}, [0], log=lambda m: None)
    assert built == [] and not (tmp_path / "runs" / "sw").exists()


def test_a_sweep_base_file_is_read_beside_the_sweep_file(tmp_path, monkeypatch):
    sub = tmp_path / "sweeps"
    sub.mkdir()
    (sub / "base.yaml").write_text(yaml.safe_dump(to_dict(tiny("vae", tmp_path, train={"steps_per_epoch": 1}))))
    (sub / "sweep.yaml").write_text(yaml.safe_dump({"name": "sw", "base": "base.yaml", "variants": {"a": {}}}))
    monkeypatch.chdir(tmp_path)  # not the sweep file's folder
    out = run_sweep(str(sub / "sweep.yaml"), [0], log=lambda m: None, progress=False)
    assert out["rows"][0]["n"] == 1


def test_the_summary_covers_every_finished_run_of_the_sweep(tmp_path):
    sw = _sweep(tmp_path, {"a": {}, "b": {"optim": {"lr": 1e-2}}})
    run_sweep(sw, [0], only=["a"], log=lambda m: None, progress=False)
    out = run_sweep(sw, [0], only=["b"], log=lambda m: None, progress=False)
    assert [r["variant"] for r in out["rows"]] == ["a", "b"]
    rows = list(csv.DictReader(open(tmp_path / "runs" / "sw" / "summary.csv")))
    assert [(r["variant"], r["n"]) for r in rows] == [("a", "1"), ("b", "1")]
    assert "| a | 1 |" in (tmp_path / "runs" / "sw" / "summary.md").read_text()


def test_a_later_selection_moves_the_earlier_summary_records_aside(tmp_path):
    """The sweep folder's metrics.jsonl holds the summary of the last command, over every run,
    once: the earlier command's records are kept beside it, not repeated in it."""
    sw = _sweep(tmp_path, {"a": {}, "b": {"optim": {"lr": 1e-2}}})
    sw["base"]["tracking"] = {"enabled": True, "uri": f"sqlite:///{tmp_path / 'm.db'}"}
    run_sweep(sw, [0], only=["a"], log=lambda m: None, progress=False)
    run_sweep(sw, [0], only=["b"], log=lambda m: None, progress=False)
    folder = tmp_path / "runs" / "sw"
    names = [[k for k in json.loads(line) if k not in ("step", "time")]
             for line in (folder / "metrics.jsonl").read_text().splitlines()]
    assert names == [["a/mean"], ["b/mean"]]
    earlier = list(folder.glob("metrics.*.jsonl"))
    assert len(earlier) == 1 and "a/mean" in earlier[0].read_text()


def test_runs_finished_without_a_results_file_are_named_as_missing(tmp_path):
    """A run finished by an edgegen that kept no results.json has no known metric: the summary
    names it instead of leaving it out silently."""
    sw = _sweep(tmp_path, {"a": {}, "b": {"optim": {"lr": 1e-2}}})
    run_sweep(sw, [0], only=["a"], log=lambda m: None, progress=False)
    (tmp_path / "runs" / "sw" / "results.json").unlink()  # as an older sweep left its folder
    lines = []
    out = run_sweep(sw, [0], only=["b"], log=lines.append, progress=False)
    assert [r["variant"] for r in out["rows"]] == ["b"]
    assert any("not in the summary: a/seed0" in line and "--resume" in line for line in lines), lines



# --------------------------------------------------------------------------- presets and teachers
def test_a_preset_scales_the_intermediate_students_too():
    from edgegen.train import load_experiment

    lines = []
    root = Path(__file__).resolve().parents[2]
    cfg = load_experiment(root / "experiments" / "gpt2_progressive.yaml", "cpu-smoke", report=lines.append)
    stage, student = cfg.distill.stages[0], cfg.model
    assert (stage.n_layer, stage.n_embd, stage.n_head) == (student.n_layer, student.n_embd, student.n_head)
    assert "preset cpu-smoke replaces distill.stages[0].n_layer: 9 -> 1" in lines


def test_a_missing_teacher_names_its_key(tmp_path):
    cfg = tiny("lm", tmp_path, task="distill", distill={"teachers": [{"init_from": str(tmp_path / "no.pt")}]})
    with pytest.raises(FileNotFoundError, match=r"distill\.teachers\[0\]\.init_from: .*no\.pt does not exist"):
        Trainer(cfg, tmp_path / "run", progress=False)


def test_an_interrupted_sweep_closes_its_mlflow_runs_as_killed(tmp_path, monkeypatch):
    import edgegen.train.loop as loop

    finished = record_tracker_finishes(monkeypatch)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(loop, "train_experiment", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(_sweep(tmp_path, {"a": {}}), [0], log=lambda m: None, progress=False)
    assert finished == [("a/seed0", "KILLED"), ("sw", "KILLED")]


def test_reproduce_reports_progress_on_stderr_and_the_report_on_stdout(tmp_path, monkeypatch, capsys):
    import edgegen.reproduce as rep
    from edgegen.cli.main import main

    def fake(table, preset, seeds, out, log=print, **kw):
        log("[size] model size")
        return {"tables": {"size": {"error": None}}, "report": str(tmp_path / "REPORT.md"), "minutes": 0.1}

    monkeypatch.setattr(rep, "reproduce", fake)
    assert main(["reproduce", "size", "--out", str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    assert out.strip() == f"report: {tmp_path / 'REPORT.md'} (0.1 min)"
    assert "[size] model size" in err


def test_reproduce_exits_1_naming_the_tables_it_could_not_fill(tmp_path, monkeypatch, capsys):
    import edgegen.reproduce as rep
    from edgegen.cli.main import main

    def fake(table, preset, seeds, out, log=print, **kw):
        return {"tables": {"size": {"error": None}, "quality": {"error": "no CelebA data"}},
                "report": str(tmp_path / "REPORT.md"), "minutes": 0.2}

    monkeypatch.setattr(rep, "reproduce", fake)
    assert main(["reproduce", "all", "--out", str(tmp_path)]) == 1
    out, err = capsys.readouterr()
    assert out.strip() == f"report: {tmp_path / 'REPORT.md'} (0.2 min)"
    assert "edgegen reproduce: not filled: quality (reasons in the report)" in err


def test_a_metric_that_is_not_finite_is_kept_as_strict_json_and_read_back_as_nan(tmp_path):
    from edgegen.train.sweep import _Results

    store = _Results(tmp_path, "val_loss", log=lambda m: None)
    for variant in ("a", "b"):
        (tmp_path / variant / "seed0" / "checkpoints").mkdir(parents=True)
        (tmp_path / variant / "seed0" / "checkpoints" / "last.pt").write_bytes(b"")
    store.put("a", 0, value=float("nan"))
    store.put("b", 0, value=1.25)
    saved = strict_json((tmp_path / "results.json").read_text())
    assert saved["runs"] == {"a": {"0": {"value": None}}, "b": {"0": {"value": 1.25}}}
    values, errors, seeds = _Results(tmp_path, "val_loss", log=lambda m: None).merged(["a", "b"])
    assert math.isnan(values["a"][0]) and values["b"][0] == 1.25 and not errors and seeds == [0]
