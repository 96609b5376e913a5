"""Replacing a file so that no reader ever sees it half-written and no two writers share a
temporary file."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def replacing(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (same folder, same suffix, a name no other writer
    uses); when the block ends cleanly it is renamed over ``path``, otherwise removed. Two
    processes writing the same cache at once each write their own temporary file and the last
    rename wins: ``path`` is always one writer's whole file. The temporary file is created by the
    writer itself, so it gets the usual permissions (umask), unlike ``tempfile.mkstemp``'s 0600."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}-{uuid.uuid4().hex[:12]}.tmp{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """``Path.write_text`` through :func:`replacing` (UTF-8)."""
    with replacing(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)
