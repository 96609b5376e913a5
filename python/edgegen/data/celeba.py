"""CelebA "Align&Cropped" (Liu et al., ICCV 2015): ``celeba/`` with ``img_align_celeba/*.jpg``
(178x218 RGB), ``list_eval_partition.txt`` (``<file> <0|1|2>``: train, valid, test) and, when
present, ``list_attr_celeba.txt`` (count, 40 names, then ``<file>`` and 40 values of 1/-1).

The dataset is distributed by its authors for non-commercial research only and must be
downloaded by hand from https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html; a subset folder
works, provided the partition file lists only images it holds.

Preprocessing is the usual one for 64x64 generative models: center crop (148 by default) and
resize to ``image_size``; decoded once, in threads, and cached as uint8. Items are
``(image in [-1, 1], attributes in {0, 1})``.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from edgegen.data.root import cache_dir_for, dataset_dir, save_array_atomic

FOLDER = "celeba"
SOURCE = "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html"
SPLITS = {"train": 0, "valid": 1, "test": 2}
IMAGE_SIZE = (178, 218)  # width, height of the aligned-and-cropped images


def _read_text(path: Path) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: expected UTF-8 text ({exc})") from None


def read_partition(path: Path) -> list[tuple[str, int]]:
    rows = []
    for lineno, line in enumerate(_read_text(path).split("\n"), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
            raise ValueError(f"{path}:{lineno}: expected '<file> <0|1|2>', got {line.strip()!r}")
        rows.append((parts[0], int(parts[1])))
    return rows


def read_attributes(path: Path) -> tuple[list[str], dict[str, np.ndarray]]:
    lines = _read_text(path).splitlines()
    if len(lines) < 2:
        raise ValueError(f"{path}: expected a count line and an attribute-name line")
    names = lines[1].split()
    table = {}
    for lineno, line in enumerate(lines[2:], 3):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != len(names) + 1 or any(v not in ("1", "-1") for v in parts[1:]):
            raise ValueError(f"{path}:{lineno}: expected '<file>' and {len(names)} values of 1/-1")
        table[parts[0]] = (np.array(parts[1:], dtype=np.int8) > 0).astype(np.uint8)
    return names, table


def decode(path: Path, crop: int, size: int) -> np.ndarray:
    """uint8 [3, size, size] from one aligned CelebA JPEG, or a ValueError naming the file."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            img.load()
            mode, dims = img.mode, img.size
            if mode != "RGB":
                raise ValueError(f"{path}: expected an RGB image (3 channels), got mode {mode}")
            if dims != IMAGE_SIZE:
                raise ValueError(f"{path}: expected {IMAGE_SIZE[0]}x{IMAGE_SIZE[1]} (aligned CelebA), "
                                 f"got {dims[0]}x{dims[1]}")
            left, top = (dims[0] - crop) // 2, (dims[1] - crop) // 2
            out = img.crop((left, top, left + crop, top + crop)).resize(
                (size, size), Image.Resampling.BILINEAR)
            return np.asarray(out, dtype=np.uint8).transpose(2, 0, 1).copy()
    except ValueError:
        raise
    except Exception as exc:  # PIL raises several types for truncated or foreign files
        raise ValueError(f"{path}: not a readable JPEG ({exc})") from exc


class CelebA(torch.utils.data.Dataset):
    """``CelebA(root=None, split="train"|"valid"|"test"|"all", image_size=64, crop=148)``."""

    def __init__(self, root=None, split: str = "train", image_size: int = 64, crop: int = 148,
                 cache_dir: str | os.PathLike | None = None, num_threads: int | None = None):
        if split not in (*SPLITS, "all"):
            raise ValueError(f"split: expected one of {(*SPLITS, 'all')}, got {split!r}")
        if not isinstance(crop, int) or not 8 <= crop <= min(IMAGE_SIZE):
            raise ValueError(f"crop: expected an int in [8, {min(IMAGE_SIZE)}], got {crop!r}")
        if not isinstance(image_size, int) or not 8 <= image_size <= crop:
            raise ValueError(f"image_size: expected an int in [8, crop={crop}], got {image_size!r}")
        folder = dataset_dir(FOLDER, root, f"CelebA is downloaded by hand from {SOURCE}.")
        images = folder / "img_align_celeba"
        partition = folder / "list_eval_partition.txt"
        for needed in (images, partition):
            if not needed.exists():
                raise FileNotFoundError(f"{needed}: missing from the CelebA folder {folder}")
        rows = read_partition(partition)
        self.files = [images / name for name, part in rows if split == "all" or part == SPLITS[split]]
        if not self.files:
            which = "no rows" if split == "all" else f"no rows of the {split} split (partition {SPLITS[split]})"
            raise ValueError(f"{partition}: {which}; expected '<file> <0|1|2>' lines listing its images")
        missing = [f for f in self.files if not f.is_file()]
        if missing:
            raise FileNotFoundError(f"{len(missing)} images listed in {partition} are missing, "
                                    f"first {missing[0]}")
        self.attr_names: list[str] = []
        self.attributes = np.zeros((len(self.files), 0), dtype=np.uint8)
        attr_path = folder / "list_attr_celeba.txt"
        if attr_path.is_file():
            self.attr_names, table = read_attributes(attr_path)
            absent = [f.name for f in self.files if f.name not in table]
            if absent:
                raise ValueError(f"{attr_path}: no row for {len(absent)} images, first {absent[0]}")
            self.attributes = np.stack([table[f.name] for f in self.files]) if self.files else \
                np.zeros((0, len(self.attr_names)), dtype=np.uint8)
        self.split, self.image_size, self.crop = split, image_size, crop
        self._cache = cache_dir_for(folder, cache_dir)
        self._threads = num_threads or min(4, os.cpu_count() or 1)
        self._images, self._content_key = None, None

    @property
    def content_key(self) -> str:
        """A short hash of the split's folder and each file's name, size and modification time: a
        replaced JPEG gives another key (it keys the decoded images' cache and FID statistics)."""
        if self._content_key is None:
            h = hashlib.sha256(f"{self.files[0].parent.resolve() if self.files else ''}\n".encode())
            for f in self.files:
                st = f.stat()
                h.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns}\n".encode())
            self._content_key = h.hexdigest()[:12]
        return self._content_key

    @property
    def images(self) -> np.ndarray:
        """uint8 [n, 3, image_size, image_size], decoded on first use and cached on disk."""
        if self._images is None:
            path = self._cache / f"celeba.{self.split}.{self.crop}.{self.image_size}.{self.content_key}.npy"
            if path.is_file():
                self._images = np.load(path, mmap_mode="r")
            else:
                with ThreadPoolExecutor(self._threads) as pool:  # PIL decodes without the GIL
                    decoded = list(pool.map(lambda f: decode(f, self.crop, self.image_size), self.files))
                arr = (np.stack(decoded) if decoded
                       else np.zeros((0, 3, self.image_size, self.image_size), np.uint8))
                save_array_atomic(path, arr)
                self._images = arr
        return self._images

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i):
        x = torch.from_numpy(np.array(self.images[i], dtype=np.float32)).div_(127.5).sub_(1.0)
        return x, torch.from_numpy(self.attributes[i].astype(np.int64))
