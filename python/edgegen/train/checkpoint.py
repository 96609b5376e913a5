"""Atomic checkpoints and the random-number state a resumed run needs to continue exactly."""

from __future__ import annotations

import os
import pickle
import random
from pathlib import Path

import numpy as np
import torch

from edgegen.tensor_files import save_atomic  # noqa: F401  (checkpoints are written with it)


def rng_state() -> dict:
    """Every generator's state as tensors and plain data (NumPy's key array as an int64 tensor), so
    that a checkpoint loads with ``torch.load(weights_only=True)``."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    numpy_state = (name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss))
    state = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": numpy_state}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    name, keys, *rest = state["numpy"]
    if isinstance(keys, torch.Tensor):
        keys = keys.numpy().astype(np.uint32)
    np.random.set_state((name, keys, *rest))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def experiment_config(snap: dict):
    """The ExperimentConfig a run checkpoint was written with. Checkpoints carry the config's
    plain data; data without a version predates versioned configs (version 1) and is migrated."""
    from edgegen.train.config import ExperimentConfig

    return ExperimentConfig.from_dict(dict(snap["config"]), missing_version=1)


def _numpy_array_globals() -> list:
    """What a pickled NumPy array names: checkpoints written before the RNG state was stored as
    tensors hold NumPy's key array."""
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # NumPy 1.x
        from numpy.core.multiarray import _reconstruct
    return [_reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]


def load(path: str | os.PathLike) -> dict:
    """A run checkpoint (or a bare state dict), read without running code from the file: tensors
    and plain data only (``torch.load(weights_only=True)``), NumPy arrays allowed for checkpoints
    written by earlier versions. A file that names anything else is refused."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no checkpoint there")
    try:
        with torch.serialization.safe_globals(_numpy_array_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        try:  # what the file names, read without running it
            allowed = {f"{g.__module__}.{g.__qualname__}" for g in _numpy_array_globals()}
            named = [g for g in torch.serialization.get_unsafe_globals_in_checkpoint(path) if g not in allowed]
        except Exception:  # noqa: BLE001  (a damaged file: reported as such below)
            named = []
        if named:
            raise ValueError(f"{path}: holds objects other than tensors and plain data ({', '.join(named)}), which "
                             "edgegen does not unpickle (it would run code from the file); an edgegen checkpoint or "
                             "a state dict saved with torch.save(model.state_dict()) loads") from exc
        text = str(exc)
        raise ValueError(f"{path}: not a readable checkpoint (truncated or damaged?): "
                         f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}") from exc
    except (AttributeError, ImportError) as exc:  # a class the file names is not where it was
        raise ValueError(f"{path}: refers to code this edgegen does not have (written by another version?): "
                         f"{type(exc).__name__}: {exc}") from exc
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise ValueError(f"{path}: not a readable checkpoint (truncated or damaged?): "
                         f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from exc


_ARCH = ("n_layer", "n_embd", "n_head", "vocab_size", "n_positions")


def load_gpt2(section, key: str = "model.init_from"):
    """The GPT-2 of a model section (a GPT2Config). With ``init_from`` (a Hugging Face GPT-2
    folder, an edgegen run checkpoint, or a bare state dict) the architecture is the checkpoint's:
    a section may name just ``kind`` and ``init_from``; sizes it sets away from the GPT2Config
    defaults that disagree with the checkpoint get a warning."""
    if not section.init_from:
        return section.build()
    import warnings
    from dataclasses import replace

    from edgegen.models.gpt2 import GPT2, GPT2Config
    from edgegen.prune.masks import load_pruned_state_dict

    p = Path(section.init_from)
    if not p.exists():
        raise FileNotFoundError(f"{key}: {p} does not exist (expected an edgegen checkpoint or a Hugging Face "
                                "GPT-2 folder; train the teacher first, or fix the path)")
    if p.is_dir():
        model = GPT2.from_pretrained(p)
    else:
        snap = load(p)
        if "modules" in snap:
            task = (snap.get("config") or {}).get("task")
            kind = ((snap.get("config") or {}).get("model") or {}).get("kind")
            if "model" not in snap["modules"] or kind != "gpt2":
                raise ValueError(f"{key}: {p} is a {task!r} run's checkpoint (model {kind!r}), not a GPT-2's")
            state = snap["modules"]["model"]
            model = replace(experiment_config(snap).model, init_from=None).build()
        else:
            state, model = snap, replace(section, init_from=None).build()
        try:
            load_pruned_state_dict(model, state)
        except (RuntimeError, KeyError) as exc:
            raise ValueError(f"{key}: {p} does not load into a GPT-2 {section.n_layer}L/{section.n_embd}: "
                             f"{str(exc).splitlines()[0]}") from exc
    defaults = GPT2Config()
    declared = {k: getattr(section, k) for k in _ARCH if getattr(section, k) != getattr(defaults, k)}
    actual = {k: getattr(model.config, k) for k in _ARCH}
    conflict = {k: v for k, v in declared.items() if v != actual[k]}
    if conflict:
        warnings.warn(f"{key}: {p} holds a GPT-2 with {actual}; the section's {conflict} is ignored",
                      UserWarning, stacklevel=2)
    return model
