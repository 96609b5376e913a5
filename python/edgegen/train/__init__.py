"""Training: experiment configs, tasks (DCGAN, Beta-VAE, GPT-2 LM, distillation), the shared loop
with atomic checkpoints and exact resume, compression during training, and seed sweeps."""

from edgegen.train.config import (
    PRESETS,
    CompressConfig,
    DataConfig,
    DistillConfig,
    ExperimentConfig,
    ModelConfig,
    OptimConfig,
    TrackingConfig,
    TrainConfig,
    load_experiment,
)
from edgegen.train.loop import Trainer, TrainState

__all__ = ["ExperimentConfig", "ModelConfig", "DataConfig", "OptimConfig", "TrainConfig", "DistillConfig",
           "CompressConfig", "TrackingConfig", "PRESETS", "load_experiment", "Trainer", "TrainState"]
