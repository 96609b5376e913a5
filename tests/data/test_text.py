"""Data root, GPT-2 tokenizer and WikiText-2: fixtures in the official formats, plus smoke tests
on the real files when EDGEGEN_DATA_DIR holds them."""

import json
import os
import random
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from edgegen.data import GPT2Tokenizer, WikiText2, data_root, dataset_dir

REAL = Path(os.environ.get("EDGEGEN_DATA_DIR", "/nonexistent"))
needs_gpt2 = pytest.mark.skipif(not (REAL / "gpt2" / "encoder.json").is_file(),
                                reason="EDGEGEN_DATA_DIR does not hold gpt2/encoder.json")
needs_wikitext = pytest.mark.skipif(not (REAL / "wikitext-2-raw" / "wiki.test.raw").is_file(),
                                    reason="EDGEGEN_DATA_DIR does not hold wikitext-2-raw/")

# The tiny fixture tokenizer is not OpenAI's yet uses the official file names, and the WikiText-2
# fixtures are not the published files: the warnings that say so are expected here (their own tests
# below check them).
pytestmark = [pytest.mark.filterwarnings("ignore:.*differs from OpenAI's published:UserWarning"),
              pytest.mark.filterwarnings(r"ignore:.*wiki\..*\.raw. SHA-256 differs from the published:UserWarning")]


