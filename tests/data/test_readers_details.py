"""Dataset readers in detail: sources and checksums, refused inputs, resampling, cache keys,
extraction, tokenizer files and the OpenWebText document set. Small fixtures in the
official on-disk formats, references computed independently (by hand with numpy / PIL / pickle)
or taken from the official sources the modules' docs cite."""

import hashlib
import io
import json
import os
import pickle
import tarfile
import tempfile
import urllib.parse
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import edgegen.data.cifar as cifar_mod
import edgegen.data.tokenizer as tokenizer_mod
import edgegen.data.wikitext as wikitext_mod
from edgegen.data import CIFAR10, CelebA, GPT2Tokenizer, OpenWebText, WikiText2, dataset_dir, download_gpt2_tokenizer
from edgegen.data.download import extract
from edgegen.data.root import cache_dir_for
from tests.data.test_celeba import make_celeba, make_coded_celeba
from tests.data.test_cifar import NAMES, cifar_archive, make_cifar
from tests.data.test_text import byte_alphabet, tiny_tokenizer_dir  # noqa: F401  (fixture)

# The tiny fixture tokenizer is not OpenAI's yet uses the official file names: the warning that says so
# is expected here (tests/data/test_text.py checks it).
pytestmark = pytest.mark.filterwarnings("ignore:.*differs from OpenAI's published:UserWarning")


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    """Whatever a reader derives without an explicit cache_dir goes under this test's folder."""
    monkeypatch.setenv("EDGEGEN_CACHE_DIR", str(tmp_path / "default-cache"))


# ---------------------------------------------------------------------------------------------
# Official sources and checksums


def test_download_sources_and_checksums_are_the_published_ones():
    # CIFAR-10 "python version": URL and MD5 as listed on https://www.cs.toronto.edu/~kriz/cifar.html
    assert cifar_mod.URL == "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
    assert cifar_mod.MD5 == "c58f30108f718f92721af3b95e74349a"
    # WikiText-2 raw: the archive and the SHA-256 of the archive and of each of its members
    assert wikitext_mod.ARCHIVE_URL == "https://wikitext.smerity.com/wikitext-2-raw-v1.zip"
    assert wikitext_mod.ARCHIVE_SHA256 == "ef7edb566e3e2b2d31b29c1fdb0c89a4cc683597484c3dc2517919c615435a11"
    assert wikitext_mod.SHA256 == {
        "train": "6707892fa3788b5ab9ed78ab5ff37d9fe825f6011a2ad4fcd6a6d467f0e7da57",
        "valid": "4cd0f6876d07a413aa911261ff6d363c72d757d47f0fdd6015702014c89cb9c7",
        "test": "173c87a53759e0201f33e0ccf978e510c2042d7f2cb78229d9a50d79b9e7dd08",
    }
    # GPT-2's BPE files as OpenAI publishes them, with the SHA-256 values tiktoken pins
    base = "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/"
    assert tokenizer_mod.OFFICIAL_FILES == {
        "encoder.json": (base + "encoder.json", "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"),
        "vocab.bpe": (base + "vocab.bpe", "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"),
    }


# ---------------------------------------------------------------------------------------------
# Data root and caches


def test_a_plain_file_where_the_dataset_folder_belongs_is_not_a_dataset_folder(tmp_path):
    (tmp_path / "cifar-10-batches-py").write_bytes(b"not a folder")
    with pytest.raises(FileNotFoundError, match=r"dataset folder not found: expected .*cifar-10-batches-py"):
        dataset_dir("cifar-10-batches-py", tmp_path)
    with pytest.raises(FileNotFoundError, match=r"dataset folder not found: expected .*cifar-10-batches-py"):
        CIFAR10(tmp_path, split="test", cache_dir=tmp_path / "c")


def test_the_cache_folder_of_a_relative_data_folder_depends_on_where_it_is(tmp_path, monkeypatch):
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    monkeypatch.chdir(tmp_path / "one")
    first = cache_dir_for(Path("data") / "celeba")
    assert first == cache_dir_for(tmp_path / "one" / "data" / "celeba")  # relative or absolute: one folder
    monkeypatch.chdir(tmp_path / "two")
    second = cache_dir_for(Path("data") / "celeba")
    assert second != first and second == cache_dir_for(tmp_path / "two" / "data" / "celeba")


