"""Feed-forward width pruning of GPT-2: masks against float64 importance, the physically smaller
model against the masked one, its config, save/load, generation, ONNX, Hugging Face limits."""

import pytest
import torch

from edgegen.models import GPT2, GPT2Config
from edgegen.prune import FFNConfig, PruneConfig, prune_, shrink, sparsity

CFG = GPT2Config(vocab_size=101, n_positions=32, n_embd=32, n_layer=3, n_head=4)


def model():
    torch.manual_seed(0)
    return GPT2(CFG).eval()


def reference_unit_importance(block):
    """Per hidden unit: sqrt(|input row|^2 + bias^2 + |output column|^2), in float64."""
    w_in = block.c_fc.weight.detach().double()
    b_in = block.c_fc.bias.detach().double()
    w_out = block.c_proj.weight.detach().double()
    return (w_in.pow(2).sum(1) + b_in.pow(2) + w_out.pow(2).sum(0)).sqrt()


def test_layer_scope_masks_the_least_important_units_of_each_block():
    m = model()
    with torch.no_grad():
        for b in m.h:  # non-zero biases and uneven output columns, so every term of the score counts
            b.mlp.c_fc.bias.normal_(0, 0.5)
            b.mlp.c_proj.weight.mul_(torch.rand(1, 128) * 4)
    imps = [reference_unit_importance(b.mlp) for b in m.h]
    prune_(m, FFNConfig(0.25))
    for b, imp in zip(m.h, imps):
        w = b.mlp.c_proj.weight  # the masked weight the block uses
        alive = w.ne(0).any(0)
        assert int((~alive).sum()) == 32  # 25% of 128
        # the removed ones are exactly the 32 smallest by the float64 reference
        ref = torch.sort(imp, stable=True).indices[:32]
        assert set(torch.nonzero(~alive).flatten().tolist()) == set(ref.tolist())
        assert float(imp[~alive].max()) < float(imp[alive].min())
        assert bool((b.mlp.c_fc.weight[~alive] == 0).all()) and bool((b.mlp.c_fc.bias[~alive] == 0).all())


def test_global_scope_removes_the_smallest_units_over_all_blocks():
    m = model()
    with torch.no_grad():
        m.h[1].mlp.c_fc.weight.mul_(0.01)  # block 1's units matter least
        m.h[1].mlp.c_proj.weight.mul_(0.01)
        m.h[1].mlp.c_fc.bias.mul_(0.01)
    prune_(m, FFNConfig(0.3, scope="global"))
    removed = [int((~b.mlp.c_proj.weight.ne(0).any(0)).sum()) for b in m.h]
    assert sum(removed) == round(0.3 * 3 * 128) and removed[1] == 115 and removed[0] + removed[2] == 0


def test_shrunk_model_equals_the_masked_one_and_records_its_widths(tmp_path):
    m = model()
    prune_(m, FFNConfig(0.5))
    idx = torch.randint(0, 101, (2, 16))
    small = shrink(m, (idx,))  # raises if outputs differ by more than 1e-5
    assert small.config.inner_sizes == (64, 64, 64)
    assert small.num_parameters() == m.num_parameters() - 3 * (64 * 32 + 64 + 32 * 64)
    with torch.no_grad():
        torch.testing.assert_close(small(idx), m(idx), rtol=1e-5, atol=1e-5)
    # the config rebuilds the architecture: save the state dict, load it into a fresh model
    torch.save(small.state_dict(), tmp_path / "ffn.pt")
    fresh = GPT2(GPT2Config.from_dict(small.config.to_dict())).eval()
    fresh.load_state_dict(torch.load(tmp_path / "ffn.pt"))
    with torch.no_grad():
        torch.testing.assert_close(fresh(idx), small(idx), rtol=0, atol=0)
    a = small.generate(idx[:, :4], 8, greedy=True, use_cache=True)
    assert torch.equal(a, small.generate(idx[:, :4], 8, greedy=True, use_cache=False))


def test_uniform_widths_round_trip_through_hugging_face_and_uneven_ones_are_refused():
    m = model()
    prune_(m, FFNConfig(0.5))
    small = shrink(m, (torch.randint(0, 101, (1, 8)),))
    hf = small.config.to_hf()
    assert hf["n_inner"] == 64 and GPT2Config.from_hf(hf).inner_sizes == (64, 64, 64)
    assert GPT2Config.from_hf(model().config.to_hf()).inner_sizes is None  # 4 * n_embd: the default
    uneven = GPT2Config(**{**{k: v for k, v in CFG.to_dict().items() if k not in ("kind", "version")},
                           "inner_sizes": (64, 96, 128)})
    with pytest.raises(ValueError, match="inner_sizes"):
        uneven.to_hf()


def test_shrunk_model_exports_to_onnx(tmp_path):
    pytest.importorskip("onnxruntime", reason="the export extra (onnx, onnxruntime) is not installed")
    from edgegen.export import export_onnx, run_onnx

    m = model()
    prune_(m, FFNConfig(0.5))
    idx = torch.randint(0, 101, (1, 16))
    small = shrink(m, (idx,))
    res = export_onnx(small, (idx,), tmp_path / "ffn.onnx")
    other = torch.randint(0, 101, (2, 16))  # another batch than the export's example
    with torch.no_grad():
        expected = small(other)
    got = torch.from_numpy(run_onnx(res.path, (other,))[0])
    assert got.shape == (2, 16, 101)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("make,exc,match", [
    (lambda: FFNConfig(1.0), ValueError, "amount"),
    (lambda: FFNConfig(-0.1), ValueError, "amount"),
    (lambda: FFNConfig(0.5, scope="model"), ValueError, "scope"),
    (lambda: GPT2Config(n_layer=2, inner_sizes=(10,)), ValueError, "inner_sizes"),
    (lambda: GPT2Config(n_layer=2, inner_sizes=(10, 0)), ValueError, "inner_sizes"),
    (lambda: prune_(torch.nn.Sequential(torch.nn.Linear(4, 4)), FFNConfig(0.5)), ValueError, "feed-forward block"),
    (lambda: PruneConfig.from_dict({"kind": "FFNConfig", "amount": 0.5, "width": 3}), ValueError, "width: unknown"),
], ids=["amount-1", "amount-neg", "scope", "inner-len", "inner-zero", "no-blocks", "unknown-key"])
def test_bad_input_names_the_field(make, exc, match):
    with pytest.raises(exc, match=match):
        make()


def test_sparsity_counts_exactly_the_masked_units():
    m = model()
    prune_(m, FFNConfig(0.5))
    # per block 64 of 128 units: 64 rows of c_fc [128, 32] and 64 columns of c_proj [32, 128]
    total = sum(mod.weight.numel() for mod in m.modules() if isinstance(mod, torch.nn.Linear) and mod is not m.lm_head)
    assert sparsity(m) == 3 * (64 * 32 + 32 * 64) / total
