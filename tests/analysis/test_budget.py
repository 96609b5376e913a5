"""plan_reduction: the chosen plan meets the budget and is the greedy walk's choice, checked
against a brute-force walk over the same ladders; the fidelity score; bad budgets."""

import copy
import itertools
import math

import pytest
import torch

from edgegen.analysis import default_ladders, fidelity_score, plan_reduction
from edgegen.models import GPT2Config
from edgegen.prune import FFNConfig, HeadConfig
from edgegen.reduce import EmbeddingFactorConfig, LowRankConfig, MPRFConfig, reduce_

from tests.helpers import seeded_gpt2

CFG = GPT2Config(vocab_size=601, n_positions=32, n_embd=48, n_layer=2, n_head=4)


def model(seed=0):
    return seeded_gpt2(CFG, seed)


def test_the_plan_meets_a_parameter_budget_and_leaves_the_model_alone():
    m = model()
    before = m.num_parameters()
    budget = int(0.6 * before)
    inputs = m.example_inputs()  # random ids: the same ones for the plan and the check
    plan = plan_reduction(m, max_params=budget, example_inputs=inputs)
    assert m.num_parameters() == before and m.config.head_counts is None
    reduced = reduce_(copy.deepcopy(m), plan.config)
    assert reduced.num_parameters() == plan.cost <= budget
    assert plan.base_cost == before and plan.base_score == 0.0
    assert plan.score == pytest.approx(fidelity_score(m, inputs)(reduced), rel=1e-9)
    taken = [s for s in plan.steps if s.taken]
    assert all(a.cost > b.cost for a, b in zip(taken, taken[1:]))  # every move saved something
    assert taken[-1].config == plan.config


def test_each_step_takes_the_move_with_the_best_saving_per_score_lost():
    m = model()
    inputs = m.example_inputs()
    ladders = {"ffn": [FFNConfig(0.5)], "embedding": [EmbeddingFactorConfig(rank=8)]}
    score = fidelity_score(m, inputs)
    base = m.num_parameters()
    saved, merit = {}, {}
    for name, cfg in (("ffn", MPRFConfig(ffn=FFNConfig(0.5))), ("embedding", MPRFConfig(embedding=ladders["embedding"][0]))):
        r = reduce_(copy.deepcopy(m), cfg)
        saved[name] = base - r.num_parameters()
        merit[name] = saved[name] / max(-score(r), 1e-12)
    budget = base - max(saved.values()) - 1  # no single move meets it: the first move is chosen by merit
    plan = plan_reduction(m, max_params=budget, ladders=ladders, example_inputs=inputs)
    taken = [s for s in plan.steps if s.taken]
    assert len(taken) == 3 and taken[1].config.groups() == [max(merit, key=merit.get)]
    assert plan.config.groups() == ["ffn", "embedding"] and plan.cost <= budget


def test_the_last_move_takes_the_best_score_within_budget_not_the_largest_saving():
    """Both single moves meet the budget; the embedding saves more, the FFN loses less: FFN wins."""
    m = model()
    inputs = m.example_inputs()
    ladders = {"ffn": [FFNConfig(0.5)], "embedding": [EmbeddingFactorConfig(rank=8)]}
    score = fidelity_score(m, inputs)
    ffn = reduce_(copy.deepcopy(m), MPRFConfig(ffn=FFNConfig(0.5)))
    emb = reduce_(copy.deepcopy(m), MPRFConfig(embedding=EmbeddingFactorConfig(rank=8)))
    assert emb.num_parameters() < ffn.num_parameters() and score(ffn) > score(emb)  # the case this test needs
    plan = plan_reduction(m, max_params=m.num_parameters() - 1, ladders=ladders, example_inputs=inputs)
    assert plan.config == MPRFConfig(ffn=FFNConfig(0.5))
    assert plan.cost == ffn.num_parameters() and plan.score == pytest.approx(score(ffn), rel=1e-12)


BRUTE_LADDERS = {"ffn": [FFNConfig(0.25), FFNConfig(0.5)], "rank": [LowRankConfig(fraction=1 / 2)],
                 "embedding": [EmbeddingFactorConfig(rank=16), EmbeddingFactorConfig(rank=8)]}


def _config(levels):
    chosen = {g: BRUTE_LADDERS[g][k - 1] for g, k in zip(BRUTE_LADDERS, levels) if k}
    return MPRFConfig(**chosen) if chosen else None


