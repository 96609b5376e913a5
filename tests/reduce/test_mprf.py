"""Modular parameter reduction (reduce_ with MPRFConfig): each group applied physically equals the
masked / factorized model it stands for; the plan's dict form; bad plans name the field."""

import copy

import pytest
import torch
from torch import nn

from edgegen.models import GPT2Config
from edgegen.prune import FFNConfig, HeadConfig, MagnitudeConfig, prune_
from edgegen.reduce import (EmbeddingFactorConfig, FactorizedEmbedding, LowRankConfig, LowRankLinear, MPRFConfig,
                            ReduceConfig, reduce_)

from tests.helpers import seeded_gpt2

CFG = GPT2Config(vocab_size=199, n_positions=32, n_embd=48, n_layer=2, n_head=4)


def model(seed=0):
    return seeded_gpt2(CFG, seed)


IDX = torch.randint(0, 199, (2, 12), generator=torch.Generator().manual_seed(3))


def test_heads_and_ffn_removed_physically_equal_the_masked_model():
    masked = model()
    prune_(masked, HeadConfig(0.5))
    prune_(masked, FFNConfig(0.75))
    small = reduce_(model(), MPRFConfig(heads=HeadConfig(0.5), ffn=FFNConfig(0.75)))
    assert small.config.head_counts == (2, 2) and small.config.inner_sizes == (48, 48)
    assert small.h[0].attn.c_attn.weight.shape == (3 * 24, 48) and small.h[1].mlp.c_fc.weight.shape == (48, 48)
    with torch.no_grad():
        torch.testing.assert_close(small(IDX), masked(IDX), rtol=1e-5, atol=1e-5)


def test_every_group_applied_in_order_equals_the_steps_one_by_one():
    plan = MPRFConfig(heads=HeadConfig(0.25), ffn=FFNConfig(0.5), rank=LowRankConfig(rank=8),
                      embedding=EmbeddingFactorConfig(rank=16))
    assert plan.groups() == ["heads", "ffn", "rank", "embedding"]
    whole = reduce_(model(), plan)
    steps = model()
    for cfg in (MPRFConfig(heads=HeadConfig(0.25)), MPRFConfig(ffn=FFNConfig(0.5)), LowRankConfig(rank=8),
                EmbeddingFactorConfig(rank=16)):
        reduce_(steps, cfg)
    with torch.no_grad():
        torch.testing.assert_close(whole(IDX), steps(IDX), rtol=0, atol=0)
    assert isinstance(whole.h[0].attn.c_attn, LowRankLinear) and isinstance(whole.wte, FactorizedEmbedding)
    assert whole.num_parameters() < model().num_parameters() / 2
    # the reduced model generates the same tokens with and without the cache
    assert torch.equal(whole.generate(IDX[:, :3], 6, greedy=True), whole.generate(IDX[:, :3], 6, greedy=True,
                                                                                 use_cache=False))


def test_the_plan_round_trips_through_its_dict_form():
    plan = MPRFConfig(ffn=FFNConfig(0.5, scope="global"), embedding=EmbeddingFactorConfig(energy=0.8))
    d = plan.to_dict()
    assert d["ffn"]["kind"] == "FFNConfig" and d["heads"] is None
    assert ReduceConfig.from_dict(d) == plan
    small = reduce_(model(), d)
    assert small.config.inner_sizes is not None and small.config.embedding_rank is not None


def test_a_filter_selects_the_layers_of_every_group():
    small = reduce_(model(), MPRFConfig(ffn=FFNConfig(0.5), rank=LowRankConfig(rank=8)),
                    filter_fn=lambda m, n: n.startswith("h.0") or n == "")
    assert small.config.inner_sizes == (96, 192)
    assert isinstance(small.h[0].mlp.c_proj, LowRankLinear) and isinstance(small.h[1].mlp.c_fc, nn.Linear)


@pytest.mark.parametrize("make,match", [
    (lambda: MPRFConfig(), "at least one of heads, ffn, rank, embedding"),
    (lambda: MPRFConfig(heads=FFNConfig(0.5)), "heads: expected a HeadConfig"),
    (lambda: ReduceConfig.from_dict({"kind": "MPRFConfig", "attention": {"kind": "HeadConfig", "amount": 0.5}}),
     "attention: unknown key"),
    (lambda: ReduceConfig.from_dict({"kind": "MPRFConfig", "rank": {"kind": "LowRankConfig", "rank": 0}}),
     "rank"),
    (lambda: reduce_(model(), MPRFConfig(rank=LowRankConfig(rank=49))), r"rank\.rank: 49 exceeds"),
    (lambda: reduce_(model(), MPRFConfig(embedding=EmbeddingFactorConfig(rank=49))), r"embedding\.rank: 49 exceeds"),
    (lambda: reduce_(prune_(model(), MagnitudeConfig(0.5)), MPRFConfig(ffn=FFNConfig(0.5))), "finalize_"),
], ids=["empty", "wrong-type", "unknown-group", "rank0", "rank-above-min", "embedding-rank-above-min", "masked-model"])
def test_bad_plans_name_the_field(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_the_model_is_unchanged_when_a_later_group_fails():
    m = model()
    before = copy.deepcopy(m.state_dict())
    with pytest.raises(ValueError, match=r"rank\.rank: 30 exceeds min\(in, out\) = 24"):  # c_proj is 24 wide by then
        reduce_(m, MPRFConfig(heads=HeadConfig(0.5), rank=LowRankConfig(rank=30)))
    assert m.config.head_counts is None and m.h[0].attn.c_attn.weight.shape == (144, 48)
    assert m.state_dict().keys() == before.keys()
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())


def test_modules_a_plan_leaves_alone_keep_their_identity_and_hooks():
    m = model()
    wpe, ln_f, c_fc = m.wpe, m.ln_f, m.h[0].mlp.c_fc
    seen = []
    handle = ln_f.register_forward_hook(lambda mod, args, out: seen.append(1))
    reduce_(m, MPRFConfig(heads=HeadConfig(0.5), embedding=EmbeddingFactorConfig(rank=16)))
    assert m.wpe is wpe and m.ln_f is ln_f and m.h[0].mlp.c_fc is c_fc  # untouched groups: the same objects
    with torch.no_grad():
        m(IDX)
    assert seen == [1]
    handle.remove()
    with torch.no_grad():
        m(IDX)
    assert seen == [1]


def test_a_group_that_would_change_nothing_is_an_error():
    m = model()
    before = copy.deepcopy(m.state_dict())
    # Rank 47 of a 199 x 48 table holds more than the table itself: the embedding group is idle.
    with pytest.raises(ValueError, match="embedding: nothing to reduce"):
        reduce_(m, MPRFConfig(heads=HeadConfig(0.5), embedding=EmbeddingFactorConfig(rank=47)))
    assert m.config.head_counts is None and all(torch.equal(before[k], v) for k, v in m.state_dict().items())
    with pytest.raises(ValueError, match="nothing to reduce"):
        reduce_(model(), EmbeddingFactorConfig(rank=47))  # the same group alone says the same
