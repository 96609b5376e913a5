"""OpenWebText token stream from .txt / .jsonl documents."""

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from edgegen.data import GPT2Tokenizer, OpenWebText
from tests.data.test_text import _copy_tokenizer, byte_alphabet, tiny_tokenizer_dir  # noqa: F401  (fixture)

REAL = Path(os.environ.get("EDGEGEN_DATA_DIR", "/nonexistent"))

# The tiny fixture tokenizer is not OpenAI's yet uses the official file names: the warning that says
# so is expected here (tests/data/test_text.py checks it).
pytestmark = pytest.mark.filterwarnings("ignore:.*differs from OpenAI's published:UserWarning")


def test_token_stream_from_txt_and_jsonl(tmp_path, tiny_tokenizer_dir):  # noqa: F811
    tok = GPT2Tokenizer.from_dir(tiny_tokenizer_dir[0])
    folder = tmp_path / "openwebtext"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text("hello world\n\nsecond paragraph", encoding="utf-8")
    # A page that quotes the end-of-text marker must not gain a document boundary.
    quoting = "x <|endoftext|> y"
    (folder / "sub" / "b.jsonl").write_text(
        json.dumps({"text": "héllo"}) + "\n\n" + json.dumps({"text": quoting}) + "\n", encoding="utf-8")
    ds = OpenWebText(tmp_path, tokenizer=tok, cache_dir=tmp_path / "c", batch_docs=1)
    eot = tok.eot_id
    expected = (tok.encode("hello world\n\nsecond paragraph") + [eot] + tok.encode("héllo") + [eot]
                + tok.encode(quoting, allowed_special=False) + [eot])
    assert tok.encode(quoting, allowed_special=False).count(eot) == 0
    assert ds.num_documents == 3
    assert ds.tokens.dtype == np.uint16 and ds.tokens.tolist() == expected
    again = OpenWebText(tmp_path, tokenizer=tok, cache_dir=tmp_path / "c")  # memory-mapped reuse
    assert again.path == ds.path and again.num_documents == 3
    g = torch.Generator().manual_seed(0)
    x, y = ds.get_batch(4, 5, generator=g)
    assert x.shape == y.shape == (4, 5) and torch.equal(x[:, 1:], y[:, :-1])
    # Each row is a contiguous slice of the stream.
    stream = torch.tensor(expected)
    for row in x:
        assert any(torch.equal(stream[s:s + 5], row) for s in range(len(expected) - 4))


