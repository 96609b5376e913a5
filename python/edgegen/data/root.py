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
