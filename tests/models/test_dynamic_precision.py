"""Dynamic precision scaling in generation: at its extremes token for token the all-fp32 and the
all-low-precision model, switching bookkeeping, sampling, bad configs."""

import copy
import dataclasses
from dataclasses import dataclass

import pytest
import torch

from edgegen.models import GPT2, GPT2Config, generate_dynamic
from edgegen.quant import (
    DynamicPrecisionConfig,
    Int4WeightOnlyConfig,
    Int8DynamicConfig,
    Int8StaticConfig,
    QATConfig,
    QuantConfig,
    quantize_,
)
from edgegen.quant.mixed import SwitchablePrecision
from tests.models.test_gpt2 import BAD_GENERATION, BAD_GENERATION_IDS, generate_args

CFG = GPT2Config(vocab_size=101, n_positions=64, n_embd=64, n_layer=2, n_head=4)


def model():
    torch.manual_seed(0)
    return GPT2(CFG).eval()


@pytest.mark.parametrize("rule,threshold,expect", [("top1", 0.0, "low"), ("top1", 1.0, "full"),
                                                   ("entropy", 1.0, "low"), ("entropy", 0.0, "full")],
                         ids=["top1-0", "top1-1", "entropy-1", "entropy-0"])
@pytest.mark.parametrize("low", [Int8DynamicConfig(), Int4WeightOnlyConfig(64)], ids=["int8", "int4"])
def test_extremes_equal_fixed_precision_generation(rule, threshold, expect, low):
    base = model()
    fixed = copy.deepcopy(base)
    if expect == "low":
        quantize_(fixed, dataclasses.replace(low, embeddings=False))  # the switch covers the Linear layers only
    cfg = DynamicPrecisionConfig(low=low, rule=rule, threshold=threshold)
    switch = quantize_(copy.deepcopy(base), cfg)
    idx = torch.randint(0, 101, (2, 6), generator=torch.Generator().manual_seed(1))
    out, stats = generate_dynamic(switch, idx, 16, cfg)
    assert torch.equal(out, fixed.generate(idx, 16, greedy=True))
    assert stats["low_fraction"] == (1.0 if expect == "low" else 0.0) and stats["steps"] == 16


def confident_reference(logits: torch.Tensor, rule: str, threshold: float) -> bool:
    """float64: every row's top-1 probability >= threshold, or every row's entropy / log V <= threshold."""
    p = torch.softmax(logits.double(), -1)
    if rule == "top1":
        return bool((p.max(-1).values >= threshold).all())
    entropy = -(p * p.log()).sum(-1) / torch.log(torch.tensor(float(logits.shape[-1]), dtype=torch.float64))
    return bool((entropy <= threshold).all())


PEAKED = torch.tensor([[0.0, 0.0, 3.0, 0.0, 0.0, 0.0, 0.0, 0.0]])  # p_max 0.742, entropy / log 8: 0.517
UNIFORM = torch.zeros(1, 8)  # p_max 0.125, entropy / log 8: 1
ROWS = {"peaked": PEAKED, "uniform": UNIFORM, "mixed": torch.cat([PEAKED, UNIFORM]),
        "two-peaked": torch.cat([PEAKED, PEAKED.roll(3, -1)])}


@pytest.mark.parametrize("rule,threshold,expect", [
    ("top1", 0.5, dict(peaked=True, uniform=False, mixed=False)),
    ("top1", 0.8, dict(peaked=False, uniform=False, mixed=False)),
    ("top1", 0.1, dict(peaked=True, uniform=True, mixed=True)),
    ("entropy", 0.6, dict(peaked=True, uniform=False, mixed=False)),  # 0.517 of log 8, 1.07 nats
    ("entropy", 0.4, dict(peaked=False, uniform=False, mixed=False)),
], ids=["top1-0.5", "top1-0.8", "top1-0.1", "entropy-0.6", "entropy-0.4"])
@pytest.mark.parametrize("rows", list(ROWS), ids=list(ROWS))
def test_confident_at_intermediate_thresholds_equals_a_float64_reference(rule, threshold, expect, rows):
    logits = ROWS[rows]
    want = confident_reference(logits, rule, threshold)
    assert want == expect["peaked" if rows == "two-peaked" else rows]  # the reference itself, by hand
    cfg = DynamicPrecisionConfig(rule=rule, threshold=threshold)
    assert cfg.confident(logits) is want
    assert cfg.confident(logits.to(torch.bfloat16)) is want  # far from the thresholds: bf16 logits agree


