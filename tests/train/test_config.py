"""Experiment configs: validation naming the key, overrides, presets."""

import pytest

from edgegen.config import apply_overrides, flatten, from_dict, merge, parse_override
from edgegen.train import ExperimentConfig, load_experiment

IMAGES = {"data": {"name": "synthetic-images"}}


def test_defaults_and_round_trip():
    cfg = from_dict(ExperimentConfig, IMAGES)
    assert cfg.task == "gan" and cfg.model.kind == "dcgan" and cfg.train.batch_size == 32
    again = from_dict(ExperimentConfig, cfg.to_dict())
    assert again == cfg
    assert cfg.to_dict()["kind"] == "experiment" and cfg.to_dict()["version"] == ExperimentConfig.version


def test_data_must_be_named():
    with pytest.raises(ValueError, match="data: required"):
        from_dict(ExperimentConfig, {})
    with pytest.raises(ValueError, match="data.name: required"):
        from_dict(ExperimentConfig, {"data": {}})


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
    ({"task": "lm", "model": {"n_embd": 100, "n_head": 3}, "data": {"name": "synthetic-tokens"}}, ValueError,
     "n_embd"),
    ({"task": "lm", "model": {"kind": "dcgan"}}, ValueError, "model.kind"),
    ({"task": "lm", "model": {"kind": "gpt2"}}, ValueError, "data.name"),
    ({"task": "distill", "model": {"kind": "gpt2"}, "data": {"name": "synthetic-tokens"}}, ValueError,
     "distill.teachers"),
    ({"compress": {"prune": {"kind": "Nope"}}}, ValueError, "kind"),
    ({"train": []}, TypeError, "train"),
    ({"optim": {"lr": float("inf")}}, ValueError, "optim.lr: expected a finite number"),
    ({"optim": {"grad_clip": float("nan")}}, ValueError, "optim.grad_clip: expected a finite number"),
    ({"optim": {"lr": ".nan"}}, TypeError, "optim.lr"),
    ({"train": {"seed": 10**23}}, ValueError, "train: seed: expected a 64-bit integer"),
])
def test_bad_configs_name_the_key(data, exc, key):
    with pytest.raises(exc, match=key.replace(".", r"\.")):
        from_dict(ExperimentConfig, merge(IMAGES, data))


def test_sections_the_task_does_not_use_are_refused():
    lm = {"task": "lm", "model": {"kind": "gpt2", "n_layer": 1, "n_embd": 32, "n_head": 2},
          "data": {"name": "synthetic-tokens"}}
    teacherless = merge(lm, {"distill": {"teachers": [{"init_from": "/nonexistent/teacher.pt"}]}})
    with pytest.raises(ValueError, match="distill: task 'lm' does not distill"):
        load_experiment(teacherless)
    with pytest.raises(ValueError, match="compress: expected prune, qat: true and/or ptq"):
        load_experiment(merge(lm, {"compress": {"prune_begin": 1}}))
    load_experiment(lm)  # without them: fine
    # A checkpoint's config is read back as written (runs saved before these checks still load).
    assert from_dict(ExperimentConfig, teacherless).distill is not None


def test_overrides_are_parsed_as_yaml_and_checked():
    data = apply_overrides({"optim": {"lr": 1.0}, **IMAGES}, ["optim.lr=2e-4", "train.epochs=3", "train.device=cpu",
                                                   "optim.betas=[0.8, 0.9]", "compress.qat=true"])
    cfg = from_dict(ExperimentConfig, data)
    assert cfg.optim.lr == 2e-4 and cfg.train.epochs == 3 and cfg.optim.betas == (0.8, 0.9)
    assert cfg.compress.qat is True
    assert parse_override("a.b=null") == (["a", "b"], None)
    with pytest.raises(ValueError, match="key=value"):
        parse_override("optim.lr")
    with pytest.raises(ValueError, match="optim.nope"):
        from_dict(ExperimentConfig, apply_overrides(IMAGES, ["optim.nope=1"]))


