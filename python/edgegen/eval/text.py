"""Language-model quality: perplexity by the sliding-window procedure of fixed-length models, and
measures of generated text (BLEU through sacrebleu, distinct-n, repetition rate)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch
from torch import Tensor

__all__ = ["PerplexityResult", "perplexity", "bleu", "distinct_n", "repetition_rate"]


@dataclass
class PerplexityResult:
    """``perplexity`` = exp(nll_per_token); ``tokens_scored`` tokens in ``windows`` windows.
    ``label`` says what was scored: "full" or "first N tokens" (a prefix, to be labelled as such
    wherever the number appears)."""

    perplexity: float
    nll_per_token: float
    tokens_scored: int
    windows: int
    context: int
    stride: int
    label: str

    def as_dict(self) -> dict:
        return asdict(self)


def _logits(model, ids: Tensor) -> Tensor:
    out = model(ids)
    if isinstance(out, (tuple, list)):
        out = out[0]
    if hasattr(out, "logits"):
        out = out.logits
    return out


@torch.no_grad()
def perplexity(model: Callable[[Tensor], Tensor], tokens: Tensor, context: int = 1024, stride: int = 512,
               max_tokens: int | None = None, progress: bool = False) -> PerplexityResult:
    """Token-weighted perplexity of a causal LM over a long token sequence, by the procedure for
    fixed-length models (as Hugging Face documents it): windows of ``context`` tokens start every
    ``stride`` tokens; each window scores only the tokens that no earlier window scored, with all
    the window's earlier tokens as context; the first token of the sequence is never scored.
    Each token's negative log-likelihood comes from a float32 (or float64) log-softmax; their sum
    is accumulated in float64.

    ``model`` maps token ids [1, T] to logits [1, T, V] (a tuple/list, or an object with
    ``.logits``, is accepted and its first element / logits used). ``tokens``: 1-D (or [1, T])
    int64 ids. ``max_tokens`` evaluates only that prefix (the result's label says so).
    """
    if not isinstance(tokens, Tensor):
        raise TypeError(f"tokens: expected a tensor of token ids, got {type(tokens).__name__}")
    ids = tokens.reshape(-1) if tokens.dim() == 2 and tokens.shape[0] == 1 else tokens
    if ids.dim() != 1:
        raise ValueError(f"tokens: expected a 1-D sequence of ids (or [1, T]), got shape {tuple(tokens.shape)}")
    if ids.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"tokens: expected integer token ids, got {ids.dtype}")
    if not isinstance(context, int) or context < 2:
        raise ValueError(f"context: expected an int >= 2, got {context!r}")
    if not isinstance(stride, int) or not 1 <= stride <= context:
        raise ValueError(f"stride: expected an int in [1, context={context}], got {stride!r}")
    n_positions = getattr(getattr(model, "config", None), "n_positions", None)
    if isinstance(n_positions, int) and context > n_positions:
        raise ValueError(f"context: expected at most the model's n_positions ({n_positions}), got {context}")
    label = "full"
    if max_tokens is not None:
        if not isinstance(max_tokens, int) or max_tokens < 2:
            raise ValueError(f"max_tokens: expected None or an int >= 2, got {max_tokens!r}")
        if max_tokens < ids.numel():
            ids = ids[:max_tokens]
            label = f"first {max_tokens} tokens"
    total = ids.numel()
    if total < 2:
        raise ValueError(f"tokens: expected at least 2 tokens (the first is never scored), got {total}")
    ids = ids.to(torch.int64)
    device = next((p.device for p in model.parameters()), ids.device) if hasattr(model, "parameters") else ids.device
    starts = []
    for begin in range(0, total, stride):
        starts.append(begin)
        if begin + context >= total:
            break
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(starts), desc="perplexity", unit="window")
    nll = 0.0
    scored = 0
    prev_end = 0
    for begin in starts:
        end = min(begin + context, total)
        first = max(prev_end, begin + 1)  # tokens [first, end) are new; each needs one token before it
        window = ids[begin:end].to(device).unsqueeze(0)
        logits = _logits(model, window)
        if logits.dim() != 3 or logits.shape[:2] != (1, end - begin):
            raise ValueError(f"model: expected logits [1, {end - begin}, V] for ids [1, {end - begin}], got "
                             f"{tuple(logits.shape)}")
        # Each token's NLL in the logits' precision (at least float32; a log-sum-exp is accurate
        # to its rounding), summed in float64.
        pred = logits[0, first - begin - 1:end - begin - 1]
        if pred.dtype not in (torch.float32, torch.float64):
            pred = pred.float()
        target = window[0, first - begin:end - begin]
        # logsumexp - logit of the target: the same as cross_entropy, without writing the
        # [tokens, V] log-softmax out (a fifth of the model's own time at V = 50,257 otherwise).
        token_nll = torch.logsumexp(pred, dim=-1) - pred.gather(1, target[:, None])[:, 0]
        nll += float(token_nll.to(torch.float64).sum())
        scored += end - first
        prev_end = end
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    mean = nll / scored
    return PerplexityResult(math.exp(mean), mean, scored, len(starts), context, stride, label)


def _token_lists(samples, name: str) -> list[list]:
    if isinstance(samples, (str, bytes)) or not isinstance(samples, Sequence):
        raise TypeError(f"{name}: expected a list of samples (strings or token lists), got {type(samples).__name__}")
    out = []
    for s in samples:
        if isinstance(s, str):
            out.append(s.split())
        elif isinstance(s, Tensor):
            out.append(s.reshape(-1).tolist())
        else:
            out.append(list(s))
    return out


def _ngrams(tokens: list, n: int) -> list[tuple]:
    return [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]


def distinct_n(samples, n: int = 2) -> float:
    """Distinct-n (Li et al. 2016): distinct n-grams over all n-grams, across all samples (strings
    are split on whitespace; token-id lists and tensors are used as they are). 0 when no sample
    has n tokens."""
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n: expected an int >= 1, got {n!r}")
    grams = [g for s in _token_lists(samples, "samples") for g in _ngrams(s, n)]
    return len(set(grams)) / len(grams) if grams else 0.0


def repetition_rate(samples, n: int = 4) -> float:
    """Sequence-level repetition (seq-rep-n of Welleck et al. 2019): per sample, the share of its
    n-grams that repeat an n-gram of the same sample (1 - distinct / total), averaged over the
    samples that have at least n tokens. 0 means no repeated n-gram."""
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n: expected an int >= 1, got {n!r}")
    rates = []
    for s in _token_lists(samples, "samples"):
        grams = _ngrams(s, n)
        if grams:
            rates.append(1.0 - len(set(grams)) / len(grams))
    return sum(rates) / len(rates) if rates else 0.0


def bleu(hypotheses: Sequence[str], references: Sequence[str] | Sequence[Sequence[str]]) -> float:
    """Corpus BLEU (sacrebleu's default 13a tokenisation, as its signature states) of detokenised
    hypotheses against one reference per hypothesis, or several reference streams (a list of
    lists, each as long as the hypotheses)."""
    import sacrebleu

    hyps = list(hypotheses)
    if not all(isinstance(h, str) for h in hyps):
        raise TypeError("hypotheses: expected a list of strings")
    refs = list(references)
    streams = [refs] if all(isinstance(r, str) for r in refs) else [list(r) for r in refs]
    for k, stream in enumerate(streams):
        if len(stream) != len(hyps) or not all(isinstance(r, str) for r in stream):
            raise ValueError(f"references: stream {k} must hold one string per hypothesis ({len(hyps)}), got "
                             f"{len(stream)} entries")
    return float(sacrebleu.corpus_bleu(hyps, streams).score)
