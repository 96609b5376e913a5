"""Models: one readable file each, with a dataclass config."""

from edgegen.models.blocks import SqueezeExcite, parameter_count
from edgegen.models.dcgan import DCGANConfig, DCGANDiscriminator, DCGANGenerator
from edgegen.models.early_exit import EarlyExitConfig, EarlyExitGPT2, ExitStats, add_early_exits, train_exits
from edgegen.models.generation import dynamic_nll, generate_dynamic
from edgegen.models.gpt2 import GPT2, DenseAttention, GPT2Config, sample_next
from edgegen.models.vae import BetaVAE, BetaVAEConfig

__all__ = ["GPT2", "GPT2Config", "DenseAttention", "DCGANConfig", "DCGANGenerator",
           "DCGANDiscriminator", "BetaVAE", "BetaVAEConfig", "SqueezeExcite", "parameter_count",
           "generate_dynamic", "dynamic_nll", "sample_next", "EarlyExitConfig", "EarlyExitGPT2", "ExitStats", "add_early_exits",
           "train_exits"]