def test_a_cache_write_cut_short_leaves_no_cache_file(tmp_path, monkeypatch):
    """A full disk while the decoded images are saved: the reader still returns them, nothing
    half-written is left for the next run to load, and the next run decodes afresh."""
    batches = make_cifar(tmp_path)
    cache = tmp_path / "c"
    real_save = np.save

    def disk_full(file, arr, *args, **kwargs):
        with open(file, "wb") as f:
            f.write(b"\x93NUMPY\x01\x00")  # the start of a .npy header, then the disk is full
        raise OSError(28, "simulated: no space left on device")

    with monkeypatch.context() as m:
        m.setattr(np, "save", disk_full)
        ds = CIFAR10(tmp_path, split="test", image_size=32, cache_dir=cache)
    expected = batches["test_batch"][b"data"].reshape(-1, 3, 32, 32)
    assert np.array_equal(np.asarray(ds.images), expected)
    assert [p for p in cache.rglob("*") if p.is_file()] == []  # neither cache files nor temporary files
    assert np.save is real_save
    again = CIFAR10(tmp_path, split="test", image_size=32, cache_dir=cache)
    assert np.array_equal(np.asarray(again.images), expected)
    assert np.asarray(again.labels).tolist() == batches["test_batch"][b"labels"]


def test_a_cache_folder_that_cannot_be_written_is_skipped(tmp_path):
    batches = make_cifar(tmp_path)
    blocked = tmp_path / "not-a-folder"
    blocked.write_bytes(b"a file where the cache folder would be")
    ds = CIFAR10(tmp_path, split="test", image_size=32, cache_dir=blocked)
    assert np.array_equal(np.asarray(ds.images), batches["test_batch"][b"data"].reshape(-1, 3, 32, 32))
    assert blocked.read_bytes() == b"a file where the cache folder would be"


# ---------------------------------------------------------------------------------------------
# CIFAR-10


def _cifar_test_batch(root: Path, labels, data) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "test_batch"
    with open(path, "wb") as f:
        pickle.dump({b"labels": labels, b"data": data}, f, protocol=2)
    return path


@pytest.mark.parametrize("labels, n", [([10], 1), ([-1], 1), ([3, 10, 4], 3), ([1, 2], 1), ([1], 2)],
                         ids=["label-10", "label-minus-1", "one-of-three-is-10", "more-labels", "fewer-labels"])
def test_labels_outside_the_ten_classes_or_not_one_per_image_are_refused(tmp_path, labels, n):
    _cifar_test_batch(tmp_path, labels, np.zeros((n, 3072), np.uint8))
    with pytest.raises(ValueError, match=rf"test_batch: expected {n} labels in 0\.\.9$"):
        CIFAR10(tmp_path, split="test", image_size=32, cache_dir=tmp_path / "c")


@pytest.mark.parametrize("dtype", [np.int16, np.float32, np.int64], ids=["int16", "float32", "int64"])
def test_pixel_data_other_than_bytes_is_refused(tmp_path, dtype):
    _cifar_test_batch(tmp_path, [1], np.full((1, 3072), 7, dtype))
    with pytest.raises(ValueError, match=r"test_batch: expected uint8 data of shape \[n, 3072\]"):
        CIFAR10(tmp_path, split="test", image_size=32, cache_dir=tmp_path / "c")


def _half_pixel_bilinear_matrix(n_in: int, n_out: int) -> np.ndarray:
    """[n_out, n_in] weights of 1-D bilinear resampling with half-pixel centers (the input
    coordinate of output i is (i + 0.5) * n_in / n_out - 0.5, clamped to [0, n_in - 1])."""
    w = np.zeros((n_out, n_in))
    for i in range(n_out):
        x = min(max((i + 0.5) * n_in / n_out - 0.5, 0.0), n_in - 1)
        lo = int(np.floor(x))
        hi = min(lo + 1, n_in - 1)
        w[i, lo] += 1 - (x - lo)
        w[i, hi] += x - lo
    return w


