"""GPT-2: published sizes, cache consistency, Hugging Face round trips, checkpoint errors."""

import json

import pytest
import torch
from torch import Tensor

from edgegen.distill import fused_linear_kd_loss, kd_loss
from edgegen.models import GPT2, DenseAttention, GPT2Config, sample_next

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



@pytest.mark.parametrize("extra,match", [
    (dict(tie_word_embeddings=False), r"config.json: tie_word_embeddings is False \(an output head separate"),
    (dict(scale_attn_weights=False), r"config.json: scale_attn_weights is False \(attention scores not scaled"),
    (dict(scale_attn_by_inverse_layer_idx=True), r"config.json: scale_attn_by_inverse_layer_idx is True"),
], ids=["untied-head", "unscaled-attention", "inverse-layer-scaling"])
def test_hugging_face_variants_it_cannot_represent_are_refused(extra, match, tmp_path):
    """Each loaded without an error and computed other logits than transformers (by up to 27 for
    the untied head)."""
    transformers = pytest.importorskip("transformers", reason="transformers is not installed")
    hf_cfg = transformers.GPT2Config(vocab_size=97, n_positions=32, n_embd=32, n_layer=2, n_head=4, **extra)
    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(hf_cfg).eval()
    if not hf_cfg.tie_word_embeddings:
        with torch.no_grad():
            hf.lm_head.weight.normal_()
    hf.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=match):
        GPT2.from_pretrained(tmp_path)


def test_an_untied_lm_head_weight_is_refused(tmp_path):
    m = GPT2(TINY).eval()
    m.save_pretrained(tmp_path)
    from safetensors.torch import load_file, save_file

    state = load_file(str(tmp_path / "model.safetensors"))
    # The tied head stored beside wte (as pytorch_model.bin files have it) loads ...
    save_file(dict(state, **{"lm_head.weight": state["transformer.wte.weight"].clone()}),
              str(tmp_path / "model.safetensors"))
    idx = torch.randint(0, 97, (1, 8))
    with torch.no_grad():
        torch.testing.assert_close(GPT2.from_pretrained(tmp_path).eval()(idx), m(idx))
    # ... a different one was dropped silently.
    save_file(dict(state, **{"lm_head.weight": torch.randn(97, 32)}), str(tmp_path / "model.safetensors"))
    with pytest.raises(ValueError, match=r"lm_head.weight differs from the token embedding wte.weight"):
        GPT2.from_pretrained(tmp_path)
    # Saving such a model would drop its head the same way.
    m.lm_head.weight = torch.nn.Parameter(torch.randn(97, 32))
    with pytest.raises(ValueError, match=r"model: lm_head.weight differs from the token embedding wte.weight"):
        m.save_pretrained(tmp_path / "untied")
    assert not (tmp_path / "untied" / "model.safetensors").exists()