@pytest.fixture(scope="module")
def every_plan():
    """The model, its inputs, and (parameters, fidelity score) of every combination of rungs on
    BRUTE_LADDERS, each applied by reduce_ to a copy of the model."""
    m = model()
    inputs = m.example_inputs()
    score = fidelity_score(m, inputs)
    table = {}
    for levels in itertools.product(*[range(len(r) + 1) for r in BRUTE_LADDERS.values()]):
        r = m if _config(levels) is None else reduce_(copy.deepcopy(m), _config(levels))
        table[levels] = (r.num_parameters(), score(r))
    return m, inputs, table


def _brute_walk(table, budget):
    """The walk the docstring describes, over the table: from the unreduced model, one rung up the
    group with the largest saving per score lost, until some move meets the budget; of those, the
    best-scoring. The levels taken, the unreduced model's first."""
    levels = (0,) * len(BRUTE_LADDERS)
    path = [levels]
    while table[levels][0] > budget:
        moves = [levels[:i] + (levels[i] + 1,) + levels[i + 1:] for i, rungs in enumerate(BRUTE_LADDERS.values())
                 if levels[i] < len(rungs)]
        within = [c for c in moves if table[c][0] <= budget]
        if within:
            path.append(max(within, key=lambda c: table[c][1]))
            break
        cost, sc = table[levels]
        levels = max(moves, key=lambda c: (math.inf if sc - table[c][1] <= 0 < cost - table[c][0]
                                           else (cost - table[c][0]) / max(sc - table[c][1], 1e-12)))
        path.append(levels)
    return path


@pytest.mark.parametrize("fraction", [0.9, 0.75, 0.55, 0.45], ids=["90pct", "75pct", "55pct", "45pct"])
def test_the_plan_equals_a_brute_force_walk_over_the_same_ladders(every_plan, fraction):
    m, inputs, table = every_plan
    budget = int(fraction * m.num_parameters())
    path = _brute_walk(table, budget)
    cost, score = table[path[-1]]
    plan = plan_reduction(m, max_params=budget, ladders=BRUTE_LADDERS, example_inputs=inputs)
    assert [s.config for s in plan.steps if s.taken] == [_config(levels) for levels in path]
    assert plan.config == _config(path[-1]) and plan.cost == cost <= budget
    assert plan.score == pytest.approx(score, rel=1e-12)


def test_groups_a_model_lacks_are_recorded_and_never_taken():
    from edgegen.models import DCGANConfig, DCGANGenerator

    torch.manual_seed(0)
    g = DCGANGenerator(DCGANConfig(nz=16, ngf=32, conv="depthwise_separable")).eval()
    z = torch.randn(2, 16)
    with torch.no_grad():
        ref = g(z)
    before = sum(p.numel() for p in g.parameters())
    plan = plan_reduction(g, max_params=before - 1, example_inputs=(z,),
                          score=lambda mod: -float((mod(z) - ref).pow(2).mean()))
    assert plan.config.groups() == ["rank"]  # the 1x1 convolutions; no heads, FFN blocks or embedding
    failed = {s.config.groups()[-1]: s.error for s in plan.steps if s.error}
    assert set(failed) == {"heads", "ffn", "embedding"} and all(failed.values())
    assert sum(p.numel() for p in g.parameters()) == before and not g.training


def test_the_fidelity_score_is_zero_for_the_model_itself_and_negative_kl_otherwise():
    m = model()
    inputs = m.example_inputs()
    score = fidelity_score(m, inputs)
    assert score(m) == 0.0
    other = reduce_(copy.deepcopy(m), LowRankConfig(rank=4))
    with torch.no_grad():
        p = torch.log_softmax(m(*inputs).double(), -1)
        q = torch.log_softmax(other(*inputs).double(), -1)
    kl = (p.exp() * (p - q)).sum(-1).mean()
    assert score(other) == pytest.approx(-float(kl), rel=1e-9)