@pytest.mark.parametrize("size", [16, 64], ids=["down-to-16", "up-to-64"])
def test_resized_images_are_rounded_bilinear_resamples(tmp_path, size):
    """Every pixel is the bilinear resample rounded to the nearest integer (ties to even), for a
    smaller size as for a larger one. Both factors give weights that are multiples of 1/16, so the
    float64 reference is exact."""
    rng = np.random.default_rng(7)
    data = rng.integers(0, 256, (3, 3072), dtype=np.uint8)
    _cifar_test_batch(tmp_path, [0, 1, 2], data)
    got = np.asarray(CIFAR10(tmp_path, split="test", image_size=size, cache_dir=tmp_path / "c").images)
    w = _half_pixel_bilinear_matrix(32, size)
    ref = np.einsum("ij,ncjk,lk->ncil", w, data.reshape(3, 3, 32, 32).astype(np.float64), w)
    expected = np.clip(np.round(ref), 0, 255).astype(np.uint8)
    assert got.shape == (3, 3, size, size) and got.dtype == np.uint8
    np.testing.assert_array_equal(got, expected)
    if size == 16:  # half-pixel centers: each output pixel is the mean of a 2x2 block
        blocks = data.reshape(3, 3, 16, 2, 16, 2).astype(np.float64).mean(axis=(3, 5))
        np.testing.assert_array_equal(got, np.round(blocks).astype(np.uint8))


def test_two_folders_sharing_a_cache_with_equal_sizes_and_times_are_kept_apart(tmp_path):
    cache = tmp_path / "shared"
    paths = [_cifar_test_batch(tmp_path / name, [v % 10] * 2, np.full((2, 3072), v, np.uint8))
             for name, v in (("a", 10), ("b", 100))]
    assert paths[0].stat().st_size == paths[1].stat().st_size
    stamp = paths[0].stat().st_mtime_ns
    for p in paths:  # copies made with preserved times (cp -p, rsync -t, tar): same size, same time
        os.utime(p, ns=(stamp, stamp))
    for name, v in (("a", 10), ("b", 100), ("a", 10)):
        ds = CIFAR10(tmp_path / name, split="test", image_size=32, cache_dir=cache)
        assert np.all(np.asarray(ds.images) == v) and np.asarray(ds.labels).tolist() == [v % 10] * 2


def test_a_batch_file_replaced_by_another_size_with_its_time_kept_is_read_again(tmp_path):
    cache = tmp_path / "c"
    path = _cifar_test_batch(tmp_path, [1] * 4, np.full((4, 3072), 10, np.uint8))
    stamp = path.stat().st_mtime_ns
    assert len(CIFAR10(tmp_path, split="test", image_size=32, cache_dir=cache)) == 4
    _cifar_test_batch(tmp_path, [2] * 9, np.full((9, 3072), 90, np.uint8))
    os.utime(path, ns=(stamp, stamp))  # as extracting an archive restores the recorded time
    ds = CIFAR10(tmp_path, split="test", image_size=32, cache_dir=cache)
    assert len(ds) == 9 and np.all(np.asarray(ds.images) == 90) and np.asarray(ds.labels).tolist() == [2] * 9


def test_download_fetches_the_archive_when_batches_meta_is_missing(tmp_path, monkeypatch):
    cifar_archive(tmp_path, monkeypatch)
    folder = tmp_path / "root" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    with open(folder / "test_batch", "wb") as f:  # the split is there, batches.meta is not
        pickle.dump({b"labels": [3], b"data": np.zeros((1, 3072), np.uint8)}, f, protocol=2)
    ds = CIFAR10(tmp_path / "root", split="test", image_size=32, download=True, cache_dir=tmp_path / "c")
    assert (folder / "batches.meta").is_file()
    assert ds.classes == [n.decode() for n in NAMES]


def test_download_fetches_the_archive_when_only_some_train_batches_are_present(tmp_path, monkeypatch):
    batches = cifar_archive(tmp_path, monkeypatch)
    folder = tmp_path / "root" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    (folder / "data_batch_1").write_bytes((tmp_path / "src" / "cifar-10-batches-py" / "data_batch_1").read_bytes())
    ds = CIFAR10(tmp_path / "root", split="train", image_size=32, download=True, cache_dir=tmp_path / "c")
    assert len(ds) == 5 * 6
    expected = np.concatenate([batches[n][b"data"] for n in cifar_mod.TRAIN_FILES]).reshape(-1, 3, 32, 32)
    assert np.array_equal(np.asarray(ds.images), expected)


