"""Data-parallel training under torchrun (2 CPU processes, gloo) ends with the weights of
single-process training on the same global batch."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from edgegen.config import to_dict
from edgegen.train import Trainer
from edgegen.train import checkpoint as ckpt
from tests.train.helpers import tiny

ROOT = Path(__file__).resolve().parents[2]

WORKER = """
import json, sys
import torch
from edgegen.train import Trainer, load_experiment
torch.set_num_threads(1)
cfg = load_experiment(json.loads(sys.argv[1]))
Trainer(cfg, sys.argv[2], progress=False).fit()
"""


@pytest.mark.integration
@pytest.mark.parametrize("task", ["lm", "vae"])
def test_two_process_ddp_equals_single_process(tmp_path, task):
    # The VAE draws posterior noise per step: each process must take its own rows of it.
    cfg = tiny(task, tmp_path, train={"steps_per_epoch": 4, "batch_size": 8, "threads": 1})
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1",
           "TMPDIR": str(tmp_path)}  # torchrun's log folders, removed with the test's
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                        "--master_addr", "127.0.0.1", "--master_port", "0", "--rdzv_backend", "c10d",
                        "--rdzv_endpoint", "127.0.0.1:0", str(script), json.dumps(to_dict(cfg)),
                        str(tmp_path / "ddp")], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    single = Trainer(cfg, tmp_path / "single", progress=False)
    single.fit()
    snap = ckpt.load(tmp_path / "ddp" / "checkpoints" / "last.pt")
    ddp = snap["modules"]["model"]
    # The logged training loss is the whole global batch's, not rank 0's half.
    got, want = [loss for _, loss in snap["state"]["curve"]], [loss for _, loss in single.state.curve]
    assert got == pytest.approx(want, rel=1e-5)
    # Same gradients up to float32 summation order (the all-reduce averages two half-batch means);
    # AdamW's normalised steps (3e-3 each) turn that into differences of a few 1e-6 where a
    # gradient is near 0. A wrong shard or a missing average would move weights by ~1e-3.
    for k, v in single.task.modules["model"].state_dict().items():
        torch.testing.assert_close(ddp[k], v, rtol=1e-4, atol=2e-5, msg=lambda m, k=k: f"{k} differs: {m}")


@pytest.mark.parametrize("cuda", [False, True], ids=["no-cuda", "cuda"])
def test_pick_device_names_train_device_for_what_it_cannot_give(monkeypatch, cuda):
    from edgegen.train.distributed import pick_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    assert pick_device("auto") == torch.device("cuda" if cuda else "cpu")
    assert pick_device("cpu") == torch.device("cpu")
    for name in ("cuda", "cuda:1"):
        if cuda:
            assert pick_device(name) == torch.device(name)
        else:
            with pytest.raises(ValueError, match=f"^train.device: '{name}' asked for, but no CUDA device is available$"):
                pick_device(name)
    with pytest.raises(ValueError, match="^train.device: .*gpu0"):
        pick_device("gpu0")
