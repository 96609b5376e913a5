"""The config base (kinds, versions, tagged unions) and the verbs' handler tables: a method
defined outside edgegen plugs into quantize_ / prune_, QAT runs through quantize_, head pruning
and sparse attention work through their interfaces, not model classes."""

from dataclasses import dataclass

import pytest
import torch
from torch import nn

from edgegen.attention import DenseAttention, HeadLayout, SparseAttentionConfig, SparseSelfAttention, sparsify_attention_
from edgegen.config import Config, from_dict
from edgegen.models import GPT2, GPT2Config
from edgegen.prune import HeadConfig, MagnitudeConfig, PruneConfig, prune_, register_prune_handler, shrink, sparsity
from edgegen.quant import (
    Int8DynamicConfig,
    Int8Linear,
    QATConfig,
    QATModule,
    QuantConfig,
    quantize_,
    register_quantize_handler,
)


@dataclass
class HalfLinearConfig(QuantConfig, kind="test-half-linear"):
    scale: float = 1.0


@register_quantize_handler(HalfLinearConfig)
def _half(model, config, filter_fn):
    n = 0
    for name, m in list(model.named_modules()):
        if isinstance(m, nn.Linear) and (filter_fn is None or filter_fn(m, name)):
            with torch.no_grad():
                m.weight.mul_(config.scale)
            n += 1
    return n


@dataclass
class ZeroFirstRowConfig(PruneConfig, kind="test-zero-first-row"):
    pass


@register_prune_handler(ZeroFirstRowConfig)
def _zero_first_row(model, config, filter_fn):
    for m in model.modules():
        if isinstance(m, nn.Linear):
            with torch.no_grad():
                m.weight[0].zero_()
    return 1


@dataclass
class LayerMagnitudeConfig(MagnitudeConfig, kind="test-layer-magnitude"):
    """No handler of its own: pruned as a MagnitudeConfig."""

    scope: str = "layer"


@dataclass
class FirstRowMagnitudeConfig(MagnitudeConfig, kind="test-first-row-magnitude"):
    pass


@register_prune_handler(FirstRowMagnitudeConfig)
def _first_row_magnitude(model, config, filter_fn):
    return _zero_first_row(model, config, filter_fn)


@dataclass
class FirstRowMagnitudeChildConfig(FirstRowMagnitudeConfig, kind="test-first-row-magnitude-child"):
    pass


def test_a_subclass_is_handled_by_its_nearest_registered_base():
    import copy

    import torch.nn.utils.prune as tprune

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 4))
    ref = copy.deepcopy(model)
    prune_(model, LayerMagnitudeConfig(0.5))  # MagnitudeConfig's handler: each layer's smallest |w|
    for mine, theirs in ((model[0], ref[0]), (model[2], ref[2])):
        tprune.l1_unstructured(theirs, "weight", amount=0.5)
        assert torch.equal(mine.weight, theirs.weight)
    assert sparsity(model) == 0.5
    # a handler registered for a subclass is nearer than MagnitudeConfig's, for its own subclasses too
    for config in (FirstRowMagnitudeConfig(0.5), FirstRowMagnitudeChildConfig(0.5)):
        model = nn.Sequential(nn.Linear(8, 8))
        w = model[0].weight.detach().clone()
        prune_(model, config)
        assert bool((model[0].weight[0] == 0).all()) and torch.equal(model[0].weight[1:], w[1:])


def test_a_config_defined_outside_plugs_into_the_verbs():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    w = model[2].weight.detach().clone()
    quantize_(model, {"kind": "test-half-linear", "scale": 0.5}, filter_fn=lambda m, n: n == "2")
    torch.testing.assert_close(model[2].weight, 0.5 * w, rtol=0, atol=0)
    prune_(model, ZeroFirstRowConfig())
    assert bool((model[0].weight[0] == 0).all())
    with pytest.raises(ValueError, match="nothing to quantize"):
        quantize_(nn.Sequential(nn.ReLU()), HalfLinearConfig())
    with pytest.raises(ValueError, match="calibration: HalfLinearConfig does not take calibration"):
        quantize_(model, HalfLinearConfig(), calibration=[torch.ones(1, 4)])