# ---------------------------------------------------------------------------------------------
# CelebA


@pytest.mark.parametrize("crop, top, left", [(147, 35, 15), (9, 104, 84)], ids=["crop147", "crop9"])
def test_an_odd_crop_keeps_the_lower_half_pixel_margins(tmp_path, crop, top, left):
    """An odd margin cannot be split evenly: the window starts at (218 - crop) // 2 from the top
    and (178 - crop) // 2 from the left."""
    decoded = make_coded_celeba(tmp_path)
    got = CelebA(tmp_path, split="all", crop=crop, image_size=crop, cache_dir=tmp_path / "c").images[0]
    assert (218 - crop) // 2 == top and (178 - crop) // 2 == left
    np.testing.assert_array_equal(got, decoded[top:top + crop, left:left + crop].transpose(2, 0, 1))


@pytest.mark.parametrize("crop, image_size", [(100, 101), (148, 178), (8, 9)], ids=["101-of-100", "178-of-148", "9-of-8"])
def test_an_image_size_above_the_crop_is_refused(tmp_path, crop, image_size):
    make_celeba(tmp_path)
    with pytest.raises(ValueError, match=rf"image_size: expected an int in \[8, crop={crop}\], got {image_size}$"):
        CelebA(tmp_path, split="all", crop=crop, image_size=image_size, cache_dir=tmp_path / "c")
    assert not (tmp_path / "c").exists()
    assert len(CelebA(tmp_path, split="all", crop=crop, image_size=crop, cache_dir=tmp_path / "c")) == 5


def _jpeg_bytes(color) -> bytes:
    """A 178x218 JPEG like make_celeba's, with a center of another color."""
    arr = np.zeros((218, 178, 3), np.uint8)
    arr[35:183, 15:163] = color
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def test_a_jpeg_replaced_by_one_of_the_same_size_is_decoded_again(tmp_path):
    folder = make_celeba(tmp_path)
    path = folder / "img_align_celeba" / "000005.jpg"
    blue, red = path.read_bytes(), _jpeg_bytes((230, 0, 0))
    size = max(len(blue), len(red))
    path.write_bytes(blue + b"\0" * (size - len(blue)))  # bytes after the end-of-image marker are ignored
    first = CelebA(tmp_path, split="test", cache_dir=tmp_path / "c")[0][0]
    assert first.mean(dim=(1, 2))[2] > 0.5
    old = path.stat().st_mtime_ns
    path.write_bytes(red + b"\0" * (size - len(red)))
    os.utime(path, ns=(old + 10**9, old + 10**9))
    assert path.stat().st_size == size
    again = CelebA(tmp_path, split="test", cache_dir=tmp_path / "c")[0][0]
    assert again.mean(dim=(1, 2))[0] > 0.5 and again.mean(dim=(1, 2))[2] < 0  # the new red center


def test_a_jpeg_replaced_with_its_time_kept_is_decoded_again(tmp_path):
    folder = make_celeba(tmp_path)
    path = folder / "img_align_celeba" / "000005.jpg"
    first = CelebA(tmp_path, split="test", cache_dir=tmp_path / "c")[0][0]
    assert first.mean(dim=(1, 2))[2] > 0.5
    old = path.stat().st_mtime_ns
    red = _jpeg_bytes((230, 0, 0)) + b"\0" * 17  # another size
    assert len(red) != path.stat().st_size
    path.write_bytes(red)
    os.utime(path, ns=(old, old))
    again = CelebA(tmp_path, split="test", cache_dir=tmp_path / "c")[0][0]
    assert again.mean(dim=(1, 2))[0] > 0.5 and again.mean(dim=(1, 2))[2] < 0


# ---------------------------------------------------------------------------------------------
# Archives


