"""Where datasets live: one data root, one standard folder name per dataset."""

from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "EDGEGEN_DATA_DIR"
DEFAULT_ROOT = Path("~/.cache/edgegen/data")
CACHE_ENV_VAR = "EDGEGEN_CACHE_DIR"
DEFAULT_CACHE = Path("~/.cache/edgegen/cache")


def data_root(root: str | os.PathLike | None = None) -> Path:
    """``root`` if given, else ``$EDGEGEN_DATA_DIR``, else ``~/.cache/edgegen/data``. An empty
    string counts as not given, as an empty ``$EDGEGEN_DATA_DIR`` does."""
    if root is None or root == "":
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
    given, else a folder per dataset folder under ``$EDGEGEN_CACHE_DIR`` (default
    ``~/.cache/edgegen/cache``). Never inside the data folder itself: data is often shared or
    read-only, and as root a read-only mode bit would not stop the write."""
    if override is not None:
        return Path(override).expanduser()
    import hashlib

    base = Path(os.environ.get(CACHE_ENV_VAR) or DEFAULT_CACHE).expanduser()
    tag = hashlib.sha256(str(Path(folder).resolve()).encode()).hexdigest()[:10]
    return base / f"{Path(folder).name}-{tag}"


def save_array_atomic(path: Path, array) -> bool:
    """np.save to ``path`` through a temporary file and a rename, so a reader never sees a
    half-written cache. Returns False (and writes nothing) where the cache is not writable."""
    import numpy as np

    from edgegen._atomic import replacing

    try:
        with replacing(path) as tmp:
            np.save(tmp, array)
        return True
    except OSError:
        return False
