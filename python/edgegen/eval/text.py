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
    ids of any integer dtype (taken as int64) in [0, V) (V from ``model.config.vocab_size`` or the
    input embedding when the model has them, checked before it runs; else from the first window's
    logits, before any token is scored). ``max_tokens`` evaluates only that prefix (the
    result's label says so). Logits that make a scored token's log-likelihood NaN or infinite are
    an error naming the model's output, never a NaN perplexity.
    """
    if not isinstance(tokens, Tensor):
        raise TypeError(f"tokens: expected a tensor of token ids, got {type(tokens).__name__}")
    ids = tokens.reshape(-1) if tokens.dim() == 2 and tokens.shape[0] == 1 else tokens
    if ids.dim() != 1:
        raise ValueError(f"tokens: expected a 1-D sequence of ids (or [1, T]), got shape {tuple(tokens.shape)}")
    if ids.dtype.is_floating_point or ids.dtype.is_complex or ids.dtype == torch.bool:
        raise TypeError(f"tokens: expected integer token ids (any integer dtype), got {ids.dtype}")
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
    if int(ids.min()) < 0:
        raise ValueError(f"tokens: expected token ids >= 0, got {int(ids.min())} at position "
                         f"{int((ids < 0).nonzero()[0, 0])}")
    vocab, source = getattr(getattr(model, "config", None), "vocab_size", None), "the model's config.vocab_size"
    if not isinstance(vocab, int) and callable(getattr(model, "get_input_embeddings", None)):
        vocab = getattr(model.get_input_embeddings(), "num_embeddings", None)
        source = "the model's input embedding"
    if isinstance(vocab, int):
        _check_ids_below(ids, vocab, source)
    else:
        vocab = None  # known from the first window's logits, before any token is scored
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
        if vocab is None or vocab != logits.shape[-1]:
            vocab = int(logits.shape[-1])
            _check_ids_below(ids, vocab, "the model's logits")
        # Each token's NLL in the logits' precision (at least float32; a log-sum-exp is accurate
        # to its rounding), summed in float64.
        pred = logits[0, first - begin - 1:end - begin - 1]
        if pred.dtype not in (torch.float32, torch.float64):
            pred = pred.float()
        target = window[0, first - begin:end - begin]
        # logsumexp - logit of the target: the same as cross_entropy, without writing the
        # [tokens, V] log-softmax out (a fifth of the model's own time at V = 50,257 otherwise).
        token_nll = torch.logsumexp(pred, dim=-1) - pred.gather(1, target[:, None])[:, 0]
        if not torch.isfinite(token_nll).all():
            bad = int((~torch.isfinite(token_nll)).nonzero()[0, 0]) + first
            what = "NaN" if torch.isnan(pred).any() else "infinite"
            raise ValueError(f"model: its output logits hold {what} values: the log-likelihood of token {bad} (window "
                             f"[{begin}, {end})) is not finite, so the perplexity is undefined")
        nll += float(token_nll.to(torch.float64).sum())
        scored += end - first
        prev_end = end
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    mean = nll / scored
    return PerplexityResult(math.exp(mean), mean, scored, len(starts), context, stride, label)


def _check_ids_below(ids: Tensor, vocab: int, source: str) -> None:
    top = int(ids.max())
    if top >= vocab:
        raise ValueError(f"tokens: expected token ids below the vocabulary size {vocab} ({source}), got {top} at "
                         f"position {int((ids >= vocab).nonzero()[0, 0])}")


def _token_lists(samples, name: str) -> list[list]:
    if isinstance(samples, (str, bytes)) or not isinstance(samples, Sequence):
        raise TypeError(f"{name}: expected a list of samples (strings or token lists), got {type(samples).__name__}")
    out = []
    for i, s in enumerate(samples):
        if isinstance(s, str):
            out.append(s.split())
        elif isinstance(s, Tensor):
            out.append(s.reshape(-1).tolist())
        elif isinstance(s, Sequence) and not isinstance(s, bytes):
            out.append(list(s))
        else:
            raise ValueError(f"{name}: expected a list of samples, each a string, a token list or a tensor; sample "
                             f"{i} has type {type(s).__name__} (wrap one token sequence in a list: [[1, 2, 3]])")
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


_STREAMS_HELP = ("reference streams: a list of lists, stream k holding one reference string per hypothesis "
                 "(references[k][i] is the k-th reference of hypothesis i), as sacrebleu.corpus_bleu takes them")


def bleu(hypotheses: Sequence[str], references: Sequence[str] | Sequence[Sequence[str]],
         layout: str | None = None) -> float:
    """Corpus BLEU (sacrebleu's default 13a tokenisation, as its signature states) of detokenised
    hypotheses (a list of strings, one per segment; a plain string is refused, not split into
    characters).

    ``references``, by ``layout``:

    - a flat list of strings: one reference per hypothesis (``layout`` not needed);
    - ``layout="streams"`` (sacreBLEU's convention): a list of reference streams, stream k a list
      with one reference per hypothesis, so ``references[k][i]`` is the k-th reference of
      hypothesis i;
    - ``layout="per_hypothesis"``: a list with one list of references per hypothesis,
      ``references[i][k]`` (every hypothesis with the same number of references).

    With nested lists and ``layout=None`` the layout is read from the lengths: lists as long as
    the hypotheses are streams; one list per hypothesis of another length is the per-hypothesis
    layout and is refused with this explanation. When both readings fit (as many streams as
    hypotheses) ``layout`` must be given.
    """
    import sacrebleu

    if layout not in (None, "streams", "per_hypothesis"):
        raise ValueError(f"layout: expected None, 'streams' or 'per_hypothesis', got {layout!r}")
    if isinstance(hypotheses, (str, bytes)) or not isinstance(hypotheses, Sequence):
        raise TypeError(f"hypotheses: expected a list of strings (one per segment), got {type(hypotheses).__name__}"
                        + (" (wrap a single sentence in a list)" if isinstance(hypotheses, str) else ""))
    if isinstance(references, (str, bytes)) or not isinstance(references, Sequence):
        raise TypeError(f"references: expected a list of strings (one per hypothesis) or of {_STREAMS_HELP}, got "
                        f"{type(references).__name__}"
                        + (" (wrap a single reference in a list)" if isinstance(references, str) else ""))
    hyps = list(hypotheses)
    if not all(isinstance(h, str) for h in hyps):
        raise TypeError("hypotheses: expected a list of strings")
    if not hyps:
        raise ValueError("hypotheses: expected at least one hypothesis, got an empty list")
    refs = list(references)
    if not refs:
        raise ValueError(f"references: expected one reference per hypothesis ({len(hyps)}) or {_STREAMS_HELP}, got "
                         "an empty list")
    if all(isinstance(r, str) for r in refs):
        if layout == "per_hypothesis":
            raise ValueError("references: layout='per_hypothesis' expects one list of references per hypothesis, "
                             "got a flat list of strings")
        streams = [refs]
    elif any(isinstance(r, (str, bytes)) or not isinstance(r, Sequence) for r in refs):
        raise TypeError(f"references: expected a flat list of strings or a list of lists of strings ({_STREAMS_HELP}), "
                        "got a mix")
    else:
        lists = [list(r) for r in refs]
        fits_streams = all(len(r) == len(hyps) for r in lists)
        fits_per_hyp = len(lists) == len(hyps) and len({len(r) for r in lists}) == 1
        if layout is None:
            if fits_streams and fits_per_hyp and len(hyps) > 1:
                raise ValueError(f"references: {len(lists)} lists of {len(hyps)} references for {len(hyps)} "
                                 "hypotheses read both as reference streams and as one list per hypothesis; pass "
                                 "layout='streams' (references[k][i] is the k-th reference of hypothesis i) or "
                                 "layout='per_hypothesis' (references[i][k])")
            if not fits_streams and len(lists) == len(hyps):
                raise ValueError(f"references: expected {_STREAMS_HELP}; got {len(lists)} lists of lengths "
                                 f"{[len(r) for r in lists][:5]}, which reads as one list of references per "
                                 "hypothesis: pass layout='per_hypothesis' for that layout")
            layout = "streams"
        if layout == "per_hypothesis":
            if len(lists) != len(hyps):
                raise ValueError(f"references: layout='per_hypothesis' expects one list of references per hypothesis "
                                 f"({len(hyps)}), got {len(lists)} lists")
            if len({len(r) for r in lists}) != 1 or not lists[0]:
                raise ValueError(f"references: layout='per_hypothesis' expects the same number (>= 1) of references "
                                 f"for every hypothesis, got {[len(r) for r in lists][:5]}")
            streams = [list(s) for s in zip(*lists)]
        else:
            streams = lists
    for k, stream in enumerate(streams):
        if len(stream) != len(hyps) or not all(isinstance(r, str) for r in stream):
            raise ValueError(f"references: stream {k} must hold one string per hypothesis ({len(hyps)}), got "
                             f"{len(stream)} entries ({_STREAMS_HELP})")
    return float(sacrebleu.corpus_bleu(hyps, streams).score)
