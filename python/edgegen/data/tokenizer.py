"""GPT-2's byte-level BPE tokenizer, built from the original ``encoder.json`` + ``vocab.bpe``
(Hugging Face calls them ``vocab.json`` + ``merges.txt``) and run by the ``tokenizers`` library.

Byte-level: every string, any Unicode, encodes losslessly; ids are identical to GPT-2's.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

EOT = "<|endoftext|>"
_FILE_PAIRS = (("encoder.json", "vocab.bpe"), ("vocab.json", "merges.txt"))
# OpenAI's published files, with the SHA-256 values tiktoken pins for them.
OFFICIAL_FILES = {
    "encoder.json": ("https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/encoder.json",
                     "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"),
    "vocab.bpe": ("https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/vocab.bpe",
                  "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"),
}


def download_gpt2_tokenizer(root: str | os.PathLike | None = None) -> Path:
    """Fetch encoder.json and vocab.bpe into ``<data root>/gpt2`` (checksums verified)."""
    from edgegen.data.download import fetch
    from edgegen.data.root import data_root

    folder = data_root(root) / "gpt2"
    for name, (url, sha256) in OFFICIAL_FILES.items():
        if not (folder / name).is_file():
            fetch(url, folder / name, sha256=sha256)
    return folder


def read_merges(path: Path, vocab: dict[str, int] | None = None) -> list[tuple[str, str]]:
    """Merge rules in rank order from a GPT-2 ``vocab.bpe``/``merges.txt`` file. With ``vocab``,
    each rule's two parts and their concatenation must be tokens of it."""
    merges = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line or (lineno == 1 and line.startswith("#version")):
                continue
            parts = line.split(" ")
            if len(parts) != 2:
                raise ValueError(f"{path}:{lineno}: expected a merge rule 'left right', got {line!r}")
            if vocab is not None:
                for token in (parts[0], parts[1], parts[0] + parts[1]):
                    if token not in vocab:
                        raise ValueError(f"{path}:{lineno}: expected a merge rule of vocabulary tokens; "
                                         f"{token!r} (from {line!r}) is not in the vocabulary")
            merges.append((parts[0], parts[1]))
    return merges


def _warn_unless_official(path: Path) -> None:
    """A file under an official name that is not OpenAI's (a partial copy, say) warns: its ids
    would silently differ from GPT-2's. A tokenizer of one's own may use the names too."""
    import warnings

    from edgegen.data.download import file_digest

    expected = OFFICIAL_FILES[path.name][1]
    digest = file_digest(path, "sha256")
    if digest != expected:
        warnings.warn(f"{path}: SHA-256 {digest} differs from OpenAI's published {path.name} ({expected}); "
                      "if it is meant to be GPT-2's, it is damaged or partial (download_gpt2_tokenizer() "
                      "fetches the official files), otherwise its ids are not GPT-2's", UserWarning,
                      stacklevel=3)


class GPT2Tokenizer:
    """``GPT2Tokenizer.from_dir(path)``; ``encode(text) -> list[int]``, ``decode(ids) -> str``.

    By default ``<|endoftext|>`` written in the text is the end-of-text token (id 50256), as in
    Hugging Face's GPT-2 tokenizer. Corpus readers encode with ``allowed_special=False``: the
    string is then ordinary text, so a web page quoting it cannot forge a document boundary
    (the ids of real boundaries are inserted by the reader itself).
    """

    def __init__(self, vocab: dict[str, int], merges: list[tuple[str, str]]):
        from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

        if EOT not in vocab:
            raise ValueError(f"vocabulary: the end-of-text token {EOT!r} is missing")

        def build():
            try:
                tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
            except Exception as exc:  # the library raises a bare Exception
                raise ValueError(f"merges: expected rules over vocabulary tokens ({exc})") from None
            tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
            tok.decoder = decoders.ByteLevel()
            return tok

        self._plain = build()
        self._special = build()
        self._special.add_special_tokens([AddedToken(EOT, special=True, normalized=False)])
        self.vocab_size = len(vocab)
        self.eot_id = vocab[EOT]
        self._vocab, self._merges, self._fingerprint = dict(vocab), list(merges), None

    @classmethod
    def from_dir(cls, path: str | os.PathLike) -> "GPT2Tokenizer":
        path = Path(path)
        for vocab_name, merges_name in _FILE_PAIRS:
            if (path / vocab_name).is_file() and (path / merges_name).is_file():
                break
        else:
            raise FileNotFoundError(
                f"{path}: expected GPT-2 tokenizer files encoder.json + vocab.bpe "
                "(or vocab.json + merges.txt)"
            )
        try:
            with open(path / vocab_name, encoding="utf-8") as f:
                vocab = json.load(f)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path / vocab_name}: not valid JSON ({exc})") from exc
        if not isinstance(vocab, dict) or not all(isinstance(v, int) for v in vocab.values()):
            raise ValueError(f"{path / vocab_name}: expected a JSON object of token -> id")
        merges = read_merges(path / merges_name, vocab)
        for name in (vocab_name, merges_name):
            if name in OFFICIAL_FILES:
                _warn_unless_official(path / name)
        return cls(vocab, merges)

    def _pick(self, allowed_special: bool):
        return self._special if allowed_special else self._plain

    def encode(self, text: str, allowed_special: bool = True) -> list[int]:
        if not isinstance(text, str):
            raise TypeError(f"text: expected str, got {type(text).__name__}")
        return self._pick(allowed_special).encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str], allowed_special: bool = True) -> list[list[int]]:
        """Encodes in parallel (the tokenizers library's threads)."""
        return [e.ids for e in self._pick(allowed_special).encode_batch(texts, add_special_tokens=False)]

    def fingerprint(self) -> str:
        """A short hash of the whole vocabulary and every merge rule in rank order, for the names of
        token caches: tokenizers that could encode any text differently never share a cache.
        Computed once (tens of milliseconds for GPT-2's)."""
        if self._fingerprint is None:
            import hashlib

            h = hashlib.sha256()
            h.update(json.dumps(sorted(self._vocab.items(), key=lambda kv: (kv[1], kv[0])),
                                ensure_ascii=False).encode("utf-8"))
            h.update(b"\0")
            h.update(json.dumps([list(m) for m in self._merges], ensure_ascii=False).encode("utf-8"))
            self._fingerprint = h.hexdigest()[:16]
        return self._fingerprint

    def decode(self, ids) -> str:
        ids = [int(i) for i in ids]
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise ValueError(f"ids: {bad[:5]} outside the vocabulary [0, {self.vocab_size})")
        return self._special.decode(ids, skip_special_tokens=False)
