"""CIFAR-10 reader on fixtures in the official pickle format, and on the real files if present."""

import hashlib
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

import edgegen.data.cifar as cifar
from edgegen.data import CIFAR10

REAL = Path(os.environ.get("EDGEGEN_DATA_DIR", "/nonexistent"))
NAMES = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]


def write_batch(path: Path, n: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    d = {b"batch_label": b"fixture", b"labels": [int(v) for v in rng.integers(0, 10, n)],
         b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8)}
    with open(path, "wb") as f:
        pickle.dump(d, f, protocol=2)
    return d


def make_cifar(root: Path, n: int = 6) -> dict:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    batches = {name: write_batch(folder / name, n, i) for i, name in enumerate(cifar.TRAIN_FILES + cifar.TEST_FILES)}
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": NAMES, b"num_cases_per_batch": n, b"num_vis": 3072}, f, protocol=2)
    return batches


def test_reads_official_layout_exactly(tmp_path):
    batches = make_cifar(tmp_path)
    ds = CIFAR10(tmp_path, split="test", image_size=32, cache_dir=tmp_path / "c")
    assert len(ds) == 6 and ds.classes[0] == "airplane" and ds.classes[9] == "truck"
    row = batches["test_batch"][b"data"][2]
    x, y = ds[2]
    assert y == batches["test_batch"][b"labels"][2]
    # Channel planes: the first 1024 bytes are red, row-major 32x32.
    expected = torch.from_numpy(row.reshape(3, 32, 32).astype(np.float32)) / 127.5 - 1
    torch.testing.assert_close(x, expected)
    train = CIFAR10(tmp_path, split="train", image_size=32, cache_dir=tmp_path / "c")
    assert len(train) == 30


def test_resize_to_64_cached_once(tmp_path):
    make_cifar(tmp_path)
    ds = CIFAR10(tmp_path, split="train", cache_dir=tmp_path / "c")
    x, _ = ds[0]
    assert x.shape == (3, 64, 64) and x.dtype == torch.float32
    assert -1.0 <= x.min() and x.max() <= 1.0
    files = sorted(p.name for p in (tmp_path / "c").iterdir())
    assert len(files) == 2 and all(f.startswith("cifar10.train.64.") for f in files)
    again = CIFAR10(tmp_path, split="train", cache_dir=tmp_path / "c")
    assert isinstance(again.images, np.memmap)
    torch.testing.assert_close(again[0][0], x)
    # A constant image stays constant under bilinear upsampling.
    folder = tmp_path / "const" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({b"labels": [3], b"data": np.full((1, 3072), 51, np.uint8)}, f, protocol=2)
    c = CIFAR10(tmp_path / "const", split="test", cache_dir=tmp_path / "c2")
    assert torch.all(c[0][0] == 51 / 127.5 - 1) and c.classes[3] == "class_3"


