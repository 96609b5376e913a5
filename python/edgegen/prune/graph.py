"""Finding groups of coupled channels from the model itself.

One forward pass on example inputs runs under a TorchFunctionMode that follows every tensor's
channel dimension (dim 1) through the ops it meets. A *channel space* is a set of channels that
must be removed together: a convolution or linear layer starts a new space for its outputs
(a *producer* slice, with its bias) and reads a space through its input channels (a *consumer*
slice); BatchNorm and depthwise convolutions carry per-channel parameters of the space they pass
through (*members*); element-wise ops, pooling and activations pass the space on; ``a + b`` and
``a * b`` with two tracked operands merge their spaces (residual connections, squeeze-excite
gates); ``flatten`` to [N, C*H*W] makes each channel cover H*W consecutive features of the next
linear layer (``repeat``), and ``unflatten``/``view`` back to [N, C, H, W] groups features into
channels. Anything the tracer does not understand *freezes* the spaces it touches, as do the
model outputs, so an unknown pattern costs pruning opportunities, never correctness.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode


@dataclass
class Slice:
    """Channel c of a group is ``tensor.narrow(dim, c * repeat, repeat)`` of ``module.<name>``."""

    module: nn.Module
    name: str
    dim: int
    repeat: int = 1

    def tensor(self) -> Tensor:
        return getattr(self.module, self.name)


@dataclass
class ChannelGroup:
    """``channels`` coupled channels that must be pruned together: the layers that produce them
    (``producers``: output channels), that carry them through (``members``: BatchNorm, depthwise
    convolutions) and that read them (``consumers``: input channels), as slices of each tensor.
    ``frozen`` says why the group may not be pruned ('' when it may)."""

    channels: int
    producers: list[Slice] = field(default_factory=list)
    members: list[Slice] = field(default_factory=list)
    consumers: list[Slice] = field(default_factory=list)
    frozen: str = ""  # why the group may not be pruned ('' when it may)
    # nn.Unflatten modules whose unflattened_size[0] is this group's channel count.
    unflattens: list[nn.Module] = field(default_factory=list)

    @property
    def prunable(self) -> bool:
        return not self.frozen and bool(self.producers) and bool(self.consumers)

    def slices(self) -> list[Slice]:
        return self.producers + self.members + self.consumers


class _Space:
    def __init__(self, channels: int):
        self.parent: _Space | None = None
        self.group = ChannelGroup(channels)

    def root(self) -> "_Space":
        s = self
        while s.parent is not None:
            s = s.parent
        return s


_PASS_THROUGH = {
    "relu", "relu_", "leaky_relu", "leaky_relu_", "tanh", "tanh_", "sigmoid", "sigmoid_", "gelu", "silu",
    "elu", "selu", "celu", "hardtanh", "hardtanh_", "relu6", "hardswish", "hardsigmoid", "mish", "softplus",
    "dropout", "dropout2d", "alpha_dropout", "feature_alpha_dropout", "contiguous", "clone", "detach",
    "adaptive_avg_pool2d", "adaptive_max_pool2d", "avg_pool2d", "max_pool2d", "_max_pool2d",
    "max_pool2d_with_indices", "interpolate", "upsample", "upsample_nearest", "upsample_bilinear", "pad",
}
_BINARY = {"add", "add_", "__add__", "__iadd__", "__radd__", "sub", "sub_", "__sub__", "__isub__", "__rsub__",
           "mul", "mul_", "__mul__", "__imul__", "__rmul__", "div", "div_", "__truediv__", "__itruediv__"}
_IGNORED = {"size", "dim", "numel", "__get__", "__len__", "__format__", "__repr__", "is_floating_point",
            "element_size", "stride", "data_ptr", "__bool__", "__index__", "__int__", "__float__", "__hash__"}


def _name(func) -> str:
    return getattr(func, "__name__", "") or ""


def _tensors(obj) -> list[Tensor]:
    if isinstance(obj, Tensor):
        return [obj]
    if isinstance(obj, (list, tuple)):
        return [t for o in obj for t in _tensors(o)]
    if isinstance(obj, dict):
        return [t for o in obj.values() for t in _tensors(o)]
    return []


def _arg(args, kwargs, i, name, default=None):
    if len(args) > i:
        return args[i]
    return kwargs.get(name, default)


class _Tracer(TorchFunctionMode):
    def __init__(self, owners: dict[int, tuple[nn.Module, str]]):
        super().__init__()
        self.owners = owners
        self.where: dict[int, tuple[_Space, int]] = {}  # id(tensor) -> (space, repeat)
        self.alive: list[Tensor] = []  # keeps traced tensors alive so their ids stay unique
        self.spaces: list[_Space] = []
        self.module_stack: list[nn.Module] = []

    # -- bookkeeping ------------------------------------------------------------------------------
    def new_space(self, channels: int) -> _Space:
        s = _Space(channels)
        self.spaces.append(s)
        return s

    def track(self, t: Tensor, space: _Space, repeat: int) -> None:
        self.where[id(t)] = (space.root(), repeat)
        self.alive.append(t)

    def lookup(self, t) -> tuple[_Space, int] | None:
        if not isinstance(t, Tensor) or id(t) not in self.where:
            return None
        space, repeat = self.where[id(t)]
        return space.root(), repeat

    def freeze(self, t, reason: str) -> None:
        for x in _tensors(t):
            hit = self.lookup(x)
            if hit is not None and not hit[0].group.frozen:
                hit[0].group.frozen = reason

    def union(self, a: _Space, b: _Space, reason: str) -> _Space:
        a, b = a.root(), b.root()
        if a is b:
            return a
        if a.group.channels != b.group.channels:
            a.group.frozen = b.group.frozen = reason
            return a
        ga, gb = a.group, b.group
        ga.producers += gb.producers
        ga.members += gb.members
        ga.consumers += gb.consumers
        ga.unflattens += gb.unflattens
        ga.frozen = ga.frozen or gb.frozen
        b.parent = a
        return a

    def coarsen(self, space: _Space, factor: int) -> None:
        """Regroup a space's channels into blocks of ``factor`` (unflatten [N, C*k] -> [N, C, ...])."""
        g = space.group
        g.channels //= factor
        for s in g.slices():
            s.repeat *= factor
        for key, (sp, r) in list(self.where.items()):
            if sp.root() is space:
                self.where[key] = (sp, r * factor)

    def owner(self, t) -> tuple[nn.Module, str] | None:
        return self.owners.get(id(t)) if isinstance(t, Tensor) else None

    # -- the mode ---------------------------------------------------------------------------------
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        name = _name(func)
        if name in _IGNORED or not _tensors(out):
            return out
        followed = self._dispatch(func, name, args, kwargs, out)
        # An op on traced channels whose outputs the tracer did not follow (the second result of a
        # tuple, a handler that gave up without freezing) would let those channels reach later ops
        # or the model output unseen: freeze the inputs instead.
        if not followed:
            inputs = _tensors(list(args) + list(kwargs.values()))
            if any(self.lookup(t) is not None for t in inputs) and any(
                    id(t) not in self.where for t in _tensors(out)):
                for t in inputs:
                    self.freeze(t, f"an output of {name or func!r} that the channel tracer does not follow")
        return out

    def _dispatch(self, func, name, args, kwargs, out) -> bool:
        """Model one op; True when its outputs need no further check (frozen or tracked as wanted)."""
        handler = {
            "conv1d": self.conv, "conv2d": self.conv, "conv3d": self.conv,
            "conv_transpose1d": self.conv_transpose, "conv_transpose2d": self.conv_transpose,
            "conv_transpose3d": self.conv_transpose, "linear": self.linear, "batch_norm": self.batch_norm,
            "flatten": self.flatten, "view": self.reshape, "reshape": self.reshape, "unflatten": self.unflatten,
        }.get(name)
        if handler is not None:
            handler(args, kwargs, out)
        elif name in _PASS_THROUGH:
            self.pass_through(args, out)
        elif name in _BINARY:
            self.binary(args, out, name)
        else:
            inputs = _tensors(list(args) + list(kwargs.values()))
            for t in inputs:
                self.freeze(t, f"used by {name or func!r}, which the channel tracer does not model")
            return True
        return False

    def pass_through(self, args, out) -> None:
        hit = self.lookup(args[0]) if args else None
        if hit is None:
            return
        # Every result with the input's channel layout follows it (max pooling's values and indices).
        outs = _tensors(out)
        if any(o.dim() < 2 or o.shape[1] != args[0].shape[1] for o in outs):
            self.freeze(args[0], "channel count changed by a pass-through op")
            return
        for o in outs:
            self.track(o, *hit)

    def binary(self, args, out, name) -> None:
        if not isinstance(out, Tensor):
            return
        operands = [a for a in args if isinstance(a, Tensor)]
        hits = [self.lookup(a) for a in operands]
        tracked = [(a, h) for a, h in zip(operands, hits) if h is not None]
        if not tracked:
            return
        for a, h in zip(operands, hits):
            if h is None and a.numel() > 1 and out.dim() >= 2:
                idx = 1 - (out.dim() - a.dim())  # a's dimension that broadcasts against channels
                if idx >= 0 and a.shape[idx] != 1:
                    self.freeze(operands, f"{name} with a per-channel tensor the tracer cannot slice")
                    return
        space, repeat = tracked[0][1]
        for _, (other, r) in tracked[1:]:
            if r != repeat:
                self.freeze(operands, f"{name} of tensors with different channel layouts")
                return
            space = self.union(space, other, f"{name} of tensors with different channel counts")
        if out.dim() >= 2 and out.shape[1] == space.group.channels * repeat:
            self.track(out, space, repeat)
        else:
            self.freeze(operands, f"{name} changed the channel layout")

    def conv(self, args, kwargs, out) -> None:
        x, w = args[0], _arg(args, kwargs, 1, "weight")
        b = _arg(args, kwargs, 2, "bias")
        groups = _arg(args, kwargs, 6, "groups", 1)
        self._conv_like(x, w, b, groups, out, in_dim=1, out_dim=0)

    def conv_transpose(self, args, kwargs, out) -> None:
        x, w = args[0], _arg(args, kwargs, 1, "weight")
        b = _arg(args, kwargs, 2, "bias")
        groups = _arg(args, kwargs, 6, "groups", 1)
        self._conv_like(x, w, b, groups, out, in_dim=0, out_dim=1)

    def _conv_like(self, x, w, b, groups, out, in_dim, out_dim) -> None:
        own_w = self.owner(w)
        hit = self.lookup(x)
        if own_w is None:
            self.freeze(x, "convolution with a weight that belongs to no module")
            return
        module, wname = own_w
        c_in, c_out = x.shape[1], out.shape[1]
        bias_slice = []
        if b is not None:
            own_b = self.owner(b)
            if own_b is None:
                self.freeze(x, "convolution with a bias that belongs to no module")
                return
            bias_slice = [Slice(own_b[0], own_b[1], 0)]
        if groups == 1:
            if hit is not None:
                if hit[1] != 1:
                    self.freeze(x, "convolution over a flattened channel layout")
                else:
                    hit[0].group.consumers.append(Slice(module, wname, in_dim))
            space = self.new_space(c_out)
            space.group.producers += [Slice(module, wname, out_dim)] + bias_slice
            self.track(out, space, 1)
        elif groups == c_in == c_out and hit is not None and hit[1] == 1:
            hit[0].group.members += [Slice(module, wname, 0)] + bias_slice  # depthwise: dim 0 either way
            self.track(out, hit[0], 1)
        else:
            self.freeze(x, f"grouped convolution (groups={groups})")
            space = self.new_space(c_out)
            space.group.frozen = f"output of a grouped convolution (groups={groups})"
            self.track(out, space, 1)

    def linear(self, args, kwargs, out) -> None:
        x, w = args[0], _arg(args, kwargs, 1, "weight")
        b = _arg(args, kwargs, 2, "bias")
        own_w, hit = self.owner(w), self.lookup(x)
        if own_w is None or x.dim() != 2:
            self.freeze(x, "linear layer over a non-2-D input or with a free weight")
            return
        if hit is not None:
            hit[0].group.consumers.append(Slice(own_w[0], own_w[1], 1, hit[1]))
        space = self.new_space(out.shape[1])
        space.group.producers.append(Slice(own_w[0], own_w[1], 0))
        if b is not None:
            own_b = self.owner(b)
            if own_b is None:
                space.group.frozen = "linear layer with a bias that belongs to no module"
            else:
                space.group.producers.append(Slice(own_b[0], own_b[1], 0))
        self.track(out, space, 1)

    def batch_norm(self, args, kwargs, out) -> None:
        x = args[0]
        hit = self.lookup(x)
        if hit is None:
            return
        if hit[1] != 1:
            self.freeze(x, "batch norm over a flattened channel layout")
            return
        names = ("running_mean", "running_var", "weight", "bias")
        for i, key in enumerate(names, start=1):
            t = _arg(args, kwargs, i, key)
            if t is None:
                continue
            own = self.owner(t)
            if own is None:
                self.freeze(x, "batch norm with statistics or affine tensors that belong to no module")
                return
            hit[0].group.members.append(Slice(own[0], own[1], 0))
        self.track(out, *hit)

    def _flat(self, x, out) -> None:
        hit = self.lookup(x)
        if hit is None:
            return
        if x.dim() >= 2 and out.dim() == 2 and out.shape[0] == x.shape[0]:
            spatial = math.prod(x.shape[2:])
            self.track(out, hit[0], hit[1] * spatial)
        else:
            self.freeze(x, "flatten/reshape other than [N, C, ...] -> [N, C * ...]")

    def flatten(self, args, kwargs, out) -> None:
        x = args[0]
        start = _arg(args, kwargs, 1, "start_dim", 0)
        end = _arg(args, kwargs, 2, "end_dim", -1)
        if self.lookup(x) is not None and start == 1 and end in (-1, x.dim() - 1):
            self._flat(x, out)
        else:
            self.freeze(x, "flatten other than flatten(1)")

    def reshape(self, args, kwargs, out) -> None:
        x = args[0]
        if self.lookup(x) is None:
            return
        if out.dim() == 2:
            self._flat(x, out)
        else:
            self.freeze(x, "reshape the channel tracer does not model")

    def unflatten(self, args, kwargs, out) -> None:
        x = args[0]
        dim = _arg(args, kwargs, 1, "dim")
        current = self.module_stack[-1] if self.module_stack else None
        if self.lookup(x) is not None and x.dim() == 2 and dim in (1, -1) and isinstance(current, nn.Unflatten):
            self._split(x, out, current)
        else:
            self.freeze(x, "unflatten other than an nn.Unflatten of dim 1 of a [N, F] tensor (sizes fixed in "
                           "code could not follow the pruning)")

    def _split(self, x, out, module: nn.Module) -> None:
        """[N, F] -> [N, C, *spatial]: channel c covers features c*k .. c*k+k-1."""
        space, repeat = self.lookup(x)
        k = math.prod(out.shape[2:])
        if repeat != 1 or space.group.channels != out.shape[1] * k:
            self.freeze(x, "unflatten of a tensor whose channels are already grouped")
            return
        if k > 1:
            self.coarsen(space, k)
        space.group.unflattens.append(module)
        self.track(out, space, 1)


