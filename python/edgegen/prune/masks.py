"""Masks that outlive training: a pruned tensor becomes ``original * mask`` through
``torch.nn.utils.parametrize``. The optimizer keeps updating ``original`` (the same Parameter
object as before pruning, so existing optimizers stay valid), but the weight the module uses is
recomputed from the mask on every access, so momentum or weight decay can never revive a pruned
entry. Masks are buffers: they are saved in the state dict and traced by ``torch.compile``."""

from __future__ import annotations

import re
from typing import Iterator

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from edgegen.transform import FilterFn

PRUNABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


class WeightMask(nn.Module):
    """Parametrization ``w -> w * mask`` with a bool mask (True = kept) shaped like ``w``.

    The bool mask is what the state dict stores (one byte per entry). The forward pass multiplies
    by a non-persistent copy in the weight's dtype: on CPU a float-by-bool multiply goes through
    type promotion and is several times slower than float-by-float."""

    def __init__(self, mask: Tensor, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.register_buffer("mask", mask.to(torch.bool))
        self.register_buffer("scale", self.mask.to(dtype), persistent=False)

    def refresh(self) -> None:
        """Bring the multiplier in line with ``mask`` after the mask changed in place."""
        with torch.no_grad():
            self.scale.copy_(self.mask)

    def forward(self, w: Tensor) -> Tensor:
        s = self.scale
        return w * (s if s.dtype == w.dtype else s.to(w.dtype))

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        self.refresh()


def _mask_module(module: nn.Module, name: str) -> WeightMask | None:
    if not parametrize.is_parametrized(module, name):
        return None
    for p in module.parametrizations[name]:
        if isinstance(p, WeightMask):
            return p
    return None


def get_mask(module: nn.Module, name: str = "weight") -> Tensor | None:
    """The bool mask of ``module.<name>``, or None when it is not pruned."""
    m = _mask_module(module, name)
    return None if m is None else m.mask


def raw_parameter(module: nn.Module, name: str = "weight") -> Tensor:
    """The Parameter the optimizer sees: ``original`` when masked, else the attribute itself."""
    if parametrize.is_parametrized(module, name):
        plist = module.parametrizations[name]
        if not hasattr(plist, "original"):  # e.g. weight_norm: original0 / original1
            raise ValueError(f"{type(module).__name__}.{name}: parametrized by {[type(p).__name__ for p in plist]} "
                             "over several tensors; pruning and factorization need a plain weight (remove the "
                             "parametrization with torch.nn.utils.parametrize.remove_parametrizations, or exclude "
                             "the layer with filter_fn)")
        return plist.original
    if name not in module._parameters and name not in module._buffers:  # e.g. the old hook-based spectral_norm
        raise ValueError(f"{type(module).__name__}.{name}: not a Parameter but an attribute that a forward pre-hook "
                         f"recomputes from {sorted(module._parameters)} (torch.nn.utils.spectral_norm / weight_norm); "
                         "pruning and factorization need a plain weight (remove the hook with "
                         "torch.nn.utils.remove_spectral_norm / remove_weight_norm, or exclude the layer with filter_fn)")
    return getattr(module, name)


def _own_class(module: nn.Module) -> None:
    """Give a parametrized module a class of its own (same base, same properties). Parametrizing
    a new tensor adds a property to the module's class, and a deep copy shares that class with
    the original, which would then look for a parametrization it does not have."""
    cls = type(module)
    body = {k: v for k, v in cls.__dict__.items() if k not in ("__dict__", "__weakref__")}
    module.__class__ = type(cls.__name__, cls.__bases__, body)


@torch.no_grad()
def apply_mask_(module: nn.Module, name: str, mask: Tensor) -> None:
    """Mask ``module.<name>`` (combined with any mask it has: pruned entries stay pruned) and
    zero the pruned entries of the underlying parameter."""
    param = raw_parameter(module, name)
    mask = mask.to(device=param.device, dtype=torch.bool)
    if mask.shape != param.shape:
        mask = mask.expand(param.shape)
    existing = _mask_module(module, name)
    if existing is None:
        if parametrize.is_parametrized(module) and not parametrize.is_parametrized(module, name):
            _own_class(module)  # the new property must not reach a deep copy's (or original's) class
        parametrize.register_parametrization(module, name, WeightMask(mask.clone(memory_format=torch.contiguous_format),
                                                                      param.dtype), unsafe=True)
    else:
        existing.mask.logical_and_(mask)
        existing.refresh()
        mask = existing.mask
    param.masked_fill_(~mask, 0)


def masked_tensors(model: nn.Module) -> Iterator[tuple[str, nn.Module, str, Tensor]]:
    """(qualified name, module, tensor name, mask) of every masked tensor."""
    for mod_name, module in model.named_modules():
        if not parametrize.is_parametrized(module):
            continue
        for tname in list(module.parametrizations.keys()):
            m = get_mask(module, tname)
            if m is not None:
                yield (f"{mod_name}.{tname}" if mod_name else tname), module, tname, m


@torch.no_grad()
def finalize_(model: nn.Module) -> nn.Module:
    """Bake every mask into its weight (pruned entries are exact zeros) and remove the masks,
    leaving plain Parameters (the same objects, so optimizers stay valid). Returns the model.

    Done by hand rather than with ``parametrize.remove_parametrizations``, which deletes the
    property from the module's injected class: a deep copy shares that class, so removing it
    from one copy would break the other."""
    for name, module in model.named_modules():
        if not parametrize.is_parametrized(module):
            continue
        plists = module.parametrizations
        for tname, plist in plists.items():
            if len(plist) != 1 or not isinstance(plist[0], WeightMask):
                raise ValueError(f"{name or 'model'}.{tname}: has parametrizations other than a pruning mask; "
                                 "remove them first")
        values = {tname: getattr(module, tname).detach() for tname in plists.keys()}
        originals = {tname: plist.original for tname, plist in plists.items()}
        module.__class__ = module.__class__.__bases__[0]
        del module._modules["parametrizations"]
        for tname, original in originals.items():
            original.copy_(values[tname])
            if isinstance(original, nn.Parameter):
                module._parameters[tname] = original
            else:
                module._buffers[tname] = original
    return model


_MASK_KEY = re.compile(r"^(?:(.*)\.)?parametrizations\.([^.]+)\.0\.mask$")


def load_pruned_state_dict(model: nn.Module, state_dict: dict, strict: bool = True):
    """Load a state dict saved from a masked model into a fresh (unmasked) copy of the
    architecture: the masks it contains are registered first."""
    for key, mask in state_dict.items():
        m = _MASK_KEY.match(key)
        if m is None:
            continue
        module = model.get_submodule(m.group(1) or "")
        if get_mask(module, m.group(2)) is None:
            apply_mask_(module, m.group(2), mask)
    return model.load_state_dict(state_dict, strict=strict)


def _memory_key(p: torch.Tensor):
    """What makes two parameters the same weight: the same object, or the same view of one memory
    (distinct Parameters over one storage, e.g. after ``load_state_dict(assign=True)`` of a state
    with tied entries). Meta and empty tensors have no memory to compare."""
    from edgegen.tensor_files import storage_key

    if p.device.type == "meta" or p.numel() == 0:
        return id(p)
    return storage_key(p)


def prunable_weights(model: nn.Module, filter_fn: FilterFn | None = None, maskable: bool = True
                     ) -> list[tuple[str, nn.Module]]:
    """(qualified name, module) of the Linear/Conv/ConvTranspose layers whose weight may be pruned:
    selected by ``filter_fn(module, name)`` when given, and never a weight shared with another
    module (such as GPT-2's output head, tied to the token embedding), whether the modules hold one
    Parameter or two over the same memory. A selected weight that cannot take a mask (parametrized
    over several tensors, or recomputed by a hook) is an error naming the layer; with
    ``maskable=False`` (measuring, not pruning) it is listed like the others."""
    owners: dict = {}
    for module in model.modules():
        for p in module._parameters.values():
            if p is not None:
                owners[_memory_key(p)] = owners.get(_memory_key(p), 0) + 1
    out = []
    for name, module in model.named_modules():
        if not isinstance(module, PRUNABLE):
            continue
        if filter_fn is not None and not filter_fn(module, name):
            continue
        try:
            raw = raw_parameter(module, "weight")
        except ValueError as exc:
            if maskable:
                raise ValueError(f"model: layer {name!r}: {exc}") from None
            raw = module.weight
        if owners.get(_memory_key(raw), 0) > 1:
            continue
        out.append((name, module))
    return out


@torch.no_grad()
def sparsity(model: nn.Module, filter_fn: FilterFn | None = None) -> float:
    """Fraction of exactly-zero entries over the prunable weights (as the modules see them)."""
    zeros = total = 0
    for _, module in prunable_weights(model, filter_fn, maskable=False):
        w = module.weight
        zeros += int((w == 0).sum())
        total += w.numel()
    return zeros / total if total else 0.0


def drop_smallest_globally(importances: list[Tensor], count: int) -> list[Tensor]:
    """Keep-masks (one per group) that drop the ``count`` least important units over all groups
    together (ties: the earlier unit first), never a group's last unit."""
    keeps = [torch.ones(len(i), dtype=torch.bool) for i in importances]
    owner = torch.cat([torch.full((len(i),), k) for k, i in enumerate(importances)])
    local = torch.cat([torch.arange(len(i)) for i in importances])
    for j in torch.sort(torch.cat(importances), stable=True).indices.tolist():
        if count == 0:
            break
        keep = keeps[int(owner[j])]
        if int(keep.sum()) > 1:
            keep[int(local[j])] = False
            count -= 1
    return keeps
