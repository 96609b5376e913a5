"""GPT-2: published sizes, cache consistency, Hugging Face round trips, checkpoint errors."""

import json

import pytest
import torch

from edgegen.distill import fused_linear_kd_loss, kd_loss
from edgegen.models import GPT2, DenseAttention, GPT2Config

TINY = GPT2Config(vocab_size=97, n_positions=32, n_embd=32, n_layer=2, n_head=4)


def test_published_parameter_counts():
    with torch.device("meta"):
        assert GPT2(GPT2Config.gpt2()).num_parameters() == 124_439_808  # GPT-2 small, tied head
        student = GPT2(GPT2Config.student())
    assert (student.config.n_layer, student.config.n_embd, student.config.n_head) == (6, 384, 6)
    assert GPT2Config.from_dict(GPT2Config.student().to_dict()) == GPT2Config.student()


def test_forward_shapes_tied_head_and_training_step():
    m = GPT2(TINY)
    assert m.lm_head.weight.data_ptr() == m.wte.weight.data_ptr()
    idx = torch.randint(0, 97, (3, 10))
    assert m(idx).shape == (3, 10, 97)
    assert m(idx, return_hidden=True).shape == (3, 10, 32)
    loss = torch.nn.functional.cross_entropy(m(idx[:, :-1]).flatten(0, 1), idx[:, 1:].flatten())
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.parameters())


def test_incremental_decoding_matches_full_forward():
    m = GPT2(TINY).eval()
    idx = torch.randint(0, 97, (2, 12))
    full = m(idx)
    logits, past = m(idx[:, :7], use_cache=True)
    steps = [logits]
    for t in range(7, 12):
        step, past = m(idx[:, t:t + 1], past_key_values=past, use_cache=True)
        steps.append(step)
    torch.testing.assert_close(torch.cat(steps, dim=1), full, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kwargs", [dict(greedy=True), dict(temperature=0.8, top_k=5),
                                    dict(temperature=1.2, top_p=0.9), dict(top_k=1)])
def test_generation_same_with_and_without_cache(kwargs):
    m = GPT2(TINY).eval()
    prompt = torch.randint(0, 97, (2, 4))
    a = m.generate(prompt, 10, use_cache=True, generator=torch.Generator().manual_seed(1), **kwargs)
    b = m.generate(prompt, 10, use_cache=False, generator=torch.Generator().manual_seed(1), **kwargs)
    assert a.shape == (2, 14) and torch.equal(a, b)
    if kwargs == dict(top_k=1):
        assert torch.equal(a, m.generate(prompt, 10, greedy=True))


def test_attention_is_pluggable():
    m = GPT2(TINY).eval()
    idx = torch.randint(0, 97, (1, 8))
    before = m(idx)
    calls = []

    class Recording(DenseAttention):
        def forward(self, q, k, v, q_offset=0):
            calls.append(q.shape)
            return super().forward(q, k, v, q_offset)

    m.set_attention(lambda i: Recording())
    torch.testing.assert_close(m(idx), before)
    assert len(calls) == TINY.n_layer


def test_bad_input():
    m = GPT2(TINY)
    with pytest.raises(ValueError, match="idx: token ids must lie in"):
        m(torch.tensor([[0, 97]]))
    with pytest.raises(ValueError, match="exceed the context of 32"):
        m(torch.zeros(1, 33, dtype=torch.long))
    with pytest.raises(ValueError, match="idx: expected int64"):
        m(torch.zeros(1, 3))
    with pytest.raises(ValueError, match="divisible"):
        GPT2Config(n_embd=10, n_head=3)


