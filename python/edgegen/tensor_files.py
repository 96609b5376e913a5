"""Writing and reading files the way every edgegen artefact does: atomically (a temporary file,
then a rename), safetensors with tensors that share storage (tied weights, which safetensors
refuses) stored once and recorded as aliases in the metadata, and ``torch.save`` files
(checkpoints, caches) through :func:`save_atomic`."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from edgegen._atomic import replacing

ALIASES = "edgegen_aliases"


def storage_key(t: torch.Tensor) -> tuple:
    """What makes two tensors the same data: the same view (offset, shape, strides, dtype) of one
    storage on one device. Tied weights, and distinct Parameters over one memory, share it. Take
    it before copying to another device: each copy has a storage of its own."""
    return (t.device, t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), tuple(t.stride()),
            t.dtype)


def dedupe(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors stored once, {alias: name}) for a state dict whose tensors may share storage."""
    seen: dict[tuple, str] = {}
    out, aliases = {}, {}
    for k, v in state.items():
        key = storage_key(v)  # on the tensor's own device: a GPU model's tied weights are one storage there
        if v.numel() and key in seen:
            aliases[k] = seen[key]
            continue
        seen[key] = k
        out[k] = v.detach().cpu().contiguous()
    return out, aliases


def write_safetensors(state: dict[str, torch.Tensor], path: str | os.PathLike,
                      metadata: dict[str, str] | None = None, aliases: dict[str, str] | None = None) -> int:
    """Write ``state`` to ``path`` atomically; returns the file size in bytes. ``aliases`` adds
    names already folded away by the caller (see :func:`dedupe`)."""
    from safetensors.torch import save_file

    tensors, found = dedupe(state)
    aliases = {**(aliases or {}), **found}
    path = Path(path)
    with replacing(path) as tmp:
        save_file(tensors, str(tmp), metadata={**(metadata or {}), ALIASES: json.dumps(aliases)})
    return path.stat().st_size


def read_safetensors(path: str | os.PathLike, with_aliases: bool = True
                     ) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata) of a file; aliases point at their tensors again unless
    ``with_aliases`` is False (then call :func:`restore_aliases` once the targets exist).
    A missing file is a FileNotFoundError, a truncated or damaged one a ValueError, each naming
    the path."""
    with _open_safetensors(path) as f:
        try:
            metadata = dict(f.metadata() or {})
            state = {k: f.get_tensor(k) for k in f.keys()}
        except Exception as exc:  # noqa: BLE001 - the library's own error type names no path
            raise _unreadable(path, exc) from None
    if with_aliases:
        restore_aliases(state, metadata)
    return state, metadata


def read_safetensors_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The metadata of a safetensors file (its header only; no tensor is read). Errors as in
    :func:`read_safetensors`."""
    with _open_safetensors(path) as f:
        return dict(f.metadata() or {})


def _unreadable(path, exc: Exception) -> ValueError:
    return ValueError(f"{path}: not a readable safetensors file (truncated or damaged?): {exc}")


def _open_safetensors(path):
    from safetensors import safe_open

    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        return safe_open(str(path), framework="pt")
    except Exception as exc:  # noqa: BLE001 - safetensors raises SafetensorError (and OSError) without the path
        raise _unreadable(path, exc) from None


def restore_aliases(state: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    for alias, target in json.loads(metadata.get(ALIASES, "{}")).items():
        state[alias] = state[target]


def save_atomic(obj, path: str | os.PathLike) -> Path:
    """torch.save to a temporary file in the same folder, flushed to disk, then renamed over
    ``path`` (:func:`edgegen._atomic.replacing`): a crash at any point leaves either the previous
    file or the new one, never a torn one."""
    path = Path(path)
    with replacing(path) as tmp, open(tmp, "wb") as f:
        torch.save(obj, f)
    return path