def test_set_below_a_value_that_is_not_a_section_is_refused():
    data = {"optim": {"lr": 1.0, "betas": [0.5, 0.999]}, **IMAGES}
    with pytest.raises(ValueError, match=r"^--set 'optim\.lr\.scale=2': lr is not a section$"):
        apply_overrides(data, ["optim.lr.scale=2"])
    with pytest.raises(ValueError, match=r"^--set 'data\.name\.x=1': name is not a section$"):
        apply_overrides(data, ["data.name.x=1"])
    with pytest.raises(ValueError, match=r"^--set 'optim\.betas\.0=0\.9': betas is not a section$"):
        apply_overrides(data, ["optim.betas.0=0.9"])
    assert data == {"optim": {"lr": 1.0, "betas": [0.5, 0.999]}, **IMAGES}  # the input is left as it was
    # a section written empty (`compress:` alone, null in YAML) or absent is created
    assert apply_overrides({"compress": None}, ["compress.qat=true", "train.epochs=2"]) == \
        {"compress": {"qat": True}, "train": {"epochs": 2}}


def test_set_lists_are_yaml_flow_sequences():
    assert parse_override("optim.betas=[0.9,0.95]") == (["optim", "betas"], [0.9, 0.95])
    assert parse_override("optim.betas=[1, 0]") == (["optim", "betas"], [1, 0])
    data = apply_overrides({"optim": {"betas": [0.5, 0.999]}, **IMAGES}, ["optim.betas=[0.9,0.95]"])
    assert data["optim"]["betas"] == [0.9, 0.95]
    assert from_dict(ExperimentConfig, data).optim.betas == (0.9, 0.95)


