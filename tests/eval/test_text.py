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


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int8, torch.int16, torch.int32],
                         ids=["uint8", "int8", "int16", "int32"])
def test_perplexity_accepts_any_integer_dtype(hf_model, dtype):
    ids = torch.randint(0, 97, (50,), generator=torch.Generator().manual_seed(0))
    assert perplexity(hf_model, ids.to(dtype), context=32, stride=16) == perplexity(hf_model, ids, context=32,
                                                                                     stride=16)
    with pytest.raises(TypeError, match="tokens: expected integer token ids .* got torch.bool"):
        perplexity(hf_model, ids > 40, context=32, stride=16)


class _FixedLogits(torch.nn.Module):
    """Logits that are all zero (uniform over ``vocab``), optionally with a NaN at one position;
    counts its calls."""

    def __init__(self, vocab=10, nan_at=None, with_config=True):
        super().__init__()
        self.vocab, self.nan_at, self.calls = vocab, nan_at, 0
        self.w = torch.nn.Parameter(torch.zeros(1))
        if with_config:
            self.config = GPT2Config(vocab_size=vocab, n_positions=64)

    def forward(self, ids):
        self.calls += 1
        out = torch.zeros(1, ids.shape[1], self.vocab)
        if self.nan_at is not None and self.nan_at < ids.shape[1]:
            out[0, self.nan_at, 2] = float("nan")
        return out


def test_perplexity_of_uniform_logits_is_the_vocabulary_size():
    got = perplexity(_FixedLogits(10), torch.randint(0, 10, (20,)), context=8, stride=4)
    assert got.perplexity == pytest.approx(10.0, rel=1e-6)  # exp(log 10), in closed form


@pytest.mark.parametrize("with_config", [True, False], ids=["config", "logits"])
@pytest.mark.parametrize("bad, match", [
    (10, r"tokens: expected token ids below the vocabulary size 10 \(the model's (config.vocab_size|logits)\), got 10 "
         "at position 7"),
    (-3, "tokens: expected token ids >= 0, got -3 at position 7"),
], ids=["too-big", "negative"])
def test_perplexity_refuses_ids_outside_the_vocabulary(with_config, bad, match):
    ids = torch.randint(0, 10, (20,), generator=torch.Generator().manual_seed(0))
    ids[7] = bad
    model = _FixedLogits(10, with_config=with_config)
    with pytest.raises(ValueError, match=match):
        perplexity(model, ids, context=8, stride=4)
    # Before any token is scored: not at all where the size is known up front (or for negative
    # ids), after the first window's logits give it otherwise.
    assert model.calls == (1 if bad >= 0 and not with_config else 0)


def test_perplexity_refuses_non_finite_logits():
    ids = torch.randint(0, 10, (20,), generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="model: its output logits hold NaN values.*token 4"):
        perplexity(_FixedLogits(10, nan_at=3), ids, context=8, stride=4)


def test_bleu_equals_sacrebleu():
    import sacrebleu

    hyps = ["the cat sat on the mat", "a quick brown fox jumps", "hello world"]
    refs = ["the cat is on the mat", "the quick brown fox jumped", "hello there world"]
    assert bleu(hyps, refs) == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs]).score, rel=1e-12)
    refs2 = [refs, ["a cat sat on a mat", "quick brown foxes jump", "hello world"]]
    assert bleu(hyps, refs2) == pytest.approx(sacrebleu.corpus_bleu(hyps, refs2).score, rel=1e-12)
    with pytest.raises(ValueError, match="references"):
        bleu(hyps, refs[:2])


def test_bleu_refuses_plain_strings_and_empty_input():
    import sacrebleu

    # A string would be iterated per character: 0.0 instead of the word-level score.
    for hyp, ref in (("the cat sat on", ["the cat sat in"]), (["the cat sat on"], "the cat sat in")):
        with pytest.raises(TypeError, match="hypotheses|references") as exc:
            bleu(hyp, ref)
        assert "wrap a single" in str(exc.value)
    assert bleu(["the cat sat on"], ["the cat sat in"]) == pytest.approx(
        sacrebleu.corpus_bleu(["the cat sat on"], [["the cat sat in"]]).score, rel=1e-12)
    assert bleu(["the cat sat on"], ["the cat sat in"]) == pytest.approx(59.4603557501, rel=1e-9)
    with pytest.raises(ValueError, match="hypotheses: expected at least one hypothesis"):
        bleu([], [])
    with pytest.raises(ValueError, match="references: expected one reference per hypothesis"):
        bleu(["a b c"], [])


def test_bleu_reference_layouts():
    import sacrebleu

    hyps = ["the cat sat on the mat", "hello there world", "a quick brown fox"]
    per_hyp = [["the cat sat on the mat", "a cat sat on a mat"], ["hello there world", "hi world"],
               ["the quick brown fox", "a fast brown fox"]]
    streams = [list(s) for s in zip(*per_hyp)]
    want = sacrebleu.corpus_bleu(hyps, streams).score
    assert bleu(hyps, streams) == pytest.approx(want, rel=1e-12)
    assert bleu(hyps, per_hyp, layout="per_hypothesis") == pytest.approx(want, rel=1e-12)
    # One list per hypothesis, not read as streams: refused with the layout explained.
    with pytest.raises(ValueError, match="one list of references per hypothesis: pass layout='per_hypothesis'"):
        bleu(hyps, per_hyp)
    # Two hypotheses with two references each fit both readings: the layout must be named.
    h2, p2 = hyps[:2], [r[:2] for r in per_hyp[:2]]
    with pytest.raises(ValueError, match="read both as reference streams and as one list per hypothesis"):
        bleu(h2, p2)
    assert bleu(h2, p2, layout="per_hypothesis") == pytest.approx(100.0, rel=1e-12)
    assert bleu(h2, p2, layout="streams") == pytest.approx(sacrebleu.corpus_bleu(h2, p2).score, rel=1e-12)
    with pytest.raises(ValueError, match="layout: expected"):
        bleu(h2, p2, layout="rows")
    with pytest.raises(ValueError, match="same number"):
        bleu(hyps, [per_hyp[0], per_hyp[1], per_hyp[2][:1]], layout="per_hypothesis")


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


def test_one_token_sequence_is_not_a_list_of_samples():
    for f in (distinct_n, repetition_rate):
        with pytest.raises(ValueError, match=r"samples: .*sample 0 has type int \(wrap one token sequence"):
            f([1, 2, 3])
    assert distinct_n([[1, 2, 3]], 1) == 1.0
