"""Download paths, exercised offline through file:// URLs: checksums, atomicity, safe extraction."""

import hashlib
import json
import os
import zipfile
from pathlib import Path

import pytest

import edgegen.data.tokenizer as tokenizer_mod
import edgegen.data.wikitext as wikitext_mod
from edgegen.data import GPT2Tokenizer, OpenWebText, WikiText2, download_gpt2_tokenizer
from edgegen.data.download import extract
from tests.data.test_text import tiny_tokenizer_dir  # noqa: F401  (fixture)

REAL = Path(os.environ.get("EDGEGEN_DATA_DIR", "/nonexistent"))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_wikitext_download_from_zip(tmp_path, monkeypatch):
    archive = tmp_path / "wikitext-2-raw-v1.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for split in ("train", "valid", "test"):
            z.writestr(f"wikitext-2-raw/wiki.{split}.raw", f" = {split} = \n text \n")
    monkeypatch.setattr(wikitext_mod, "ARCHIVE_URL", archive.as_uri())
    monkeypatch.setattr(wikitext_mod, "ARCHIVE_SHA256", "0" * 64)
    with pytest.raises(OSError, match="sha256 mismatch"):
        WikiText2(tmp_path / "root", split="valid", download=True)
    assert not any((tmp_path / "root").rglob("*.part")) and not (tmp_path / "root" / "wikitext-2-raw").exists()
    monkeypatch.setattr(wikitext_mod, "ARCHIVE_SHA256", sha256(archive))
    w = WikiText2(tmp_path / "root", split="valid", download=True)
    assert w.lines == [" = valid = \n", " text \n"]
    assert not list((tmp_path / "root").glob("*.download"))  # the archive is removed after use
    with pytest.raises(ValueError, match="differs from the published"):
        w.verify()


@pytest.mark.skipif(not (REAL / "wikitext-2-raw" / "wiki.test.raw").is_file(),
                    reason="EDGEGEN_DATA_DIR does not hold wikitext-2-raw/")
def test_real_wikitext_matches_published_hashes():
    for split in ("test", "valid"):
        WikiText2(REAL, split=split).verify()


def test_tokenizer_download(tmp_path, monkeypatch, tiny_tokenizer_dir):  # noqa: F811
    src, _ = tiny_tokenizer_dir
    files = {name: (Path(src / name).as_uri(), sha256(src / name)) for name in ("encoder.json", "vocab.bpe")}
    monkeypatch.setattr(tokenizer_mod, "OFFICIAL_FILES", dict(files, **{"vocab.bpe": (files["vocab.bpe"][0], "1" * 64)}))
    with pytest.raises(OSError, match="sha256 mismatch"):
        download_gpt2_tokenizer(tmp_path / "root")
    assert not (tmp_path / "root" / "gpt2" / "vocab.bpe").exists()
    monkeypatch.setattr(tokenizer_mod, "OFFICIAL_FILES", files)
    folder = download_gpt2_tokenizer(tmp_path / "root")
    assert GPT2Tokenizer.from_dir(folder).encode("hel") == GPT2Tokenizer.from_dir(src).encode("hel")


def test_extract_refuses_escaping_members(tmp_path):
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as z:
        z.writestr("../outside.txt", "x")
    with pytest.raises(OSError, match="escapes"):
        extract(evil, tmp_path / "dest")
    assert not (tmp_path / "outside.txt").exists()


def test_openwebtext_from_saved_dataset_folder(tmp_path, tiny_tokenizer_dir):  # noqa: F811
    pa = pytest.importorskip("pyarrow", reason="pyarrow is not installed")
    tok = GPT2Tokenizer.from_dir(tiny_tokenizer_dir[0])
    folder = tmp_path / "openwebtext" / "hf_train"
    folder.mkdir(parents=True)
    table = pa.table({"text": ["hel wo", "x"], "id": [1, 2]})
    with pa.OSFile(str(folder / "data-00000-of-00001.arrow"), "wb") as sink:
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
    (folder / "state.json").write_text(json.dumps({"_data_files": [{"filename": "data-00000-of-00001.arrow"}]}))
    (tmp_path / "openwebtext" / "extra.txt").write_text("help", encoding="utf-8")
    ds = OpenWebText(tmp_path, tokenizer=tok, cache_dir=tmp_path / "c")
    eot = tok.eot_id
    # Sorted order: extra.txt, then hf_train/state.json.
    assert ds.tokens.tolist() == tok.encode("help") + [eot] + tok.encode("hel wo") + [eot] + tok.encode("x") + [eot]
    (folder / "state.json").write_text("{}")
    with pytest.raises(ValueError, match="state.json: expected save_to_disk's state.json"):
        OpenWebText(tmp_path, tokenizer=tok, cache_dir=tmp_path / "c2")
