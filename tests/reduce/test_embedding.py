"""Factorized tied embedding (reduce_ with EmbeddingFactorConfig): the SVD against float64
references, the factorized GPT-2 against a dense GPT-2 holding the product, the tied head, save /
load / export / generation / distillation, bad configs."""

import copy

import pytest
import torch
from torch import nn

from edgegen.models import GPT2, GPT2Config
from edgegen.reduce import EmbeddingFactorConfig, FactorizedEmbedding, ReduceConfig, TiedFactorizedHead, reduce_

from tests.helpers import seeded_gpt2

CFG = GPT2Config(vocab_size=211, n_positions=32, n_embd=48, n_layer=2, n_head=4)


def model(seed=0):
    return seeded_gpt2(CFG, seed)


def test_full_rank_reproduces_the_table_and_the_error_is_the_discarded_energy():
    torch.manual_seed(0)
    emb = nn.Embedding(40, 12, dtype=torch.float64)
    full = FactorizedEmbedding.from_embedding(emb, 12)
    torch.testing.assert_close(full.weight_product(), emb.weight.detach(), rtol=1e-12, atol=1e-12)
    s = torch.linalg.svdvals(emb.weight.detach())
    for r in (1, 5, 11):
        low = FactorizedEmbedding.from_embedding(emb, r)
        err = (emb.weight - low.weight_product()).pow(2).sum()
        torch.testing.assert_close(err, s[r:].pow(2).sum(), rtol=1e-9, atol=1e-12)
        idx = torch.tensor([[0, 7, 39]])
        torch.testing.assert_close(low(idx), low.weight_product()[idx], rtol=1e-12, atol=1e-12)
        h = torch.randn(3, 12, dtype=torch.float64)
        torch.testing.assert_close(TiedFactorizedHead(low)(h), h @ low.weight_product().T, rtol=1e-12, atol=1e-12)


def test_factorized_gpt2_equals_a_dense_gpt2_holding_the_product():
    m = model()
    reduce_(m, EmbeddingFactorConfig(rank=16))
    assert m.config.embedding_rank == 16 and isinstance(m.wte, FactorizedEmbedding)
    assert isinstance(m.lm_head, TiedFactorizedHead) and m.lm_head.embedding is m.wte
    dense = copy.deepcopy(m)
    table = m.wte.weight_product().detach()
    dense.wte, dense.lm_head = nn.Embedding(211, 48), nn.Linear(48, 211, bias=False)
    dense.wte.weight.data.copy_(table)
    dense.lm_head.weight = dense.wte.weight
    idx = torch.randint(0, 211, (2, 12))
    with torch.no_grad():
        torch.testing.assert_close(m(idx), dense(idx), rtol=1e-5, atol=1e-5)
    # parameters: the factors once, the head adds none
    assert m.num_parameters() == model().num_parameters() - 211 * 48 + 16 * (211 + 48)
    assert sum(1 for n, _ in m.named_parameters() if n.startswith("lm_head")) == 0


def test_energy_picks_the_smallest_rank_and_only_a_smaller_model_is_accepted():
    m = model()
    s = torch.linalg.svdvals(m.wte.weight.detach().double())
    kept = torch.cumsum(s.pow(2), 0) / s.pow(2).sum()
    want = int((kept < 0.8 - 1e-12).sum()) + 1
    reduce_(m, EmbeddingFactorConfig(energy=0.8))
    assert m.config.embedding_rank == want
    with pytest.raises(ValueError, match="nothing to reduce"):  # already factorized
        reduce_(m, EmbeddingFactorConfig(rank=4))
    with pytest.raises(ValueError, match="nothing to reduce"):  # 48 * (211 + 48) > 211 * 48
        reduce_(model(), EmbeddingFactorConfig(rank=48))


def test_the_head_stays_tied_through_training():
    m = model().train()
    reduce_(m, EmbeddingFactorConfig(rank=8))
    opt = torch.optim.SGD(m.parameters(), lr=0.5)
    idx = torch.randint(0, 211, (2, 10))
    loss = nn.functional.cross_entropy(m(idx)[:, :-1].reshape(-1, 211), idx[:, 1:].reshape(-1))
    loss.backward()
    opt.step()
    h = torch.randn(3, 48)
    torch.testing.assert_close(m.lm_head(h), h @ m.wte.weight_product().T, rtol=1e-5, atol=1e-5)


def test_save_load_generate_and_hf_refusal(tmp_path):
    m = reduce_(model(), EmbeddingFactorConfig(rank=12))
    torch.save(m.state_dict(), tmp_path / "f.pt")
    fresh = GPT2(GPT2Config.from_dict(m.config.to_dict())).eval()  # the config records the rank
    fresh.load_state_dict(torch.load(tmp_path / "f.pt"))
    idx = torch.randint(0, 211, (2, 12))
    with torch.no_grad():
        torch.testing.assert_close(fresh(idx), m(idx), rtol=0, atol=0)
    a = m.generate(idx[:, :4], 8, greedy=True, use_cache=True)
    b = m.generate(idx[:, :4], 8, greedy=True, use_cache=False)
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="embedding_rank"):
        m.save_pretrained(tmp_path / "hf")
    with pytest.raises(ValueError, match="embedding_rank"):
        fresh.load_hf_state_dict({})


