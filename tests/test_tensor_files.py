"""edgegen.tensor_files: a missing, truncated or damaged safetensors file is an error that names
the path (ValueError / FileNotFoundError), never the library's bare SafetensorError."""

import json
import re

import pytest
import torch

from edgegen.tensor_files import read_safetensors, read_safetensors_metadata, write_safetensors


@pytest.fixture
def good(tmp_path):
    path = tmp_path / "good.safetensors"
    write_safetensors({"a": torch.arange(64.0).reshape(8, 8), "b": torch.ones(3)}, path, {"note": "x"})
    return path


def test_round_trip_and_metadata(good):
    state, meta = read_safetensors(good)
    assert torch.equal(state["a"], torch.arange(64.0).reshape(8, 8)) and torch.equal(state["b"], torch.ones(3))
    assert meta["note"] == "x" and read_safetensors_metadata(good)["note"] == "x"


@pytest.mark.parametrize("cut", ["half", "header", "empty", "garbage"])
@pytest.mark.parametrize("reader", [read_safetensors, read_safetensors_metadata], ids=["tensors", "metadata"])
def test_a_damaged_file_is_a_value_error_naming_it(good, tmp_path, cut, reader):
    data = good.read_bytes()
    bad = tmp_path / f"{cut}.safetensors"
    bad.write_bytes({"half": data[: len(data) // 2], "header": data[:20], "empty": b"", "garbage": b"\0" * 64}[cut])
    with pytest.raises(ValueError, match=re.escape(f"{bad}: not a readable safetensors file (truncated or damaged?): ")):
        reader(bad)


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=re.escape(f"{tmp_path / 'nope.safetensors'}: no such file")):
        read_safetensors(tmp_path / "nope.safetensors")


@pytest.mark.parametrize("writer", ["dense", "sparse"])
def test_tied_tensors_are_stored_once_even_when_the_copy_to_the_cpu_makes_new_storage(tmp_path, monkeypatch,
                                                                                        writer):
    """A GPU model's tied weights share one storage on the GPU; each ``.cpu()`` copy has its own.
    The tie is found before the copy (simulated here by a ``.cpu()`` that always copies)."""
    from edgegen.prune.export import load_sparse, save_sparse

    table = torch.arange(48.0).reshape(6, 8)
    table[:3] = 0  # sparse enough for the bitmask encoding
    expected = table.clone()
    state = {"wte.weight": table, "head.weight": table, "other": table.clone()}
    with monkeypatch.context() as patched:
        patched.setattr(torch.Tensor, "cpu", lambda self, *a, **k: self.clone())
        path = tmp_path / f"{writer}.safetensors"
        save_sparse(state, path) if writer == "sparse" else write_safetensors(state, path)
    assert json.loads(read_safetensors_metadata(path)["edgegen_aliases"]) == {"head.weight": "wte.weight"}
    # reading points the alias at its tensor again: the tie comes back
    back = load_sparse(path) if writer == "sparse" else read_safetensors(path)[0]
    assert sorted(back) == ["head.weight", "other", "wte.weight"]
    assert back["head.weight"] is back["wte.weight"]
    for name in ("wte.weight", "head.weight", "other"):
        assert torch.equal(back[name], expected)


def test_reading_without_aliases_leaves_them_to_restore_aliases(tmp_path):
    from edgegen.tensor_files import restore_aliases

    table = torch.arange(12.0).reshape(3, 4)
    path = tmp_path / "tied.safetensors"
    write_safetensors({"wte.weight": table, "head.weight": table}, path)
    state, meta = read_safetensors(path, with_aliases=False)
    assert sorted(state) == ["wte.weight"]
    restore_aliases(state, meta)
    assert sorted(state) == ["head.weight", "wte.weight"] and state["head.weight"] is state["wte.weight"]
    assert torch.equal(state["head.weight"], table)


def test_storage_key_tells_devices_apart():
    from edgegen.tensor_files import storage_key

    t = torch.ones(4)
    assert storage_key(t) == storage_key(t.view(4)) and storage_key(t)[0] == torch.device("cpu")
    assert storage_key(t) != storage_key(t[1:]) and storage_key(t) != storage_key(t.view(2, 2))