def test_extraction_needs_no_room_outside_the_destination(tmp_path, monkeypatch):
    """Members are staged inside the destination (one file system, atomic renames), never in the
    system's temporary folder, which may be another file system, full, or missing."""
    src = tmp_path / "src" / "pkg"
    src.mkdir(parents=True)
    (src / "one.txt").write_text("one\n", encoding="utf-8")
    archive = tmp_path / "a.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src, arcname="pkg")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "no-such-temporary-folder"))
    dest = tmp_path / "dest"
    extract(archive, dest)
    assert (dest / "pkg" / "one.txt").read_text(encoding="utf-8") == "one\n"
    assert sorted(p.name for p in dest.iterdir()) == ["pkg"]
    assert not (tmp_path / "no-such-temporary-folder").exists()


# ---------------------------------------------------------------------------------------------
# GPT-2 tokenizer


def _byte_vocab(extra=()) -> dict:
    vocab = {sym: i for i, sym in enumerate(byte_alphabet())}
    for token in extra:
        vocab[token] = len(vocab)
    return vocab


def test_pre_tokenisation_splits_words_digits_and_spaces_as_gpt2_does(tmp_path):
    """GPT-2 applies merges within the pieces of its pre-tokenisation pattern only: letters, a digit
    run and ' word' are separate pieces, so a merge across them never applies."""
    sp = byte_alphabet()[ord(" ")]  # 'Ġ'
    merges = [("o", sp), ("a", "1"), ("o", "o")]
    vocab = _byte_vocab(["o" + sp, "a1", "oo", "<|endoftext|>"])
    tok = GPT2Tokenizer(vocab, merges)
    assert tok.encode("o w") == [vocab["o"], vocab[sp], vocab["w"]]  # 'o', ' w': no 'oĠ'
    assert tok.encode("a1") == [vocab["a"], vocab["1"]]  # 'a', '1': no 'a1'
    assert tok.encode("oo w") == [vocab["oo"], vocab[sp], vocab["w"]]  # merges inside a piece do apply


def test_the_end_of_text_id_is_the_vocabulary_s_wherever_it_sits(tmp_path):
    vocab = _byte_vocab(["<|endoftext|>", "he"])  # end-of-text 256, then a merged token 257
    tok = GPT2Tokenizer(vocab, [("h", "e")])
    assert tok.eot_id == 256 and tok.vocab_size == 258
    assert tok.encode("he<|endoftext|>") == [257, 256]
    assert tok.decode([257, 256]) == "he<|endoftext|>"


def test_decode_keeps_the_end_of_text_token(tiny_tokenizer_dir):  # noqa: F811
    tok = GPT2Tokenizer.from_dir(tiny_tokenizer_dir[0])
    assert tok.decode([tok.eot_id]) == "<|endoftext|>"
    ids = tok.encode("x<|endoftext|>hel")
    assert tok.eot_id in ids and tok.decode(ids) == "x<|endoftext|>hel"


@pytest.mark.parametrize("bad", [-1, "size", -2**40], ids=["minus-1", "vocab-size", "very-negative"])
def test_decode_refuses_ids_outside_the_vocabulary(tiny_tokenizer_dir, bad):  # noqa: F811
    tok = GPT2Tokenizer.from_dir(tiny_tokenizer_dir[0])
    i = tok.vocab_size if bad == "size" else bad
    with pytest.raises(ValueError, match=rf"^ids: \[{i}\] outside the vocabulary \[0, {tok.vocab_size}\)$"):
        tok.decode([tok.eot_id, i])
    assert tok.decode([tok.vocab_size - 1]) == "<|endoftext|>"  # the last id is inside


@pytest.mark.parametrize("ids", [{"a": "0"}, {"a": 0.5}, {"a": [0]}], ids=["string", "float", "list"])
def test_a_vocabulary_with_ids_that_are_not_integers_names_the_file(tmp_path, ids):
    folder = tmp_path / "tok"
    folder.mkdir()
    vocab = dict(ids, **{"<|endoftext|>": 1})
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"tok/vocab.json: expected a JSON object of token -> id$"):
        GPT2Tokenizer.from_dir(folder)