def test_a_latency_budget_walks_the_same_way_on_measured_latencies(monkeypatch):
    """Latencies replaced by a deterministic stand-in proportional to the parameters (real timings
    on a shared machine are noise at this size): the latency walk must then equal the parameter walk."""
    import importlib
    import types

    prof = importlib.import_module("edgegen.eval.profile")  # the module (the package re-exports a function of that name)

    calls = []

    def fake(model, inputs, repeats, warmup, measure_memory):
        calls.append((repeats, measure_memory))
        return types.SimpleNamespace(latency_ms_p50=sum(p.numel() for p in model.parameters()) / 1e4)

    monkeypatch.setattr(prof, "profile", fake)
    m = model()
    budget = int(0.6 * m.num_parameters())
    by_params = plan_reduction(m, max_params=budget)
    by_latency = plan_reduction(m, max_latency_ms=budget / 1e4, latency_repeats=3)
    assert by_latency.config == by_params.config and by_latency.unit.startswith("ms")
    assert by_latency.cost == pytest.approx(by_params.cost / 1e4)
    assert calls and all(c == (3, False) for c in calls)
    with pytest.raises(ValueError, match="already meets"):  # no forced reduction when the model fits
        plan_reduction(m, max_latency_ms=1e9)


@pytest.mark.parametrize("kwargs,match", [
    (dict(), "give exactly one budget"),
    (dict(max_params=10, max_latency_ms=1.0), "give exactly one budget"),
    (dict(max_params=0), "max_params: expected an int >= 1"),
    (dict(max_latency_ms=-1.0), "max_latency_ms: expected a positive number"),
    (dict(max_params=10, ladders={"attention": []}), "ladders.attention: unknown group"),
    (dict(max_params=10, ladders={"heads": [HeadConfig(0.5)]}), r"max_params: 10 is below the cheapest plan"),
    (dict(max_params=10, ladders={"rank": None}), "ladders.rank: expected a list of settings from mild to strong, "
                                                  "got None"),
    (dict(max_latency_ms=1e-6, latency_repeats=0), "latency_repeats: expected an int >= 1, got 0"),
    (dict(max_params=10, score=lambda m: math.nan), r"score: expected a finite number \(higher is better\), got nan "
                                                    "for the unreduced model"),
], ids=["none", "both", "zero-params", "negative-latency", "unknown-group", "unreachable", "ladder-none",
        "zero-repeats", "nan-score"])
def test_bad_budgets_name_the_argument(kwargs, match):
    with pytest.raises(ValueError, match=match):
        plan_reduction(model(), **kwargs)


