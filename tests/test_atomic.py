"""Replacing files atomically: the temporary file is the writer's own, removed on failure, renamed
on success, and created with the usual permissions; JSON for other readers is strict."""

import json
import os
import stat

import numpy as np
import pytest
import torch

from edgegen import _atomic as atomic


def test_replacing_renames_on_success_and_keeps_the_old_file_on_failure(tmp_path):
    path = tmp_path / "sub" / "x.json"
    atomic.write_text(path, "one")
    assert path.read_text() == "one"
    with pytest.raises(RuntimeError, match="boom"):
        with atomic.replacing(path) as tmp:
            tmp.write_text("half")
            raise RuntimeError("boom")
    assert path.read_text() == "one"
    assert sorted(p.name for p in path.parent.iterdir()) == ["x.json"]


def test_nested_writers_of_one_path_do_not_share_a_temporary_file(tmp_path):
    path = tmp_path / "cache.npy"
    with atomic.replacing(path) as a:
        a.write_text("first, longer content")
        with atomic.replacing(path) as b:
            assert b != a and b.parent == a.parent
            assert a.suffix == b.suffix == ".npy"  # numpy keeps a name that ends in .npy / .npz
            b.write_text("second")
        assert path.read_text() == "second" and a.read_text() == "first, longer content"
    assert path.read_text() == "first, longer content"  # the last rename wins, each file whole
    assert [p.name for p in tmp_path.iterdir()] == ["cache.npy"]


def test_the_file_gets_the_umask_permissions_not_0600(tmp_path):
    old = os.umask(0o022)
    try:
        path = atomic.write_text(tmp_path / "shared.json", "{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def _strict(text):
    def refuse(token):
        raise ValueError(f"not strict JSON: {token}")
    return json.loads(text, parse_constant=refuse)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf"), np.float32("nan"),
                                   np.float64("inf"), torch.tensor(float("nan")), np.array(float("-inf"))],
                         ids=["nan", "inf", "-inf", "np32-nan", "np64-inf", "tensor-nan", "np0d-inf"])
def test_json_text_writes_a_non_finite_number_as_null(value):
    text = atomic.json_text({"x": value, "nested": [1, {"y": value}], "t": (value, 2.5)})
    assert _strict(text) == {"x": None, "nested": [1, {"y": None}], "t": [None, 2.5]}


def test_json_text_keeps_finite_numbers_exactly_and_leaves_other_values_to_default(tmp_path):
    obj = {"f": 0.1, "np": np.float32(0.5), "t": torch.tensor(3), "i": 7, "b": True, "n": None, "s": "a",
           "p": tmp_path}
    back = _strict(atomic.json_text(obj, default=str))
    assert back == {"f": 0.1, "np": 0.5, "t": 3, "i": 7, "b": True, "n": None, "s": "a", "p": str(tmp_path)}
    assert type(back["t"]) is int and type(back["b"]) is bool
    with pytest.raises(TypeError, match="Path"):  # without default an unknown type is still refused
        atomic.json_text({"p": tmp_path})


def test_write_json_is_atomic_and_strict(tmp_path):
    path = atomic.write_json(tmp_path / "r.json", {"ppl": float("inf")}, indent=1)
    assert _strict(path.read_text()) == {"ppl": None}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


@pytest.mark.parametrize("writer", ["write_text", "write_json"])
def test_a_failure_mid_write_keeps_the_old_file_and_leaves_no_temporary(writer, tmp_path, monkeypatch):
    import pathlib

    path = tmp_path / "out.json"
    atomic.write_text(path, '{"old": 1}')
    seen = []

    def half_then_fail(self, text, encoding=None):
        seen.append(self)
        with open(self, "w", encoding=encoding) as f:
            f.write(text[: len(text) // 2])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pathlib.Path, "write_text", half_then_fail)
    with pytest.raises(OSError, match="No space left on device"):
        if writer == "write_text":
            atomic.write_text(path, '{"new": 22222222}')
        else:
            atomic.write_json(path, {"new": 22222222})
    monkeypatch.undo()
    assert len(seen) == 1 and seen[0] != path and seen[0].parent == path.parent  # a temporary beside it
    assert path.read_text() == '{"old": 1}'
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


@pytest.mark.parametrize("writer", ["save_atomic", "write_text"])
def test_writes_fsync_the_file_before_the_rename_then_the_folder(writer, tmp_path, monkeypatch):
    """Every replacing write (checkpoints through tensor_files.save_atomic, results and caches
    through _atomic.write_text): the data is flushed to disk before it is renamed over the old
    file, and the folder after, so the rename is durable."""
    from edgegen import tensor_files

    path = tmp_path / "ckpt" / "last.pt"
    tensor_files.save_atomic({"step": 1}, path)
    old_inode = path.stat().st_ino
    calls = []
    real = os.fsync

    def recording(fd):
        st = os.fstat(fd)
        calls.append((stat.S_ISDIR(st.st_mode), st.st_ino, st.st_size, path.stat().st_ino))
        return real(fd)

    monkeypatch.setattr(os, "fsync", recording)
    if writer == "save_atomic":
        tensor_files.save_atomic({"step": 2, "w": torch.arange(1000.0)}, path)
    else:
        atomic.write_text(path, "step 2 " * 1000)
    monkeypatch.undo()
    new = path.stat()
    if writer == "save_atomic":
        assert torch.load(path)["step"] == 2
    else:
        assert path.read_text() == "step 2 " * 1000
    assert [c[0] for c in calls] == [False, True]  # the file, then the folder
    (_, file_ino, file_size, at_file_sync), (_, dir_ino, _, at_dir_sync) = calls
    assert file_ino == new.st_ino and file_size == new.st_size  # the whole new file, synced ...
    assert at_file_sync == old_inode  # ... while the old one was still in place
    assert dir_ino == path.parent.stat().st_ino and at_dir_sync == new.st_ino  # the folder, after the rename
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.pt"]