def byte_alphabet() -> list[str]:
    """GPT-2's printable stand-ins for the 256 byte values (the format's byte-to-unicode table):
    printable Latin-1 bytes stand for themselves, the rest map to 256 + k in order."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0xFF + 1))
    out, extra = {}, 0
    for b in range(256):
        if b in keep:
            out[b] = chr(b)
        else:
            out[b] = chr(256 + extra)
            extra += 1
    return [out[b] for b in range(256)]


@pytest.fixture()
def tiny_tokenizer_dir(tmp_path):
    """A GPT-2-format vocabulary: the 256 byte symbols, three merges, and <|endoftext|>."""
    alpha = byte_alphabet()
    vocab = {sym: i for i, sym in enumerate(alpha)}
    sp = alpha[ord(" ")]  # 'Ġ'
    merges = [("h", "e"), ("he", "l"), (sp, "w")]
    for a, b in merges:
        vocab[a + b] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    (tmp_path / "encoder.json").write_text(json.dumps(vocab), encoding="utf-8")
    (tmp_path / "vocab.bpe").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges),
                                        encoding="utf-8")
    return tmp_path, vocab


def test_data_root_precedence(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEGEN_DATA_DIR", str(tmp_path / "env"))
    assert data_root() == tmp_path / "env"
    assert data_root(tmp_path / "arg") == tmp_path / "arg"
    monkeypatch.delenv("EDGEGEN_DATA_DIR")
    assert data_root() == Path("~/.cache/edgegen/data").expanduser()
    with pytest.raises(FileNotFoundError, match="expected .*wikitext-2-raw"):
        dataset_dir("wikitext-2-raw", tmp_path)


def test_empty_root_counts_as_not_given(tmp_path, monkeypatch):
    # As an empty $EDGEGEN_DATA_DIR falls back to the default, an empty root falls back to the
    # variable, then the default (not to the working directory).
    monkeypatch.setenv("EDGEGEN_DATA_DIR", str(tmp_path / "env"))
    assert data_root("") == tmp_path / "env"
    monkeypatch.setenv("EDGEGEN_DATA_DIR", "")
    assert data_root("") == data_root() == Path("~/.cache/edgegen/data").expanduser()


def test_home_in_the_root_and_in_the_variable_is_expanded(tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("EDGEGEN_DATA_DIR", "~/from-env")
    assert data_root() == home / "from-env"
    assert data_root("~/from-arg") == home / "from-arg"
    assert data_root(Path("~") / "as-path") == home / "as-path"
    (home / "from-arg" / "wikitext-2-raw").mkdir(parents=True)
    assert dataset_dir("wikitext-2-raw", "~/from-arg") == home / "from-arg" / "wikitext-2-raw"


def test_fixture_encodings(tiny_tokenizer_dir):
    path, vocab = tiny_tokenizer_dir
    tok = GPT2Tokenizer.from_dir(path)
    # "hel" merges fully; " w" merges to 'Ġw'; other bytes stay single symbols.
    assert tok.encode("hel") == [vocab["hel"]]
    assert tok.encode("help") == [vocab["hel"], vocab["p"]]
    assert tok.encode("hel wo") == [vocab["hel"], vocab["Ġw"], vocab["o"]]
    assert tok.encode("x<|endoftext|>") == [vocab["x"], vocab["<|endoftext|>"]]
    plain = tok.encode("x<|endoftext|>", allowed_special=False)
    assert vocab["<|endoftext|>"] not in plain and tok.decode(plain) == "x<|endoftext|>"
    assert tok.decode(tok.encode("hel wo")) == "hel wo"
    assert tok.eot_id == vocab["<|endoftext|>"]


def test_fixture_round_trips_any_unicode(tiny_tokenizer_dir):
    tok = GPT2Tokenizer.from_dir(tiny_tokenizer_dir[0])
    rng = random.Random(0)
    for _ in range(200):
        s = "".join(chr(rng.choice([rng.randrange(32, 127), rng.randrange(0x80, 0x800),
                                    rng.randrange(0x4E00, 0x9FFF), rng.randrange(0x1F300, 0x1FAFF),
                                    rng.randrange(0, 32)])) for _ in range(rng.randrange(0, 40)))
        assert tok.decode(tok.encode(s)) == s


def test_tokenizer_bad_input(tmp_path, tiny_tokenizer_dir):
    with pytest.raises(FileNotFoundError, match="encoder.json"):
        GPT2Tokenizer.from_dir(tmp_path / "missing")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "encoder.json").write_text("{not json", encoding="utf-8")
    (bad / "vocab.bpe").write_text("#version: 0.2\n", encoding="utf-8")
    with pytest.raises(ValueError, match="encoder.json: not valid JSON"):
        GPT2Tokenizer.from_dir(bad)
    (bad / "encoder.json").write_text(json.dumps({"a": 0, "<|endoftext|>": 1}), encoding="utf-8")
    (bad / "vocab.bpe").write_text("#version: 0.2\na b c\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"vocab.bpe:2: expected a merge rule"):
        GPT2Tokenizer.from_dir(bad)
    tok = GPT2Tokenizer.from_dir(tiny_tokenizer_dir[0])
    with pytest.raises(ValueError, match="outside the vocabulary"):
        tok.decode([10**6])
    with pytest.raises(TypeError, match="text: expected str"):
        tok.encode(b"bytes")


@needs_gpt2
def test_real_gpt2_known_encodings():
    tok = GPT2Tokenizer.from_dir(REAL / "gpt2")
    assert tok.vocab_size == 50257 and tok.eot_id == 50256
    assert tok.encode("Hello world") == [15496, 995]
    assert tok.encode(" Hello world") == [18435, 995]
    assert tok.encode("<|endoftext|>") == [50256]
    plain = tok.encode("a<|endoftext|>b", allowed_special=False)
    assert 50256 not in plain and tok.decode(plain) == "a<|endoftext|>b"
    assert tok.encode_batch(["Hello world", "<|endoftext|>"], allowed_special=False)[0] == [15496, 995]
    s = "naïve café — 世界 🙂 e\u0301 \t\n\x00 end"
    assert tok.decode(tok.encode(s)) == s


def make_wikitext(root: Path) -> Path:
    d = root / "wikitext-2-raw"
    d.mkdir(parents=True)
    lines = [" \n", " = Title = \n", " \n", " Some text , with @-@ tokens . \n", " \n"]
    (d / "wiki.test.raw").write_text("".join(lines), encoding="utf-8", newline="")
    return d


def test_wikitext_fixture_and_token_cache(tmp_path, tiny_tokenizer_dir):
    make_wikitext(tmp_path)
    w = WikiText2(tmp_path, split="test")
    assert len(w.lines) == 5 and w.lines[1] == " = Title = \n"
    # the Hugging Face builder's rows: a whitespace-only line is "", the others keep their newline
    assert w.eval_text() == "\n\n".join(["", " = Title = \n", "", " Some text , with @-@ tokens . \n", ""])
    tok = GPT2Tokenizer.from_dir(tiny_tokenizer_dir[0])
    ids = w.tokens(tok, cache_dir=tmp_path / "cache")
    assert ids.dtype == np.uint16
    assert tok.decode(ids.tolist()) == w.eval_text()
    cached = list((tmp_path / "cache").glob("*.npy"))
    assert len(cached) == 1
    again = w.tokens(tok, cache_dir=tmp_path / "cache")  # served from the cache
    assert isinstance(again, np.memmap) and np.array_equal(again, ids)
    with pytest.raises(ValueError, match="split"):
        WikiText2(tmp_path, split="dev")
    with pytest.raises(FileNotFoundError, match="valid split is missing"):
        WikiText2(tmp_path, split="valid")


def test_rewritten_wikitext_file_is_tokenised_again(tmp_path, tiny_tokenizer_dir):
    # Texts without "he" or " w": the tiny vocabulary encodes them byte by byte (id = byte value).
    d = tmp_path / "wikitext-2-raw"
    d.mkdir()
    tok = GPT2Tokenizer.from_dir(tiny_tokenizer_dir[0])
    (d / "wiki.test.raw").write_text(" = A = \n", encoding="utf-8", newline="")
    assert WikiText2(tmp_path).tokens(tok, cache_dir=tmp_path / "cache").tolist() == list(b" = A = \n")
    (d / "wiki.test.raw").write_text(" = B , edited = \n", encoding="utf-8", newline="")
    again = WikiText2(tmp_path).tokens(tok, cache_dir=tmp_path / "cache")
    assert again.tolist() == list(b" = B , edited = \n")


def test_wikitext_quoting_the_end_of_text_marker_gets_no_special_token(tmp_path, tiny_tokenizer_dir):
    d = tmp_path / "wikitext-2-raw"
    d.mkdir()
    (d / "wiki.test.raw").write_text(" a <|endoftext|> b \n", encoding="utf-8", newline="")
    path, vocab = tiny_tokenizer_dir
    ids = WikiText2(tmp_path).tokens(GPT2Tokenizer.from_dir(path), cache_dir=tmp_path / "cache").tolist()
    assert ids == list(b" a <|endoftext|> b \n")  # the marker's 13 bytes, one id each
    assert vocab["<|endoftext|>"] not in ids


@needs_wikitext
@needs_gpt2
def test_real_wikitext2_tokens(tmp_path):
    tok = GPT2Tokenizer.from_dir(REAL / "gpt2")
    counts = {}
    for split, lines in (("test", 4358), ("valid", 3760)):
        w = WikiText2(REAL, split=split)
        assert len(w.lines) == lines  # the published line counts of the raw files
        ids = w.tokens(tok, cache_dir=tmp_path)
        assert tok.decode(ids.tolist()) == w.eval_text()  # lossless over the whole split
        counts[split] = len(ids)
    # The test count is the published one of the Hugging Face perplexity recipe with GPT-2's
    # tokenizer (its "287644 > 1024" length warning); the valid count was measured here the same way.
    assert counts == {"test": 287644, "valid": 251048}


def test_wikitext_lines_end_at_newlines_only(tmp_path):
    d = tmp_path / "wikitext-2-raw"
    d.mkdir()
    # A form feed and U+2028 inside a line: str.splitlines would cut there, the builder does not.
    (d / "wiki.test.raw").write_text(" a\x0cb \u2028 c \n \n d \n", encoding="utf-8", newline="")
    w = WikiText2(tmp_path, split="test")
    assert w.lines == [" a\x0cb \u2028 c \n", " \n", " d \n"]
    assert w.eval_text() == " a\x0cb \u2028 c \n\n\n\n\n d \n"
    (d / "wiki.test.raw").write_bytes(b" caf\xe9 \n")  # Latin-1, not UTF-8
    with pytest.raises(ValueError, match="wiki.test.raw: expected UTF-8 text"):
        WikiText2(tmp_path, split="test")


@pytest.mark.parametrize("content", ["", " \n \n", "\n\n\n"], ids=["empty", "spaces", "newlines"])
def test_wikitext_without_text_names_the_file(tmp_path, content):
    d = tmp_path / "wikitext-2-raw"
    d.mkdir()
    (d / "wiki.test.raw").write_text(content, encoding="utf-8", newline="")
    with pytest.raises(ValueError, match=r"wikitext-2-raw/wiki.test.raw: expected WikiText-2 text, the file is "
                                         r"empty or holds only whitespace"):
        WikiText2(tmp_path, split="test")


def test_wikitext_that_is_not_the_published_file_is_named_and_flagged(tmp_path, monkeypatch):
    import hashlib

    import edgegen.data.wikitext as wikitext_mod

    path = make_wikitext(tmp_path) / "wiki.test.raw"
    published = hashlib.sha256(path.read_bytes()).hexdigest()
    monkeypatch.setattr(wikitext_mod, "SHA256", dict(wikitext_mod.SHA256, test=published))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        w = WikiText2(tmp_path, split="test")  # the "published" file: no warning, flagged official
    assert w.official and w.sha256 == published
    path.write_text(" \n = Title = \n", encoding="utf-8", newline="")  # cut short
    cut = hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.warns(UserWarning, match=r"wiki.test.raw: SHA-256 differs from the published " + published
                      + r" \(this file: " + cut + r"\); a partial or modified copy\?") as record:
        w = WikiText2(tmp_path, split="test")
    assert len(record) == 1 and not w.official and w.sha256 == cut


@needs_wikitext
def test_real_wikitext_is_official_and_a_truncated_copy_is_not(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert WikiText2(REAL, split="test").official
    d = tmp_path / "wikitext-2-raw"
    d.mkdir()
    lines = (REAL / "wikitext-2-raw" / "wiki.test.raw").read_bytes().split(b"\n")
    (d / "wiki.test.raw").write_bytes(b"\n".join(lines[:500]) + b"\n")
    with pytest.warns(UserWarning, match=r"wiki.test.raw: SHA-256 differs from the published 173c87a5"):
        assert not WikiText2(tmp_path, split="test").official


def test_import_edgegen_data_is_cheap():
    r = subprocess.run([sys.executable, "-c", "import sys, edgegen.data; print('tokenizers' in sys.modules)"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "False"


def test_cache_never_inside_the_data_folder(tmp_path, monkeypatch):
    from edgegen.data.root import cache_dir_for

    monkeypatch.setenv("EDGEGEN_CACHE_DIR", str(tmp_path / "cache"))
    a = cache_dir_for(tmp_path / "root1" / "celeba")
    b = cache_dir_for(tmp_path / "root2" / "celeba")
    assert a.parent == b.parent == tmp_path / "cache" and a != b  # one folder per data folder
    assert a.name.startswith("celeba-")
    assert cache_dir_for(tmp_path / "x", override=tmp_path / "mine") == tmp_path / "mine"
    monkeypatch.delenv("EDGEGEN_CACHE_DIR")
    assert cache_dir_for(tmp_path / "root1" / "celeba").parent == Path("~/.cache/edgegen/cache").expanduser()


def _copy_tokenizer(src: Path, dest: Path, drop_last_merge: bool = False) -> Path:
    dest.mkdir(parents=True)
    (dest / "encoder.json").write_bytes((src / "encoder.json").read_bytes())
    lines = (src / "vocab.bpe").read_text(encoding="utf-8").splitlines(keepends=True)
    (dest / "vocab.bpe").write_text("".join(lines[:-1] if drop_last_merge else lines), encoding="utf-8")
    return dest


def test_fingerprint_covers_every_token_and_merge(tmp_path, tiny_tokenizer_dir):
    src, vocab = tiny_tokenizer_dir
    full = GPT2Tokenizer.from_dir(src)
    fewer = GPT2Tokenizer.from_dir(_copy_tokenizer(src, tmp_path / "fewer", drop_last_merge=True))  # no ' w' merge
    assert fewer.vocab_size == full.vocab_size
    assert fewer.fingerprint() != full.fingerprint()
    # The same files elsewhere, or the vocabulary in another order, give the same fingerprint.
    assert GPT2Tokenizer.from_dir(_copy_tokenizer(src, tmp_path / "copy")).fingerprint() == full.fingerprint()
    merges = [("h", "e"), ("he", "l"), ("Ġ", "w")]
    assert GPT2Tokenizer(dict(reversed(list(vocab.items()))), merges).fingerprint() == full.fingerprint()
    # One token id swapped: another fingerprint.
    swapped = dict(vocab, a=vocab["b"], b=vocab["a"])
    assert GPT2Tokenizer(swapped, merges).fingerprint() != full.fingerprint()
    # Token caches in one folder: each tokenizer gets its own encoding.
    make_wikitext(tmp_path / "root")
    w = WikiText2(tmp_path / "root", split="test")
    text = w.eval_text()
    assert fewer.encode(text, allowed_special=False) != full.encode(text, allowed_special=False)
    for tok in (full, fewer, full, fewer):
        assert w.tokens(tok, cache_dir=tmp_path / "cache").tolist() == tok.encode(text, allowed_special=False)
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 2


def test_official_file_names_are_checked_against_the_published_hashes(tmp_path, tiny_tokenizer_dir, monkeypatch):
    import hashlib

    import edgegen.data.tokenizer as tokenizer_mod

    src, _ = tiny_tokenizer_dir
    digests = {n: hashlib.sha256((src / n).read_bytes()).hexdigest() for n in ("encoder.json", "vocab.bpe")}
    monkeypatch.setattr(tokenizer_mod, "OFFICIAL_FILES", {n: ("file:///unused", d) for n, d in digests.items()})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        GPT2Tokenizer.from_dir(src)  # the "official" files: no warning
    partial = _copy_tokenizer(src, tmp_path / "partial", drop_last_merge=True)
    with pytest.warns(UserWarning, match=r"partial/vocab.bpe: SHA-256 [0-9a-f]{64} differs from OpenAI's "
                                         r"published vocab.bpe \(" + digests["vocab.bpe"]) as record:
        GPT2Tokenizer.from_dir(partial)
    assert len(record) == 1  # encoder.json is the official one
    # Under the Hugging Face names there is no published file to compare with.
    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "vocab.json").write_bytes((partial / "encoder.json").read_bytes())
    (hf / "merges.txt").write_bytes((partial / "vocab.bpe").read_bytes())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        GPT2Tokenizer.from_dir(hf)


@needs_gpt2
def test_real_partial_vocab_bpe_is_named(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        real = GPT2Tokenizer.from_dir(REAL / "gpt2")  # the staged files are OpenAI's
    partial = tmp_path / "gpt2"
    partial.mkdir()
    (partial / "encoder.json").write_bytes((REAL / "gpt2" / "encoder.json").read_bytes())
    lines = (REAL / "gpt2" / "vocab.bpe").read_text(encoding="utf-8").split("\n")
    (partial / "vocab.bpe").write_text("\n".join(lines[:20001]) + "\n", encoding="utf-8")  # 20,000 of 50,000
    with pytest.warns(UserWarning, match=r"gpt2/vocab.bpe: SHA-256 [0-9a-f]{64} differs from OpenAI's published"):
        cut = GPT2Tokenizer.from_dir(partial)
    assert cut.vocab_size == real.vocab_size and cut.fingerprint() != real.fingerprint()


def test_merge_rule_outside_the_vocabulary_names_the_file(tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "encoder.json").write_text(json.dumps({"a": 0, "b": 1, "<|endoftext|>": 2}), encoding="utf-8")
    (bad / "vocab.bpe").write_text("#version: 0.2\na c\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad/vocab.bpe:2: expected a merge rule of vocabulary tokens; 'c' "
                                         r"\(from 'a c'\) is not in the vocabulary"):
        GPT2Tokenizer.from_dir(bad)
    (bad / "vocab.bpe").write_text("#version: 0.2\n\na b\n", encoding="utf-8")  # the merged token is missing
    with pytest.raises(ValueError, match=r"bad/vocab.bpe:3: .*'ab' \(from 'a b'\) is not in the vocabulary"):
        GPT2Tokenizer.from_dir(bad)
    with pytest.raises(ValueError, match=r"merges: expected rules over vocabulary tokens"):
        GPT2Tokenizer({"a": 0, "b": 1, "<|endoftext|>": 2}, [("a", "c")])
