"""On-disk size. A structurally pruned model is a smaller dense model: its ordinary state dict is
smaller. An unstructured (zeroed) model is not, so :func:`save_sparse` writes a compressed
safetensors file: each tensor with enough zeros is stored as a bitmask (1 bit per entry) plus its
non-zero values; the rest are stored as they are."""

from __future__ import annotations

import copy
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edgegen.tensor_files import dedupe, read_safetensors, restore_aliases, write_safetensors

_MASK, _VALUES = "::bitmask", "::values"


def _state_dict(obj) -> dict[str, torch.Tensor]:
    if isinstance(obj, nn.Module):
        from edgegen.prune.masks import finalize_

        obj = finalize_(copy.deepcopy(obj)).state_dict()
    if not isinstance(obj, dict):
        raise TypeError(f"model: expected an nn.Module or a state dict, got {type(obj).__name__}")
    return {k: v.detach() for k, v in obj.items()}  # dedupe copies to the CPU after finding the ties


def save_sparse(model, path: str | os.PathLike, min_sparsity: float = 0.25) -> int:
    """Write ``model`` (masks baked in) or a state dict to ``path`` (safetensors), storing each
    floating tensor with at least ``min_sparsity`` zeros as bitmask + non-zeros. Atomic. Returns
    the file size in bytes."""
    if not 0.0 <= min_sparsity <= 1.0:
        raise ValueError(f"min_sparsity: expected a fraction in [0, 1], got {min_sparsity!r}")
    state, aliases = dedupe(_state_dict(model))  # a tied table is encoded once
    out, sparse = {}, {}
    for k, v in state.items():
        if v.is_floating_point() and v.numel() and float((v == 0).float().mean()) >= min_sparsity:
            nz = ((v != 0) | torch.signbit(v)).flatten()  # -0.0 is kept as a value: the round trip is bit-exact
            out[k + _MASK] = torch.from_numpy(np.packbits(nz.numpy()))
            out[k + _VALUES] = v.flatten()[nz].clone()
            sparse[k] = list(v.shape)
        else:
            out[k] = v
    return write_safetensors(out, path, {"edgegen_sparse": json.dumps(sparse)}, aliases)


def load_sparse(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The dense state dict written by :func:`save_sparse`."""
    raw, meta = read_safetensors(path, with_aliases=False)
    if "edgegen_sparse" not in meta:
        raise ValueError(f"path: {path} was not written by edgegen.prune.save_sparse")
    sparse = json.loads(meta["edgegen_sparse"])
    state = {}
    for k, shape in sparse.items():
        n = int(np.prod(shape)) if shape else 1
        nz = torch.from_numpy(np.unpackbits(raw.pop(k + _MASK).numpy(), count=n).astype(bool))
        values = raw.pop(k + _VALUES)
        dense = torch.zeros(n, dtype=values.dtype)
        dense[nz] = values
        state[k] = dense.view(shape)
    state.update(raw)
    restore_aliases(state, meta)  # after decoding: an alias may point at a sparse-coded tensor
    return state


def saved_bytes(model, sparse: bool = False) -> int:
    """Size in bytes of ``model`` saved as safetensors: dense (its plain state dict, masks baked
    in) or with :func:`save_sparse`."""
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "model.safetensors"
        return save_sparse(model, p) if sparse else write_safetensors(_state_dict(model), p)
