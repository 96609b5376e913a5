"""Training data as deterministic batches: batch ``i`` of epoch ``e`` is a pure function of (seed,
e, i), so a resumed run continues from the saved (epoch, index) with exactly the batches an
uninterrupted run would have seen, and data-parallel ranks each take their rows of the same
global batch."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from edgegen.train.config import DataConfig


def _generator(*keys: int) -> torch.Generator:
    seed = 0
    for k in keys:
        seed = (seed * 1_000_003 + int(k) + 1) % (2**63 - 1)
    return torch.Generator().manual_seed(seed)


class ImageBatches:
    """Images [B, 3, 64, 64] in [-1, 1] from a map-style dataset (item = (image, label)). With
    ``val_dataset`` (an official held-out split) validation covers its first ``val_limit`` images
    (all by default) in batches of ``batch_size``, the last one possibly partial; without, the
    last ``val_batches * batch_size`` examples of ``dataset`` are held out."""

    def __init__(self, dataset, batch_size: int, seed: int, val_batches: int, limit: int | None = None,
                 val_dataset=None, val_limit: int | None = None):
        n = len(dataset) if limit is None else min(limit, len(dataset))
        n_val = 0 if val_dataset is not None else val_batches * batch_size
        if n - n_val < batch_size:
            raise ValueError(f"data: {n} images leave fewer than one training batch of {batch_size} after "
                             f"{n_val} validation images (lower train.batch_size or data.val_batches)")
        self.dataset, self.batch_size, self.seed = dataset, batch_size, seed
        self.val_dataset = val_dataset
        if val_dataset is not None:
            self.n_val = len(val_dataset) if val_limit is None else min(val_limit, len(val_dataset))
            if self.n_val == 0:
                raise ValueError("data: the official validation split is empty (use data.val_split: holdout)")
        else:
            self.n_val = n_val
        self.n_train = n - n_val
        self.batches_per_epoch = self.n_train // batch_size
        self._perm_epoch, self._perm = None, None

    def _stack(self, indices) -> Tensor:
        return torch.stack([self.dataset[int(i)][0] for i in indices])

    def train_batch(self, epoch: int, index: int) -> Tensor:
        """Batch ``index`` of the epoch's permutation; an epoch longer than the data
        (``train.steps_per_epoch``) goes round it again from index ``batches_per_epoch`` on."""
        index %= self.batches_per_epoch
        if self._perm_epoch != epoch:
            self._perm = torch.randperm(self.n_train, generator=_generator(self.seed, epoch))
            self._perm_epoch = epoch
        b = self.batch_size
        return self._stack(self._perm[index * b:(index + 1) * b].tolist())

    def val_batches(self):
        b = self.batch_size
        if self.val_dataset is not None:
            for i in range(0, self.n_val, b):
                yield torch.stack([self.val_dataset[j][0] for j in range(i, min(i + b, self.n_val))])
            return
        for i in range(self.n_val // b):
            yield self._stack(range(self.n_train + i * b, self.n_train + (i + 1) * b))


class TokenBatches:
    """(x, y) int64 [B, L] blocks of a token stream, y shifted by one. Training blocks start at
    random positions of the first part of the stream (a fresh draw per (epoch, index), also past
    ``batches_per_epoch``: an epoch of more steps never repeats a batch); the validation blocks tile
    the held-out end of the stream."""

    def __init__(self, tokens: np.ndarray, batch_size: int, seq_len: int, seed: int, val_batches: int,
                 limit: int | None = None, val_tokens: np.ndarray | None = None, val_limit: int | None = None):
        tokens = tokens if limit is None else tokens[:limit]
        self.val_tokens = None
        if val_tokens is not None:  # an official split: non-overlapping blocks over its first val_limit tokens
            vt = val_tokens if val_limit is None else val_tokens[:val_limit]
            if len(vt) < seq_len + 1:
                raise ValueError(f"data: the validation split has {len(vt)} tokens, fewer than one block of "
                                 f"{seq_len + 1}")
            self.val_tokens = vt
        n_val = 0 if val_tokens is not None else val_batches * batch_size * (seq_len + 1)
        if len(tokens) - n_val < 4 * (seq_len + 1):
            raise ValueError(f"data: {len(tokens)} tokens are too few for {val_batches} validation batches of "
                             f"{batch_size} x {seq_len} plus training data")
        self.tokens, self.batch_size, self.seq_len, self.seed = tokens, batch_size, seq_len, seed
        self.n_train = len(tokens) - n_val
        self.n_val_blocks = val_batches * batch_size
        self.batches_per_epoch = max(1, self.n_train // (batch_size * seq_len))

    def _blocks(self, starts) -> tuple[Tensor, Tensor]:
        rows = np.stack([np.asarray(self.tokens[s:s + self.seq_len + 1], dtype=np.int64) for s in starts])
        t = torch.from_numpy(rows)
        return t[:, :-1], t[:, 1:]

    def train_batch(self, epoch: int, index: int) -> tuple[Tensor, Tensor]:
        g = _generator(self.seed, epoch, index)
        # Starts 0 .. n_train - seq_len - 1 (randint's bound is exclusive): the last block's
        # target ends at the last training token.
        starts = torch.randint(0, self.n_train - self.seq_len, (self.batch_size,), generator=g)
        return self._blocks(starts.tolist())

    def val_batches(self):
        b, step = self.batch_size, self.seq_len + 1
        if self.val_tokens is not None:
            starts = list(range(0, len(self.val_tokens) - step + 1, step))
            for i in range(0, len(starts), b):
                rows = np.stack([np.asarray(self.val_tokens[s:s + step], dtype=np.int64) for s in starts[i:i + b]])
                t = torch.from_numpy(rows)
                yield t[:, :-1], t[:, 1:]
            return
        for i in range(self.n_val_blocks // b):
            yield self._blocks([self.n_train + (i * b + r) * step for r in range(b)])


class SyntheticImages(torch.utils.data.Dataset):
    """Smooth random images in [-1, 1] with few factors of variation: a fixed mean image plus
    random mixtures of 4 fixed smooth patterns. Structured enough that a VAE or GAN makes visible
    progress in a few steps (uniform noise would leave nothing to learn)."""

    def __init__(self, size: int, seed: int = 0):
        g = torch.Generator().manual_seed(seed)

        def smooth(n):
            low = torch.rand(n, 3, 4, 4, generator=g) * 2 - 1
            return torch.nn.functional.interpolate(low, size=64, mode="bilinear", align_corners=False)

        mean, basis = smooth(1), smooth(4)
        coef = torch.randn(size, 4, 1, 1, 1, generator=g)
        self.images = (0.6 * mean + 0.25 * (coef * basis[None]).sum(1)).clamp_(-1, 1)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i], 0


def synthetic_tokens(n: int, vocab: int, seed: int = 0) -> np.ndarray:
    """A token stream from a sparse random Markov chain (each token has 4 likely successors):
    learnable structure, so a language model's loss falls well below ln(vocab)."""
    rng = np.random.default_rng(seed)
    succ = rng.integers(0, vocab, size=(vocab, 4))
    out = np.empty(n, dtype=np.int64)
    out[0] = 0
    choice = rng.integers(0, 4, size=n)
    noise = rng.random(n) < 0.05
    rand = rng.integers(0, vocab, size=n)
    for i in range(1, n):
        out[i] = rand[i] if noise[i] else succ[out[i - 1], choice[i]]
    return out.astype(np.uint16 if vocab <= 65536 else np.int64)