def test_bad_input(tmp_path, tiny_tokenizer_dir):  # noqa: F811
    tok = GPT2Tokenizer.from_dir(tiny_tokenizer_dir[0])
    folder = tmp_path / "openwebtext"
    folder.mkdir()
    with pytest.raises(ValueError, match="no .txt or .jsonl documents or dataset folders"):
        OpenWebText(tmp_path, tokenizer=tok)
    (folder / "d.jsonl").write_text('{"text": "ok"}\n{"body": "no text"}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"d.jsonl:2: expected an object with a string 'text'"):
        OpenWebText(tmp_path, tokenizer=tok, cache_dir=tmp_path / "c")
    assert not list((tmp_path / "c").glob("*.bin"))  # no half-written token file
    (folder / "d.jsonl").write_text("{broken\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"d.jsonl:1: not valid JSON"):
        OpenWebText(tmp_path, tokenizer=tok, cache_dir=tmp_path / "c")
    (folder / "d.jsonl").write_text('{"text": "hel hel hel"}\n', encoding="utf-8")
    ds = OpenWebText(tmp_path, tokenizer=tok, cache_dir=tmp_path / "c2")
    with pytest.raises(ValueError, match="block_size"):
        ds.get_batch(2, len(ds))
    with pytest.raises(ValueError, match="batch_size"):
        ds.get_batch(0, 1)


@pytest.mark.skipif(not (REAL / "openwebtext").is_dir() or not (REAL / "gpt2").is_dir(),
                    reason="EDGEGEN_DATA_DIR does not hold openwebtext/ and gpt2/")
def test_real_sample(tmp_path):
    ds = OpenWebText(REAL, cache_dir=tmp_path)
    assert len(ds) > 100_000
    assert ds.tokenizer.decode(ds.tokens[:20].tolist()).startswith("Port-au-Prince, Haiti")
    assert int(ds.tokens[-1]) == ds.tokenizer.eot_id


@pytest.mark.parametrize("name, content", [("doc.txt", b"caf\xe9"),
                                           ("doc.jsonl", b'{"text": "ok"}\n{"text": "caf\xe9"}\n')],
                         ids=["txt", "jsonl"])
def test_non_utf8_document_names_the_file_and_leaves_no_temporary_file(tmp_path, tiny_tokenizer_dir, name,
                                                                       content):  # noqa: F811
    tok = GPT2Tokenizer.from_dir(tiny_tokenizer_dir[0])
    folder = tmp_path / "openwebtext"
    folder.mkdir()
    (folder / "a.txt").write_text("hel wo", encoding="utf-8")  # tokenised before the bad file
    (folder / name).write_bytes(content)
    with pytest.raises(ValueError, match=f"openwebtext/{name}: expected UTF-8 text"):
        OpenWebText(tmp_path, tokenizer=tok, cache_dir=tmp_path / "c", batch_docs=1)
    assert list((tmp_path / "c").iterdir()) == []
    (folder / name).write_bytes(content.replace(b"\xe9", "é".encode()))
    ds = OpenWebText(tmp_path, tokenizer=tok, cache_dir=tmp_path / "c")
    eot = tok.eot_id
    docs = ["hel wo", "café"] if name == "doc.txt" else ["hel wo", "ok", "café"]
    assert ds.tokens.tolist() == [i for d in docs for i in tok.encode(d, allowed_special=False) + [eot]]
    assert [p.suffix for p in (tmp_path / "c").iterdir()] == [".bin"]


def test_two_writers_of_one_token_cache_each_write_their_own_file(tmp_path, tiny_tokenizer_dir,
                                                                  monkeypatch):  # noqa: F811
    """A second process tokenizing the same corpus while the first is half-way (two ranks, two
    sweeps) must neither truncate the first's file nor leave a torn cache behind: both succeed and
    the cache holds the whole stream."""
    tok = GPT2Tokenizer.from_dir(tiny_tokenizer_dir[0])
    folder = tmp_path / "openwebtext"
    folder.mkdir()
    docs = ["hello world", "second doc", "third one"]
    for i, d in enumerate(docs):
        (folder / f"{i}.txt").write_text(d, encoding="utf-8")
    expected = [i for d in docs for i in tok.encode(d, allowed_special=False) + [tok.eot_id]]
    real = type(tok).encode_batch
    calls = {"n": 0}

    def encode_batch(self, batch, **kw):
        calls["n"] += 1
        if calls["n"] == 2:  # the first writer has written one document: the second one runs whole
            inner = OpenWebText(tmp_path, tokenizer=tok, cache_dir=tmp_path / "c", batch_docs=1)
            assert inner.tokens.tolist() == expected
        return real(self, batch, **kw)

    monkeypatch.setattr(type(tok), "encode_batch", encode_batch)
    outer = OpenWebText(tmp_path, tokenizer=tok, cache_dir=tmp_path / "c", batch_docs=1)
    assert outer.tokens.tolist() == expected
    assert [p.name for p in (tmp_path / "c").iterdir()] == [outer.path.name]  # no temporary left


def _empty_folder(tmp_path, tokenizer_dir):
    """(the tiny tokenizer, a new empty openwebtext/ folder under tmp_path)."""
    folder = tmp_path / "openwebtext"
    folder.mkdir()
    return GPT2Tokenizer.from_dir(tokenizer_dir), folder


def test_documents_without_text_are_skipped(tmp_path, tiny_tokenizer_dir):  # noqa: F811
    tok, folder = _empty_folder(tmp_path, tiny_tokenizer_dir[0])
    (folder / "a.txt").write_text("", encoding="utf-8")
    (folder / "b.txt").write_text("hel wo", encoding="utf-8")
    (folder / "c.jsonl").write_text(json.dumps({"text": ""}) + "\n" + json.dumps({"text": "x"}) + "\n",
                                    encoding="utf-8")
    (folder / "d.txt").write_text(" \n\n", encoding="utf-8")
    ds = OpenWebText(tmp_path, tokenizer=tok, cache_dir=tmp_path / "c", batch_docs=1)
    eot = tok.eot_id
    assert ds.tokens.tolist() == tok.encode("hel wo") + [eot] + tok.encode("x") + [eot]  # no lone end-of-text
    assert ds.num_documents == 2


def test_folder_of_empty_documents_names_it_and_caches_nothing(tmp_path, tiny_tokenizer_dir):  # noqa: F811
    tok, folder = _empty_folder(tmp_path, tiny_tokenizer_dir[0])
    (folder / "a.txt").write_text("", encoding="utf-8")
    (folder / "b.jsonl").write_text("\n", encoding="utf-8")
    for _ in range(2):  # and again: no empty token file left behind to fail on
        with pytest.raises(ValueError, match=r"openwebtext: no text to tokenise in a.txt, b.jsonl \(every document "
                                             r"is empty or whitespace only\)"):
            OpenWebText(tmp_path, tokenizer=tok, cache_dir=tmp_path / "c")
        assert list((tmp_path / "c").iterdir()) == []


def test_an_empty_token_file_in_the_cache_is_rebuilt(tmp_path, tiny_tokenizer_dir):  # noqa: F811
    tok = GPT2Tokenizer.from_dir(tiny_tokenizer_dir[0])
    (tmp_path / "openwebtext").mkdir()
    (tmp_path / "openwebtext" / "a.txt").write_text("hel wo", encoding="utf-8")
    ds = OpenWebText(tmp_path, tokenizer=tok, cache_dir=tmp_path / "c")
    ds.path.write_bytes(b"")  # as an interrupted or refused tokenisation once left it
    again = OpenWebText(tmp_path, tokenizer=tok, cache_dir=tmp_path / "c")
    assert again.path == ds.path and again.tokens.tolist() == tok.encode("hel wo") + [tok.eot_id]


def test_block_longer_than_the_stream_names_the_data(tmp_path, tiny_tokenizer_dir):  # noqa: F811
    tok = GPT2Tokenizer.from_dir(tiny_tokenizer_dir[0])
    (tmp_path / "openwebtext").mkdir()
    (tmp_path / "openwebtext" / "a.txt").write_text("hel", encoding="utf-8")  # one token and end-of-text
    ds = OpenWebText(tmp_path, tokenizer=tok, cache_dir=tmp_path / "c")
    assert len(ds) == 2
    with pytest.raises(ValueError, match=r"block_size: expected an int in \[1, 1\] \(the token stream of "
                                         r".*openwebtext holds 2 tokens\), got 2"):
        ds.get_batch(1, 2)
    x, y = ds.get_batch(1, 1)
    assert x.tolist() == [[tok.encode("hel")[0]]] and y.tolist() == [[tok.eot_id]]



def test_an_edited_document_is_tokenised_again(tmp_path, tiny_tokenizer_dir):  # noqa: F811
    src, vocab = tiny_tokenizer_dir
    tok = GPT2Tokenizer.from_dir(src)
    (tmp_path / "openwebtext").mkdir()
    doc = tmp_path / "openwebtext" / "a.txt"
    doc.write_text("hel wo", encoding="utf-8")
    first = OpenWebText(tmp_path, tokenizer=tok, cache_dir=tmp_path / "c")
    assert first.tokens.tolist() == [vocab["hel"], vocab["Ġw"], vocab["o"], tok.eot_id]
    # The same file name, other text (another size, a later modification time), the same cache folder.
    old = doc.stat().st_mtime_ns
    doc.write_text("hel wo, abc", encoding="utf-8")
    os.utime(doc, ns=(old + 10**9, old + 10**9))
    edited = OpenWebText(tmp_path, tokenizer=tok, cache_dir=tmp_path / "c")
    assert edited.tokens.tolist() == [vocab["hel"], vocab["Ġw"], vocab["o"], vocab[","], vocab["Ġ"], vocab["a"],
                                      vocab["b"], vocab["c"], tok.eot_id]


def test_another_tokenizer_gets_its_own_token_stream(tmp_path, tiny_tokenizer_dir):  # noqa: F811
    src, vocab = tiny_tokenizer_dir
    full = GPT2Tokenizer.from_dir(src)
    fewer = GPT2Tokenizer.from_dir(_copy_tokenizer(src, tmp_path / "fewer", drop_last_merge=True))  # no ' w' merge
    (tmp_path / "openwebtext").mkdir()
    (tmp_path / "openwebtext" / "a.txt").write_text("hel wo", encoding="utf-8")
    eot = vocab["<|endoftext|>"]
    for tok, expected in [(full, [vocab["hel"], vocab["Ġw"], vocab["o"], eot]),
                          (fewer, [vocab["hel"], vocab["Ġ"], vocab["w"], vocab["o"], eot]),
                          (full, [vocab["hel"], vocab["Ġw"], vocab["o"], eot])]:
        assert OpenWebText(tmp_path, tokenizer=tok, cache_dir=tmp_path / "c").tokens.tolist() == expected


def _saved_dataset(tmp_path, data: bytes | dict) -> Path:
    """openwebtext/hf_train/ as save_to_disk writes it: state.json naming one data file, which
    holds ``data`` (an Arrow stream of these columns, or raw bytes). Returns the data file."""
    folder = tmp_path / "openwebtext" / "hf_train"
    folder.mkdir(parents=True)
    path = folder / "data-00000-of-00001.arrow"
    if isinstance(data, bytes):
        path.write_bytes(data)
    else:
        pa = pytest.importorskip("pyarrow", reason="pyarrow is not installed")
        table = pa.table(data)
        with pa.OSFile(str(path), "wb") as sink:
            with pa.ipc.new_stream(sink, table.schema) as writer:
                writer.write_table(table)
    (folder / "state.json").write_text(json.dumps({"_data_files": [{"filename": path.name}]}))
    return path


@pytest.mark.parametrize("data, match", [
    ({"body": ["hel wo"], "id": [1]}, r": no 'text' column \(columns: \['body', 'id'\]\)$"),
    (b"not an arrow stream\n", r": not an Arrow stream file \("),
], ids=["no-text-column", "not-arrow"])
def test_a_dataset_folder_without_text_names_its_data_file(tmp_path, tiny_tokenizer_dir, data, match):  # noqa: F811
    pytest.importorskip("pyarrow", reason="pyarrow is not installed")
    tok = GPT2Tokenizer.from_dir(tiny_tokenizer_dir[0])
    path = _saved_dataset(tmp_path, data)
    with pytest.raises(ValueError, match="^" + re.escape(str(path)) + match):
        OpenWebText(tmp_path, tokenizer=tok, cache_dir=tmp_path / "c")
    assert list((tmp_path / "c").iterdir()) == []  # no token file, no temporary file


@pytest.mark.parametrize("line", ['{"text": 5}', '{"text": null}', '{"text": ["hel", "wo"]}', '["text", "hel"]',
                                  '"hel wo"'],
                         ids=["number", "null", "list", "array", "string"])
def test_a_jsonl_line_whose_text_is_not_a_string_names_the_line(tmp_path, tiny_tokenizer_dir, line):  # noqa: F811
    tok, folder = _empty_folder(tmp_path, tiny_tokenizer_dir[0])
    (folder / "d.jsonl").write_text('{"text": "hel"}\n\n' + line + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"openwebtext/d.jsonl:3: expected an object with a string 'text' field$"):
        OpenWebText(tmp_path, tokenizer=tok, cache_dir=tmp_path / "c")
    assert list((tmp_path / "c").iterdir()) == []


def _tokenizer_of_size(n: int) -> GPT2Tokenizer:
    """The 256 byte symbols, filler tokens, and <|endoftext|> last: ``n`` ids, 0 .. n - 1."""
    vocab = {sym: i for i, sym in enumerate(byte_alphabet())}
    for k in range(n - 257):
        vocab[f"filler{k}"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return GPT2Tokenizer(vocab, [])


def test_a_vocabulary_that_does_not_fit_uint16_is_refused(tmp_path):
    (tmp_path / "openwebtext").mkdir()
    (tmp_path / "openwebtext" / "a.txt").write_text("hi", encoding="utf-8")
    with pytest.raises(ValueError, match=r"^tokenizer: ids must fit uint16 \(vocabulary of at most 65,536\)$"):
        OpenWebText(tmp_path, tokenizer=_tokenizer_of_size(65537), cache_dir=tmp_path / "c")
    assert not (tmp_path / "c").exists()
    # 65,536 ids fit: the last one, end-of-text, is 65535
    ds = OpenWebText(tmp_path, tokenizer=_tokenizer_of_size(65536), cache_dir=tmp_path / "c")
    assert ds.tokens.tolist() == [ord("h"), ord("i"), 65535]
