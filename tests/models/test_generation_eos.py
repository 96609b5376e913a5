"""End of sequence in the generation loops: a row that produces ``eos_token_id`` is padded with
it, generation stops once every row has, and the tokens before that are those of generation
without it (the reference: generate without the end token, then cut and pad by hand)."""

import pytest
import torch

from edgegen.models import GPT2, GPT2Config, add_early_exits, generate_dynamic
from edgegen.models.early_exit import EarlyExitConfig
from edgegen.quant import DynamicPrecisionConfig, quantize_


def _model(seed=0):
    torch.manual_seed(seed)
    return GPT2(GPT2Config(vocab_size=7, n_positions=48, n_embd=16, n_layer=2, n_head=2)).eval()


def _cut_and_pad(full: torch.Tensor, prompt_len: int, eos: int) -> torch.Tensor:
    """What EOS stopping must give, from generation without it: each row's tokens after its first
    ``eos`` become ``eos``; the columns after the step where the last row ended are dropped."""
    out = full.clone()
    ends = []
    for r in range(out.shape[0]):
        hits = (out[r, prompt_len:] == eos).nonzero()
        if len(hits):
            first = prompt_len + int(hits[0])
            out[r, first:] = eos
            ends.append(first + 1)
        else:
            ends.append(out.shape[1])
    return out[:, :max(ends)]


def _prompt(seed=1, batch=3, length=4):
    return torch.randint(0, 7, (batch, length), generator=torch.Generator().manual_seed(seed))


def _eos_that_ends_some_rows(full, prompt_len):
    """A token that some, but not every, row produces at different steps (7 tokens, 40 steps)."""
    for tok in range(7):
        firsts = [(row[prompt_len:] == tok).nonzero() for row in full]
        if any(len(f) for f in firsts) and len({int(f[0]) if len(f) else -1 for f in firsts}) > 1:
            return tok
    pytest.fail("no token ends the rows at different steps; change the seed")


def test_gpt2_greedy_and_sampled_match_cut_and_padded_generation():
    model, idx = _model(), _prompt()
    for kwargs in ({"greedy": True}, {"temperature": 1.3, "top_k": 5}):
        full = model.generate(idx, 40, generator=torch.Generator().manual_seed(5), **kwargs)
        eos = _eos_that_ends_some_rows(full, idx.shape[1])
        for use_cache in (True, False):
            got = model.generate(idx, 40, generator=torch.Generator().manual_seed(5), use_cache=use_cache,
                                 eos_token_id=eos, **kwargs)
            assert torch.equal(got, _cut_and_pad(full, idx.shape[1], eos)), (kwargs, use_cache)


def test_generation_stops_when_every_row_has_ended():
    model, idx = _model(), _prompt(batch=2)
    full = model.generate(idx, 40, greedy=True)
    T = idx.shape[1]
    for r in range(2):  # each row alone, ended by its own first token: one step
        got = model.generate(idx[r:r + 1], 40, greedy=True, eos_token_id=int(full[r, T]))
        assert torch.equal(got, full[r:r + 1, :T + 1])
    short = model.generate(idx, 3, greedy=True)  # 2 rows x 3 steps: some of the 7 tokens never come
    never = next(t for t in range(7) if not (short[:, T:] == t).any())
    assert torch.equal(model.generate(idx, 3, greedy=True, eos_token_id=never), short)
    empty = torch.empty(0, 4, dtype=torch.long)
    assert model.generate(empty, 5, greedy=True, eos_token_id=0).shape == (0, 4)  # no row to continue
    assert model.generate(empty, 5, greedy=True).shape == (0, 9)


def test_early_exit_and_dynamic_precision_stop_the_same_way():
    idx = _prompt()
    ee = add_early_exits(_model(), EarlyExitConfig(layers=(1,)))
    full, stats_full = ee.generate(idx, 40, threshold=0.5)
    eos = _eos_that_ends_some_rows(full, idx.shape[1])
    got, stats = ee.generate(idx, 40, threshold=0.5, eos_token_id=eos)
    want = _cut_and_pad(full, idx.shape[1], eos)
    assert torch.equal(got, want)
    steps = want.shape[1] - idx.shape[1]
    assert torch.equal(stats.layers, stats_full.layers[:, :steps])

    model = _model(2)
    cfg = DynamicPrecisionConfig(threshold=0.3)
    quantize_(model, cfg)
    full, info_full = generate_dynamic(model, idx, 40, cfg)
    eos = _eos_that_ends_some_rows(full, idx.shape[1])
    got, info = generate_dynamic(model, idx, 40, cfg, eos_token_id=eos)
    want = _cut_and_pad(full, idx.shape[1], eos)
    assert torch.equal(got, want)
    steps = want.shape[1] - idx.shape[1]
    assert info["steps"] == steps and info["precision"] == info_full["precision"][:steps]


@pytest.mark.parametrize("bad", [-1, 7, True, 1.0, "2"], ids=["negative", "vocab-size", "bool", "float", "str"])
def test_a_bad_end_token_is_refused_before_generating(bad):
    model, idx = _model(), _prompt()
    with pytest.raises(ValueError, match=r"eos_token_id: expected None or a token id in \[0, 7\), got "):
        model.generate(idx, 4, greedy=True, eos_token_id=bad)
    ee = add_early_exits(_model(), EarlyExitConfig(layers=(1,)))
    with pytest.raises(ValueError, match=r"eos_token_id: expected None or a token id in \[0, 7\)"):
        ee.generate(idx, 4, eos_token_id=bad)
    cfg = DynamicPrecisionConfig(threshold=0.3)
    quantize_(model, cfg)
    with pytest.raises(ValueError, match=r"eos_token_id: expected None or a token id in \[0, 7\)"):
        generate_dynamic(model, idx, 4, cfg, eos_token_id=bad)