def test_tokenizer_download_keeps_the_files_already_there(tmp_path, monkeypatch, tiny_tokenizer_dir):  # noqa: F811
    src, _ = tiny_tokenizer_dir
    folder = tmp_path / "root" / "gpt2"
    folder.mkdir(parents=True)
    for name in ("encoder.json", "vocab.bpe"):
        (folder / name).write_bytes((src / name).read_bytes())
    nowhere = (tmp_path / "no-such-server").as_uri()
    monkeypatch.setattr(tokenizer_mod, "OFFICIAL_FILES", {
        name: (nowhere + "/" + urllib.parse.quote(name), "0" * 64) for name in ("encoder.json", "vocab.bpe")})
    assert download_gpt2_tokenizer(tmp_path / "root") == folder  # nothing fetched: no error
    assert all((folder / n).read_bytes() == (src / n).read_bytes() for n in ("encoder.json", "vocab.bpe"))
    (folder / "vocab.bpe").unlink()
    with pytest.raises(OSError):  # what is missing is fetched (and here cannot be)
        download_gpt2_tokenizer(tmp_path / "root")


# ---------------------------------------------------------------------------------------------
# OpenWebText


def _owt(tmp_path, tok, **kw):
    return OpenWebText(tmp_path, tokenizer=tok, cache_dir=tmp_path / "c", **kw)


def test_blocks_start_anywhere_a_whole_block_and_its_target_fit(tmp_path, tiny_tokenizer_dir):  # noqa: F811
    tok = GPT2Tokenizer.from_dir(tiny_tokenizer_dir[0])
    (tmp_path / "openwebtext").mkdir()
    (tmp_path / "openwebtext" / "a.txt").write_text("abc", encoding="utf-8")
    ds = _owt(tmp_path, tok)
    stream = [ord("a"), ord("b"), ord("c"), tok.eot_id]
    assert ds.tokens.tolist() == stream
    g = torch_generator(0)
    for block in (1, 2, 3):
        x, y = ds.get_batch(400, block, generator=g)
        assert x.shape == y.shape == (400, block)
        starts = {tuple(row) for row in x.tolist()}
        # every start s in 0 .. len - block - 1 is drawn, none later
        assert starts == {tuple(stream[s:s + block]) for s in range(len(stream) - block)}
        for xr, yr in zip(x.tolist(), y.tolist()):
            s = stream.index(xr[0])
            assert xr == stream[s:s + block] and yr == stream[s + 1:s + block + 1]


def torch_generator(seed):
    import torch

    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("text, later", [("abc de", True), ("abc, de", False)],
                         ids=["same-size-later-time", "other-size-same-time"])
def test_a_replaced_document_is_tokenised_again(tmp_path, tiny_tokenizer_dir, text, later):  # noqa: F811
    """The token cache is keyed on each document's size and time: new text of the same size with a
    later time, or of another size with the time kept (as an archive restores it), is read again."""
    tok = GPT2Tokenizer.from_dir(tiny_tokenizer_dir[0])
    (tmp_path / "openwebtext").mkdir()
    doc = tmp_path / "openwebtext" / "a.txt"
    doc.write_text("hel wo", encoding="utf-8")
    first = _owt(tmp_path, tok).tokens.tolist()
    old = doc.stat().st_mtime_ns
    doc.write_text(text, encoding="utf-8")
    assert (doc.stat().st_size == 6) == later
    stamp = old + 10**9 if later else old
    os.utime(doc, ns=(stamp, stamp))
    assert first != list(text.encode()) + [tok.eot_id]
    assert _owt(tmp_path, tok).tokens.tolist() == list(text.encode()) + [tok.eot_id]


def test_a_renamed_document_is_tokenised_again_in_its_new_place(tmp_path, tiny_tokenizer_dir):  # noqa: F811
    tok = GPT2Tokenizer.from_dir(tiny_tokenizer_dir[0])
    folder = tmp_path / "openwebtext"
    folder.mkdir()
    (folder / "a.txt").write_text("abc", encoding="utf-8")
    (folder / "b.txt").write_text("xyz", encoding="utf-8")
    stamp = (folder / "a.txt").stat().st_mtime_ns
    for name in ("a.txt", "b.txt"):
        os.utime(folder / name, ns=(stamp, stamp))
    eot = tok.eot_id
    assert _owt(tmp_path, tok).tokens.tolist() == list(b"abc") + [eot] + list(b"xyz") + [eot]
    (folder / "a.txt").rename(folder / "c.txt")  # a rename keeps the size and the time
    assert _owt(tmp_path, tok).tokens.tolist() == list(b"xyz") + [eot] + list(b"abc") + [eot]


