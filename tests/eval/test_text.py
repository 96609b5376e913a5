"""Perplexity against the Hugging Face sliding-window procedure run on a transformers GPT-2 (a
different implementation of the same loop and of the model), and against direct cross-entropy;
BLEU equals sacrebleu; distinct-n and repetition rate against hand counts; bad input named."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from edgegen.eval import bleu, distinct_n, perplexity, repetition_rate
from edgegen.models.gpt2 import GPT2, GPT2Config


@pytest.fixture(scope="module")
def hf_model():
    from transformers import GPT2Config as HFConfig
    from transformers import GPT2LMHeadModel

    torch.manual_seed(0)
    return GPT2LMHeadModel(HFConfig(vocab_size=97, n_positions=64, n_embd=32, n_layer=2, n_head=2)).eval()


def _hf_procedure(model, ids, max_length, stride):
    """The loop of Hugging Face's "Perplexity of fixed-length models" guide: labels -100 outside
    each window's new tokens, the model's own loss (a mean over its shifted labels) weighted back
    by the number of labels that loss actually averaged. (The guide subtracts one token per window
    for the shift, which is exact only when a window's first label is a new token: with
    overlapping windows it is not, and that count would drop a scored token per window.)"""
    seq_len = ids.size(1)
    nll_sum, n_tokens, prev_end = 0.0, 0, 0
    for begin in range(0, seq_len, stride):
        end = min(begin + max_length, seq_len)
        trg_len = end - prev_end
        input_ids = ids[:, begin:end]
        target_ids = input_ids.clone()
        target_ids[:, :-trg_len] = -100
        with torch.no_grad():
            loss = model(input_ids, labels=target_ids).loss
        num_loss_tokens = (target_ids[:, 1:] != -100).sum().item()  # what the shifted loss averaged
        nll_sum += loss.double().item() * num_loss_tokens
        n_tokens += num_loss_tokens
        prev_end = end
        if end == seq_len:
            break
    return math.exp(nll_sum / n_tokens), n_tokens


@pytest.mark.parametrize("context,stride", [(64, 64), (64, 32), (48, 17), (16, 1), (64, 5)],
                         ids=["disjoint", "half", "odd", "stride1", "stride5"])
def test_matches_the_hugging_face_procedure(hf_model, context, stride):
    ids = torch.randint(0, 97, (1, 150), generator=torch.Generator().manual_seed(1))
    ref, n_ref = _hf_procedure(hf_model, ids, context, stride)
    got = perplexity(hf_model, ids[0], context=context, stride=stride)
    assert got.tokens_scored == n_ref
    # Disjoint windows cannot score a window's first token (no context inside it); overlapping
    # ones score every token after the first.
    assert n_ref == (147 if context == stride == 64 else 149)
    assert got.perplexity == pytest.approx(ref, rel=1e-5)
    assert got.label == "full"


def test_single_window_is_plain_cross_entropy():
    model = GPT2(GPT2Config(vocab_size=61, n_positions=128, n_embd=32, n_layer=2, n_head=2)).eval()
    ids = torch.randint(0, 61, (100,), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        logits = model(ids[None])[0]
    expected = math.exp(F.cross_entropy(logits[:-1].double(), ids[1:]).item())
    got = perplexity(model, ids, context=128, stride=64)
    assert got.windows == 1 and got.tokens_scored == 99
    # Against the exact float64 cross-entropy: the float32 per-token NLLs are within ~1e-7 each.
    assert got.perplexity == pytest.approx(expected, rel=2e-6)
    # Against the same float32 arithmetic (log-sum-exp minus the target logit, summed in float64):
    # equal to rounding.
    nll32 = torch.logsumexp(logits[:-1], -1) - logits[:-1].gather(1, ids[1:, None])[:, 0]
    assert got.perplexity == pytest.approx(math.exp(nll32.double().sum().item() / 99), rel=1e-9)
    prefix = perplexity(model, ids, context=128, stride=64, max_tokens=40)
    assert prefix.label == "first 40 tokens" and prefix.tokens_scored == 39


def test_perplexity_bad_input(hf_model):
    ids = torch.randint(0, 97, (50,))
    with pytest.raises(ValueError, match="context: expected at most the model's n_positions"):
        perplexity(hf_model, ids, context=128, stride=64)
    with pytest.raises(ValueError, match="stride"):
        perplexity(hf_model, ids, context=32, stride=33)
    with pytest.raises(ValueError, match="at least 2 tokens"):
        perplexity(hf_model, ids[:1], context=32, stride=16)
    with pytest.raises(ValueError, match="tokens: expected a 1-D"):
        perplexity(hf_model, ids.reshape(5, 10), context=32, stride=16)
    with pytest.raises(TypeError, match="integer token ids"):
        perplexity(hf_model, ids.float(), context=32, stride=16)


def test_bleu_equals_sacrebleu():
    import sacrebleu

    hyps = ["the cat sat on the mat", "a quick brown fox jumps", "hello world"]
    refs = ["the cat is on the mat", "the quick brown fox jumped", "hello there world"]
    assert bleu(hyps, refs) == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs]).score, rel=1e-12)
    refs2 = [refs, ["a cat sat on a mat", "quick brown foxes jump", "hello world"]]
    assert bleu(hyps, refs2) == pytest.approx(sacrebleu.corpus_bleu(hyps, refs2).score, rel=1e-12)
    with pytest.raises(ValueError, match="references"):
        bleu(hyps, refs[:2])


def test_distinct_and_repetition_by_hand():
    samples = ["a b a b a", "c d e"]
    # bigrams: (a,b) (b,a) (a,b) (b,a) | (c,d) (d,e): 4 distinct of 6.
    assert distinct_n(samples, 2) == pytest.approx(4 / 6)
    assert distinct_n([[1, 2, 3], [1, 2, 3]], 3) == pytest.approx(1 / 2)
    assert distinct_n(["a"], 2) == 0.0
    # seq-rep-2: sample 1 has 4 bigrams, 2 distinct -> 0.5; sample 2 none repeated -> 0.
    assert repetition_rate(samples, 2) == pytest.approx(0.25)
    assert repetition_rate([torch.tensor([5, 5, 5, 5])], 1) == pytest.approx(0.75)
    with pytest.raises(ValueError, match="n:"):
        distinct_n(samples, 0)
    with pytest.raises(TypeError, match="samples"):
        repetition_rate("a b c")