def build_batches(cfg: DataConfig, batch_size: int, seed: int, vocab_size: int | None = None):
    """The batch source for an experiment's data section; ``vocab_size`` (token sets only;
    default the GPT-2 vocabulary) is the model's."""
    vocab_size = 50257 if vocab_size is None else vocab_size
    if cfg.name == "synthetic-images":
        return ImageBatches(SyntheticImages(cfg.synthetic_size, seed=1234), batch_size, seed, cfg.val_batches,
                            cfg.limit)
    official = cfg.official_validation
    if cfg.name == "cifar10":
        from edgegen.data.cifar import CIFAR10

        val = CIFAR10(cfg.root, split="test", image_size=64) if official else None
        return ImageBatches(CIFAR10(cfg.root, split="train", image_size=64), batch_size, seed, cfg.val_batches,
                            cfg.limit, val, cfg.val_limit)
    if cfg.name == "celeba":
        from edgegen.data.celeba import CelebA

        if official:
            return ImageBatches(CelebA(cfg.root, split="train", image_size=64), batch_size, seed, cfg.val_batches,
                                cfg.limit, CelebA(cfg.root, split="valid", image_size=64), cfg.val_limit)
        # Held out from the train and valid partitions: the test partition stays unseen.
        trainval = torch.utils.data.ConcatDataset([CelebA(cfg.root, split="train", image_size=64),
                                                   CelebA(cfg.root, split="valid", image_size=64)])
        return ImageBatches(trainval, batch_size, seed, cfg.val_batches, cfg.limit)
    if cfg.name == "synthetic-tokens":
        n = cfg.limit or max(cfg.synthetic_size * (cfg.seq_len + 1), 20 * batch_size * (cfg.seq_len + 1))
        return TokenBatches(synthetic_tokens(n, vocab_size, seed=1234), batch_size, cfg.seq_len, seed,
                            cfg.val_batches)
    from edgegen.data.root import data_root
    from edgegen.data.tokenizer import GPT2Tokenizer

    if cfg.name == "openwebtext":
        from edgegen.data.openwebtext import OpenWebText

        tokens = OpenWebText(cfg.root).tokens
    else:
        from edgegen.data.wikitext import WikiText2

        tok = GPT2Tokenizer.from_dir(data_root(cfg.root) / "gpt2")
        tokens = WikiText2(cfg.root, split="train").tokens(tok)
        if official:
            val_tokens = WikiText2(cfg.root, split="valid").tokens(tok)
    if vocab_size < 50257:
        raise ValueError(f"model.vocab_size: {cfg.name} uses the 50,257-token GPT-2 vocabulary, got {vocab_size}")
    if cfg.name == "wikitext2" and official:
        return TokenBatches(tokens, batch_size, cfg.seq_len, seed, cfg.val_batches, cfg.limit, val_tokens,
                            cfg.val_limit)
    return TokenBatches(tokens, batch_size, cfg.seq_len, seed, cfg.val_batches, cfg.limit)


def shard(batch, rank: int, world: int):
    """This rank's rows of a global batch (rows rank, rank + world, ...)."""
    if world == 1:
        return batch
    if isinstance(batch, tuple):
        return tuple(t[rank::world] for t in batch)
    return batch[rank::world]


def steps_in_epoch(batches, steps_per_epoch: int | None) -> int:
    return batches.batches_per_epoch if steps_per_epoch is None else steps_per_epoch