def test_presets_win_over_the_file_and_set_wins_over_presets(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("task: vae\nmodel: {kind: vae}\ndata: {name: synthetic-images}\n"
                    "train: {epochs: 100, batch_size: 32}\n")
    said = []
    cfg = load_experiment(str(path), "cpu-smoke", ["train.batch_size=4"], report=said.append)
    assert cfg.train.epochs == 1 and cfg.train.batch_size == 4 and cfg.train.steps_per_epoch == 4
    # every file value the preset replaced is reported (batch_size too: --set comes after)
    assert sorted(said) == ["preset cpu-smoke replaces train.batch_size: 32 -> 8",
                            "preset cpu-smoke replaces train.epochs: 100 -> 1"]
    paper = load_experiment(str(path), "paper")
    assert paper.train.epochs == 100 and paper.optim.lr == 2e-4
    with pytest.raises(ValueError, match="preset"):
        load_experiment(str(path), "gpu-huge")
    with pytest.raises(FileNotFoundError):
        load_experiment(str(tmp_path / "missing.yaml"))


def test_flatten_for_mlflow_params():
    flat = flatten(from_dict(ExperimentConfig, {"optim": {"lr": 0.5}, **IMAGES}))
    assert flat["optim.lr"] == 0.5 and flat["model.kind"] == "dcgan" and "train.seed" in flat


def test_file_errors_are_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("task: gan\nmodel: {kind: dcgan\ndata: {name: cifar10}\n")
    with pytest.raises(ValueError, match=r"bad\.yaml:3:\d+: invalid YAML") as err:
        load_experiment(str(bad))
    assert "\n" not in str(err.value)
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing\n")
    with pytest.raises(ValueError, match="empty"):
        load_experiment(str(empty))
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text("base: {task: gan, data: {name: cifar10}}\nvariants: {a: {}}\n")
    with pytest.raises(ValueError, match="sweep file.*edgegen sweep"):
        load_experiment(str(sweep))


def test_model_section_is_the_model_config_and_follows_the_task():
    from edgegen.models import BetaVAEConfig, DCGANConfig, GPT2Config

    cfg = from_dict(ExperimentConfig, {"task": "vae", "model": {"latent_dim": 8}, **IMAGES})
    assert cfg.model == BetaVAEConfig(latent_dim=8)  # kind from the task
    lm = from_dict(ExperimentConfig, {"task": "lm", "model": {"kind": "gpt2", "n_layer": 2},
                                      "data": {"name": "synthetic-tokens"}})
    assert isinstance(lm.model, GPT2Config) and lm.model.n_layer == 2
    assert from_dict(ExperimentConfig, lm.to_dict()) == lm
    with pytest.raises(ValueError, match=r"model\.latent_dim: unknown key \(section DCGANConfig"):
        from_dict(ExperimentConfig, {"model": {"kind": "dcgan", "latent_dim": 8}, **IMAGES})
    with pytest.raises(ValueError, match=r"model\.kind: expected one of \['dcgan', 'gpt2', 'vae'\]"):
        from_dict(ExperimentConfig, {"model": {"kind": "resnet"}, **IMAGES})
    assert isinstance(from_dict(ExperimentConfig, IMAGES).model, DCGANConfig)


def test_version_1_data_is_migrated_and_newer_refused():
    """Checkpoints written before versioned configs: one flat model section with every kind's
    fields, compress sections as plain dicts."""
    old = {"name": "x", "task": "distill",
           "model": {"kind": "gpt2", "nz": 100, "ngf": 64, "ndf": 64, "latent_dim": 32, "beta": 4.0, "n_layer": 2,
                     "n_embd": 32, "n_head": 2, "vocab_size": 64, "n_positions": 32, "dropout": 0.0,
                     "init_from": None},
           "data": {"name": "synthetic-tokens"},
           "distill": {"teachers": [{"kind": "gpt2", "nz": 100, "latent_dim": 32, "n_layer": 3, "n_embd": 32,
                                     "n_head": 2, "vocab_size": 64, "n_positions": 32, "init_from": "t.pt"}]},
           "compress": {"prune": {"kind": "MagnitudeConfig", "amount": 0.5, "scope": "global",
                                  "importance": "magnitude"}, "ptq": {"kind": "Int8DynamicConfig"}}}
    cfg = ExperimentConfig.from_dict(old, missing_version=1)
    assert cfg.model.n_layer == 2 and cfg.model.vocab_size == 64 and cfg.model.kind == "gpt2"
    assert cfg.distill.teachers[0].n_layer == 3 and cfg.distill.teachers[0].init_from == "t.pt"
    assert cfg.compress.prune.amount == 0.5 and cfg.compress.ptq.kind == "Int8DynamicConfig"
    with pytest.raises(ValueError, match=r"add `version: 1`"):  # as current-version data: refused, with the fix
        ExperimentConfig.from_dict(old)
    with pytest.raises(ValueError, match="newer edgegen"):
        ExperimentConfig.from_dict({**cfg.to_dict(), "version": ExperimentConfig.version + 1})


def test_loading_never_changes_the_presets_or_the_input():
    import copy

    from edgegen.train.config import PRESETS

    before = copy.deepcopy(PRESETS)
    data = {"task": "vae", "data": {"name": "synthetic-images"}}
    kept = copy.deepcopy(data)
    load_experiment(data, "cpu-smoke", ["train.batch_size=2", "model.latent_dim=4"])
    assert PRESETS == before and data == kept


@pytest.mark.parametrize("name", ["lm", "vae"])
def test_configs_in_checkpoints_written_before_versions_still_load(name):
    """The fixtures are the config part of real checkpoints written by edgegen before versioned
    configs (a tiny LM run with pruning + PTQ, a tiny VAE run)."""
    import json
    from pathlib import Path

    from edgegen.train.checkpoint import experiment_config

    old = json.loads((Path(__file__).parent / "fixtures" / f"experiment_v1_{name}.json").read_text())
    cfg = experiment_config({"config": old})
    assert cfg.model.kind == {"lm": "gpt2", "vae": "vae"}[name]
    for key, value in old["model"].items():  # every field of the model's kind kept its value
        if hasattr(cfg.model, key):
            assert getattr(cfg.model, key) == value, key
    model = cfg.model.build()
    assert model is not None
    if name == "lm":
        from edgegen.prune import MagnitudeConfig

        assert cfg.compress.prune == MagnitudeConfig(0.5)
        assert cfg.compress.ptq.kind == "Int8DynamicConfig"
    assert ExperimentConfig.from_dict(cfg.to_dict()) == cfg  # and it is written in the current form


def test_distillation_sections_are_gpt2s():
    base = {"task": "distill", "model": {"kind": "gpt2", "n_layer": 1, "n_embd": 32, "n_head": 2},
            "data": {"name": "synthetic-tokens"}}
    cfg = from_dict(ExperimentConfig, {**base, "distill": {"teachers": [{"init_from": "t.pt"}],
                                                            "stages": [{"n_layer": 2, "n_embd": 32, "n_head": 2}]}})
    assert cfg.distill.teachers[0].kind == "gpt2" and cfg.distill.stages[0].n_layer == 2  # kind filled in
    with pytest.raises(ValueError, match=r"teachers\[0\]\.kind: distillation teachers and stages are GPT-2s"):
        from_dict(ExperimentConfig, {**base, "distill": {"teachers": [{"kind": "vae"}]}})
    # version 1 wrote teachers without a kind as 'dcgan' sections with the flat defaults
    old = {**base, "model": {"kind": "gpt2", "n_layer": 1, "n_embd": 32, "n_head": 2, "nz": 100, "latent_dim": 32},
           "distill": {"teachers": [{"kind": "dcgan", "nz": 100, "latent_dim": 32, "n_layer": 6, "n_embd": 384,
                                     "n_head": 6, "vocab_size": 50257, "n_positions": 1024, "dropout": 0.0,
                                     "init_from": "t.pt"}]}}
    migrated = ExperimentConfig.from_dict(old, missing_version=1)
    teacher = migrated.distill.teachers[0]
    assert teacher.kind == "gpt2" and teacher.init_from == "t.pt"
    assert teacher == from_dict(ExperimentConfig, {**base, "distill": {"teachers": [{"init_from": "t.pt"}]}}
                                ).distill.teachers[0]  # the same section as today's reading of that file
    with pytest.raises(ValueError, match="add `version: 1`"):
        ExperimentConfig.from_dict(old)


def test_training_schedules_only_configs_with_an_amount():
    with pytest.raises(ValueError, match="prune: training ramps the pruned amount.*NMConfig has no amount"):
        from_dict(ExperimentConfig, {**IMAGES, "compress": {"prune": {"kind": "NMConfig", "n": 2, "m": 4}}})


@pytest.mark.parametrize("key, past", [("prune_begin", 0), ("prune_end", 1)], ids=["begin", "end"])
def test_a_pruning_schedule_that_would_not_end_within_the_run_is_refused(tmp_path, key, past):
    from edgegen.prune import sparsity
    from edgegen.train import Trainer
    from tests.train.helpers import tiny

    prune = {"prune": {"kind": "MagnitudeConfig", "amount": 0.5}}

    # prune_begin at the last step, or prune_end one after it: a model that would ship under-pruned.
    def refused(steps):
        return (f"compress.{key}: {steps + past} is (not before|after) the run's last optimizer step "
                f"\\({steps} in all\\)")

    # Steps the train section states (6, or max_steps 4): refused when the config is loaded ...
    with pytest.raises(ValueError, match=refused(6)):
        tiny("vae", tmp_path, train={"steps_per_epoch": 6}, compress={**prune, key: 6 + past})
    with pytest.raises(ValueError, match=refused(4)):
        tiny("vae", tmp_path, train={"steps_per_epoch": 6, "max_steps": 4}, compress={**prune, key: 4 + past})
    # ... steps counted from the data (88 training images in batches of 8: 11): when the Trainer is built.
    cfg = tiny("vae", tmp_path, train={"steps_per_epoch": None}, compress={**prune, key: 11 + past})
    with pytest.raises(ValueError, match=refused(11)):
        Trainer(cfg, tmp_path / "r", progress=False)
    # A schedule ending at the last step ships the configured sparsity.
    cfg = tiny("vae", tmp_path, train={"steps_per_epoch": 6}, compress={**prune, "prune_end": 6})
    trainer = Trainer(cfg, tmp_path / "ok", progress=False)
    trainer.fit()
    assert sparsity(trainer.task.main_model()) == pytest.approx(0.5, abs=0.01)