def test_save_pretrained_bakes_in_pruning_masks(tmp_path):
    """The masks were written as parametrizations...original / ...mask: edgegen could not reload
    the folder and transformers initialised the missing weights at random."""
    from edgegen.prune import MagnitudeConfig, prune_

    torch.manual_seed(0)
    m = prune_(GPT2(TINY).eval(), MagnitudeConfig(amount=0.5))
    m.save_pretrained(tmp_path)
    assert torch.nn.utils.parametrize.is_parametrized(m.h[0].attn.c_attn)  # the model keeps its masks
    idx = torch.randint(0, 97, (2, 16))
    loaded = GPT2.from_pretrained(tmp_path).eval()
    for a, b in zip(loaded.h, m.h):  # the masked weights, pruned entries exact zeros
        assert torch.equal(a.mlp.c_fc.weight, b.mlp.c_fc.weight) and (a.mlp.c_fc.weight == 0).any()
    with torch.no_grad():
        torch.testing.assert_close(loaded(idx), m(idx))
    transformers = pytest.importorskip("transformers", reason="transformers is not installed")
    hf, info = transformers.GPT2LMHeadModel.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    with torch.no_grad():
        torch.testing.assert_close(hf.eval()(idx).logits, m(idx), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("config", ["Int8DynamicConfig", "Fp16Config"], ids=["int8", "fp16"])
def test_save_pretrained_refuses_quantized_models(config, tmp_path):
    import warnings

    import edgegen.quant

    m = GPT2(TINY).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fp16: the tied table is converted once, with a warning
        edgegen.quant.quantize_(m, getattr(edgegen.quant, config)())
    with pytest.raises(ValueError, match=r"model: holds quantized layers \(.*\) that Hugging Face's "
                                         r"GPT2LMHeadModel cannot hold; .*save_quantized"):
        m.save_pretrained(tmp_path)
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_save_pretrained_refuses_sliding_window_attention(tmp_path):
    """Hugging Face would run the weights with dense attention: silently another model."""
    from edgegen.attention import SparseAttentionConfig, sparsify_attention_

    m = sparsify_attention_(GPT2(TINY).eval(), SparseAttentionConfig(window=4, num_global=1))
    with pytest.raises(ValueError, match=r"model: holds sliding-window attention \('h\.0\.attn\.attention': window=4, "
                                         r"num_global=1\), which Hugging Face's GPT2LMHeadModel"):
        m.save_pretrained(tmp_path)
    assert list(tmp_path.iterdir()) == []
    dense = sparsify_attention_(GPT2(TINY).eval(), SparseAttentionConfig(window=None))
    dense.save_pretrained(tmp_path)  # dense attention through edgegen's module is what GPT2LMHeadModel runs
    assert sorted(f.name for f in tmp_path.iterdir()) == ["config.json", "model.safetensors"]
    # A window covering the whole context is dense causal attention too.
    whole = sparsify_attention_(GPT2(TINY).eval(), SparseAttentionConfig(window=TINY.n_positions, num_global=1))
    whole.save_pretrained(tmp_path / "whole")
    assert GPT2.from_pretrained(tmp_path / "whole").config.n_positions == TINY.n_positions


def test_save_pretrained_checks_the_config_before_writing(tmp_path):
    """The weights used to be written before the config was refused: the folder then held the
    new weights beside the old config.json."""
    m = GPT2(TINY).eval()
    m.save_pretrained(tmp_path)
    before = {f.name: f.read_bytes() for f in tmp_path.iterdir()}
    pruned = GPT2(GPT2Config(vocab_size=97, n_positions=32, n_embd=32, n_layer=2, n_head=4, inner_sizes=(64, 96)))
    with pytest.raises(ValueError, match="inner_sizes: a feed-forward-pruned GPT-2"):
        pruned.save_pretrained(tmp_path)
    assert {f.name: f.read_bytes() for f in tmp_path.iterdir()} == before
    idx = torch.randint(0, 97, (1, 8))
    with torch.no_grad():
        torch.testing.assert_close(GPT2.from_pretrained(tmp_path).eval()(idx), m(idx))


@pytest.mark.parametrize("key,value,match", [
    ("dropout", 1.5, r"dropout: expected a number in \[0, 1\), got 1.5"),
    ("dropout", -0.1, r"dropout: expected a number in \[0, 1\), got -0.1"),
    ("dropout", 1.0, r"dropout: expected a number in \[0, 1\), got 1.0"),
    ("dropout", float("nan"), r"dropout: expected a number in \[0, 1\), got nan"),
    ("layer_norm_epsilon", -1.0, r"layer_norm_epsilon: expected a finite number > 0, got -1.0"),
    ("layer_norm_epsilon", 0.0, r"layer_norm_epsilon: expected a finite number > 0, got 0.0"),
    ("layer_norm_epsilon", float("inf"), r"layer_norm_epsilon: expected a finite number > 0, got inf"),
    ("layer_norm_epsilon", "1e-5", r"layer_norm_epsilon: expected a finite number > 0, got '1e-5'"),
], ids=["dropout-above-1", "dropout-negative", "dropout-1", "dropout-nan", "epsilon-negative", "epsilon-0",
        "epsilon-inf", "epsilon-str"])
def test_config_rates_and_epsilon_are_checked(key, value, match):
    """dropout=1.5 failed later, inside nn.Dropout; layer_norm_epsilon=-1 gave non-finite logits."""
    with pytest.raises(ValueError, match=match):
        GPT2Config(vocab_size=10, n_positions=8, n_embd=8, n_layer=1, n_head=1, **{key: value})
    if isinstance(value, float) and value == value and abs(value) != float("inf"):  # finite: read from data too
        with pytest.raises(ValueError, match=match):
            GPT2Config.from_dict({"kind": "gpt2", key: value})


# ------------------------------------------------------------------ generation arguments, nucleus
PROMPT = torch.zeros(1, 3, dtype=torch.long)

# (generate's arguments beyond the defaults idx=PROMPT, max_new_tokens=2; the message expected).
# Shared with the early-exit and dynamic-precision generators, which check the same way.
BAD_GENERATION = [
    (dict(top_k=0), r"top_k: expected None or an int >= 1, got 0"),
    (dict(top_k=-1), r"top_k: expected None or an int >= 1, got -1"),
    (dict(top_k=2.5), r"top_k: expected None or an int >= 1, got 2.5"),
    (dict(top_k=True), r"top_k: expected None or an int >= 1, got True"),
    (dict(temperature=float("nan")), r"temperature: expected a finite number >= 0, got nan"),
    (dict(temperature=float("inf")), r"temperature: expected a finite number >= 0, got inf"),
    (dict(temperature=-1.0, greedy=True), r"temperature: expected a finite number >= 0, got -1.0"),
    (dict(temperature="1"), r"temperature: expected a finite number >= 0, got '1'"),
    (dict(temperature=0.0, greedy=False), r"temperature: expected > 0 when sampling \(or greedy=True"),
    (dict(top_p=0.0), r"top_p: expected None or a number in \(0, 1\], got 0.0"),
    (dict(top_p=1.5), r"top_p: expected None or a number in \(0, 1\], got 1.5"),
    (dict(top_p=float("nan")), r"top_p: expected None or a number in \(0, 1\], got nan"),
    (dict(max_new_tokens=-3), r"max_new_tokens: expected an int >= 0, got -3"),
    (dict(max_new_tokens=2.0), r"max_new_tokens: expected an int >= 0, got 2.0"),
    (dict(max_new_tokens=True), r"max_new_tokens: expected an int >= 0, got True"),
    (dict(idx=PROMPT[:, :0]), r"idx: expected a prompt of at least one token per row, got shape \(1, 0\)"),
    (dict(idx=PROMPT.float()), r"idx: expected int64 token ids of shape \[B, T\], got torch.float32"),
    (dict(idx=PROMPT[0]), r"idx: expected int64 token ids of shape \[B, T\], got torch.int64 \(3,\)"),
]
BAD_GENERATION_IDS = ["top_k-0", "top_k-negative", "top_k-float", "top_k-bool", "temperature-nan",
                      "temperature-inf", "temperature-negative-greedy", "temperature-str", "temperature-0-sampling",
                      "top_p-0", "top_p-above-1", "top_p-nan", "max_new_tokens-negative", "max_new_tokens-float",
                      "max_new_tokens-bool", "idx-empty-prompt", "idx-float", "idx-1d"]


def generate_args(kwargs: dict) -> tuple[Tensor, object, dict]:
    kwargs = dict(kwargs)
    return kwargs.pop("idx", PROMPT), kwargs.pop("max_new_tokens", 2), kwargs


@pytest.mark.parametrize("use_cache", [True, False], ids=["cache", "no-cache"])
@pytest.mark.parametrize("kwargs,match", BAD_GENERATION, ids=BAD_GENERATION_IDS)
def test_bad_generation_arguments_name_the_argument(kwargs, match, use_cache):
    m = GPT2(TINY).eval()
    idx, n, kw = generate_args(kwargs)
    with pytest.raises(ValueError, match=match):
        m.generate(idx, n, use_cache=use_cache, **kw)


def test_temperature_zero_is_allowed_with_greedy_and_ignored():
    m = GPT2(TINY).eval()
    prompt = torch.randint(0, 97, (2, 4))
    assert torch.equal(m.generate(prompt, 5, greedy=True, temperature=0.0), m.generate(prompt, 5, greedy=True))


@pytest.mark.parametrize("use_cache", [True, False], ids=["cache", "no-cache"])
def test_generation_past_the_context_is_refused_before_the_first_token(use_cache):
    """Cached generation used to fail mid-way with an error naming idx, uncached generation to
    crop the context silently; both now refuse up front, with the same message."""
    m = GPT2(TINY).eval()  # n_positions 32
    calls = []
    m.register_forward_pre_hook(lambda *_: calls.append(1))
    prompt = torch.randint(0, 97, (1, 5), generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match=r"^max_new_tokens: the prompt length \(5\) plus max_new_tokens \(28\) is 33, "
                                         r"beyond the model's context n_positions \(32\); expected at most 27"):
        m.generate(prompt, 28, greedy=True, use_cache=use_cache)
    with pytest.raises(ValueError, match=r"^idx: the prompt length \(33\) alone exceeds the model's context "
                                         r"n_positions \(32\)"):
        m.generate(torch.zeros(1, 33, dtype=torch.long), 0, use_cache=use_cache)
    assert calls == []  # nothing ran
    full = m.generate(prompt, 27, greedy=True, use_cache=use_cache)  # exactly the context
    assert full.shape == (1, 32)
    assert torch.equal(full, m.generate(prompt, 27, greedy=True, use_cache=not use_cache))
    assert torch.equal(full[:, :6], m.generate(prompt, 1, greedy=True, use_cache=use_cache))


def test_generation_on_an_empty_batch_returns_an_empty_batch():
    m = GPT2(TINY).eval()
    for use_cache in (True, False):
        out = m.generate(torch.zeros(0, 4, dtype=torch.long), 3, use_cache=use_cache)
        assert out.shape == (0, 7) and out.dtype == torch.long


def nucleus_reference(logits: Tensor, top_p: float) -> Tensor:
    """Boolean [B, V]: the tokens of the nucleus, in float64 and NumPy, row by row: sorted by
    probability, a token is kept while the tokens before it hold less than top_p of the mass. At
    top_p = 1 that is every token of positive probability (exactly, the mass before one is < 1;
    a float64 running sum can round to 1 before the tail too)."""
    np = pytest.importorskip("numpy")
    if top_p >= 1:
        return torch.softmax(logits.double(), -1) > 0
    keep = torch.zeros(logits.shape, dtype=torch.bool)
    for r, row in enumerate(logits.double().numpy()):
        p = np.exp(row - row.max())
        p /= p.sum()
        order = np.argsort(-p, kind="stable")
        before = np.concatenate([[0.0], np.cumsum(p[order])[:-1]])
        keep[r, torch.from_numpy(order[before < top_p])] = True
    return keep


@pytest.mark.parametrize("scale", [1.0, 3.0, 5.0])
@pytest.mark.parametrize("top_p", [0.5, 0.9, 0.999, 1.0])
def test_nucleus_matches_a_float64_reference_on_the_gpt2_vocabulary(top_p, scale, monkeypatch):
    """With 50,257 tokens the float32 running sum passed 1 before the tail: top_p=1.0 kept 47,343
    tokens. The distribution sample_next samples from has exactly the reference's support."""
    logits = torch.randn(3, 50257, generator=torch.Generator().manual_seed(int(scale * 10))) * scale
    seen = []
    real = torch.multinomial
    monkeypatch.setattr(torch, "multinomial",
                        lambda p, n, generator=None: seen.append(p) or real(p, n, generator=generator))
    sample_next(logits, top_p=top_p)
    support = seen[-1] > 0
    expected = nucleus_reference(logits, top_p)
    assert support.sum(-1).tolist() == expected.sum(-1).tolist()
    assert torch.equal(support, expected)
    if top_p == 1.0:  # no filtering at all: the very distribution sampled without top_p
        assert expected.all()
        sample_next(logits)
        assert torch.equal(seen[-2], seen[-1])


def tempered_top_k_reference(logits: Tensor, temperature: float, top_k: int | None) -> Tensor:
    """[B, V] float64: softmax(logits / temperature) renormalised over the top_k largest logits
    of each row (all of them for None), 0 elsewhere."""
    z = logits.double() / temperature
    keep = torch.ones_like(z, dtype=torch.bool)
    if top_k is not None:
        keep = torch.zeros_like(keep).scatter_(-1, z.argsort(-1, descending=True)[:, :top_k], True)
    p = torch.exp(z - z.max(-1, keepdim=True).values) * keep
    return p / p.sum(-1, keepdim=True)


def _capture_multinomial(monkeypatch) -> list:
    seen = []
    real = torch.multinomial
    monkeypatch.setattr(torch, "multinomial",
                        lambda p, n, generator=None: seen.append(p) or real(p, n, generator=generator))
    return seen


SAMPLING = [(0.5, None), (2.0, None), (0.7, 3), (1.5, 7), (1.0, 4)]
SAMPLING_IDS = ["T0.5", "T2", "T0.7-k3", "T1.5-k7", "T1-k4"]


@pytest.mark.parametrize("temperature, top_k", SAMPLING, ids=SAMPLING_IDS)
def test_sampling_distribution_is_the_tempered_top_k_softmax(temperature, top_k, monkeypatch):
    logits = torch.randn(4, 97, generator=torch.Generator().manual_seed(7)) * 3
    seen = _capture_multinomial(monkeypatch)
    sample_next(logits, temperature=temperature, top_k=top_k)
    want = tempered_top_k_reference(logits, temperature, top_k)
    assert (seen[-1] > 0).sum(-1).tolist() == [top_k or 97] * 4
    assert torch.equal(seen[-1] > 0, want > 0)
    torch.testing.assert_close(seen[-1].double(), want, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("temperature, top_k", SAMPLING, ids=SAMPLING_IDS)
def test_generate_samples_from_the_tempered_top_k_softmax(temperature, top_k, monkeypatch):
    m = GPT2(TINY).eval()
    with torch.no_grad():
        m.lm_head.weight.mul_(20)  # tied with wte: logits spread enough that temperature shows
    prompt = torch.randint(0, 97, (2, 5))
    with torch.no_grad():
        logits = m(prompt)[:, -1, :]
    seen = _capture_multinomial(monkeypatch)
    m.generate(prompt, 1, temperature=temperature, top_k=top_k, generator=torch.Generator().manual_seed(0))
    want = tempered_top_k_reference(logits, temperature, top_k)
    assert len(seen) == 1 and (seen[0] > 0).sum(-1).tolist() == [top_k or 97] * 2
    assert torch.equal(seen[0] > 0, want > 0)
    torch.testing.assert_close(seen[0].double(), want, rtol=1e-4, atol=1e-6)
