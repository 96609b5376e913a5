"""Progressive distillation stage by stage, and the static-INT8 calibration inputs of a run."""

from __future__ import annotations

import pytest
import torch

from edgegen.tracking import NullTracker
from edgegen.train import Trainer
from edgegen.train.data import build_batches
from edgegen.train.posthoc import calibration_inputs
from tests.train.helpers import tiny

GPT = {"kind": "gpt2", "n_embd": 32, "n_head": 2, "vocab_size": 64, "n_positions": 32}


class RecordingTracker(NullTracker):
    """Records the child runs opened and the status each was finished with."""

    def __init__(self):
        self.children: list[tuple[str, str | None]] = []
        self.finished: list[tuple[str, str]] = []

    def child(self, name, run_dir=None, resume=False):
        outer = self

        class Child(NullTracker):
            def finish(self, status="FINISHED"):
                outer.finished.append((name, status))

        self.children.append((name, None if run_dir is None else str(run_dir)))
        return Child()


@pytest.fixture(scope="module")
def teacher_checkpoint(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("teacher")
    Trainer(tiny("lm", tmp, name="t", model={"n_layer": 3}, train={"steps_per_epoch": 4}), tmp / "t",
            progress=False).fit()
    return str(tmp / "t" / "checkpoints" / "last.pt")


def _chain(tmp_path, teacher, **sections):
    return tiny("lm", tmp_path, task="distill", name="chain", model={"n_layer": 1},
                train={"steps_per_epoch": 3},
                distill={"teachers": [{**GPT, "n_layer": 3, "init_from": teacher}],
                         "stages": [{**GPT, "n_layer": 2}]}, **sections)


def test_only_the_final_stage_is_compressed_and_each_stage_is_its_own_run(tmp_path, teacher_checkpoint):
    from edgegen.train.progressive import train_progressive

    cfg = _chain(tmp_path, teacher_checkpoint, compress={"ptq": {"kind": "Int8DynamicConfig"}})
    tracker = RecordingTracker()
    out = train_progressive(cfg, tmp_path / "p", tracker, progress=False)

    # One child run per stage, named by index and depth, each in its own folder, each finished.
    assert tracker.children == [("stage0-2L", str(tmp_path / "p" / "stage0")),
                                ("stage1-1L", str(tmp_path / "p" / "stage1"))]
    assert tracker.finished == [("stage0-2L", "FINISHED"), ("stage1-1L", "FINISHED")]
    # The compress section reaches the last stage only: the intermediate student ships unquantized.
    assert not (tmp_path / "p" / "stage0" / "model-ptq.safetensors").exists()
    assert (tmp_path / "p" / "stage1" / "model-ptq.safetensors").is_file()
    assert "final_float" in out and "final_float" not in out["stages"][0]
    # The result is the last stage's, with every stage's (sizes and checkpoints) under "stages".
    assert [(s["stage"], s["n_layer"], s["n_embd"]) for s in out["stages"]] == [(0, 2, 32), (1, 1, 32)]
    assert out["checkpoint"] == out["stages"][1]["checkpoint"] == str(tmp_path / "p" / "stage1" / "checkpoints"
                                                                      / "last.pt")
    # Each stage is named after the experiment and distilled from one teacher: the experiment's
    # teacher for stage 0, stage 0's last checkpoint for stage 1.
    s0 = torch.load(tmp_path / "p" / "stage0" / "checkpoints" / "last.pt", weights_only=True)["config"]
    s1 = torch.load(tmp_path / "p" / "stage1" / "checkpoints" / "last.pt", weights_only=True)["config"]
    assert (s0["name"], s1["name"]) == ("chain-stage0", "chain-stage1")
    assert [t["init_from"] for t in s0["distill"]["teachers"]] == [teacher_checkpoint]
    assert [t["init_from"] for t in s1["distill"]["teachers"]] == [out["stages"][0]["checkpoint"]]
    assert s0["distill"]["stages"] == s1["distill"]["stages"] == []
    assert s0["compress"] is None and s1["compress"] is not None


def test_a_failing_stage_finishes_its_run_as_failed_and_stops_the_chain(tmp_path, teacher_checkpoint):
    from edgegen.train.progressive import train_progressive

    class Boom(Exception):
        pass

    def fail_in_stage0(trainer, metrics):
        raise Boom()

    tracker = RecordingTracker()
    with pytest.raises(Boom):
        train_progressive(_chain(tmp_path, teacher_checkpoint), tmp_path / "p", tracker, progress=False,
                          callbacks=(fail_in_stage0,))
    assert tracker.finished == [("stage0-2L", "FAILED")]  # stage 1 never opened
    assert not (tmp_path / "p" / "stage1").exists()


# ---------------------------------------------------------------------------- calibration inputs


def test_dcgan_calibration_is_four_seeded_latent_batches_whatever_the_data(tmp_path):
    cfg = tiny("gan", tmp_path)
    first, again = calibration_inputs(cfg, None), calibration_inputs(cfg, None)
    g = torch.Generator().manual_seed(0)
    expected = [torch.randn(32, 8, generator=g) for _ in range(4)]
    assert len(first) == 4
    for a, b, e in zip(first, again, expected):
        assert a.shape == (32, 8) and torch.equal(a, e) and torch.equal(b, e)


def test_image_calibration_is_the_validation_batches(tmp_path):
    cfg = tiny("vae", tmp_path, data={"val_batches": 2})
    batches = build_batches(cfg.data, 8, 0)
    got = calibration_inputs(cfg, batches)
    expected = list(batches.val_batches())
    assert len(got) == len(expected) == 2
    assert all(torch.equal(a, b) for a, b in zip(got, expected))
    assert got[0].shape == (8, 3, 64, 64)


def test_token_calibration_is_the_validation_blocks_inputs_not_their_targets(tmp_path):
    cfg = tiny("lm", tmp_path, data={"val_batches": 2})
    batches = build_batches(cfg.data, 8, 0, 64)
    got = calibration_inputs(cfg, batches)
    expected = list(batches.val_batches())
    assert len(got) == len(expected) == 2
    for a, (x, y) in zip(got, expected):
        assert a.dtype == torch.int64 and a.shape == (8, 16)
        assert torch.equal(a, x) and not torch.equal(a, y)


def test_calibration_without_validation_batches_names_the_setting(tmp_path):
    cfg = tiny("vae", tmp_path)

    class NoValidation:
        def val_batches(self):
            return iter(())

    with pytest.raises(ValueError, match=r"compress\.ptq: static INT8 needs calibration batches"):
        calibration_inputs(cfg, NoValidation())