def _owners(model: nn.Module) -> dict[int, tuple[nn.Module, str]]:
    owners: dict[int, tuple[nn.Module, str]] = {}
    for module in model.modules():
        for name, t in list(module._parameters.items()) + list(module._buffers.items()):
            if t is not None and id(t) not in owners:
                owners[id(t)] = (module, name)
    return owners


def _as_tuple(example_inputs) -> tuple:
    if isinstance(example_inputs, Tensor):
        return (example_inputs,)
    if isinstance(example_inputs, (tuple, list)):
        return tuple(example_inputs)
    raise TypeError(f"example_inputs: expected a tensor or a tuple of tensors, got {type(example_inputs).__name__}")


@contextlib.contextmanager
def eval_mode(model: nn.Module):
    """Every module of ``model`` in eval mode inside the block, then each module's own training flag
    back (``model.train(flag)`` would give every module the model's flag, and a BatchNorm kept in
    eval mode while the rest fine-tunes would train again)."""
    training = training_flags(model)
    try:
        model.eval()
        yield model
    finally:
        restore_training_flags(training)


def training_flags(model: nn.Module) -> dict:
    """Each module's own training flag, for :func:`restore_training_flags` (where a ``with``
    block of :func:`eval_mode` does not fit)."""
    return {m: m.training for m in model.modules()}