def test_factorized_gpt2_exports_to_onnx(tmp_path):
    pytest.importorskip("onnxruntime", reason="the export extra (onnx, onnxruntime) is not installed")
    from edgegen.export import export_onnx, run_onnx

    m = reduce_(model(), EmbeddingFactorConfig(rank=12))
    idx = torch.randint(0, 211, (1, 16))
    exp = export_onnx(m, (idx,), tmp_path / "f.onnx")
    with torch.no_grad():
        ref = m(idx)
    torch.testing.assert_close(torch.from_numpy(run_onnx(exp.path, (idx,))[0]), ref, rtol=1e-4, atol=1e-4)


def test_fused_distillation_through_the_head_operands_equals_the_logits_loss():
    from edgegen.distill import fused_linear_kd_loss, kd_loss

    student = reduce_(model(1), EmbeddingFactorConfig(rank=8))
    teacher = model(2)
    idx = torch.randint(0, 211, (2, 10))
    with torch.no_grad():
        s_h, t_h = student(idx, return_hidden=True), teacher(idx, return_hidden=True)
        s_x, s_w = student.head_operands(s_h)
        t_x, t_w = teacher.head_operands(t_h)
        fused = fused_linear_kd_loss(s_x.reshape(-1, 8), s_w, t_x.reshape(-1, 48), t_w, idx.reshape(-1))
        ref = kd_loss(student.lm_head(s_h).reshape(-1, 211), teacher.lm_head(t_h).reshape(-1, 211), idx.reshape(-1))
    torch.testing.assert_close(fused, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("make,match", [
    (lambda: EmbeddingFactorConfig(rank=0), "rank: expected an int >= 1"),
    (lambda: EmbeddingFactorConfig(energy=0.0), "energy"),
    (lambda: EmbeddingFactorConfig(energy=True), "energy"),
    (lambda: reduce_(model(), EmbeddingFactorConfig(rank=49)), r"rank: 49 exceeds min\(vocab, dim\) = 48"),
    (lambda: reduce_(nn.Sequential(nn.Embedding(10, 4)), EmbeddingFactorConfig(rank=2)),
     "model: no module with a tied token embedding"),
    (lambda: FactorizedEmbedding(10, 4, 5), r"rank: expected an int in \[1, min"),
    (lambda: GPT2Config(n_embd=48, n_head=4, embedding_rank=49), "embedding_rank"),
    (lambda: model().set_embedding(FactorizedEmbedding(10, 48, 4)), "embedding: expected 211 x 48"),
    (lambda: ReduceConfig.from_dict({"kind": "EmbeddingFactorConfig", "rnk": 2}), "rnk: unknown"),
], ids=["rank0", "energy0", "energy-bool", "rank-above-min", "no-tied-embedding", "module-rank", "config-rank",
        "wrong-size", "unknown-key"])
def test_bad_input_names_the_field(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_int8_quantizes_both_sides_of_the_factorized_tie_once():
    from edgegen.quant import Int8DynamicConfig, Int8Embedding, Int8Linear, quantize_

    m = reduce_(model(), EmbeddingFactorConfig(rank=16))
    idx = torch.randint(0, 211, (2, 12))
    with torch.no_grad():
        ref = m(idx)
    quantize_(m, Int8DynamicConfig())
    assert isinstance(m.wte.table, Int8Embedding) and isinstance(m.lm_head.out, Int8Linear)
    assert m.lm_head.out.weight_int8 is m.wte.table.weight_int8  # stored once
    with torch.no_grad():
        out = m(idx)
    assert torch.nn.functional.cosine_similarity(out.flatten(), ref.flatten(), dim=0) > 0.99
    with pytest.raises(ValueError, match="head_operands .* needs the float head"):
        m.head_operands(torch.randn(1, 48))


@pytest.mark.parametrize("low", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_16_bit_quantization_of_the_factorized_tie_runs(low):
    """A 16-bit head converts the table it shares (as GPT-2's dense tied head does); the embedding
    then looks up 16-bit rows and projects them in the projection's dtype."""
    from edgegen.quant import Bf16Config, Fp16Config, quantize_

    m = reduce_(model(), EmbeddingFactorConfig(rank=16))
    idx = torch.randint(0, 211, (2, 12))
    rounded = copy.deepcopy(m)  # the reference: the float model with its table rounded to 16 bits
    with torch.no_grad():
        rounded.wte.table.weight.copy_(rounded.wte.table.weight.to(low).float())
        ref = rounded(idx)
    with pytest.warns(UserWarning, match="shares its weight"):
        quantize_(m, Fp16Config() if low == torch.float16 else Bf16Config())
    assert m.lm_head.out.module.weight is m.wte.table.weight and m.wte.table.weight.dtype == low
    with torch.no_grad():
        assert torch.equal(m.wte(idx), rounded.wte(idx))
        out = m(idx)  # was: "expected m1 and m2 to have the same dtype"
    assert out.dtype == torch.float32
    assert torch.nn.functional.cosine_similarity(out.flatten(), ref.flatten(), dim=0) > 0.999
