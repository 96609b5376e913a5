"""Structured pruning: whole channels of coupled groups (masked), and physical removal."""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from edgegen.ops import prune as ops
from edgegen.prune.config import ChannelConfig
from edgegen.prune.graph import ChannelGroup, Slice, _as_tuple, _tensors, eval_mode, find_channel_groups
from edgegen.prune.masks import apply_mask_, finalize_, raw_parameter
from edgegen.transform import FilterFn


def _example_inputs(model: nn.Module, example_inputs):
    if example_inputs is not None:
        return _as_tuple(example_inputs)
    make = getattr(model, "example_inputs", None)
    if callable(make):
        return _as_tuple(make())
    raise ValueError("example_inputs: channel pruning traces the model to find coupled layers; pass "
                     "example_inputs (a tensor or tuple of tensors the model accepts), or give the model "
                     "an example_inputs() method")


def _groups_on(model: nn.Module, example_inputs) -> list[tuple[ChannelGroup, dict]]:
    """Channel groups of ``model`` (which may carry masks), with slices that refer to ``model``'s
    own modules: the tracing runs on a finalized copy."""
    shadow = finalize_(copy.deepcopy(model))
    wrapped = _unwrap_qat_(shadow)
    names = {id(m): n for n, m in shadow.named_modules()}
    real_names = {id(m): n for n, m in model.named_modules()}

    def real(m: nn.Module) -> nn.Module:  # the model's module behind a shadow module
        n = names[id(m)]
        return model.get_submodule(f"{n}.module" if n in wrapped else n)

    out = []
    for g in find_channel_groups(shadow, example_inputs):
        def remap(slices: list[Slice]) -> list[Slice]:
            return [Slice(real(s.module), s.name, s.dim, s.repeat) for s in slices]
        real_group = ChannelGroup(g.channels, remap(g.producers), remap(g.members), remap(g.consumers), g.frozen,
                                  [real(m) for m in g.unflattens])
        out.append((real_group, real_names))
    return out


def _unwrap_qat_(model: nn.Module) -> dict:
    """Replace every QAT wrapper of ``model`` by the layer it wraps (whose parameters the wrapper
    uses), so the tracer sees the plain layers; returns {name: wrapper} of those taken off. The
    masks then go on the wrapped layers, which the QAT forward reads."""
    from edgegen.quant.qat import QATModule

    wrappers = {n: m for n, m in model.named_modules() if isinstance(m, QATModule) and n}
    for n, w in wrappers.items():
        parent, _, leaf = n.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, leaf, w.module)
    return wrappers


def _weights_for_importance(group: ChannelGroup) -> list[Slice]:
    return [s for s in group.producers + group.members if s.tensor().dim() >= 2]


def group_importance(group: ChannelGroup, importance: str) -> Tensor:
    """Per-channel importance of a group, summed over its producer (and depthwise) filters: L1 norm,
    L2 norm, or first-order Taylor sum |w * grad|."""
    total = torch.zeros(group.channels, dtype=torch.float64)
    for s in _weights_for_importance(group):
        w = s.tensor().detach()
        grad = None
        if importance == "taylor":
            grad = raw_parameter(s.module, s.name).grad
            if grad is None:
                raise ValueError("importance: 'taylor' needs gradients; run a backward pass before pruning "
                                 f"({type(s.module).__name__}.{s.name} has no .grad)")
        p = 2 if importance == "l2" else 1
        norms = ops.channel_norms(w, s.dim, p, grad).double().view(group.channels, s.repeat)
        total += norms.pow(2).sum(1) if p == 2 else norms.sum(1)
    return total.sqrt() if importance == "l2" else total


def _channel_mask(keep: Tensor, s: Slice) -> Tensor:
    t = s.tensor()
    shape = [1] * t.dim()
    shape[s.dim] = keep.numel() * s.repeat
    return keep.repeat_interleave(s.repeat).view(shape).expand(t.shape)


def _is_parameter(module: nn.Module, name: str) -> bool:
    return name in module._parameters or parametrize.is_parametrized(module, name)


def prune_channels_(model: nn.Module, config: ChannelConfig,
                    filter_fn: FilterFn | None = None, example_inputs=None) -> int:
    """Mask whole channels of every prunable group whose producers pass ``filter_fn``: producer
    filters and biases, BatchNorm scales and shifts, depthwise filters and the consumers' input
    channels, so the masked model computes exactly what the physically smaller one will.
    Returns the number of channels masked."""
    inputs = _example_inputs(model, example_inputs)
    groups = []
    for g, names in _groups_on(model, inputs):
        if not g.prunable:
            continue
        if filter_fn is not None and not all(filter_fn(s.module, names[id(s.module)]) for s in g.producers):
            continue
        groups.append(g)
    if not groups:
        raise ValueError("model: no prunable channel group (every group reaches the output, is frozen by an "
                         "op the tracer does not model or by a layer used twice / a shared weight, or was excluded "
                         "by filter_fn)")
    # Importance first, for every group, before any mask changes a shared layer.
    plans = []
    for g in groups:
        imp = group_importance(g, config.importance)
        keep_n = config.channels_to_keep(g.channels)
        keep = torch.ones(g.channels, dtype=torch.bool)
        keep[torch.sort(imp, stable=True).indices[: g.channels - keep_n]] = False
        plans.append((g, keep))
    removed = 0
    for g, keep in plans:
        if keep.all():
            continue
        removed += int((~keep).sum())
        for s in g.slices():
            if _is_parameter(s.module, s.name):
                apply_mask_(s.module, s.name, _channel_mask(keep, s))
    return removed


