"""The base of the model configs: one tagged union (``kind: dcgan | vae | gpt2``) that is both a
model's own config and the ``model`` section of an experiment."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from edgegen.config import Config


@dataclass
class ModelConfig(Config, family=True):
    """A model's architecture. ``init_from`` (keyword only) is where a training run takes the
    weights from: a checkpoint file of this model (for GPT-2 also a Hugging Face folder); it is
    not part of the architecture and the model constructors ignore it."""

    init_from: Optional[str] = field(default=None, kw_only=True)

    def build(self):
        """The model (for DCGAN the pair generator, discriminator) with fresh weights."""
        raise NotImplementedError
