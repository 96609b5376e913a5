"""CIFAR-10 (Krizhevsky 2009), the official "python version" (``cifar-10-batches-py/``).

Each batch file is a pickle of ``{b"data": uint8 [n, 3072], b"labels": [n ints]}``, rows holding
the red, green and blue 32x32 planes in turn; ``batches.meta`` holds ``b"label_names"``. Images
are resized once (bilinear) to ``image_size`` and cached as uint8; items are float tensors in
[-1, 1] (the GAN convention) with int labels.
"""

from __future__ import annotations

import hashlib
import os
import pickle
from pathlib import Path

import numpy as np
import torch

from edgegen.data.download import download_and_extract
from edgegen.data.root import cache_dir_for, data_root, dataset_dir, save_array_atomic

FOLDER = "cifar-10-batches-py"
URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
MD5 = "c58f30108f718f92721af3b95e74349a"  # published with the archive
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILES = ("test_batch",)


class _ArraysOnly(pickle.Unpickler):
    """Unpickles plain data and NumPy arrays, which is all the official batches hold; any other
    class or function a file names is refused, so reading a batch never runs code from it."""

    def find_class(self, module, name):
        if (module, name) in (("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct")):
            try:
                from numpy._core.multiarray import _reconstruct
            except ImportError:  # NumPy 1.x
                from numpy.core.multiarray import _reconstruct
            return _reconstruct
        if module == "numpy" and name in ("ndarray", "dtype"):
            return getattr(np, name)
        if (module, name) == ("_codecs", "encode"):  # bytes in a protocol-2 pickle written by Python 3
            import _codecs

            return _codecs.encode
        raise pickle.UnpicklingError(f"names {module}.{name}, which a CIFAR-10 file does not hold "
                                     "(only NumPy arrays and plain data are read)")


def _unpickle(path: Path, what: str):
    try:
        with open(path, "rb") as f:
            return _ArraysOnly(f, encoding="bytes").load()
    except FileNotFoundError:
        raise
    except Exception as exc:  # truncated or foreign pickles raise many types
        raise ValueError(f"{path}: not a readable CIFAR-10 {what} pickle ({exc})") from exc


def read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 [n, 3, 32, 32], labels int64 [n]) from one official batch file."""
    d = _unpickle(path, "batch")
    if not isinstance(d, dict) or b"data" not in d or b"labels" not in d:
        raise ValueError(f"{path}: expected a dict with keys b'data' and b'labels'")
    data = np.asarray(d[b"data"])
    labels = np.asarray(d[b"labels"], dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise ValueError(f"{path}: expected uint8 data of shape [n, 3072], got {data.dtype} {data.shape}")
    if labels.shape != (data.shape[0],) or (labels.size and (labels.min() < 0 or labels.max() > 9)):
        raise ValueError(f"{path}: expected {data.shape[0]} labels in 0..9")
    return data.reshape(-1, 3, 32, 32), labels


def read_label_names(path: Path) -> list[str]:
    """The 10 class names from the official ``batches.meta``."""
    d = _unpickle(path, "batches.meta")
    names = d.get(b"label_names") if isinstance(d, dict) else None
    if not isinstance(names, (list, tuple)) or len(names) != 10 or \
            not all(isinstance(n, (bytes, str)) for n in names):
        raise ValueError(f"{path}: expected a dict whose b'label_names' lists the 10 class names")
    try:
        return [n.decode("utf-8") if isinstance(n, bytes) else n for n in names]
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: expected UTF-8 class names ({exc})") from None


class CIFAR10(torch.utils.data.Dataset):
    """``CIFAR10(root=None, split="train"|"test", image_size=64, download=False)``."""

    def __init__(self, root=None, split: str = "train", image_size: int = 64,
                 download: bool = False, cache_dir: str | os.PathLike | None = None):
        if split not in ("train", "test"):
            raise ValueError(f"split: expected 'train' or 'test', got {split!r}")
        if not isinstance(image_size, int) or image_size < 8:
            raise ValueError(f"image_size: expected an int >= 8, got {image_size!r}")
        wanted = TRAIN_FILES if split == "train" else TEST_FILES
        if download and not all((data_root(root) / FOLDER / n).is_file() for n in (*wanted, "batches.meta")):
            download_and_extract(URL, data_root(root), md5=MD5)
        folder = dataset_dir(FOLDER, root, f"Download {URL} (MD5 {MD5}) and unpack it there, "
                             "or pass download=True.")
        files = [folder / n for n in wanted]
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise FileNotFoundError(f"CIFAR-10 {split} split incomplete: missing {missing}")
        meta = folder / "batches.meta"
        self.classes = [f"class_{i}" for i in range(10)]
        if meta.is_file():
            self.classes = read_label_names(meta)
        self.split, self.image_size = split, image_size
        self.images, self.labels = self._load(files, cache_dir_for(folder, cache_dir))

    def _load(self, files, cache: Path):
        # Keyed on the folder and each file's size and modification time: another folder sharing
        # the cache, or a replaced batch file, is decoded afresh.
        h = hashlib.sha256(f"{files[0].parent.resolve()}\n".encode())
        for f in files:
            st = f.stat()
            h.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns}".encode())
        self.content_key = h.hexdigest()[:12]  # also keys caches built from these images (FID statistics)
        stem = f"cifar10.{self.split}.{self.image_size}.{self.content_key}"
        img_path, lab_path = cache / f"{stem}.images.npy", cache / f"{stem}.labels.npy"
        if img_path.is_file() and lab_path.is_file():
            return np.load(img_path, mmap_mode="r"), np.load(lab_path)
        parts = [read_batch(f) for f in files]
        images = np.concatenate([p[0] for p in parts])
        labels = np.concatenate([p[1] for p in parts])
        if self.image_size != 32:
            x = torch.from_numpy(images).float()
            x = torch.nn.functional.interpolate(x, size=self.image_size, mode="bilinear",
                                                align_corners=False)
            images = x.round_().clamp_(0, 255).to(torch.uint8).numpy()
        # Labels first: the images file is what marks the cache complete.
        if save_array_atomic(lab_path, labels):
            save_array_atomic(img_path, images)
        return images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i):
        x = torch.from_numpy(np.array(self.images[i], dtype=np.float32))
        return x.div_(127.5).sub_(1.0), int(self.labels[i])
