"""Fetching official files once: checksum verified before use, archives extracted safely and
all-or-nothing."""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
import urllib.request
import zipfile
from pathlib import Path

from edgegen._atomic import replacing


def file_digest(path: Path, algorithm: str) -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fetch(url: str, dest: Path, *, md5: str | None = None, sha256: str | None = None) -> Path:
    """Download ``url`` to ``dest`` through a temporary file in the same folder, verify the
    checksum, then rename into place: ``dest`` either is the verified file or does not exist."""
    with replacing(dest) as tmp:
        with open(tmp, "wb") as out, urllib.request.urlopen(url, timeout=60) as resp:
            for block in iter(lambda: resp.read(1 << 20), b""):
                out.write(block)
        for algorithm, expected in (("md5", md5), ("sha256", sha256)):
            if expected and file_digest(tmp, algorithm) != expected:
                raise OSError(f"{url}: {algorithm} mismatch (expected {expected}); the download is "
                              "corrupt or not the official file")
    return Path(dest)


def _inside(root: Path, name: str) -> bool:
    target = (root / name).resolve()
    return target == root or root in target.parents


def _move_into(src: Path, dst: Path, keep_existing: bool = False) -> None:
    """Rename ``src`` to ``dst``; where both are folders, move ``src``'s entries into ``dst`` one
    by one (each an atomic rename that replaces what was there, or, with ``keep_existing``,
    leaves what is there as it is)."""
    if src.is_dir() and dst.is_dir():
        for child in sorted(src.iterdir()):
            _move_into(child, dst / child.name, keep_existing)
    elif not (keep_existing and dst.exists()):
        os.replace(src, dst)


def extract(archive: Path, dest: Path, keep_existing: bool = False) -> None:
    """Extract a tar or zip archive into ``dest``, refusing members that would land outside it
    or that are links or devices. A member already in ``dest`` is replaced, or, with
    ``keep_existing``, kept as it is.

    Members are written into a temporary folder inside ``dest`` and renamed into place only once
    all of them are complete (a new top-level folder in one rename): an interrupted extraction
    leaves no half-written member behind, and the temporary folder is removed on any failure."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    # Inside dest, hence on the same file system: the renames below are atomic.
    tmp = Path(tempfile.mkdtemp(dir=dest, prefix=".extract-"))
    try:
        root = tmp.resolve()
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as z:
                for name in z.namelist():
                    if not _inside(root, name):
                        raise OSError(f"{archive}: member {name!r} escapes {dest}")
                z.extractall(tmp)
        else:
            with tarfile.open(archive) as tar:
                for member in tar.getmembers():
                    if not _inside(root, member.name):
                        raise OSError(f"{archive}: member {member.name!r} escapes {dest}")
                    if not (member.isfile() or member.isdir()):
                        raise OSError(f"{archive}: member {member.name!r} is not a plain file")
                try:
                    tar.extractall(tmp, filter="data")  # Python >= 3.11.4: the safe filter as well
                except TypeError:
                    tar.extractall(tmp)
        for entry in sorted(tmp.iterdir()):
            _move_into(entry, dest / entry.name, keep_existing)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def download_and_extract(url: str, dest: Path, *, md5: str | None = None,
                         sha256: str | None = None, keep_existing: bool = False) -> None:
    """Fetch an archive beside ``dest``, verify it, extract it into ``dest`` (see :func:`extract`
    for ``keep_existing``), delete it."""
    dest = Path(dest)
    archive = fetch(url, dest / (url.rsplit("/", 1)[-1] + ".download"), md5=md5, sha256=sha256)
    try:
        extract(archive, dest, keep_existing)
    finally:
        archive.unlink(missing_ok=True)