# --- physical removal ----------------------------------------------------------------------------


def _live_channels(group: ChannelGroup) -> Tensor:
    """Channels some consumer still reads (a channel every consumer ignores can go, exactly)."""
    live = torch.zeros(group.channels, dtype=torch.bool)
    for s in group.consumers:
        t = s.tensor().detach()
        x = t.movedim(s.dim, 0).reshape(group.channels, -1)
        live |= (x != 0).any(dim=1).cpu()
    return live


def _select(module: nn.Module, name: str, dim: int, index: Tensor) -> None:
    old = getattr(module, name)
    new = old.detach().index_select(dim, index.to(old.device)).clone()
    if name in module._parameters:
        module._parameters[name] = nn.Parameter(new, requires_grad=old.requires_grad)
    else:
        module._buffers[name] = new


def _refresh_shape_attributes(module: nn.Module) -> None:
    w = getattr(module, "weight", None)
    if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d,
                           nn.ConvTranspose3d)):
        transposed = isinstance(module, (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d))
        if module.groups > 1:  # depthwise (the only grouped case the tracer lets through)
            module.in_channels = module.out_channels = module.groups = w.shape[0]
        elif transposed:
            module.in_channels, module.out_channels = w.shape[0], w.shape[1]
        else:
            module.out_channels, module.in_channels = w.shape[0], w.shape[1]
    elif isinstance(module, nn.Linear):
        module.out_features, module.in_features = w.shape
    elif isinstance(module, nn.modules.batchnorm._NormBase):
        module.num_features = module.running_mean.shape[0] if module.running_mean is not None else w.shape[0]


def _run(model: nn.Module, inputs: tuple, seed: int):
    with eval_mode(model), torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return model(*inputs)


def shrink(model: nn.Module, example_inputs=None, check: bool = True, atol: float = 1e-5,
           rtol: float = 1e-5) -> nn.Module:
    """A physically smaller dense copy of ``model``: masks are baked in, then every channel of a
    coupled group that no consumer reads any more (and every attention head whose output
    projection columns are all zero) is removed from all layers of its group. ``model`` itself is
    not changed. With ``check`` the copy's outputs on ``example_inputs`` are compared with the
    original's (eval mode, same random seed) and a mismatch raises.

    Examples:
        >>> import torch
        >>> from edgegen.models import DCGANConfig, DCGANGenerator
        >>> from edgegen.prune import ChannelConfig, prune_
        >>> g = DCGANGenerator(DCGANConfig(nz=16, ngf=16)).eval()
        >>> z = torch.randn(2, 16)
        >>> _ = prune_(g, ChannelConfig(0.5), example_inputs=(z,))
        >>> small = shrink(g, (z,))              # checked: the same images as the masked model
        >>> sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in g.parameters())
        True
    """
    from edgegen.prune.ffn import shrink_ffn_
    from edgegen.prune.heads import shrink_heads_

    inputs = _example_inputs(model, example_inputs)
    small = finalize_(copy.deepcopy(model))
    # QAT wrappers come off for the tracing (their fake-quantized weights belong to no module) and
    # go back on afterwards, their per-output-channel scales cut like the layer they wrap.
    with torch.no_grad():
        shrink_heads_(small)  # both leave layers under QAT wrappers as they are
        shrink_ffn_(small)
        wrappers = _unwrap_qat_(small)
        wrapper_of = {id(w.module): w for w in wrappers.values()}
        plans = []
        for g in find_channel_groups(small, inputs):
            if not g.prunable:
                continue
            live = _live_channels(g)
            if bool(live.all()):
                continue
            if not bool(live.any()):
                live[0] = True  # a layer keeps at least one channel
            plans.append((g, live))
        touched = {}
        for g, live in plans:
            for s in g.slices():
                index = live.repeat_interleave(s.repeat).nonzero().flatten()
                _select(s.module, s.name, s.dim, index)
                touched[id(s.module)] = s.module
                w = wrapper_of.get(id(s.module))
                if w is not None and s.name == "weight" and s.dim == w.axis:
                    for per_channel in ("weight_zero_point", "weight_scale"):
                        if hasattr(w, per_channel):
                            _select(w, per_channel, 0, index)
            for m in g.unflattens:
                m.unflattened_size = (int(live.sum()), *tuple(m.unflattened_size)[1:])
        for module in touched.values():
            _refresh_shape_attributes(module)
        for n, w in wrappers.items():
            parent, _, leaf = n.rpartition(".")
            setattr(small.get_submodule(parent) if parent else small, leaf, w)
            if id(w.module) in touched:  # the LSQ gradient scale follows the filter size
                w.refresh_grad_factor()
    if check:
        want = _tensors(_run(model, inputs, 0))
        got = _tensors(_run(small, inputs, 0))
        if len(want) != len(got):
            raise RuntimeError("shrink: the smaller model returns a different number of outputs")
        for i, (a, b) in enumerate(zip(want, got)):
            if a.shape != b.shape or not torch.allclose(a.float(), b.float(), atol=atol, rtol=rtol):
                diff = (a.float() - b.float()).abs().max().item() if a.shape == b.shape else "shape mismatch"
                raise RuntimeError(f"shrink: output {i} of the smaller model differs from the masked model's "
                                   f"(max abs difference {diff}); a coupling the tracer missed?")
    return small
