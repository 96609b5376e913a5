"""``quantize_``: replace layers in place according to a config."""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

from edgegen.quant.config import Bf16Config, Fp16Config, Int4WeightOnlyConfig, Int8DynamicConfig, config_from_dict
from edgegen.quant.modules import Int8Linear

FilterFn = Callable[[nn.Module, str], bool]


class LowPrecision(nn.Module):
    """Runs ``module`` in ``dtype``: its parameters are stored in it, inputs are cast in and
    outputs cast back to the input's dtype."""

    def __init__(self, module: nn.Module, dtype: torch.dtype):
        super().__init__()
        self.module = module.to(dtype)
        self.dtype = dtype

    def forward(self, x: Tensor) -> Tensor:
        return self.module(x.to(self.dtype)).to(x.dtype)


def _replace(model: nn.Module, kinds: tuple, make: Callable[[nn.Module], nn.Module],
             filter_fn: FilterFn | None) -> int:
    targets = [(name, m) for name, m in model.named_modules()
               if isinstance(m, kinds) and name and (filter_fn is None or filter_fn(m, name))]
    for name, m in targets:
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, make(m))
    return len(targets)


def quantize_(model: nn.Module, config, filter_fn: FilterFn | None = None) -> nn.Module:
    """Quantize ``model`` in place (``filter_fn(module, name)`` selects layers) and return it.

    * :class:`Int8DynamicConfig`: nn.Linear -> :class:`Int8Linear` (integer GEMM kernels).
    * :class:`Int4WeightOnlyConfig`: nn.Linear -> :class:`Int4Linear`.
    * :class:`Fp16Config` / :class:`Bf16Config`: nn.Linear and convolutions run in 16-bit.
    """
    if isinstance(config, dict):
        config = config_from_dict(config)
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected an nn.Module, got {type(model).__name__}")
    if filter_fn is not None and not callable(filter_fn):
        raise TypeError(f"filter_fn: expected a callable (module, name) -> bool, got {type(filter_fn).__name__}")
    if isinstance(config, Int8DynamicConfig):
        n = _replace(model, (nn.Linear,), Int8Linear.from_float, filter_fn)
    elif isinstance(config, Int4WeightOnlyConfig):
        from edgegen.quant.modules import Int4Linear

        n = _replace(model, (nn.Linear,), lambda m: Int4Linear.from_float(m, config.group_size), filter_fn)
    elif isinstance(config, (Fp16Config, Bf16Config)):
        dtype = torch.float16 if isinstance(config, Fp16Config) else torch.bfloat16
        n = _replace(model, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d), lambda m: LowPrecision(m, dtype), filter_fn)
    else:
        raise TypeError("config: expected Int8DynamicConfig, Int4WeightOnlyConfig, Fp16Config or Bf16Config (or a "
                        f"dict from their to_dict()), got {type(config).__name__}")
    if n == 0:
        raise ValueError("model: nothing to quantize (no layer of a supported kind was selected by filter_fn)")
    return model