def test_the_default_score_asks_for_score_when_the_output_is_not_logits():
    from edgegen.models.vae import BetaVAE, BetaVAEConfig

    torch.manual_seed(0)
    vae = BetaVAE(BetaVAEConfig(latent_dim=8)).eval()
    before = sum(p.numel() for p in vae.parameters())
    with pytest.raises(ValueError, match=r"score: the default fidelity score compares output logits .* BetaVAE "
                                         r"\(reference\) returns a dict; pass score="):
        plan_reduction(vae, max_params=before // 2)  # was: AttributeError 'dict' object has no attribute 'double'
    with pytest.raises(ValueError, match="returns a dict; pass score="):
        fidelity_score(vae, vae.example_inputs())


def test_a_model_no_group_applies_to_is_named_not_the_budget():
    """A DCGAN with plain transposed convolutions: heads, FFN and embedding fail, the rank rung
    changes nothing (no Linear layer). Was: "max_params: ... is below the cheapest plan"."""
    from edgegen.models import DCGANConfig, DCGANGenerator

    torch.manual_seed(0)
    g = DCGANGenerator(DCGANConfig(nz=16, ngf=8)).eval()
    z = torch.randn(2, 16)
    before = sum(p.numel() for p in g.parameters())
    for score in (None, lambda mod: -float(mod(z).pow(2).mean())):
        with pytest.raises(ValueError, match=r"model: no reduction group applies to DCGANGenerator: every plan on the "
                                             r"ladders \(heads, ffn, rank, embedding\) failed or left the model "
                                             r"unchanged; the first error: heads\.model: no head-prunable"):
            plan_reduction(g, max_params=before - 1, example_inputs=(z,), score=score)


def test_a_rung_that_changes_nothing_never_reaches_the_returned_plan(monkeypatch):
    """A noisy latency reading can make a rung that removes nothing look like a saving; the plan
    returned must still be one reduce_ accepts (it refuses groups that change nothing)."""
    import importlib
    import types

    prof = importlib.import_module("edgegen.eval.profile")
    readings = iter([10.0, 9.0, 8.0, 2.0] + [1.0] * 50)  # the idle heads rung reads faster: taken first
    monkeypatch.setattr(prof, "profile", lambda *a, **k: types.SimpleNamespace(latency_ms_p50=next(readings)))
    two_heads = seeded_gpt2(GPT2Config(vocab_size=101, n_positions=32, n_embd=32, n_layer=2, n_head=2))
    ladders = {"heads": [HeadConfig(0.25)], "ffn": [FFNConfig(0.5)]}  # 0.25 of 2 heads rounds to none
    plan = plan_reduction(two_heads, max_latency_ms=2.5, ladders=ladders)
    assert sum(s.taken for s in plan.steps) == 3  # the unreduced model, the idle rung, then FFN
    assert all(s.config is None or "heads" not in s.config.groups() for s in plan.steps)
    assert plan.config.groups() == ["ffn"]
    reduce_(copy.deepcopy(two_heads), plan.config)  # accepted (was: "heads: nothing to reduce")


def test_a_score_that_turns_nan_on_every_reduced_model_is_named():
    m = model()
    base = m.num_parameters()
    with pytest.raises(ValueError, match=r"score: expected a finite number \(higher is better\), got nan for the "
                                         r"plan MPRFConfig\(.*, and for every other plan one step from the unreduced "
                                         r"model: none left to take"):
        plan_reduction(m, max_params=int(0.6 * base), score=lambda c: 0.0 if c.num_parameters() == base else math.nan)


def test_a_plan_whose_score_is_not_finite_is_recorded_and_never_taken():
    """Minus a validation loss that overflowed on the most aggressive plans: those plans are
    recorded with the reason and passed over; the best finite plan is returned (was: the whole
    search aborted with a ValueError)."""
    m = model()
    full = m.num_parameters()

    def score(c):
        n = c.num_parameters()
        return -math.inf if n < 0.8 * full else -(full - n) / full

    plan = plan_reduction(m, max_params=int(0.85 * full), score=score)
    assert math.isfinite(plan.score) and 0.8 * full <= plan.cost <= 0.85 * full
    assert reduce_(copy.deepcopy(m), plan.config).num_parameters() == plan.cost
    overflowed = [s for s in plan.steps if s.score == -math.inf]
    assert overflowed and all(not s.taken and s.config is not None and s.cost < 0.8 * full for s in overflowed)
    assert all(s.error.startswith("score: expected a finite number (higher is better), got -inf for the plan "
                                  "MPRFConfig(") for s in overflowed)
    assert all(not s.error for s in plan.steps if s.taken)


def _dcgan():
    from edgegen.models import DCGANConfig, DCGANGenerator

    return DCGANGenerator(DCGANConfig(nz=16, ngf=8))  # a config without n_embd


@pytest.mark.parametrize("make", [lambda: None, lambda: torch.nn.Sequential(torch.nn.Linear(8, 8)), _dcgan],
                         ids=["none", "no-config", "dcgan-config"])
def test_default_ladders_without_n_embd_use_energy_rungs_for_the_embedding(make):
    ladders = default_ladders(make())
    assert list(ladders) == ["heads", "ffn", "rank", "embedding"]
    assert ladders["embedding"] == [EmbeddingFactorConfig(energy=0.9), EmbeddingFactorConfig(energy=0.75),
                                    EmbeddingFactorConfig(energy=0.5)]
    assert [(c.energy, c.rank) for c in ladders["embedding"]] == [(0.9, None), (0.75, None), (0.5, None)]
    assert ladders["heads"] == [HeadConfig(0.25), HeadConfig(0.5), HeadConfig(0.75)]
    assert ladders["ffn"] == [FFNConfig(0.25), FFNConfig(0.5), FFNConfig(0.75)]
    assert [c.fraction for c in ladders["rank"]] == [pytest.approx(1 / 2), pytest.approx(1 / 3), pytest.approx(1 / 4)]
    assert all(c.rank is None and c.ranks is None for c in ladders["rank"])


def test_default_ladders_with_n_embd_use_ranks_d_over_2_4_8():
    ladders = default_ladders(model())  # n_embd = 48
    assert ladders["embedding"] == [EmbeddingFactorConfig(rank=24), EmbeddingFactorConfig(rank=12),
                                    EmbeddingFactorConfig(rank=6)]
