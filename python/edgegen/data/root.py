"""Where datasets live: one data root, one standard folder name per dataset."""

from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "EDGEGEN_DATA_DIR"
DEFAULT_ROOT = Path("~/.cache/edgegen/data")


def data_root(root: str | os.PathLike | None = None) -> Path:
    """``root`` if given, else ``$EDGEGEN_DATA_DIR``, else ``~/.cache/edgegen/data``."""
    if root is None:
        root = os.environ.get(ENV_VAR) or DEFAULT_ROOT
    return Path(root).expanduser()


def dataset_dir(folder: str, root: str | os.PathLike | None = None, how_to_get: str = "") -> Path:
    """The dataset's standard folder under the data root, or a clear error naming it."""
    path = data_root(root) / folder
    if not path.is_dir():
        hint = f" {how_to_get}" if how_to_get else ""
        raise FileNotFoundError(
            f"dataset folder not found: expected {path} (the data root is the `root` argument, "
            f"else ${ENV_VAR}, else {DEFAULT_ROOT}).{hint}"
        )
    return path


def cache_dir_for(folder: Path, override: str | os.PathLike | None = None) -> Path:
    """Where a reader keeps what it derives once (decoded images, token files): ``override`` if
    given, else ``<folder>/.edgegen-cache`` when the data folder is writable, else a per-dataset
    folder under ``~/.cache/edgegen/cache`` (staged data is often read-only)."""
    if override is not None:
        return Path(override)
    local = folder / ".edgegen-cache"
    if (local.is_dir() and os.access(local, os.W_OK)) or os.access(folder, os.W_OK):
        return local
    return Path("~/.cache/edgegen/cache").expanduser() / folder.name
