"""Download paths, exercised offline through file:// URLs: checksums, atomicity, safe extraction."""

import hashlib
import io
import json
import os
import re
import shutil
import tarfile
import urllib.request
import warnings
import zipfile
from pathlib import Path

import pytest

import edgegen.data.download as download_mod
import edgegen.data.tokenizer as tokenizer_mod
import edgegen.data.wikitext as wikitext_mod
from edgegen.data import GPT2Tokenizer, OpenWebText, WikiText2, download_gpt2_tokenizer
from edgegen.data.download import extract
from tests.data.test_text import tiny_tokenizer_dir  # noqa: F401  (fixture)

REAL = Path(os.environ.get("EDGEGEN_DATA_DIR", "/nonexistent"))

# The tiny fixture tokenizer is not OpenAI's yet uses the official file names, and the WikiText-2
# fixtures are not the published files: the warnings that say so are expected here
# (tests/data/test_text.py checks them).
pytestmark = [pytest.mark.filterwarnings("ignore:.*differs from OpenAI's published:UserWarning"),
              pytest.mark.filterwarnings(r"ignore:.*wiki\..*\.raw. SHA-256 differs from the published:UserWarning")]


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
    assert [p for p in (tmp_path / "root").rglob("*") if p.is_file()] == []  # no partial download left
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


def test_a_download_cut_off_mid_stream_leaves_no_file(tmp_path, monkeypatch):
    src = tmp_path / "big.bin"
    data = bytes(range(256)) * (12 << 10)  # 3 MiB: several blocks
    src.write_bytes(data)
    reads = []

    class CutOff:  # serves the first block, then the connection drops
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def read(self, n):
            reads.append(n)
            if len(reads) == 2:
                raise ConnectionResetError("simulated: connection reset by peer")
            return data[:n]

    dest = tmp_path / "gpt2" / "encoder.json"
    with monkeypatch.context() as m:
        m.setattr(urllib.request, "urlopen", lambda url, timeout=None: CutOff())
        with pytest.raises(ConnectionResetError, match="simulated: connection reset by peer"):
            download_mod.fetch(src.as_uri(), dest, sha256=sha256(src))
    assert len(reads) == 2 and 0 < reads[0] < len(data)
    assert not dest.exists() and list(dest.parent.iterdir()) == []  # no partial file, no temporary file
    assert download_mod.fetch(src.as_uri(), dest, sha256=sha256(src)) == dest and dest.read_bytes() == data


# md5sum / sha256sum of b"the official file\n"
OFFICIAL_MD5 = "51cc551488c527d88d9106432ce27611"
OFFICIAL_SHA256 = "915f9eea6bba342f124414f20c87673c9af34ea55a5b6599d0c2f7bcdcb7776e"


@pytest.mark.parametrize("wrong", ["md5", "sha256"])
def test_fetch_given_both_checksums_verifies_both(tmp_path, wrong):
    """A file that matches one of the two checksums and not the other is refused, naming the
    other, and leaves nothing at ``dest``."""
    src = tmp_path / "file.bin"
    src.write_bytes(b"the official file\n")
    right = {"md5": OFFICIAL_MD5, "sha256": OFFICIAL_SHA256}
    sums = dict(right, **{wrong: "0" * len(right[wrong])})
    dest = tmp_path / "out" / "file.bin"
    with pytest.raises(OSError, match=f"^{re.escape(src.as_uri())}: {wrong} mismatch \\(expected {sums[wrong]}\\)"):
        download_mod.fetch(src.as_uri(), dest, **sums)
    assert not dest.exists() and list(dest.parent.iterdir()) == []  # nothing left, no temporary file
    assert download_mod.fetch(src.as_uri(), dest, **right) == dest and dest.read_bytes() == b"the official file\n"


def test_extract_refuses_escaping_members(tmp_path):
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as z:
        z.writestr("../outside.txt", "x")
    with pytest.raises(OSError, match="escapes"):
        extract(evil, tmp_path / "dest")
    assert not (tmp_path / "outside.txt").exists()
    assert list((tmp_path / "dest").glob("*")) == []  # the temporary folder is gone too


@pytest.mark.parametrize("kind", [tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.CHRTYPE],
                         ids=["symlink", "hardlink", "device"])
