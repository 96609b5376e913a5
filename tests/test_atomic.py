"""Replacing files atomically: the temporary file is the writer's own, removed on failure, renamed
on success, and created with the usual permissions."""

import os
import stat

import pytest

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
