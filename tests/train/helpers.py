"""Tiny experiment configs for the training tests (synthetic data, no tracking unless asked)."""

from __future__ import annotations

from edgegen.config import merge
from edgegen.train import load_experiment

BASE = {
    "gan": {"task": "gan", "model": {"kind": "dcgan", "nz": 8, "ngf": 8, "ndf": 8},
            "data": {"name": "synthetic-images", "synthetic_size": 96, "val_batches": 1},
            "optim": {"name": "adam", "lr": 2e-4, "betas": [0.5, 0.999]}},
    "vae": {"task": "vae", "model": {"kind": "vae", "latent_dim": 8, "beta": 1.0},
            "data": {"name": "synthetic-images", "synthetic_size": 96, "val_batches": 1},
            "optim": {"name": "adam", "lr": 1e-3, "betas": [0.9, 0.999]}},
    "lm": {"task": "lm", "model": {"kind": "gpt2", "n_layer": 1, "n_embd": 32, "n_head": 2, "vocab_size": 64,
                                   "n_positions": 32},
           "data": {"name": "synthetic-tokens", "seq_len": 16, "synthetic_size": 256, "val_batches": 1},
           "optim": {"name": "adamw", "lr": 3e-3, "betas": [0.9, 0.95], "grad_clip": 1.0}},
}


def tiny(base: str, tmp_path, **sections) -> "ExperimentConfig":  # noqa: F821
    data = merge(BASE[base], {"name": f"t-{base}", "output_dir": str(tmp_path / "runs"),
                              "tracking": {"enabled": False},
                              "train": {"batch_size": 8, "epochs": 1, "steps_per_epoch": 6, "log_every": 1}})
    return load_experiment(merge(data, sections))