def test_checkpoint_key_errors(tmp_path):
    m = GPT2(TINY)
    m.save_pretrained(tmp_path)
    from safetensors.torch import load_file, save_file

    state = load_file(str(tmp_path / "model.safetensors"))
    bad = dict(state)
    del bad["transformer.h.1.mlp.c_fc.bias"]
    save_file(bad, str(tmp_path / "model.safetensors"))
    with pytest.raises(KeyError, match=r"missing \['h.1.mlp.c_fc.bias'\]"):
        GPT2.from_pretrained(tmp_path)
    bad = dict(state, **{"transformer.h.2.ln_1.weight": torch.ones(32)})
    save_file(bad, str(tmp_path / "model.safetensors"))
    with pytest.raises(KeyError, match=r"unexpected \['h.2.ln_1.weight'\]"):
        GPT2.from_pretrained(tmp_path)
    bad = dict(state, **{"transformer.wpe.weight": torch.ones(31, 32)})
    save_file(bad, str(tmp_path / "model.safetensors"))
    with pytest.raises(ValueError, match=r"wpe.weight has shape \(31, 32\)"):
        GPT2.from_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match="config.json"):
        GPT2.from_pretrained(tmp_path / "nope")


def test_hugging_face_round_trip(tmp_path):
    transformers = pytest.importorskip("transformers", reason="transformers is not installed")
    hf_cfg = transformers.GPT2Config(vocab_size=97, n_positions=32, n_embd=32, n_layer=2, n_head=4)
    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(hf_cfg).eval()
    hf.save_pretrained(tmp_path / "hf")
    ours = GPT2.from_pretrained(tmp_path / "hf").eval()
    idx = torch.randint(0, 97, (2, 16))
    with torch.no_grad():
        torch.testing.assert_close(ours(idx), hf(idx).logits, rtol=1e-5, atol=1e-5)
        # ... and back: edgegen's export loads into transformers with the same logits.
        ours.save_pretrained(tmp_path / "ours")
        back = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "ours").eval()
        torch.testing.assert_close(back(idx).logits, ours(idx), rtol=1e-5, atol=1e-5)
    assert json.loads((tmp_path / "ours" / "config.json").read_text())["model_type"] == "gpt2"


def test_hidden_states_feed_fused_distillation():
    teacher, student = GPT2(GPT2Config(97, 32, 48, 2, 4)).eval(), GPT2(TINY)
    idx = torch.randint(0, 97, (2, 9))
    y = torch.randint(0, 97, (2, 9))
    with torch.no_grad():
        t_hidden = teacher(idx, return_hidden=True)
    s_hidden = student(idx, return_hidden=True)
    fused = fused_linear_kd_loss(s_hidden, student.lm_head.weight, t_hidden, teacher.lm_head.weight, y)
    ref = kd_loss(student(idx), teacher(idx).detach(), y)
    torch.testing.assert_close(fused, ref, rtol=1e-5, atol=1e-6)
    fused.backward()
    fused_grads = [p.grad.clone() for p in student.parameters()]
    student.zero_grad()
    ref.backward()  # the unfused loss on materialised logits: the same gradient everywhere
    for (name, p), g in zip(student.named_parameters(), fused_grads):
        torch.testing.assert_close(g, p.grad, rtol=1e-4, atol=1e-6, msg=name)
    assert student.wte.weight.grad.abs().sum() > 0  # through the tied head and the embedding


def test_loads_pytorch_model_bin(tmp_path):
    # The older Hugging Face format: a torch-pickled state dict, here with the causal-mask
    # buffers such checkpoints carry, which the loader ignores.
    m = GPT2(TINY).eval()
    m.save_pretrained(tmp_path)
    from safetensors.torch import load_file

    state = load_file(str(tmp_path / "model.safetensors"))
    state["transformer.h.0.attn.bias"] = torch.ones(1, 1, 32, 32)
    torch.save(state, tmp_path / "pytorch_model.bin")
    (tmp_path / "model.safetensors").unlink()
    loaded = GPT2.from_pretrained(tmp_path).eval()
    idx = torch.randint(0, 97, (1, 8))
    with torch.no_grad():
        torch.testing.assert_close(loaded(idx), m(idx))
