"""Low-rank factorization of Linear layers and pointwise (1x1) convolutions by truncated SVD
(float64), applied physically."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from edgegen.prune.masks import prunable_weights
from edgegen.reduce.config import LowRankConfig
from edgegen.transform import FilterFn, weight_read_by_parent


class LowRankLinear(nn.Module):
    """``up(down(x))``: ``down`` maps ``in_features`` to ``rank`` (no bias), ``up`` maps ``rank``
    to ``out_features`` (with the bias). Holds ``rank * (in + out)`` weights instead of
    ``in * out``; both are plain ``nn.Linear`` layers, so quantization, export and
    ``torch.compile`` treat them as any other."""

    def __init__(self, in_features: int, out_features: int, rank: int, bias: bool = True, device=None, dtype=None):
        super().__init__()
        if isinstance(rank, bool) or not isinstance(rank, int):
            raise TypeError(f"rank: expected an int, got {rank!r}")
        if not 1 <= rank <= min(in_features, out_features):
            raise ValueError(f"rank: expected 1 <= rank <= min(in, out) = {min(in_features, out_features)}, got {rank}")
        self.in_features, self.out_features, self.rank = in_features, out_features, rank
        self.down = nn.Linear(in_features, rank, bias=False, device=device, dtype=dtype)
        self.up = nn.Linear(rank, out_features, bias=bias, device=device, dtype=dtype)

    @classmethod
    @torch.no_grad()
    def from_linear(cls, linear: nn.Linear, rank: int, svd: tuple[Tensor, Tensor, Tensor] | None = None
                    ) -> "LowRankLinear":
        """The best rank-``rank`` approximation of ``linear`` in the Frobenius norm (Eckart-Young):
        ``W ~ (U_r sqrt(S_r)) (sqrt(S_r) V_r^T)``, computed in float64, stored in the layer's dtype.
        ``svd``: the weight's float64 (U, S, Vh) when the caller already has it."""
        w = linear.weight
        u, s, vh = svd if svd is not None else _svd(w)
        out = cls(linear.in_features, linear.out_features, rank, linear.bias is not None, w.device, w.dtype)
        root = s[:rank].sqrt()
        out.down.weight.copy_((root[:, None] * vh[:rank]).to(w.dtype))
        out.up.weight.copy_((u[:, :rank] * root[None, :]).to(w.dtype))
        if linear.bias is not None:
            out.up.bias.copy_(linear.bias.detach())
        out.train(linear.training)
        return out

    def weight_product(self) -> Tensor:
        """The dense [out, in] weight the two layers compute."""
        return self.up.weight @ self.down.weight

    def forward(self, x: Tensor) -> Tensor:
        return self.up(self.down(x))

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, rank={self.rank}"


class LowRankConv1x1(nn.Module):
    """A pointwise (1x1) convolution as two: ``down`` (``in -> rank``, 1x1, carrying the original
    stride and zero padding, no bias) then ``up`` (``rank -> out``, 1x1, with the bias). A 1x1
    convolution is a Linear map over channels at every pixel, so the truncated SVD of its
    [out, in] weight gives the best rank-``rank`` pair, exactly as for :class:`LowRankLinear`."""

    def __init__(self, in_channels: int, out_channels: int, rank: int, stride=1, padding=0, bias: bool = True,
                 device=None, dtype=None):
        super().__init__()
        if isinstance(rank, bool) or not isinstance(rank, int):
            raise TypeError(f"rank: expected an int, got {rank!r}")
        if not 1 <= rank <= min(in_channels, out_channels):
            raise ValueError(f"rank: expected 1 <= rank <= min(in, out) = {min(in_channels, out_channels)}, got {rank}")
        self.in_channels, self.out_channels, self.rank = in_channels, out_channels, rank
        self.down = nn.Conv2d(in_channels, rank, 1, stride, padding, bias=False, device=device, dtype=dtype)
        self.up = nn.Conv2d(rank, out_channels, 1, bias=bias, device=device, dtype=dtype)

    @classmethod
    @torch.no_grad()
    def from_conv(cls, conv: nn.Conv2d, rank: int, svd: tuple[Tensor, Tensor, Tensor] | None = None
                  ) -> "LowRankConv1x1":
        """The best rank-``rank`` approximation of a pointwise ``conv`` (see :func:`is_pointwise`)."""
        w = conv.weight
        u, s, vh = svd if svd is not None else _svd(w[:, :, 0, 0])
        out = cls(conv.in_channels, conv.out_channels, rank, conv.stride, conv.padding, conv.bias is not None,
                  w.device, w.dtype)
        root = s[:rank].sqrt()
        out.down.weight.copy_((root[:, None] * vh[:rank]).to(w.dtype)[:, :, None, None])
        out.up.weight.copy_((u[:, :rank] * root[None, :]).to(w.dtype)[:, :, None, None])
        if conv.bias is not None:
            out.up.bias.copy_(conv.bias.detach())
        out.train(conv.training)
        return out

    def weight_product(self) -> Tensor:
        """The dense [out, in] channel-mixing matrix the two convolutions compute."""
        return self.up.weight[:, :, 0, 0] @ self.down.weight[:, :, 0, 0]

    def forward(self, x: Tensor) -> Tensor:
        return self.up(self.down(x))

    def extra_repr(self) -> str:
        return f"in_channels={self.in_channels}, out_channels={self.out_channels}, rank={self.rank}"


def is_pointwise(m: nn.Module) -> bool:
    """A Conv2d with a 1x1 kernel, one group and zero padding: a per-pixel Linear over channels."""
    return (isinstance(m, nn.Conv2d) and tuple(m.kernel_size) == (1, 1) and m.groups == 1
            and m.padding_mode == "zeros" and not isinstance(m.padding, str))