def test_unknown_config_types_and_kinds_are_named():
    with pytest.raises(TypeError, match=r"config: quantize_ takes .*Int8DynamicConfig.*got MagnitudeConfig"):
        quantize_(nn.Linear(2, 2), MagnitudeConfig(0.5))
    with pytest.raises(TypeError, match=r"config: prune_ takes .*HeadConfig.*got Int8DynamicConfig"):
        prune_(nn.Linear(2, 2), Int8DynamicConfig())
    with pytest.raises(ValueError, match=r"kind: expected one of \[.*'MagnitudeConfig'.*\], got 'Int8DynamicConfig'"):
        prune_(nn.Linear(2, 2), {"kind": "Int8DynamicConfig"})  # a quantization kind is not a pruning config
    with pytest.raises(ValueError, match="kind: missing"):
        QuantConfig.from_dict({"embeddings": False})
    with pytest.raises(TypeError, match="kind 'gpt2': already used"):
        @dataclass
        class Other(Config, kind="gpt2"):
            pass


def test_every_config_round_trips_with_kind_and_version():
    from edgegen.distill import KDConfig
    from edgegen.models import BetaVAEConfig, DCGANConfig
    from edgegen.prune import ChannelConfig, CubicSchedule, FFNConfig, NMConfig
    from edgegen.quant import (Bf16Config, DynamicPrecisionConfig, Fp16Config, Int4DynamicConfig, Int4WeightOnlyConfig,
                               Int8StaticConfig)
    from edgegen.models import EarlyExitConfig
    from edgegen.reduce import EmbeddingFactorConfig, LowRankConfig, MPRFConfig
    from edgegen.train import ExperimentConfig  # registers the "experiment" kind (round-tripped in tests/train)

    configs = [Int8DynamicConfig(False), Int8StaticConfig(4, "mse"), Int4WeightOnlyConfig(32, False),
               Int4DynamicConfig(128), Fp16Config(),
               Bf16Config(), QATConfig("ste", "ema", 0.1, "convert"), MagnitudeConfig(0.3, "layer"), NMConfig(2, 4),
               ChannelConfig(0.25, "l2", 8), HeadConfig(0.5, "global"), CubicSchedule(0.0, 0.5, 0, 10, 2),
               KDConfig(3.0, 0.2), SparseAttentionConfig(16, 2), GPT2Config.student(), DCGANConfig(nz=8),
               BetaVAEConfig(latent_dim=4), FFNConfig(0.25, "global"), LowRankConfig(ranks={"h.0.mlp.c_fc": 8}),
               DynamicPrecisionConfig(Int4WeightOnlyConfig(32), "entropy", 0.4), EmbeddingFactorConfig(0.8, 16),
               MPRFConfig(HeadConfig(0.25), FFNConfig(0.5), LowRankConfig(0.9), EmbeddingFactorConfig(rank=32)),
               EarlyExitConfig((2, 4), 0.75)]
    registered = {k for k, c in Config._kinds.items() if not k.startswith("test-") and c.__module__.startswith("edgegen")}
    assert {c.kind for c in configs} | {ExperimentConfig.kind} == registered  # every kind edgegen defines is here
    for c in configs:
        d = c.to_dict()
        assert d["kind"] == c.kind and d["version"] == type(c).version
        assert type(c).from_dict(d) == c and from_dict(Config, d) == c  # by kind from the root too
    with pytest.raises(ValueError, match="version: expected a positive int"):
        Int8DynamicConfig.from_dict({"version": "1"})


def test_qat_runs_through_quantize_in_two_steps():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 4))
    quantize_(model, QATConfig(step="prepare"), filter_fn=lambda m, n: n == "0")
    assert isinstance(model[0], QATModule) and isinstance(model[2], nn.Linear)
    model.train()
    model(torch.randn(16, 8))
    model.eval()
    x = torch.randn(5, 8)
    with torch.no_grad():
        fake = model(x)
    quantize_(model, {"kind": "QATConfig", "step": "convert"})
    assert isinstance(model[0], Int8Linear)
    with torch.no_grad():
        torch.testing.assert_close(model(x), fake, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="no QATModule to convert"):  # nothing left to convert
        quantize_(model, QATConfig(step="convert"))
    with pytest.raises(ValueError, match="step"):
        QATConfig(step="train")
    with pytest.raises(ValueError, match="nothing to prepare"):
        quantize_(nn.Sequential(nn.ReLU()), QATConfig())


class ToyAttention(nn.Module):
    """Not GPT-2: separate names, its own forward; implements the head-pruning interface."""

    def __init__(self, dim=16, heads=4):
        super().__init__()
        self.heads, self.d = heads, dim // heads
        self.fused = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.core = DenseAttention()
        self.changed = []

    def head_layout(self):
        return HeadLayout(self.fused, self.out, self.heads, self.d)

    def set_head_count(self, n):
        self.heads = n
        self.changed.append(n)

    def forward(self, x):
        B, T, _ = x.shape
        q, k, v = (t.view(B, T, self.heads, self.d).transpose(1, 2) for t in self.fused(x).split(self.heads * self.d, 2))
        return self.out(self.core(q, k, v).transpose(1, 2).reshape(B, T, -1))