def restore_training_flags(flags: dict) -> None:
    for m, flag in flags.items():
        m.training = flag


def find_channel_groups(model: nn.Module, example_inputs) -> list[ChannelGroup]:
    """All channel groups of ``model`` (prunable or not), found by tracing one forward pass of
    ``example_inputs`` in eval mode under no_grad (buffers are not updated). The model must not be
    parametrized (trace a finalized copy)."""
    from torch.nn.utils import parametrize

    if any(parametrize.is_parametrized(m) for m in model.modules()):
        raise ValueError("model: trace an unparametrized model (edgegen.prune.finalize_ a copy first)")
    inputs = _as_tuple(example_inputs)
    tracer = _Tracer(_owners(model))
    from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook

    def enter(module, args) -> None:
        tracer.module_stack.append(module)

    def leave(module, args, output) -> None:  # must return None: a value would replace the output
        tracer.module_stack.pop()

    hooks = [register_module_forward_pre_hook(enter), register_module_forward_hook(leave)]
    try:
        with eval_mode(model), torch.no_grad(), tracer:
            out = model(*inputs)
        for t in _tensors(out):
            tracer.freeze(t, "reaches the model output")
    finally:
        for h in hooks:
            h.remove()
    roots = []
    for s in tracer.spaces:
        if s.parent is None:
            roots.append(s.group)
    _freeze_shared_weights(roots)
    return roots


def _freeze_shared_weights(groups: list[ChannelGroup]) -> None:
    """A weight dimension that belongs to two groups (a layer called twice on different inputs, a
    Parameter shared by two layers) cannot follow both groups' choices of channels: freeze them."""
    where: dict[tuple[int, int], list[ChannelGroup]] = {}
    names: dict[tuple[int, int], str] = {}
    for g in groups:
        for s in g.slices():
            key = (id(s.tensor()), s.dim)
            names[key] = s.name
            if not any(other is g for other in where.setdefault(key, [])):
                where[key].append(g)
    for key, gs in where.items():
        name, dim = names[key], key[1]
        if len(gs) > 1:
            for g in gs:
                if not g.frozen:
                    g.frozen = f"dimension {dim} of a {name} used by {len(gs)} channel groups (a shared or reused layer)"


__all__ = ["ChannelGroup", "Slice", "find_channel_groups"]