def test_upsampling_is_bilinear_with_half_pixel_centers(tmp_path):
    # Red: a ramp 0, 8, ..., 248 along each row; green: the same ramp down each column; blue: constant.
    ramp = np.arange(32, dtype=np.uint8) * 8
    img = np.stack([np.tile(ramp, (32, 1)), np.tile(ramp[:, None], (1, 32)), np.full((32, 32), 51, np.uint8)])
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({b"labels": [0], b"data": img.reshape(1, 3072)}, f, protocol=2)
    out = np.asarray(CIFAR10(tmp_path, split="test", cache_dir=tmp_path / "c").images[0])
    # Output pixel i sits at input coordinate i/2 - 1/4 (clamped to [0, 31]): the edges repeat 0 and 248,
    # in between each pair of inputs 8k, 8k + 8 gives 8k + 2 and 8k + 6.
    expected = [0] + [8 * (i // 2) + (2 if i % 2 else -2) for i in range(1, 63)] + [248]
    assert expected[:8] == [0, 2, 6, 10, 14, 18, 22, 26] and expected[-3:] == [242, 246, 248]
    assert out.shape == (3, 64, 64)
    assert all(out[0, r].tolist() == expected for r in range(64))
    assert all(out[1, :, c].tolist() == expected for c in range(64))
    assert np.all(out[2] == 51)


def test_bad_files(tmp_path):
    make_cifar(tmp_path)
    folder = tmp_path / "cifar-10-batches-py"
    (folder / "test_batch").write_bytes(b"\x80\x02}q\x00(truncated")
    with pytest.raises(ValueError, match="test_batch: not a readable CIFAR-10 batch pickle"):
        CIFAR10(tmp_path, split="test", cache_dir=tmp_path / "c")
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({b"labels": [1], b"data": np.zeros((1, 1024), np.uint8)}, f, protocol=2)
    with pytest.raises(ValueError, match=r"test_batch: expected uint8 data of shape \[n, 3072\]"):
        CIFAR10(tmp_path, split="test", cache_dir=tmp_path / "c")
    (folder / "data_batch_3").unlink()
    with pytest.raises(FileNotFoundError, match="data_batch_3"):
        CIFAR10(tmp_path, split="train")
    with pytest.raises(FileNotFoundError, match="expected .*cifar-10-batches-py"):
        CIFAR10(tmp_path / "elsewhere")
    with pytest.raises(ValueError, match="split"):
        CIFAR10(tmp_path, split="validation")
    with pytest.raises(ValueError, match="image_size"):
        CIFAR10(tmp_path, split="test", image_size=4)


class _Touches:
    """Unpickling this would create ``marker``: a batch file that runs code when read."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_a_batch_naming_code_is_refused_without_running_it(tmp_path):
    make_cifar(tmp_path)
    marker = tmp_path / "code-ran"
    with open(tmp_path / "cifar-10-batches-py" / "test_batch", "wb") as f:
        pickle.dump({b"labels": [1], b"data": np.zeros((1, 3072), np.uint8), b"x": _Touches(marker)}, f, protocol=2)
    with pytest.raises(ValueError, match=r"test_batch: not a readable CIFAR-10 batch pickle \(names [\w.]+, which "
                                         r"a CIFAR-10 file does not hold"):
        CIFAR10(tmp_path, split="test", cache_dir=tmp_path / "c")
    assert not marker.exists()


def test_download_verifies_checksum(tmp_path, monkeypatch):
    src = tmp_path / "src"
    make_cifar(src)
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    monkeypatch.setattr(cifar, "URL", archive.as_uri())
    monkeypatch.setattr(cifar, "MD5", "0" * 32)
    with pytest.raises(OSError, match="md5 mismatch"):
        CIFAR10(tmp_path / "dl", split="test", download=True)
    assert not list((tmp_path / "dl").glob("*.part"))  # nothing left behind
    monkeypatch.setattr(cifar, "MD5", md5)
    ds = CIFAR10(tmp_path / "dl", split="test", download=True, cache_dir=tmp_path / "c")
    assert len(ds) == 6


@pytest.mark.skipif(not (REAL / "cifar-10-batches-py" / "test_batch").is_file(),
                    reason="EDGEGEN_DATA_DIR does not hold cifar-10-batches-py/")
def test_real_cifar_label_counts(tmp_path):
    test = CIFAR10(REAL, split="test", cache_dir=tmp_path)
    # The staged copy holds the first 1,017 images of each batch; counts from its README.
    assert np.bincount(np.asarray(test.labels), minlength=10).tolist() == [105, 93, 100, 104, 92, 87, 114, 102, 110, 110]
    assert test.classes[0] == "airplane"
    train = CIFAR10(REAL, split="train", cache_dir=tmp_path)
    assert len(train) == 5 * 1017
    x, y = train[0]
    assert x.shape == (3, 64, 64) and 0 <= y < 10


def test_cache_is_keyed_on_the_folder_and_each_batch_file(tmp_path):
    cache = tmp_path / "shared-cache"

    def write_test_batch(root: Path, value: int, n: int) -> Path:
        folder = root / "cifar-10-batches-py"
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / "test_batch", "wb") as f:
            pickle.dump({b"labels": [value % 10] * n, b"data": np.full((n, 3072), value, np.uint8)}, f, protocol=2)
        return folder / "test_batch"

    def check(ds, value: int, n: int):
        assert len(ds) == n and np.asarray(ds.labels).tolist() == [value % 10] * n
        assert np.all(np.asarray(ds.images) == value)

    # Two folders whose batch files have the same name and size, one cache folder (bytes below
    # 0x80: pickle protocol 2 writes larger ones in two bytes, and the sizes would differ).
    a = write_test_batch(tmp_path / "a", 10, 4)
    b = write_test_batch(tmp_path / "b", 100, 4)
    assert a.stat().st_size == b.stat().st_size
    check(CIFAR10(tmp_path / "a", split="test", image_size=32, cache_dir=cache), 10, 4)
    check(CIFAR10(tmp_path / "b", split="test", image_size=32, cache_dir=cache), 100, 4)
    check(CIFAR10(tmp_path / "a", split="test", image_size=32, cache_dir=cache), 10, 4)
    # A batch file replaced by one of the same size (a later modification time) ...
    old = (tmp_path / "a" / "cifar-10-batches-py" / "test_batch").stat().st_mtime_ns
    path = write_test_batch(tmp_path / "a", 77, 4)
    os.utime(path, ns=(old + 10**9, old + 10**9))
    check(CIFAR10(tmp_path / "a", split="test", image_size=32, cache_dir=cache), 77, 4)
    # ... or by a larger one.
    write_test_batch(tmp_path / "a", 33, 9)
    check(CIFAR10(tmp_path / "a", split="test", image_size=32, cache_dir=cache), 33, 9)
    check(CIFAR10(tmp_path / "b", split="test", image_size=32, cache_dir=cache), 100, 4)
    names = sorted(p.name for p in cache.iterdir())
    assert len(names) == 8 and all(n.startswith("cifar10.test.32.") for n in names)


def test_bad_batches_meta(tmp_path):
    make_cifar(tmp_path)
    meta = tmp_path / "cifar-10-batches-py" / "batches.meta"
    meta.write_bytes(meta.read_bytes()[:60])
    with pytest.raises(ValueError, match="batches.meta: not a readable CIFAR-10 batches.meta pickle"):
        CIFAR10(tmp_path, split="test", image_size=32, cache_dir=tmp_path / "c")
    with open(meta, "wb") as f:
        pickle.dump({b"num_cases_per_batch": 6}, f, protocol=2)
    with pytest.raises(ValueError, match="batches.meta: expected a dict whose b'label_names' lists the 10 class"):
        CIFAR10(tmp_path, split="test", image_size=32, cache_dir=tmp_path / "c")
    with open(meta, "wb") as f:
        pickle.dump({b"label_names": NAMES[:9]}, f, protocol=2)
    with pytest.raises(ValueError, match="batches.meta: expected a dict whose b'label_names' lists the 10 class"):
        CIFAR10(tmp_path, split="test", image_size=32, cache_dir=tmp_path / "c")


def cifar_archive(tmp_path, monkeypatch) -> dict:
    """A local stand-in for the official archive (URL and MD5 pointed at it); returns its batches."""
    src = tmp_path / "src"
    batches = make_cifar(src)
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    monkeypatch.setattr(cifar, "URL", archive.as_uri())
    monkeypatch.setattr(cifar, "MD5", hashlib.md5(archive.read_bytes()).hexdigest())
    return batches


def test_interrupted_download_is_fetched_again(tmp_path, monkeypatch):
    batches = cifar_archive(tmp_path, monkeypatch)
    copy, calls = tarfile.copyfileobj, []

    def disk_full_on_third_member(src, dst, length=None, *args, **kwargs):
        calls.append(length)
        if len(calls) == 3:
            dst.write(src.read(100))
            raise OSError("simulated: no space left on device")
        return copy(src, dst, length, *args, **kwargs)

    monkeypatch.setattr(tarfile, "copyfileobj", disk_full_on_third_member)
    with pytest.raises(OSError, match="no space left"):
        CIFAR10(tmp_path / "dl", split="train", download=True, cache_dir=tmp_path / "c")
    assert len(calls) == 3
    assert list((tmp_path / "dl").iterdir()) == []  # no half-written folder, no temporary folder
    monkeypatch.setattr(tarfile, "copyfileobj", copy)
    ds = CIFAR10(tmp_path / "dl", split="train", download=True, image_size=32, cache_dir=tmp_path / "c")
    expected = np.concatenate([batches[n][b"data"] for n in cifar.TRAIN_FILES]).reshape(-1, 3, 32, 32)
    assert np.array_equal(np.asarray(ds.images), expected)
    assert sorted(p.name for p in (tmp_path / "dl").iterdir()) == ["cifar-10-batches-py"]