def test_head_pruning_and_sparse_attention_work_through_the_interfaces():
    torch.manual_seed(0)
    toy = ToyAttention()
    x = torch.randn(2, 5, 16)
    prune_(toy, HeadConfig(0.5))
    with torch.no_grad():
        masked = toy(x)
    toy = shrink(toy, (x,))  # a smaller copy, checked against the masked model on x
    assert toy.heads == 2 and toy.changed == [2] and toy.fused.out_features == 3 * 2 * 4
    with torch.no_grad():
        torch.testing.assert_close(toy(x), masked, rtol=1e-5, atol=1e-5)
    sparsify_attention_(toy, SparseAttentionConfig(window=64, num_global=0))  # window >= length: same output
    assert isinstance(toy.core, SparseSelfAttention)
    with torch.no_grad():
        torch.testing.assert_close(toy(x), masked, rtol=1e-5, atol=1e-5)


def test_sparsify_attention_filter_fn_selects_layers():
    model = GPT2(GPT2Config(vocab_size=64, n_positions=32, n_embd=32, n_layer=3, n_head=2))
    sparsify_attention_(model, SparseAttentionConfig(window=4, num_global=1), filter_fn=lambda m, n: n.startswith("h.1."))
    kinds = [type(b.attn.attention) for b in model.h]
    assert kinds == [DenseAttention, SparseSelfAttention, DenseAttention]
    with pytest.raises(ValueError, match="no attention core"):
        sparsify_attention_(model, SparseAttentionConfig(), filter_fn=lambda m, n: False)
    assert sparsity(model) == 0.0


def test_sparsifying_again_replaces_cores_without_nesting_and_restores_dropout():
    model = GPT2(GPT2Config(vocab_size=64, n_positions=32, n_embd=32, n_layer=2, n_head=2, dropout=0.1))
    with pytest.warns(UserWarning, match="dropout"):
        sparsify_attention_(model, SparseAttentionConfig(window=8, num_global=1))
    sparsify_attention_(model, SparseAttentionConfig(window=None))  # back to dense
    cores = [n for n, m in model.named_modules() if isinstance(m, SparseSelfAttention)]
    assert cores == ["h.0.attn.attention", "h.1.attn.attention"]  # one per slot, none nested
    assert all(model.h[i].attn.attention.dropout == 0.1 for i in range(2))  # the model's own dropout again


def test_static_int8_takes_eight_batches_unless_told_and_refuses_stored_data():
    from edgegen.quant import Int8StaticConfig

    seen = []

    def batches(n):
        for i in range(n):
            seen.append(i)
            yield torch.randn(2, 4)

    quantize_(nn.Sequential(nn.Linear(4, 4)), Int8StaticConfig(), calibration=batches(20))
    assert len(seen) == Int8StaticConfig.DEFAULT_BATCHES
    seen.clear()
    quantize_(nn.Sequential(nn.Linear(4, 4)), Int8StaticConfig(batches=3), calibration=batches(20))
    assert len(seen) == 3
    with pytest.raises(TypeError, match=r"calibration: calibration data is passed to the call"):
        Int8StaticConfig(calibration=[torch.ones(1, 4)])
    with pytest.raises(ValueError, match=r"batches: .*passed to quantize_"):
        Int8StaticConfig([torch.ones(1, 4)])


def test_shrink_leaves_heads_of_quantization_wrapped_layers_alone():
    from edgegen.prune.heads import shrink_heads_

    model = GPT2(GPT2Config(vocab_size=64, n_positions=32, n_embd=32, n_layer=1, n_head=2))
    quantize_(model, QATConfig())
    assert shrink_heads_(model) == 0
    with pytest.raises(ValueError, match="head_layout"):
        prune_(model, HeadConfig(0.5))


def test_from_dict_takes_a_built_config_and_names_a_wrong_family():
    cfg = Int8DynamicConfig(embeddings=False)
    assert QuantConfig.from_dict(cfg) is cfg
    with pytest.raises(TypeError, match=r"expected a PruneConfig \(one of .*\) or its mapping, got Int8DynamicConfig"):
        PruneConfig.from_dict(cfg)