def _dims(m: nn.Module) -> tuple[int, int, Tensor] | None:
    """(in, out, the [out, in] weight) of a factorizable layer, else None."""
    if isinstance(m, nn.Linear):
        return m.in_features, m.out_features, m.weight
    if is_pointwise(m):
        return m.in_channels, m.out_channels, m.weight[:, :, 0, 0]
    return None


def _svd(weight: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    return torch.linalg.svd(weight.detach().double(), full_matrices=False)


def energy_rank(singular_values: Tensor, energy: float) -> int:
    """The smallest r whose top-r squared singular values hold at least ``energy`` of the total."""
    sq = singular_values.double().pow(2)
    total = float(sq.sum())
    if total == 0.0:
        return 1
    kept = torch.cumsum(sq, 0) / total
    return int(torch.searchsorted(kept, torch.tensor(energy, dtype=torch.float64) - 1e-12).item()) + 1


def plan_ranks(model: nn.Module, config: LowRankConfig, filter_fn: FilterFn | None = None) -> dict[str, int]:
    """{layer name: rank} that ``reduce_`` would apply: only layers where the factorization holds
    fewer parameters, never tied weights."""
    return {name: r for name, (r, _) in _plan(model, config, filter_fn).items()}


def _check_finite(name: str, weight: Tensor) -> None:
    if not bool(torch.isfinite(weight).all()):
        raise ValueError(f"model: layer {name!r} has NaN or infinite weights; a low-rank factorization needs finite "
                         "ones")


def _check_not_wrapped(model: nn.Module, name: str) -> None:
    """The wrappers a factorization of the layer would break: a ``QATModule`` (it fake-quantizes
    its layer's ``.weight``) or a ``SwitchablePrecision`` (its quantized twin would keep the dense
    weight). A ``LowPrecision`` wrapper only casts its layer and input, so the layer is factorized
    in its dtype inside it."""
    from edgegen.quant.api import check_not_wrapped
    from edgegen.quant.mixed import SwitchablePrecision
    from edgegen.quant.qat import QATModule

    check_not_wrapped(model, name, reasons={
        QATModule: "which fake-quantizes the layer's weight: factorize the float model first, then prepare it for QAT",
        SwitchablePrecision: "whose quantized copy of the layer the factorization would not change: factorize the "
                             "float model first, then enable_precision_switch_"})


def _plan(model: nn.Module, config: LowRankConfig, filter_fn: FilterFn | None) -> dict[str, tuple[int, tuple | None]]:
    """{layer name: (rank, the weight's SVD when the energy rule computed it, else None)}."""
    plan = {}
    factorized = [n for n, m in model.named_modules() if isinstance(m, (LowRankLinear, LowRankConv1x1))]
    for name, m in prunable_weights(model, filter_fn):  # selected, never a tied weight
        dims = _dims(m)
        if dims is None or weight_read_by_parent(model, name):  # PyTorch's attention reads .weight itself
            continue
        if any(name.startswith(f + ".") for f in factorized):  # a factor of an earlier reduction: left as it is
            continue
        n_in, n_out, weight = dims
        if config.ranks is not None and name not in config.ranks:
            continue
        _check_not_wrapped(model, name)  # only a layer that would be factorized
        limit = min(n_in, n_out)
        if config.ranks is not None or config.rank is not None:
            r = config.ranks[name] if config.ranks is not None else config.rank
            if r > limit:
                field = f"ranks.{name}" if config.ranks is not None else "rank"
                raise ValueError(f"{field}: {r} exceeds min(in, out) = {limit} of {name}")
            if config.ranks is not None:  # a plan is applied as written
                _check_finite(name, weight)
                plan[name] = (r, None)
                continue
            svd = None
        elif config.fraction is not None:
            r, svd = max(1, math.ceil(config.fraction * limit - 1e-9)), None
        else:
            _check_finite(name, weight)
            svd = _svd(weight)  # kept: the factorization reuses it
            r = energy_rank(svd[1], config.energy)
        if r * (n_in + n_out) < n_in * n_out:
            if svd is None:  # the energy rule checked before its SVD
                _check_finite(name, weight)
            plan[name] = (r, svd)
    if config.ranks is not None:
        missing = sorted(set(config.ranks) - set(plan))
        if missing:
            raise ValueError(f"ranks.{missing[0]}: no Linear or 1x1 Conv2d layer of that name (untied, selected, "
                             "not inside PyTorch's MultiheadAttention / Transformer layers) in the model")
    return plan


def lowrank_(model: nn.Module, config: LowRankConfig, filter_fn: FilterFn | None) -> int:
    plan = _plan(model, config, filter_fn)
    for name, (r, svd) in plan.items():
        parent, _, child = name.rpartition(".")
        owner = model.get_submodule(parent) if parent else model
        layer = getattr(owner, child)
        low = (LowRankLinear.from_linear(layer, r, svd) if isinstance(layer, nn.Linear)
               else LowRankConv1x1.from_conv(layer, r, svd))
        setattr(owner, child, low)
    return len(plan)


def lowrank_layout(model: nn.Module) -> dict[str, int]:
    """{layer name: rank} of every :class:`LowRankLinear` in ``model``: with
    ``LowRankConfig(ranks=...)`` it rebuilds the same structure in a fresh model, which then loads
    the reduced model's state dict."""
    return {name: m.rank for name, m in model.named_modules() if isinstance(m, (LowRankLinear, LowRankConv1x1))}