@dataclass
class Alternating(DynamicPrecisionConfig, kind="test-alternating-precision"):
    """Confident on every other step: exercises the switching and its bookkeeping."""

    def __post_init__(self):
        super().__post_init__()
        self.calls = 0

    def confident(self, logits):
        self.calls += 1
        return self.calls % 2 == 1


def test_switching_follows_the_rule_and_leaves_full_precision():
    cfg = Alternating(threshold=0.5)
    m = quantize_(model(), cfg)
    idx = torch.randint(0, 101, (1, 4), generator=torch.Generator().manual_seed(2))
    out, stats = generate_dynamic(m, idx, 7, cfg)
    assert stats["precision"] == [False, True, False, True, False, True, False]  # the prompt step in full
    assert stats["low_steps"] == 3 and out.shape == (1, 11)
    assert all(not s.quantized for s in m.modules() if isinstance(s, SwitchablePrecision))
    # the same steps by hand: each step in its precision, the cache carried across switches
    from edgegen.quant import set_precision_

    past, ref = None, idx
    with torch.no_grad():
        for low in stats["precision"]:
            set_precision_(m, low)
            logits, past = m(ref if past is None else ref[:, -1:], past_key_values=past, use_cache=True)
            ref = torch.cat([ref, logits[:, -1].argmax(-1, keepdim=True)], 1)
    assert torch.equal(out, ref)


