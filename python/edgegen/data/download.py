"""Fetching an official archive once: checksum verified before use, extracted safely."""

from __future__ import annotations

import hashlib
import os
import tarfile
import tempfile
import urllib.request
from pathlib import Path


def file_digest(path: Path, algorithm: str) -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def download_and_extract(url: str, dest: Path, *, md5: str | None = None,
                         sha256: str | None = None) -> None:
    """Download ``url`` to a temporary file beside ``dest``, verify its checksum, then extract the
    tar archive into ``dest``. Nothing is left behind on failure; members that would land outside
    ``dest`` are refused."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=dest, suffix=".part")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as resp:
            for block in iter(lambda: resp.read(1 << 20), b""):
                out.write(block)
        for algorithm, expected in (("md5", md5), ("sha256", sha256)):
            if expected and file_digest(tmp, algorithm) != expected:
                raise OSError(f"{url}: {algorithm} mismatch (expected {expected}); the download is "
                              "corrupt or not the official file")
        with tarfile.open(tmp) as tar:
            root = dest.resolve()
            for member in tar.getmembers():
                target = (dest / member.name).resolve()
                if root not in target.parents and target != root:
                    raise OSError(f"{url}: archive member {member.name!r} escapes {dest}")
                if not (member.isfile() or member.isdir()):
                    raise OSError(f"{url}: archive member {member.name!r} is not a plain file")
            try:
                tar.extractall(dest, filter="data")  # Python >= 3.11.4: the safe filter as well
            except TypeError:
                tar.extractall(dest)
    finally:
        tmp.unlink(missing_ok=True)
