"""Experiment configs: validation naming the key, overrides, presets."""

import pytest

from edgegen.config import apply_overrides, flatten, from_dict, parse_override
from edgegen.train import ExperimentConfig, load_experiment


def test_defaults_and_round_trip():
    cfg = from_dict(ExperimentConfig, {})
    assert cfg.task == "gan" and cfg.model.kind == "dcgan" and cfg.train.batch_size == 32
    again = from_dict(ExperimentConfig, cfg.to_dict())
    assert again == cfg


@pytest.mark.parametrize("data, exc, key", [
    ({"optim": {"lrr": 1e-3}}, ValueError, "optim.lrr"),
    ({"trian": {}}, ValueError, "trian"),
    ({"train": {"batch_size": "32"}}, TypeError, "train.batch_size"),
    ({"train": {"batch_size": 3.5}}, TypeError, "train.batch_size"),
    ({"train": {"epochs": True}}, TypeError, "train.epochs"),
    ({"optim": {"lr": "fast"}}, TypeError, "optim.lr"),
    ({"optim": {"name": "sgd"}}, ValueError, "optim.name"),
    ({"optim": {"betas": [0.9]}}, ValueError, "betas"),
    ({"optim": {"lr": -1.0}}, ValueError, "lr"),
    ({"data": {"name": "imagenet"}}, ValueError, "data.name"),
    ({"model": {"n_embd": 100, "n_head": 3}}, ValueError, "n_embd"),
    ({"task": "lm"}, ValueError, "model.kind"),
    ({"task": "lm", "model": {"kind": "gpt2"}}, ValueError, "data.name"),
    ({"task": "distill", "model": {"kind": "gpt2"}, "data": {"name": "synthetic-tokens"}}, ValueError,
     "distill.teachers"),
    ({"compress": {"prune": {"kind": "Nope"}}}, ValueError, "kind"),
    ({"train": []}, TypeError, "train"),
])
def test_bad_configs_name_the_key(data, exc, key):
    with pytest.raises(exc, match=key.replace(".", r"\.")):
        from_dict(ExperimentConfig, data)


def test_overrides_are_parsed_as_yaml_and_checked():
    data = apply_overrides({"optim": {"lr": 1.0}}, ["optim.lr=2e-4", "train.epochs=3", "train.device=cpu",
                                                   "optim.betas=[0.8, 0.9]", "compress.qat=true"])
    cfg = from_dict(ExperimentConfig, data)
    assert cfg.optim.lr == 2e-4 and cfg.train.epochs == 3 and cfg.optim.betas == (0.8, 0.9)
    assert cfg.compress.qat is True
    assert parse_override("a.b=null") == (["a", "b"], None)
    with pytest.raises(ValueError, match="key=value"):
        parse_override("optim.lr")
    with pytest.raises(ValueError, match="optim.nope"):
        from_dict(ExperimentConfig, apply_overrides({}, ["optim.nope=1"]))


def test_presets_win_over_the_file_and_set_wins_over_presets(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("task: vae\nmodel: {kind: vae}\ntrain: {epochs: 100, batch_size: 32}\n")
    cfg = load_experiment(str(path), "cpu-smoke", ["train.batch_size=4"])
    assert cfg.train.epochs == 1 and cfg.train.batch_size == 4 and cfg.train.steps_per_epoch == 4
    paper = load_experiment(str(path), "paper")
    assert paper.train.epochs == 100 and paper.optim.lr == 2e-4
    with pytest.raises(ValueError, match="preset"):
        load_experiment(str(path), "gpu-huge")
    with pytest.raises(FileNotFoundError):
        load_experiment(str(tmp_path / "missing.yaml"))


def test_flatten_for_mlflow_params():
    flat = flatten(from_dict(ExperimentConfig, {"optim": {"lr": 0.5}}))
    assert flat["optim.lr"] == 0.5 and flat["model.kind"] == "dcgan" and "train.seed" in flat
