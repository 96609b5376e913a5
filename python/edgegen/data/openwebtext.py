"""OpenWebText (Gokaslan and Cohen 2019) as a flat stream of GPT-2 tokens.

``openwebtext/`` under the data root holds documents as ``.txt`` files (one document each),
``.jsonl`` files (one JSON object per line with a ``text`` field), and/or Hugging Face
``datasets`` folders written by ``save_to_disk`` (``state.json`` listing Arrow stream files with
a ``text`` column; read with pyarrow). They are tokenised once, in sorted file order, into a
uint16 token file with ``<|endoftext|>`` after every document (a document without text, or of
whitespace only, is skipped; a folder with none left is an error naming it); later
runs memory-map it. Training draws random contiguous blocks.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch

from edgegen._atomic import replacing
from edgegen.data.root import cache_dir_for, data_root, dataset_dir
from edgegen.data.tokenizer import GPT2Tokenizer

FOLDER = "openwebtext"
SOURCE = "https://skylion007.github.io/OpenWebTextCorpus/"


def _arrow_documents(state: Path):
    try:
        import pyarrow as pa
    except ImportError as exc:
        raise ImportError(f"{state.parent}: reading a Hugging Face dataset folder needs pyarrow "
                          "(pip install pyarrow)") from exc
    try:
        files = [state.parent / f["filename"] for f in json.loads(state.read_text())["_data_files"]]
    except (KeyError, TypeError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{state}: expected save_to_disk's state.json with '_data_files'") from exc
    for path in files:
        with pa.memory_map(str(path)) as source:
            try:
                reader = pa.ipc.open_stream(source)
            except pa.ArrowInvalid as exc:
                raise ValueError(f"{path}: not an Arrow stream file ({exc})") from exc
            if "text" not in reader.schema.names:
                raise ValueError(f"{path}: no 'text' column (columns: {reader.schema.names})")
            kind = reader.schema.field("text").type
            if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
                raise ValueError(f"{path}: expected a string 'text' column, got {kind}")
            row = 0
            for batch in reader:
                for text in batch.column(batch.schema.get_field_index("text")).to_pylist():
                    if text is None:  # as a .jsonl line without a string 'text' is refused
                        raise ValueError(f"{path}: row {row}: expected a string 'text', got null")
                    row += 1
                    yield text


def _jsonl_documents(path: Path):
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from exc
            if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
                raise ValueError(f"{path}:{lineno}: expected an object with a string 'text' field")
            yield obj["text"]


def iter_documents(files: list[Path]):
    for path in files:
        if path.name == "state.json":
            yield from _arrow_documents(path)
            continue
        try:
            if path.suffix == ".txt":
                yield path.read_text(encoding="utf-8")
            else:
                yield from _jsonl_documents(path)
        except UnicodeDecodeError as exc:
            raise ValueError(f"{path}: expected UTF-8 text ({exc})") from None


class OpenWebText:
    """``OpenWebText(root=None, tokenizer=None)``: ``.tokens`` (uint16 memmap) and
    ``get_batch(batch_size, block_size)`` for training."""

    def __init__(self, root=None, tokenizer: GPT2Tokenizer | None = None,
                 cache_dir: str | os.PathLike | None = None, batch_docs: int = 256):
        folder = dataset_dir(FOLDER, root, f"Put .txt or .jsonl documents there (source: {SOURCE}).")
        states = sorted(folder.rglob("state.json"))
        arrow_dirs = {s.parent for s in states}
        texts = [p for p in folder.rglob("*") if p.is_file() and p.suffix in (".txt", ".jsonl")
                 and not any(d in p.parents for d in arrow_dirs)]
        self.files = sorted(texts + states)
        if not self.files:
            raise ValueError(f"{folder}: no .txt or .jsonl documents or dataset folders found")
        if tokenizer is None:
            tokenizer = GPT2Tokenizer.from_dir(data_root(root) / "gpt2")
        self.tokenizer = tokenizer
        if tokenizer.vocab_size > 65536:
            raise ValueError("tokenizer: ids must fit uint16 (vocabulary of at most 65,536)")
        h = hashlib.sha256()
        for p in self.files + [a for s in states for a in sorted(s.parent.glob("*.arrow"))]:
            st = p.stat()
            h.update(f"{p.relative_to(folder)}:{st.st_size}:{st.st_mtime_ns}\n".encode())
        h.update(tokenizer.fingerprint().encode())
        path = cache_dir_for(folder, cache_dir) / f"openwebtext.{h.hexdigest()[:16]}.u16.bin"
        self.folder = folder
        if path.is_file() and path.stat().st_size == 0:
            path.unlink()  # an empty token file (written before empty streams were refused) is no cache
        if not path.is_file():
            self._tokenize(path, batch_docs)
        self.path = path
        self.tokens = np.memmap(path, dtype=np.uint16, mode="r")

    def _tokenize(self, path: Path, batch_docs: int) -> None:
        eot = self.tokenizer.eot_id
        # atomic, through a temporary file of this writer's own: an interrupted run never leaves a
        # half-written token file, and two processes tokenizing at once never write into one file
        with replacing(path) as tmp:
            with open(tmp, "wb") as out:
                batch: list[str] = []
                written = 0

                def flush():
                    for ids in self.tokenizer.encode_batch(batch, allowed_special=False):
                        np.asarray(ids + [eot], dtype=np.uint16).tofile(out)
                    batch.clear()

                for doc in iter_documents(self.files):
                    if not doc.strip():  # no text: not a document (it would be a lone end-of-text)
                        continue
                    batch.append(doc)
                    written += 1
                    if len(batch) >= batch_docs:
                        flush()
                flush()
            if not written:
                names = [str(p.relative_to(self.folder)) for p in self.files]
                listed = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
                raise ValueError(f"{self.folder}: no text to tokenise in {listed} (every document is empty or "
                                 "whitespace only); expected at least one document with text")

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def num_documents(self) -> int:
        """Documents in the stream: documents are encoded without special tokens, so every
        end-of-text id is a boundary the reader wrote."""
        if not hasattr(self, "_num_documents"):
            self._num_documents = int(np.count_nonzero(self.tokens == self.tokenizer.eot_id))
        return self._num_documents

    def get_batch(self, batch_size: int, block_size: int, generator: torch.Generator | None = None):
        """(x, y) int64 [batch_size, block_size]: random contiguous blocks, y shifted by one."""
        if not isinstance(block_size, int) or not 1 <= block_size < len(self.tokens):
            raise ValueError(f"block_size: expected an int in [1, {len(self.tokens) - 1}] (the token stream of "
                             f"{self.folder} holds {len(self.tokens)} tokens), got {block_size!r}")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size: expected an int >= 1, got {batch_size!r}")
        starts = torch.randint(0, len(self.tokens) - block_size, (batch_size,), generator=generator)
        rows = np.stack([np.asarray(self.tokens[s:s + block_size + 1], dtype=np.int64) for s in starts.tolist()])
        t = torch.from_numpy(rows)
        return t[:, :-1], t[:, 1:]