def _write_arrow(path: Path, texts: list) -> None:
    pa = pytest.importorskip("pyarrow", reason="pyarrow is not installed")
    table = pa.table({"text": texts})
    with pa.OSFile(str(path), "wb") as sink:
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)


def _saved_dataset(tmp_path, texts: list) -> Path:
    folder = tmp_path / "openwebtext" / "hf_train"
    folder.mkdir(parents=True)
    _write_arrow(folder / "data-00000-of-00001.arrow", texts)
    (folder / "state.json").write_text(json.dumps({"_data_files": [{"filename": "data-00000-of-00001.arrow"}]}))
    return folder


def test_a_rewritten_arrow_file_is_tokenised_again(tmp_path, tiny_tokenizer_dir):  # noqa: F811
    pytest.importorskip("pyarrow", reason="pyarrow is not installed")
    tok = GPT2Tokenizer.from_dir(tiny_tokenizer_dir[0])
    folder = _saved_dataset(tmp_path, ["abc"])
    eot = tok.eot_id
    assert _owt(tmp_path, tok).tokens.tolist() == list(b"abc") + [eot]
    state = (folder / "state.json").stat()
    _write_arrow(folder / "data-00000-of-00001.arrow", ["xyz", "q"])  # state.json itself unchanged
    assert (folder / "state.json").stat().st_mtime_ns == state.st_mtime_ns
    assert _owt(tmp_path, tok).tokens.tolist() == list(b"xyz") + [eot] + list(b"q") + [eot]


def test_text_files_inside_a_saved_dataset_folder_are_not_documents(tmp_path, tiny_tokenizer_dir):  # noqa: F811
    pytest.importorskip("pyarrow", reason="pyarrow is not installed")
    tok = GPT2Tokenizer.from_dir(tiny_tokenizer_dir[0])
    folder = _saved_dataset(tmp_path, ["abc"])
    (folder / "README.txt").write_text("not a document", encoding="utf-8")
    (folder / "extra.jsonl").write_text('{"text": "nor this"}\n', encoding="utf-8")
    ds = _owt(tmp_path, tok)
    assert ds.tokens.tolist() == list(b"abc") + [tok.eot_id] and ds.num_documents == 1
    assert ds.files == [folder / "state.json"]


def test_files_other_than_txt_and_jsonl_are_not_documents(tmp_path, tiny_tokenizer_dir):  # noqa: F811
    tok = GPT2Tokenizer.from_dir(tiny_tokenizer_dir[0])
    folder = tmp_path / "openwebtext"
    folder.mkdir()
    (folder / "a.txt").write_text("abc", encoding="utf-8")
    (folder / "meta.json").write_text('{"text": "metadata, not a document"}\n', encoding="utf-8")
    (folder / "NOTES.md").write_text("notes\n", encoding="utf-8")
    ds = _owt(tmp_path, tok)
    assert ds.files == [folder / "a.txt"]
    assert ds.tokens.tolist() == list(b"abc") + [tok.eot_id]


@pytest.mark.parametrize("line", ["h\te", "h e ", "h  e", " h e"], ids=["tab", "trailing-space", "two-spaces", "leading-space"])
def test_a_merge_line_not_split_by_exactly_one_space_names_the_line(tmp_path, tiny_tokenizer_dir, line):  # noqa: F811
    """As in the format (and the tokenizers library's reader): 'left right', one space between."""
    src, _ = tiny_tokenizer_dir
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "encoder.json").write_bytes((src / "encoder.json").read_bytes())
    (bad / "vocab.bpe").write_text(f"#version: 0.2\n{line}\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad/vocab.bpe:2: expected a merge rule 'left right', got "):
        GPT2Tokenizer.from_dir(bad)