def test_sampling_is_reproducible_with_a_generator():
    cfg = DynamicPrecisionConfig(threshold=0.02)
    m = quantize_(model(), cfg)
    idx = torch.randint(0, 101, (1, 4))
    a, _ = generate_dynamic(m, idx, 10, cfg, greedy=False, top_k=20, generator=torch.Generator().manual_seed(3))
    b, _ = generate_dynamic(m, idx, 10, cfg, greedy=False, top_k=20, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def test_config_round_trips_with_its_nested_low_precision():
    cfg = DynamicPrecisionConfig(low=Int4WeightOnlyConfig(32), rule="entropy", threshold=0.3)
    assert QuantConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.to_dict()["low"] == {"kind": "Int4WeightOnlyConfig", "version": 2, "group_size": 32,
                                    "embeddings": True}


@pytest.mark.parametrize("make,exc,match", [
    (lambda: DynamicPrecisionConfig(threshold=-0.1), ValueError, "threshold"),
    (lambda: DynamicPrecisionConfig(threshold=1.5), ValueError, "threshold"),
    (lambda: DynamicPrecisionConfig(rule="margin"), ValueError, "rule"),
    (lambda: DynamicPrecisionConfig(low=QATConfig()), ValueError, "low"),
    (lambda: DynamicPrecisionConfig(low=Int8StaticConfig()), ValueError, "low"),
    (lambda: generate_dynamic(model(), torch.zeros(1, 2, dtype=torch.long), 3, DynamicPrecisionConfig()), ValueError,
     "no switchable layers"),
    (lambda: generate_dynamic(model(), torch.zeros(1, 2, dtype=torch.long), 3, Int8DynamicConfig()), TypeError,
     "DynamicPrecisionConfig"),
    (lambda: generate_dynamic(quantize_(model(), DynamicPrecisionConfig()), torch.zeros(1, 2, dtype=torch.long), -1,
                              DynamicPrecisionConfig()), ValueError, "max_new_tokens"),
], ids=["threshold-low", "threshold-high", "rule", "low-qat", "low-static", "unprepared", "wrong-config", "negative"])
def test_bad_input_names_the_field(make, exc, match):
    with pytest.raises(exc, match=match):
        make()


def test_sampling_settings_are_checked_like_generate():
    m = quantize_(model(), DynamicPrecisionConfig())
    idx = torch.zeros(1, 2, dtype=torch.long)
    for kwargs, match in (({"greedy": False, "temperature": 0.0}, "temperature"),
                          ({"greedy": False, "top_p": 1.5}, "top_p")):
        with pytest.raises(ValueError, match=match):
            generate_dynamic(m, idx, 3, DynamicPrecisionConfig(), **kwargs)
        with pytest.raises(ValueError, match=match):
            model().generate(idx, 3, **kwargs)


@pytest.mark.parametrize("threshold,expect", [(0.0, "low"), (1.0, "full")], ids=["always-low", "never-low"])
def test_teacher_forced_scoring_at_the_extremes_equals_fixed_precision_perplexity(threshold, expect):
    from edgegen.eval import perplexity
    from edgegen.models import dynamic_nll

    base = model()
    fixed = copy.deepcopy(base)
    if expect == "low":
        quantize_(fixed, Int8DynamicConfig(embeddings=False))
    cfg = DynamicPrecisionConfig(low=Int8DynamicConfig(), rule="top1", threshold=threshold)
    switch = quantize_(copy.deepcopy(base), cfg)
    ids = torch.randint(0, 101, (40,), generator=torch.Generator().manual_seed(4))
    got = dynamic_nll(switch, ids, cfg, context=16)
    # reference: the fixed-precision model read token by token with its cache, windows of 16
    # overlapping by one token (the windows perplexity(context=16, stride=15) scores)
    nll, n = 0.0, 0
    with torch.no_grad():
        for start in range(0, 39, 15):
            w, past = ids[start:start + 16], None
            for t in range(len(w) - 1):
                logits, past = fixed(w[None, t:t + 1], past_key_values=past, use_cache=True)
                nll -= float(torch.log_softmax(logits[0, -1].double(), -1)[w[t + 1]])
                n += 1
    assert got["tokens"] == n == 39
    assert got["low_fraction"] == (1.0 if expect == "low" else 0.0)
    assert got["nll"] == pytest.approx(nll / n, rel=1e-9)
    if expect == "full":  # and in full precision, the windowed perplexity of the whole windows at once
        assert got["ppl"] == pytest.approx(perplexity(fixed, ids, context=16, stride=15).perplexity, rel=1e-5)


def test_teacher_forced_scoring_counts_the_low_steps_and_rejects_bad_input():
    from edgegen.models import dynamic_nll

    cfg = Alternating(threshold=0.5)
    m = quantize_(model(), cfg)
    ids = torch.randint(0, 101, (9,), generator=torch.Generator().manual_seed(6))
    got = dynamic_nll(m, ids, cfg, context=9)
    assert got["tokens"] == 8 and got["low_fraction"] == 4 / 8  # full, low, full, low, ... from the window start
    assert all(not s.quantized for s in m.modules() if isinstance(s, SwitchablePrecision))
    with pytest.raises(ValueError, match="context: expected an int >= 2"):
        dynamic_nll(m, ids, cfg, context=1)
    with pytest.raises(ValueError, match=r"context: expected at most the model's n_positions \(64\)"):
        dynamic_nll(m, ids, cfg, context=65)
    with pytest.raises(ValueError, match=r"tokens: expected one sequence of token ids, \[T\] or \[1, T\], got \(2, 9\)"):
        dynamic_nll(m, torch.stack([ids, ids]), cfg)
    with pytest.raises(ValueError, match="tokens: expected at least 2"):
        dynamic_nll(m, ids[:1], cfg)
    with pytest.raises(ValueError, match="model: no switchable layers"):
        dynamic_nll(model(), ids, cfg)
    with pytest.raises(TypeError, match="config: expected a DynamicPrecisionConfig"):
        dynamic_nll(m, ids, Int8DynamicConfig())


@pytest.mark.parametrize("kwargs,match", BAD_GENERATION, ids=BAD_GENERATION_IDS)
def test_bad_generation_arguments_are_checked_like_gpt2(kwargs, match):
    m = quantize_(model(), DynamicPrecisionConfig())
    idx, n, kw = generate_args(kwargs)
    with pytest.raises(ValueError, match=match):
        generate_dynamic(m, idx, n, DynamicPrecisionConfig(), **kw)


def test_generation_past_the_context_is_refused_before_the_first_token():
    m = quantize_(model(), DynamicPrecisionConfig())  # n_positions 64
    calls = []
    m.register_forward_pre_hook(lambda *_: calls.append(1))
    idx = torch.zeros(1, 60, dtype=torch.long)
    with pytest.raises(ValueError, match=r"^max_new_tokens: the prompt length \(60\) plus max_new_tokens \(5\) is 65, "
                                         r"beyond the model's context n_positions \(64\)"):
        generate_dynamic(m, idx, 5, DynamicPrecisionConfig())
    assert calls == []
    out, stats = generate_dynamic(m, idx, 4, DynamicPrecisionConfig())
    assert out.shape == (1, 64) and stats["steps"] == 4
