"""edgegen.tensor_files: a missing, truncated or damaged safetensors file is an error that names
the path (ValueError / FileNotFoundError), never the library's bare SafetensorError."""

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