def test_the_original_file_names_are_preferred_over_the_hugging_face_ones(tmp_path, tiny_tokenizer_dir):  # noqa: F811
    src, vocab = tiny_tokenizer_dir
    folder = tmp_path / "both"
    folder.mkdir()
    for name in ("encoder.json", "vocab.bpe"):
        (folder / name).write_bytes((src / name).read_bytes())
    # Another tokenizer under the Hugging Face names: bytes only, no merges, end-of-text 256.
    (folder / "vocab.json").write_text(json.dumps(_byte_vocab(["<|endoftext|>"])), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    tok = GPT2Tokenizer.from_dir(folder)
    assert tok.vocab_size == len(vocab) and tok.eot_id == vocab["<|endoftext|>"]
    assert tok.encode("hel") == [vocab["hel"]]


# ---------------------------------------------------------------------------------------------
# WikiText-2


def test_wikitext_download_fetches_nothing_when_the_split_is_there(tmp_path, monkeypatch):
    folder = tmp_path / "root" / "wikitext-2-raw"
    folder.mkdir(parents=True)
    (folder / "wiki.valid.raw").write_text(" = Valid = \n text \n", encoding="utf-8", newline="")
    monkeypatch.setattr(wikitext_mod, "ARCHIVE_URL", (tmp_path / "no-such-archive.zip").as_uri())
    with pytest.warns(UserWarning, match=r"wiki.valid.raw: SHA-256 differs from the published"):
        w = WikiText2(tmp_path / "root", split="valid", download=True)  # no attempt to fetch
    assert w.lines == [" = Valid = \n", " text \n"]
    assert sorted(p.name for p in (tmp_path / "root").iterdir()) == ["wikitext-2-raw"]
    with pytest.raises(OSError):  # an absent split is fetched (and here cannot be)
        WikiText2(tmp_path / "root", split="test", download=True)


def test_a_cache_dir_argument_under_home_is_expanded(tmp_path, monkeypatch):
    """A reader's cache_dir expands '~' as data_root() and $EDGEGEN_CACHE_DIR do: no folder named
    '~' in the working directory."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    assert cache_dir_for(tmp_path / "x", override="~/c") == tmp_path / "home" / "c"
    make_cifar(tmp_path / "data", n=2)
    CIFAR10(tmp_path / "data", "test", image_size=32, cache_dir="~/edgegen-cache")
    assert not (tmp_path / "~").exists() and any((tmp_path / "home" / "edgegen-cache").iterdir())


def _arrow_dataset(tmp_path, column):
    pa = pytest.importorskip("pyarrow")
    folder = tmp_path / "openwebtext" / "hf_train"
    folder.mkdir(parents=True)
    table = pa.table({"text": column})
    with pa.OSFile(str(folder / "data-00000-of-00001.arrow"), "wb") as sink:
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
    (folder / "state.json").write_text(json.dumps({"_data_files": [{"filename": "data-00000-of-00001.arrow"}]}))


def _byte_tokenizer():
    vocab = {s: i for i, s in enumerate(byte_alphabet())}
    vocab["<|endoftext|>"] = 256
    return GPT2Tokenizer(vocab, [])


@pytest.mark.parametrize("column, match", [
    (["hi", None, "yo"], r"data-00000-of-00001.arrow: row 1: expected a string 'text', got null"),
    ([1, 2], r"data-00000-of-00001.arrow: expected a string 'text' column, got int64"),
], ids=["null-row", "int-column"])
def test_a_saved_dataset_without_string_text_names_the_file(tmp_path, column, match):
    """As a .jsonl line without a string 'text' is refused with its line, an Arrow row with a null
    text or a column of another type is an error naming the file (and row), not a crash."""
    _arrow_dataset(tmp_path, column)
    with pytest.raises(ValueError, match=match):
        OpenWebText(tmp_path, tokenizer=_byte_tokenizer(), cache_dir=tmp_path / "c")


def test_a_saved_dataset_of_strings_is_read_in_row_order(tmp_path):
    _arrow_dataset(tmp_path, ["hi", "", "yo"])
    ds = OpenWebText(tmp_path, tokenizer=_byte_tokenizer(), cache_dir=tmp_path / "c")
    assert ds.tokens.tolist() == [ord("h"), ord("i"), 256, ord("y"), ord("o"), 256]