def test_extract_refuses_tar_links_and_devices(tmp_path, kind):
    """A link pointing inside the archive is refused all the same; nothing is extracted, not even
    the plain file before it."""
    archive = tmp_path / "a.tar"
    with tarfile.open(archive, "w") as tar:
        data = b"plain member\n"
        info = tarfile.TarInfo("pkg/one.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
        special = tarfile.TarInfo("pkg/link")
        special.type = kind
        special.linkname = "pkg/one.txt" if kind == tarfile.LNKTYPE else "one.txt"
        tar.addfile(special)
    dest = tmp_path / "dest"
    with pytest.raises(OSError, match=f"^{re.escape(str(archive))}: member 'pkg/link' is not a plain file$"):
        extract(archive, dest)
    assert list(dest.iterdir()) == []  # neither members nor the temporary folder


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


def _fail_on_call(n: int, monkeypatch):
    """Make the n-th member written by zipfile stop half-way, as a full disk or a killed job would."""
    copy, calls = shutil.copyfileobj, []

    def copyfileobj(src, dst, *args, **kwargs):
        calls.append(1)
        if len(calls) == n:
            dst.write(src.read(5))
            raise OSError("simulated: no space left on device")
        return copy(src, dst, *args, **kwargs)

    monkeypatch.setattr(shutil, "copyfileobj", copyfileobj)
    return calls


def test_extract_is_all_or_nothing(tmp_path, monkeypatch):
    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("pkg/one.txt", "first member\n")
        z.writestr("pkg/two.txt", "second member\n")
        z.writestr("top.txt", "loose member\n")
    dest = tmp_path / "dest"
    with monkeypatch.context() as m:
        calls = _fail_on_call(2, m)
        with pytest.raises(OSError, match="no space left"):
            extract(archive, dest)
    assert len(calls) == 2 and list(dest.iterdir()) == []  # neither members nor the temporary folder
    # Into an existing folder: stale members are replaced, other files kept.
    (dest / "pkg").mkdir()
    (dest / "pkg" / "one.txt").write_text("stale half-written", encoding="utf-8")
    (dest / "pkg" / "mine.txt").write_text("kept", encoding="utf-8")
    extract(archive, dest)
    files = {str(p.relative_to(dest)): p.read_text(encoding="utf-8") for p in dest.rglob("*") if p.is_file()}
    assert files == {"pkg/one.txt": "first member\n", "pkg/two.txt": "second member\n", "pkg/mine.txt": "kept",
                     "top.txt": "loose member\n"}
    assert sorted(p.name for p in dest.iterdir()) == ["pkg", "top.txt"]


def _wikitext_zip(path: Path, texts: dict) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        for split, text in texts.items():
            z.writestr(f"wikitext-2-raw/wiki.{split}.raw", text)
    return path


def test_interrupted_wikitext_download_is_fetched_again(tmp_path, monkeypatch):
    texts = {split: "".join(f" = {split} {i} = \n" for i in range(50)) for split in ("train", "valid", "test")}
    archive = _wikitext_zip(tmp_path / "wikitext-2-raw-v1.zip", texts)
    monkeypatch.setattr(wikitext_mod, "ARCHIVE_URL", archive.as_uri())
    monkeypatch.setattr(wikitext_mod, "ARCHIVE_SHA256", sha256(archive))
    root = tmp_path / "root"
    with monkeypatch.context() as m:
        calls = _fail_on_call(3, m)  # the test split is the third member
        with pytest.raises(OSError, match="no space left"):
            WikiText2(root, split="test", download=True)
    assert len(calls) == 3 and list(root.rglob("*")) == []  # no member, no archive, no temporary folder
    w = WikiText2(root, split="test", download=True)
    assert "".join(w.lines) == texts["test"] and len(w.lines) == 50


def _published_wikitext(tmp_path, monkeypatch, texts: dict) -> dict:
    """A local archive of ``texts`` (split -> text) standing in for the published one, with its
    members' SHA-256 as the published ones (returned)."""
    archive = _wikitext_zip(tmp_path / "wikitext-2-raw-v1.zip", texts)
    monkeypatch.setattr(wikitext_mod, "ARCHIVE_URL", archive.as_uri())
    monkeypatch.setattr(wikitext_mod, "ARCHIVE_SHA256", sha256(archive))
    members = {split: hashlib.sha256(t.encode()).hexdigest() for split, t in texts.items()}
    monkeypatch.setattr(wikitext_mod, "SHA256", members)
    return members


def test_wikitext_download_names_a_member_that_is_not_the_published_one(tmp_path, monkeypatch):
    members = _published_wikitext(tmp_path, monkeypatch, {split: f" = {split} = \n text \n"
                                                          for split in ("train", "valid", "test")})
    root = tmp_path / "root"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        WikiText2(root, split="valid", download=True).verify()  # downloaded, then present and published
        WikiText2(root, split="valid", download=True).verify()
    (root / "wikitext-2-raw" / "wiki.valid.raw").write_text(" = valid = \n", encoding="utf-8")  # cut short
    with pytest.warns(UserWarning, match=r"wiki.valid.raw: SHA-256 differs from the published " + members["valid"]):
        WikiText2(root, split="valid", download=True)


def test_wikitext_download_keeps_the_splits_already_present(tmp_path, monkeypatch):
    texts = {split: f" = official {split} = \n" for split in ("train", "valid", "test")}
    members = _published_wikitext(tmp_path, monkeypatch, texts)
    folder = tmp_path / "root" / "wikitext-2-raw"
    folder.mkdir(parents=True)
    (folder / "wiki.test.raw").write_text(" = my edited test = \n", encoding="utf-8")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        train = WikiText2(tmp_path / "root", split="train", download=True)  # fetched: it was absent
    assert (folder / "wiki.test.raw").read_text(encoding="utf-8") == " = my edited test = \n"  # kept
    assert (folder / "wiki.valid.raw").read_text(encoding="utf-8") == texts["valid"]  # absent: added
    assert train.official
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]  # no temporary folder left
    with pytest.warns(UserWarning, match=r"wiki.test.raw: SHA-256 differs from the published " + members["test"]):
        assert not WikiText2(tmp_path / "root", split="test", download=True).official  # kept, and named


def test_extract_can_keep_the_files_already_there(tmp_path):
    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("pkg/one.txt", "archived one\n")
        z.writestr("pkg/two.txt", "archived two\n")
    dest = tmp_path / "dest"
    (dest / "pkg").mkdir(parents=True)
    (dest / "pkg" / "one.txt").write_text("mine", encoding="utf-8")
    extract(archive, dest, keep_existing=True)
    files = {str(p.relative_to(dest)): p.read_text(encoding="utf-8") for p in dest.rglob("*") if p.is_file()}
    assert files == {"pkg/one.txt": "mine", "pkg/two.txt": "archived two\n"}
    assert sorted(p.name for p in dest.iterdir()) == ["pkg"]
