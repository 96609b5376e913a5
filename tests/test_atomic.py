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
