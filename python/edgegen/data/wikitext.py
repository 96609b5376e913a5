"""WikiText-2 (raw): Merity et al. 2016, "Pointer Sentinel Mixture Models".

Standard folder ``wikitext-2-raw/`` with ``wiki.{train,valid,test}.raw`` (the members of the
official ``wikitext-2-raw-v1.zip``). The evaluation text is the ``"\\n\\n".join(dataset["text"])``
of the widely used Hugging Face perplexity recipe: the file's lines (split at newlines only), each
with its newline, a blank line as the empty string (as the Hugging Face builder stores it), joined
by blank lines. GPT-2 tokenises the test split into the well-known 287,644 tokens, so token counts
and perplexities compare with published ones.
"""

from __future__ import annotations

import hashlib
import os
import warnings

import numpy as np

from edgegen.data.download import download_and_extract, file_digest
from edgegen.data.root import cache_dir_for, data_root, dataset_dir, save_array_atomic

FOLDER = "wikitext-2-raw"
SPLITS = ("train", "valid", "test")
ARCHIVE_URL = "https://wikitext.smerity.com/wikitext-2-raw-v1.zip"
# Published SHA-256 of the archive and of its members.
ARCHIVE_SHA256 = "ef7edb566e3e2b2d31b29c1fdb0c89a4cc683597484c3dc2517919c615435a11"
SHA256 = {
    "train": "6707892fa3788b5ab9ed78ab5ff37d9fe825f6011a2ad4fcd6a6d467f0e7da57",
    "valid": "4cd0f6876d07a413aa911261ff6d363c72d757d47f0fdd6015702014c89cb9c7",
    "test": "173c87a53759e0201f33e0ccf978e510c2042d7f2cb78229d9a50d79b9e7dd08",
}


class WikiText2:
    """``WikiText2(root=None, split="test")``: the raw text of one split and its GPT-2 tokens.

    ``sha256``: the file's SHA-256; ``official``: whether it is the published member of the
    official archive (a file that is not is read, with a UserWarning naming it)."""

    def __init__(self, root: str | os.PathLike | None = None, split: str = "test",
                 download: bool = False):
        if split not in SPLITS:
            raise ValueError(f"split: expected one of {SPLITS}, got {split!r}")
        if download and not (data_root(root) / FOLDER / f"wiki.{split}.raw").is_file():
            # Present files are kept (downloads fetch what is absent, other splits included); one
            # that is not the published member is named below rather than used silently.
            download_and_extract(ARCHIVE_URL, data_root(root), sha256=ARCHIVE_SHA256, keep_existing=True)
        folder = dataset_dir(
            FOLDER, root,
            f"Download and unpack {ARCHIVE_URL} (SHA-256 {ARCHIVE_SHA256}) there, or pass "
            "download=True.",
        )
        self.split = split
        self.path = folder / f"wiki.{split}.raw"
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: the {split} split is missing from {folder}")
        try:
            with open(self.path, encoding="utf-8") as f:  # lines end at "\n" only, as the builder reads them
                self.lines = list(f)
        except UnicodeDecodeError as exc:
            raise ValueError(f"{self.path}: expected UTF-8 text ({exc})") from None
        if not any(line.strip() for line in self.lines):
            raise ValueError(f"{self.path}: expected WikiText-2 text, the file is empty or holds only whitespace")
        # Hashed on every load (a few MB): a partial or modified split is named, and the results
        # of one are labelled as not the official split.
        self.sha256 = file_digest(self.path, "sha256")
        self.official = self.sha256 == SHA256[split]
        if not self.official:
            warnings.warn(f"{self.path}: SHA-256 differs from the published {SHA256[split]} (this file: "
                          f"{self.sha256}); a partial or modified copy? Its results are not comparable with "
                          "published ones. Delete it and pass download=True to fetch the official file",
                          UserWarning, stacklevel=2)

    def verify(self) -> None:
        """Raise ValueError unless the split's file has the published SHA-256 (``official`` is
        the same check made when the file was read, which warns instead)."""
        digest = file_digest(self.path, "sha256")
        if digest != SHA256[self.split]:
            raise ValueError(f"{self.path}: SHA-256 {digest} differs from the published "
                             f"{SHA256[self.split]}")

    def eval_text(self) -> str:
        """The split as standard perplexity evaluations tokenise it: lines joined by blank lines,
        a line of whitespace only counted as empty."""
        return "\n\n".join(line if line.strip() else "" for line in self.lines)

    def tokens(self, tokenizer, cache_dir: str | os.PathLike | None = None) -> np.ndarray:
        """GPT-2 token ids of :meth:`eval_text` as uint16, tokenised once and cached (see
        ``cache_dir_for``) under a name that records the text's and vocabulary's hashes."""
        text = self.eval_text()
        key = hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
        cache = cache_dir_for(self.path.parent, cache_dir)
        out = cache / f"wiki.{self.split}.{key}.{tokenizer.fingerprint()}.u16.npy"
        if out.is_file():
            return np.load(out, mmap_mode="r")
        ids = np.asarray(tokenizer.encode(text, allowed_special=False), dtype=np.uint16)
        save_array_atomic(out, ids)
        return ids
