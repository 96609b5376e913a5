"""Replacing a file so that no reader ever sees it half-written and no two writers share a
temporary file; strict JSON for the files users read with other tools."""

from __future__ import annotations

import contextlib
import json
import math
import numbers
import os
import uuid
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def replacing(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (same folder, same suffix, a name no other writer
    uses); when the block ends cleanly it is flushed to disk, renamed over ``path`` and the
    folder flushed too (a crash at any point leaves the previous file or the new one, never a
    torn or empty one), otherwise removed. Two processes writing the same cache at once each
    write their own temporary file and the last rename wins: ``path`` is always one writer's
    whole file. The temporary file is created by the writer itself, so it gets the usual
    permissions (umask), unlike ``tempfile.mkstemp``'s 0600."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}-{uuid.uuid4().hex[:12]}.tmp{path.suffix}")
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, path)
        try:  # the rename itself; some filesystems cannot sync a folder
            _fsync(path.parent)
        except OSError:
            pass
    finally:
        tmp.unlink(missing_ok=True)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """``Path.write_text`` through :func:`replacing` (UTF-8)."""
    with replacing(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def finite_or_none(obj):
    """``obj`` with every NaN or infinite number (Python, numpy or a 0-d tensor) replaced by None,
    through dicts, lists and tuples: what strict JSON can hold. Other values are returned as they
    are."""
    if isinstance(obj, dict):
        return {k: finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_or_none(v) for v in obj]
    if isinstance(obj, bool) or obj is None or isinstance(obj, (int, str)):
        return obj
    if getattr(obj, "ndim", None) == 0 and hasattr(obj, "item"):  # numpy / torch scalar
        return finite_or_none(obj.item())
    if isinstance(obj, numbers.Real):  # float, numpy floats
        value = float(obj)
        return value if math.isfinite(value) else None
    return obj


def json_text(obj, **dumps_kwargs) -> str:
    """Strict JSON (RFC 8259) for ``obj``: a number that is not finite is written as ``null``
    (Python's own ``NaN`` / ``Infinity`` tokens break ``jq``, JavaScript and most other readers).
    ``dumps_kwargs`` go to :func:`json.dumps`."""
    return json.dumps(finite_or_none(obj), allow_nan=False, **dumps_kwargs)


def write_json(path: str | os.PathLike, obj, **dumps_kwargs) -> Path:
    """:func:`write_text` of :func:`json_text`."""
    return write_text(path, json_text(obj, **dumps_kwargs))
