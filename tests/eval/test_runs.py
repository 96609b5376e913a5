"""Trained runs loaded as the model a user ships, compressed after training, evaluated (metrics
equal to the instruments applied by hand), compared, and driven from the command line."""

import csv
import io
import json
import os
import re
from pathlib import Path

import pytest
import torch

from edgegen.cli import main
from edgegen.eval.fid import fid, get_extractor
from edgegen.eval.runs import EvalOptions, compare_runs, evaluate_run, load_run
from edgegen.quant import Int8Linear
from edgegen.quant.modules import Int8ConvTranspose2d
from edgegen.train.loop import Trainer
from edgegen.train.posthoc import compress_from
from tests.data.test_cifar import make_cifar
from tests.data.test_text import make_wikitext, tiny_tokenizer_dir  # noqa: F401  (fixture)
from tests.train.helpers import tiny

REAL = Path(os.environ.get("EDGEGEN_DATA_DIR", "/nonexistent"))


@pytest.fixture
def env(tmp_path, monkeypatch):
    """Fixture CIFAR-10 (for the proxy extractor) as the data root, a private cache, no FID weights."""
    make_cifar(tmp_path / "data", n=24)
    monkeypatch.setenv("EDGEGEN_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("EDGEGEN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("EDGEGEN_FID_WEIGHTS", raising=False)
    return tmp_path


def _train(cfg, tmp_path, name):
    run_dir = tmp_path / "runs" / name
    Trainer(cfg, run_dir, progress=False).fit()
    return run_dir


def _opts(**kw):
    base = dict(samples=40, batch_size=16, proxy_epochs=1, profile_repeats=2, profile_min_time_s=0.0)
    base.update(kw)
    return EvalOptions(**base)


def test_gan_fid_proxy_equals_the_metric_applied_by_hand(env):
    run_dir = _train(tiny("gan", env), env, "gan")
    run = load_run(run_dir)
    assert run.form == "float" and run.kind == "dcgan" and not run.model.training
    res = evaluate_run(run, _opts(metrics=("fid", "kid")))
    m = res["metrics"]
    assert "fid" not in m and "kid" not in m  # no standard weights: never called FID
    assert {"fid_proxy", "kid_proxy", "kid_proxy_std_error"} <= set(m)
    assert "FID-proxy" in res["labels"]["fid_proxy"] and "synthetic set" in res["labels"]["fid_proxy"]
    # by hand: the same extractor, the same latents, the run's real images
    ext = get_extractor("proxy", root=env / "data", epochs=1)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        fake = torch.cat([run.model(torch.randn(k, 8, generator=g)) for k in (16, 16, 8)])
    from edgegen.train.data import SyntheticImages

    real = ((SyntheticImages(96, seed=1234).images[:40].clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    assert m["fid_proxy"] == pytest.approx(fid(fake, real, ext, value_range=(-1, 1)).value, rel=1e-6)


@pytest.mark.filterwarnings("ignore:fid.*unreliable at this size:RuntimeWarning")  # 24 images, 256 features
def test_prdc_of_a_gan_run_equals_the_metric_on_the_same_images(env):
    from edgegen.train.data import SyntheticImages

    run = load_run(_train(tiny("gan", env), env, "gan-prdc"))
    res = evaluate_run(run, _opts(metrics=("prdc",), samples=24, batch_size=16))
    m = res["metrics"]
    assert {"precision_proxy", "recall_proxy", "density_proxy", "coverage_proxy", "fid_proxy"} <= set(m)
    assert not {"precision", "recall", "density", "coverage"} & set(m)  # a proxy network: never named plainly
    assert "k = 5" in res["labels"]["prdc"] and "FID-proxy network" in res["labels"]["prdc"]
    ext = get_extractor("proxy", root=env / "data", epochs=1)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        fake = run.model(torch.randn(24, 8, generator=g))
    real = ((SyntheticImages(96, seed=1234).images[:24].clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    ref = fid(fake, real, ext, value_range=(-1, 1), manifold=True, manifold_k=5).manifold
    for name in ("precision", "recall", "density", "coverage"):
        assert m[f"{name}_proxy"] == pytest.approx(getattr(ref, name), abs=1e-9)


def test_quantized_training_run_loads_as_shipped(env):
    cfg = tiny("gan", env, compress={"ptq": {"kind": "Int8DynamicConfig"}})
    run_dir = _train(cfg, env, "ptq")
    shipped = load_run(run_dir)
    assert shipped.form == "int8 (ptq)" and any(isinstance(m, Int8ConvTranspose2d) for m in shipped.model.modules())
    flt = load_run(run_dir, form="float")
    assert not any(isinstance(m, Int8ConvTranspose2d) for m in flt.model.modules())
    z = torch.randn(4, 8)
    with torch.no_grad():
        torch.testing.assert_close(shipped.model(z), flt.model(z), atol=0.1, rtol=0)


def test_channel_pruning_run_saves_and_loads_the_shrunk_model(env):
    cfg = tiny("vae", env, compress={"prune": {"kind": "ChannelConfig", "amount": 0.5}})
    run_dir = _train(cfg, env, "chan")
    assert (run_dir / "model-shrunk.safetensors").is_file()
    shipped, flt = load_run(run_dir), load_run(run_dir, form="float")
    assert shipped.form == "pruned, shrunk" and flt.form == "float, pruned (masks baked in)"
    n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert n(shipped.model) < n(flt.model)
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(shipped.model.reconstruct(x), flt.model.reconstruct(x), atol=1e-4, rtol=1e-4)


@pytest.fixture
def no_unpickling(monkeypatch):
    """torch.load that refuses to unpickle (weights_only=False): loading must never need it."""
    real = torch.load

    def load(*args, **kwargs):
        assert kwargs.get("weights_only", True) is True, "a run folder file was unpickled"
        return real(*args, **kwargs)

    monkeypatch.setattr(torch, "load", load)


def test_the_shrunk_model_is_rebuilt_from_the_checkpoint_and_takes_the_files_tensors(env, no_unpickling):
    from edgegen.tensor_files import read_safetensors, write_safetensors

    cfg = tiny("vae", env, compress={"prune": {"kind": "ChannelConfig", "amount": 0.5}})
    run_dir = _train(cfg, env, "chan")
    art = run_dir / "model-shrunk.safetensors"
    assert not list(run_dir.glob("model-shrunk.pt"))
    state, _ = read_safetensors(art)
    shipped = load_run(run_dir)
    assert shipped.source[-1] == str(art)
    assert {k: v.shape for k, v in shipped.model.state_dict().items()} == {k: v.shape for k, v in state.items()}
    name = next(k for k, v in state.items() if v.is_floating_point() and v.dim() > 1)
    state[name] = state[name] * 2  # the shipped tensors are the file's
    write_safetensors(state, art)
    torch.testing.assert_close(load_run(run_dir).model.state_dict()[name], state[name], rtol=0, atol=0)
    state[name] = state[name][:1]  # a file from another run: shapes the checkpoint does not shrink to
    write_safetensors(state, art)
    with pytest.raises(ValueError, match=f"model-shrunk.safetensors: does not match the model the run's checkpoint "
                                         f"shrinks to \\(first differing tensors: {re.escape(name)}"):
        load_run(run_dir)


def test_compress_from_ships_tensors_only_and_refuses_an_earlier_pickle(env, no_unpickling):
    src = _train(tiny("vae", env), env, "vae")
    out = Path(compress_from(src, {"prune": {"kind": "ChannelConfig", "amount": 0.5},
                                   "ptq": {"kind": "Int8DynamicConfig"}})["run_dir"])
    assert sorted(p.name for p in out.iterdir() if p.suffix == ".pt") == []
    run, flt = load_run(out), load_run(out, form="float")
    n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert any(isinstance(m, Int8Linear) for m in run.model.modules()) and n(run.model) < n(flt.model)
    shrunk = Path(compress_from(src, {"prune": {"kind": "ChannelConfig", "amount": 0.5}}, env / "shrunk")["run_dir"])
    small = load_run(shrunk)
    assert small.form == "compressed after training: channel0.5" and n(small.model) < n(flt.model)
    assert small.source[-1] == str(shrunk / "model-shrunk.safetensors")
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(small.model.reconstruct(x), flt.model.reconstruct(x), atol=1e-4, rtol=1e-4)
    # A folder an earlier edgegen wrote: the quantized model only as a pickled module.
    (out / "model-ptq.safetensors").rename(out / "model-shipped.pt")
    with pytest.raises(ValueError, match="holds its compressed model only as model-shipped.pt, a pickle written by an "
                                         "earlier edgegen, which is not loaded"):
        load_run(out)
    assert load_run(out, form="float").form == "float"


def test_unstructured_pruning_run_saves_sparse(env):
    cfg = tiny("gan", env, compress={"prune": {"kind": "MagnitudeConfig", "amount": 0.5}, "prune_end": 4,
                                     "prune_frequency": 1})
    run_dir = _train(cfg, env, "mag")
    assert (run_dir / "model-sparse.safetensors").is_file()
    run = load_run(run_dir)
    assert run.form == "float, pruned (masks baked in)"
    w = torch.cat([p.detach().flatten() for n, p in run.model.named_parameters() if n.endswith("weight")
                   and p.dim() > 1])
    assert float((w == 0).float().mean()) > 0.3


def test_compress_from_a_trained_run(env):
    src = _train(tiny("vae", env), env, "vae")
    out = compress_from(src, {"prune": {"kind": "ChannelConfig", "amount": 0.5}, "ptq": {"kind": "Int8DynamicConfig"}})
    assert Path(out["run_dir"]).name == "vae-channel0.5-int8dynamic"
    run = load_run(out["run_dir"])
    assert run.form == "compressed after training: channel0.5-int8dynamic"
    assert any(isinstance(m, (Int8Linear,)) for m in run.model.modules())
    flt = load_run(out["run_dir"], form="float")  # the pruned float weights, full architecture
    assert run.config.compress.prune.amount == 0.5
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(run.model.reconstruct(x), flt.model.reconstruct(x), atol=0.1, rtol=0)
    static = compress_from(src, {"ptq": {"kind": "Int8StaticConfig"}}, env / "static")
    assert (env / "static" / "model-ptq.safetensors").is_file() and "quantized" in static["artifacts"]
    assert load_run(env / "static").form == "compressed after training: int8static"


@pytest.mark.parametrize("section, match", [
    ({}, "compress: expected a compress section"),
    ({"qat": True}, "compress.qat: quantization-aware training needs training"),
    ({"prune_begin": 0}, "compress: expected prune and/or ptq"),
    ({"ptq": {"kind": "Int3"}}, "ptq.kind: expected one of"),
], ids=["empty", "qat", "nothing", "bad-kind"])
def test_compress_from_bad_sections(env, section, match):
    src = _train(tiny("gan", env), env, "g")
    with pytest.raises(ValueError, match=match):
        compress_from(src, section)


def test_vae_metrics_profile_and_projection(env):
    run_dir = _train(tiny("vae", env), env, "vae")
    res = evaluate_run(load_run(run_dir), _opts(metrics=("vae",), profile=True, device_profiles=("rpi4", "pixel6")))
    m = res["metrics"]
    assert {"vae_neg_elbo", "vae_recon_ssim", "vae_recon_psnr_db", "params", "flops", "bytes_on_disk",
            "latency_ms_p50", "rpi4_latency_ms_projected", "pixel6_energy_j_projected"} <= set(m)
    assert ("energy_j" in m) != ("energy_j_estimated" in m)  # one of the two, labelled by its name
    assert "projected" in res["labels"]["rpi4_projected"]
    assert m["vae_neg_elbo"] == pytest.approx(m["vae_elbo_reconstruction"] + 1.0 * m["vae_elbo_kl"])


def test_metric_names_are_checked(env):
    run = load_run(_train(tiny("gan", env), env, "g"))
    with pytest.raises(ValueError, match="metrics: unknown"):
        evaluate_run(run, _opts(metrics=("fidd",)))
    with pytest.raises(ValueError, match="are text metrics"):
        evaluate_run(run, _opts(metrics=("ppl",)))
    with pytest.raises(ValueError, match="a DCGAN has no encoder"):
        evaluate_run(run, _opts(metrics=("ssim",)))


def test_load_run_bad_paths(tmp_path):
    with pytest.raises(FileNotFoundError, match="run_dir: .* does not exist"):
        load_run(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="has no checkpoints/last.pt"):
        load_run(tmp_path / "empty")
    with pytest.raises(ValueError, match="which: expected 'last' or 'best'"):
        load_run(tmp_path, which="first")
    bogus = tmp_path / "bogus.pt"
    torch.save({"weights": 1}, bogus)
    with pytest.raises(ValueError, match="not an edgegen run checkpoint"):
        load_run(bogus)


@pytest.mark.skipif(not (REAL / "wikitext-2-raw" / "wiki.test.raw").is_file() or not (REAL / "gpt2").is_dir(),
                    reason="EDGEGEN_DATA_DIR does not hold wikitext-2-raw/ and gpt2/")
def test_lm_run_perplexity_prefix_and_text(tmp_path):
    from edgegen.eval.text import perplexity

    cfg = tiny("lm", tmp_path, model={"vocab_size": 50257, "n_positions": 64})
    run = load_run(_train(cfg, tmp_path, "lm"))
    res = evaluate_run(run, _opts(metrics=("ppl", "bleu", "text"), max_tokens=300, text_prompts=2,
                                  text_new_tokens=8, data_root=str(REAL)))
    m = res["metrics"]
    assert "wikitext2_ppl" not in m and m["wikitext2_ppl_prefix_tokens"] == 299
    assert "first 300 tokens" in res["labels"]["wikitext2_ppl_prefix"]
    from edgegen.eval.runs import _lm_tokens

    tokens, _, text = _lm_tokens(_opts(data_root=str(REAL)))
    assert text.official
    ref = perplexity(run.model, tokens, context=64, stride=32, max_tokens=300)
    assert m["wikitext2_ppl_prefix"] == pytest.approx(ref.perplexity, rel=1e-9)
    assert 0.0 <= m["distinct_2"] <= 1.0 and 0.0 <= m["bleu"] <= 100.0


@pytest.mark.filterwarnings("ignore:.*differs from OpenAI's published:UserWarning")  # the fixture tokenizer
def test_lm_eval_of_a_wikitext_file_that_is_not_the_official_one_says_so(env, tiny_tokenizer_dir,
                                                                        monkeypatch):  # noqa: F811
    import hashlib
    import warnings

    import edgegen.data.wikitext as wikitext_mod

    path = make_wikitext(env / "data") / "wiki.test.raw"
    (env / "data" / "gpt2").mkdir()
    for name in ("encoder.json", "vocab.bpe"):
        (env / "data" / "gpt2" / name).write_bytes((tiny_tokenizer_dir[0] / name).read_bytes())
    run = load_run(_train(tiny("lm", env, model={"vocab_size": 260, "n_positions": 64}), env, "lm"))
    opts = _opts(metrics=("ppl", "bleu", "text"), text_prompts=2, text_new_tokens=4)
    with pytest.warns(UserWarning, match=r"wiki.test.raw: SHA-256 differs from the published"):
        res = evaluate_run(run, opts)
    m, labels = res["metrics"], res["labels"]
    assert "wikitext2_ppl" not in m and "wikitext2_ppl_nonstandard" in m and "wikitext2_ppl_nonstandard_tokens" in m
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert labels["wikitext2_ppl_nonstandard"].startswith(
        f"WikiText-2-nonstandard ({path}, sha256 {digest[:16]}..., not the official test split 173c87a53759e020...")
    assert labels["wikitext2_ppl_nonstandard"].endswith("tokens scored (full)")
    assert all("WikiText-2-nonstandard" in labels[k] for k in ("text", "bleu"))
    assert "wikitext2_ppl_nonstandard" in compare_runs([res])["columns"]
    with pytest.warns(UserWarning, match=r"wiki.test.raw: SHA-256 differs from the published"):
        prefix = evaluate_run(run, _opts(metrics=("ppl",), max_tokens=20))["metrics"]
    assert set(prefix) == {"wikitext2_ppl_prefix_nonstandard", "wikitext2_ppl_prefix_nonstandard_tokens"}
    # The same file as the published one: the standard name and label, no warning.
    monkeypatch.setattr(wikitext_mod, "SHA256", dict(wikitext_mod.SHA256, test=digest))
    with warnings.catch_warnings():
        warnings.filterwarnings("error", r".*wiki\.test\.raw", UserWarning)
        official = evaluate_run(run, opts)
    assert official["metrics"]["wikitext2_ppl"] == m["wikitext2_ppl_nonstandard"]
    assert official["labels"]["wikitext2_ppl"].startswith("WikiText-2 raw test, sliding window context 64 stride 32, ")
    assert official["labels"]["text"].endswith("from 32-token WikiText-2 test prompts")
    assert "wikitext2_ppl_nonstandard" not in official["metrics"]


def test_compare_table(env):
    a = {"name": "base", "form": "float", "metrics": {"fid_proxy": 50.0, "latency_ms_p50": 2.0, "params": 100.0},
         "labels": {"fid_proxy": "FID-proxy (x)"}}
    b = {"name": "pruned", "form": "pruned, shrunk", "metrics": {"fid_proxy": 55.0, "latency_ms_p50": 1.0,
                                                                  "params": 40.0, "sparsity": 0.6},
         "labels": {"fid_proxy": "FID-proxy (x)"}}
    t = compare_runs([a, b], env / "cmp")
    assert t["columns"] == ["run", "config", "kind", "form", "fid_proxy", "params", "sparsity", "latency_ms_p50"]
    rows = list(csv.reader(io.StringIO(t["csv"])))
    assert rows[1] == ["base", "base", "", "float", "50.0", "100.0", "", "2.0"] and rows[2][0] == "pruned"
    assert "| pruned | pruned | - | pruned, shrunk | 55 | 40 | 0.6 | 1 |" in t["markdown"]
    assert t["markdown"].count("FID-proxy (x)") == 1  # a shared label once
    assert set(t["paths"]) == {"markdown", "csv", "plot"} and Path(t["paths"]["plot"]).is_file()
    with pytest.raises(ValueError, match="results: expected at least one"):
        compare_runs([])


def test_compare_table_keeps_nonstandard_fid_apart(env):
    """FID from non-standard Inception weights has its own column: never merged into fid."""
    runs = [{"name": n, "form": "float", "metrics": {"fid_nonstandard": v, "kid_nonstandard": 0.1},
             "labels": {"fid_nonstandard": "FID-nonstandard (sha256 ab12...)"}} for n, v in (("a", 10.0), ("b", 12.0))]
    t = compare_runs(runs)
    assert t["columns"] == ["run", "config", "kind", "form", "fid_nonstandard", "kid_nonstandard"]
    assert "fid" not in t["columns"] and "| a | a | - | float | 10 | 0.1 |" in t["markdown"]


@pytest.mark.slow
def test_cli_eval_logs_to_the_training_run_and_compare(env, capsys):
    cfg = tiny("gan", env, tracking={"enabled": True, "uri": f"sqlite:///{env / 'mlflow.db'}"})
    run_dir = _train_tracked(cfg, env)
    assert main(["eval", str(run_dir), "--metrics", "fid", "--samples", "30", "--no-progress"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert "fid_proxy" in out["metrics"] and (run_dir / "eval-last-shipped.json").is_file()
    from mlflow.tracking import MlflowClient

    info = json.loads((run_dir / "mlflow_run.json").read_text())
    run = MlflowClient(info["uri"]).get_run(info["run_id"])
    assert run.data.metrics["eval/last-shipped/fid_proxy"] == pytest.approx(out["metrics"]["fid_proxy"])
    assert run.info.status == "FINISHED" and run.data.tags["eval.last-shipped.form"] == "float"
    (env / "ptq.yaml").write_text("compress: {ptq: {kind: Int8DynamicConfig}}\n")
    assert main(["compress", "--from", str(run_dir), str(env / "ptq.yaml")]) == 0
    capsys.readouterr()
    assert main(["compare", str(run_dir), str(run_dir) + "-int8dynamic", "--metrics", "fid", "--samples", "30",
                 "--out", str(env / "cmp"), "--no-log", "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "| tracked-int8dynamic | t-gan-int8dynamic | dcgan | compressed after training: int8dynamic |" in text
    assert (env / "cmp" / "compare.csv").is_file()
    assert main(["eval", str(env / "missing")]) == 2


def _train_tracked(cfg, env):
    from edgegen.tracking import make_tracker

    run_dir = env / "runs" / "tracked"
    tracker = make_tracker(cfg.tracking, cfg.name, run_dir)
    Trainer(cfg, run_dir, tracker, progress=False).fit()
    tracker.finish()
    return run_dir


def test_onnx_beside_edgegen(env):
    pytest.importorskip("onnxruntime", reason="the export extra (onnx, onnxruntime) is not installed")
    cfg = tiny("vae", env, compress={"ptq": {"kind": "Int8DynamicConfig"}})
    run = load_run(_train(cfg, env, "vq"))
    assert run.form == "int8 (ptq)"
    res = evaluate_run(run, _opts(metrics=("vae",), onnx=True))
    m = res["metrics"]
    assert m["onnx_max_abs_diff"] < 1e-3 and m["onnx_int8_dynamic_bytes"] < m["onnx_fp32_bytes"]
    assert m["onnxruntime_fp32_latency_ms_p50"] > 0 and m["onnxruntime_int8_dynamic_latency_ms_p50"] > 0
    assert "float weights" in res["labels"]["onnx"]
    # the VAE decoder's 2 Linear layers are quantized, its 4 ConvTranspose layers are not (dynamic mode);
    # the per-channel zero points ONNX Runtime adds are 8-bit too but are not weights (were: 4 of 6)
    assert m["onnx_int8_quantized_weight_fraction"] == 2 / 6
    assert "2 of 6 weight tensors in 8 bits" in res["labels"]["onnx"]


def test_real_statistics_of_the_test_split_are_cached(env):
    cfg = tiny("gan", env, data={"name": "cifar10", "root": str(env / "data")})
    run = load_run(_train(cfg, env, "cifar"))
    first = evaluate_run(run, _opts(metrics=("fid",), samples=20))
    cached = list((env / "cache" / "fid-stats").glob("*.cifar10.test.64.20.npz"))
    assert len(cached) == 1 and "CIFAR-10 test split, first 20 images" in first["labels"]["fid_proxy"]
    again = evaluate_run(run, _opts(metrics=("fid",), samples=20))
    assert again["metrics"]["fid_proxy"] == pytest.approx(first["metrics"]["fid_proxy"], rel=1e-12)


def test_best_checkpoint_is_not_served_from_last_artifacts(env):
    cfg = tiny("gan", env, compress={"ptq": {"kind": "Int8DynamicConfig"}})
    run_dir = _train(cfg, env, "ptq-best")
    assert (run_dir / "checkpoints" / "best.pt").is_file()
    with pytest.raises(ValueError, match="which: the shipped artifacts .* were made from the last checkpoint"):
        load_run(run_dir, which="best")
    assert load_run(run_dir, which="best", form="float").checkpoint.name == "best.pt"


def test_kid_subset_is_at_most_half_the_samples():
    from edgegen.eval.runs import _kid_subset

    assert _kid_subset(1000, 1017) == 500 and _kid_subset(50000, 10000) == 1000 and _kid_subset(3, 3) == 2


def test_a_run_started_from_a_checkpoint_loads_with_that_architecture(env):
    """The model section names only init_from (and the vocabulary): the run's architecture is
    the init checkpoint's, and loading the finished run rebuilds it from there."""
    first = _train(tiny("lm", env, name="first", model={"n_layer": 2}), env, "first")
    ck = str(first / "checkpoints" / "last.pt")
    cfg = tiny("lm", env, name="second")
    cfg = type(cfg).from_dict({**cfg.to_dict(), "model": {"kind": "gpt2", "vocab_size": 64, "n_positions": 32,
                                                          "init_from": ck}})
    second = _train(cfg, env, "second")
    run = load_run(second)
    assert len(run.model.h) == 2 and run.model.config.n_embd == 32
    trained = torch.load(second / "checkpoints" / "last.pt", weights_only=False)["modules"]["model"]
    assert torch.equal(run.model.wte.weight, trained["wte.weight"])


# ------------------------------------------------------------------ the review's defects, one test each
def _quantized_file(tmp_path, name, *configs):
    """A two-layer model quantized layer by layer (configs[i] on layer i), saved by save_quantized."""
    from edgegen.quant import quantize_, save_quantized

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.Linear(64, 64))
    for i, config in enumerate(configs):
        quantize_(model, config, filter_fn=lambda m, n, i=i: n == str(i))
    save_quantized(model, tmp_path / name)
    return tmp_path / name


def test_quantized_form_is_named_from_the_file_layout(tmp_path):
    from edgegen.eval.runs import quantized_form
    from edgegen.quant import Bf16Config, Fp16Config, Int4DynamicConfig, Int4WeightOnlyConfig, Int8DynamicConfig

    int8, int4 = Int8DynamicConfig(), Int4WeightOnlyConfig(group_size=32)
    cases = {"int8": (int8, int8), "int4 weight-only": (int4, int4),
             "int4 W4A8": (Int4DynamicConfig(group_size=32),) * 2, "fp16": (Fp16Config(),) * 2,
             "bf16": (Bf16Config(),) * 2, "int8 + int4 weight-only": (int8, int4)}
    for i, (expected, configs) in enumerate(cases.items()):
        assert quantized_form(_quantized_file(tmp_path, f"q{i}.safetensors", *configs)) == expected
    from edgegen.tensor_files import write_safetensors

    write_safetensors({"w": torch.zeros(2)}, tmp_path / "plain.safetensors")
    with pytest.raises(ValueError, match="plain.safetensors: was not written by edgegen.quant.save_quantized"):
        quantized_form(tmp_path / "plain.safetensors")


def test_an_int4_training_run_is_not_called_int8(env):
    cfg = tiny("lm", env, compress={"ptq": {"kind": "Int4WeightOnlyConfig"}})
    run = load_run(_train(cfg, env, "lm-int4"))
    assert run.form == "int4 weight-only (ptq)"  # was: "int8 (ptq)"


def _strip_qat_keys(state):
    """A QAT checkpoint's float weights under the plain model's names (the fake-quantization
    scales dropped): an independent reference for the float model ONNX exports."""
    out = {}
    for k, v in state.items():
        if ".module." in k:
            out[k.replace(".module.", ".")] = v
        elif not k.endswith(("weight_scale", "act_scale", "act_zero_point", "weight_zero_point", "initialized")):
            out[k] = v
    return out


def test_onnx_of_a_qat_run_exports_its_float_weights_and_keeps_the_metrics(env):
    pytest.importorskip("onnxruntime", reason="the export extra (onnx, onnxruntime) is not installed")
    from edgegen.export import export_onnx, run_onnx

    run_dir = _train(tiny("vae", env, compress={"qat": True}), env, "vae-qat")
    run = load_run(run_dir)
    assert run.form == "int8 (qat)"
    res = evaluate_run(run, _opts(metrics=("vae",), onnx=True))  # was: ValueError after the VAE metrics
    from edgegen.eval.runs import _onnx_source
    m = res["metrics"]
    assert {"vae_neg_elbo", "onnx_fp32_bytes", "onnxruntime_int8_dynamic_latency_ms_p50"} <= set(m)
    assert "QAT's fake quantization removed" in res["labels"]["onnx"] and m["onnx_max_abs_diff"] < 1e-3
    # what is exported is the trained float weights, not the fake-quantized model
    model, _ = _onnx_source(run)
    plain = run.config.model.build()
    state = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=False)["modules"]["model"]
    plain.load_state_dict(_strip_qat_keys(state))  # strict: every float weight, nothing else
    z = torch.randn(3, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(model.decode(z), plain.eval().decode(z), rtol=0, atol=0)
    onnx_file = export_onnx(model, path=env / "qat.onnx")
    with torch.no_grad():
        ref = plain.decode(z)
    torch.testing.assert_close(torch.from_numpy(run_onnx(onnx_file.path, (z,))[0]), ref, atol=1e-4, rtol=1e-4)


def test_onnx_of_a_bf16_run_and_an_export_failure_keep_the_metrics(env, monkeypatch, capsys):
    pytest.importorskip("onnxruntime", reason="the export extra (onnx, onnxruntime) is not installed")
    run_dir = _train(tiny("vae", env, compress={"ptq": {"kind": "Bf16Config"}}), env, "vae-bf16")
    run = load_run(run_dir)
    assert run.form == "bf16 (ptq)"
    res = evaluate_run(run, _opts(metrics=("vae",), onnx=True))  # was: ONNX Runtime InvalidGraph
    assert "onnx_fp32_bytes" in res["metrics"] and "float weights" in res["labels"]["onnx"]

    import edgegen.export

    def broken(*a, **k):
        raise RuntimeError("exporter exploded")

    monkeypatch.setattr(edgegen.export, "export_onnx", broken)
    with pytest.warns(RuntimeWarning, match="no ONNX metrics .* the other metrics are kept"):
        res = evaluate_run(run, _opts(metrics=("vae",), onnx=True))
    assert res["labels"]["onnx"] == "ONNX unavailable for this run: RuntimeError: exporter exploded"
    assert "vae_neg_elbo" in res["metrics"] and not any("onnx" in k for k in res["metrics"])
    assert main(["eval", str(run_dir), "--metrics", "vae", "--samples", "8", "--onnx", "--no-log",
                 "--no-progress"]) == 0
    saved = json.loads((run_dir / "eval-last-shipped.json").read_text())
    assert "vae_neg_elbo" in saved["metrics"] and saved["labels"]["onnx"].startswith("ONNX unavailable")


def test_compare_keys_rows_by_run_folder(tmp_path):
    def res(folder, form, fid, label):
        return {"run": str(tmp_path / folder), "name": "t-gan", "kind": "dcgan", "form": form,
                "metrics": {"fid_proxy": fid}, "labels": {"fid_proxy": label}}

    t = compare_runs([res("runs/t-gan/seed0", "float", 50.0, "L0"), res("runs/t-gan/seed1", "float", 52.0, "L1"),
                      res("other/t-gan/seed0", "float", 54.0, "L2"), res("runs/t-gan/seed1", "int8 (ptq)", 56.0, "L1")])
    rows = list(csv.reader(io.StringIO(t["csv"])))
    assert rows == [["run", "config", "kind", "form", "fid_proxy"],
                    ["runs/t-gan/seed0", "t-gan", "dcgan", "float", "50.0"],
                    ["seed1 [float]", "t-gan", "dcgan", "float", "52.0"],
                    ["other/t-gan/seed0", "t-gan", "dcgan", "float", "54.0"],
                    ["seed1 [int8 (ptq)]", "t-gan", "dcgan", "int8 (ptq)", "56.0"]]
    # one label per row (was: keyed by config name, the last run's label overwrote the others)
    for rid, label in (("runs/t-gan/seed0", "L0"), ("seed1 [float]", "L1"), ("other/t-gan/seed0", "L2"),
                       ("seed1 [int8 (ptq)]", "L1")):
        assert f"- fid_proxy ({rid}): {label}\n" in t["markdown"]
    same = compare_runs([res("a", "float", 1.0, "x"), res("a", "float", 2.0, "x")])
    assert [r[0] for r in csv.reader(io.StringIO(same["csv"]))][1:] == ["a #1", "a #2"]
    last, best = res("a", "float", 1.0, "x"), res("a", "float", 2.0, "x")
    last["eval_id"], best["eval_id"] = "last-float", "best-float"  # one folder, two checkpoints
    both = compare_runs([last, best])
    assert [r[0] for r in csv.reader(io.StringIO(both["csv"]))][1:] == ["a [last-float]", "a [best-float]"]


def test_compare_says_when_model_kinds_differ(env):
    rows = [{"run": str(env / "g"), "name": "g", "kind": "dcgan", "form": "float",
             "metrics": {"fid_proxy": 50.0, "latency_ms_p50": 1.0}, "labels": {}},
            {"run": str(env / "v"), "name": "v", "kind": "vae", "form": "float", "preset": "cpu-smoke",
             "metrics": {"fid_proxy": 60.0, "latency_ms_p50": 2.0}, "labels": {}}]
    with pytest.warns(RuntimeWarning, match=r"mix model kinds \(dcgan, vae\)"):
        t = compare_runs(rows, env / "cmp")
    assert t["columns"][:5] == ["run", "config", "kind", "preset", "form"]
    assert "| g | g | dcgan | - | float | 50 | 1 |" in t["markdown"]
    assert "| v | v | vae | cpu-smoke | float | 60 | 2 |" in t["markdown"]
    assert "- NOTE: these rows mix model kinds (dcgan, vae)" in t["markdown"]
    assert Path(t["paths"]["plot"]).is_file()
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # one kind: no note, no warning
        one = compare_runs([rows[0], {**rows[0], "run": str(env / "g2")}])
    assert "NOTE" not in one["markdown"] and "preset" not in one["columns"]


def test_best_checkpoint_path_gets_the_same_guard(env):
    cfg = tiny("gan", env, compress={"ptq": {"kind": "Int8DynamicConfig"}})
    run_dir = _train(cfg, env, "ptq-best-path")
    best = run_dir / "checkpoints" / "best.pt"
    with pytest.raises(ValueError, match=r"path: the shipped artifacts .* were made from the last checkpoint .* "
                                         r"not from best.pt"):
        load_run(best)  # was: the last checkpoint's INT8 artifact, served as the best checkpoint
    flt = load_run(best, form="float")
    assert flt.checkpoint == best and flt.form == "float" and flt.eval_id == "best-float"
    assert load_run(run_dir / "checkpoints" / "last.pt").form == "int8 (ptq)"


def test_cli_eval_opens_finishes_and_records_its_mlflow_run_and_keeps_forms_apart(env, capsys):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{env / 'mlflow.db'}"
    cfg = tiny("vae", env, compress={"ptq": {"kind": "Int8DynamicConfig"}},
               tracking={"enabled": True, "uri": uri, "experiment": "ev"})
    run_dir = _train(cfg, env, "untracked")  # trained without a tracker: no mlflow_run.json
    assert not (run_dir / "mlflow_run.json").exists()
    args = ["--metrics", "vae", "--samples", "8", "--no-progress"]
    assert main(["eval", str(run_dir), *args]) == 0
    shipped = json.loads(capsys.readouterr().out)
    assert main(["eval", str(run_dir), "--form", "float", *args]) == 0
    flt = json.loads(capsys.readouterr().out)
    info = json.loads((run_dir / "mlflow_run.json").read_text())
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("ev").experiment_id])
    assert [r.info.run_id for r in runs] == [info["run_id"]]  # the second eval logged into the first's run
    run = runs[0]
    assert run.info.status == "FINISHED"  # was: left RUNNING
    assert run.data.tags["eval.last-shipped.form"] == "int8 (ptq)" and run.data.tags["eval.last-float.form"] == "float"
    assert run.data.metrics["eval/last-shipped/vae_neg_elbo"] == pytest.approx(shipped["metrics"]["vae_neg_elbo"])
    assert run.data.metrics["eval/last-float/vae_neg_elbo"] == pytest.approx(flt["metrics"]["vae_neg_elbo"])
    assert shipped["metrics"]["vae_neg_elbo"] != flt["metrics"]["vae_neg_elbo"]
    for key, res in (("last-shipped", shipped), ("last-float", flt)):  # one file per form, neither overwritten
        assert json.loads((run_dir / f"eval-{key}.json").read_text())["metrics"] == res["metrics"]
    assert not (run_dir / "eval.json").exists()


def test_cli_names_a_damaged_safetensors_file(env, capsys):
    run_dir = _train(tiny("gan", env, compress={"ptq": {"kind": "Int8DynamicConfig"}}), env, "trunc")
    art = run_dir / "model-ptq.safetensors"
    art.write_bytes(art.read_bytes()[: art.stat().st_size // 2])
    assert main(["eval", str(run_dir), "--no-log", "--no-progress"]) == 2  # was: a SafetensorError traceback
    err = capsys.readouterr().err
    assert f"edgegen eval: {art}: not a readable safetensors file (truncated or damaged?)" in err


@pytest.mark.filterwarnings(r"ignore:.*wiki\.test\.raw. SHA-256 differs from the published:UserWarning")  # a fixture
def test_lm_eval_never_downloads_and_names_the_missing_folder(env, monkeypatch):
    import edgegen.data.download as download

    def no_network(*a, **k):
        raise AssertionError("evaluation tried to download")

    monkeypatch.setattr(download, "fetch", no_network)
    monkeypatch.setattr(download, "download_and_extract", no_network)
    run = load_run(_train(tiny("lm", env), env, "lm"))
    empty = env / "empty-root"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match=re.escape(f"expected {empty / 'wikitext-2-raw'}") + ".*wikitext-2-raw-v1.zip"):
        evaluate_run(run, _opts(metrics=("ppl",), data_root=str(empty)))
    (empty / "wikitext-2-raw").mkdir()
    (empty / "wikitext-2-raw" / "wiki.test.raw").write_text(" = A = \n some text \n", encoding="utf-8")
    with pytest.raises(FileNotFoundError, match=re.escape(f"{empty / 'gpt2'}: expected GPT-2 tokenizer files")
                       + r".*download_gpt2_tokenizer\("):
        evaluate_run(run, _opts(metrics=("ppl",), data_root=str(empty)))


def test_an_explicit_data_root_beats_the_recorded_one(env, monkeypatch, capsys):
    import shutil

    old = env / "old-root"
    shutil.copytree(env / "data", old)  # the env fixture's CIFAR-10
    cfg = tiny("gan", env, data={"name": "cifar10", "root": str(old)})
    run = load_run(_train(cfg, env, "moved"))
    moved = env / "new-root"
    old.rename(moved)  # the data moved after training
    monkeypatch.delenv("EDGEGEN_DATA_DIR")
    with pytest.raises(FileNotFoundError, match="old-root"):  # only the recorded root: named in the error
        evaluate_run(run, _opts(metrics=("fid",), samples=10))
    by_option = evaluate_run(run, _opts(metrics=("fid",), samples=10, data_root=str(moved)))
    monkeypatch.setenv("EDGEGEN_DATA_DIR", str(moved))  # was: the recorded root won over the variable
    by_env = evaluate_run(run, _opts(metrics=("fid",), samples=10))
    assert by_env["metrics"]["fid_proxy"] == pytest.approx(by_option["metrics"]["fid_proxy"], rel=1e-12)
    monkeypatch.setenv("EDGEGEN_DATA_DIR", str(env / "nowhere"))
    assert main(["eval", str(run.run_dir), "--metrics", "fid", "--samples", "10", "--data-root", str(moved),
                 "--no-log", "--no-progress"]) == 0
    assert "CIFAR-10 test split, first 10 images" in json.loads(capsys.readouterr().out)["labels"]["fid_proxy"]


@pytest.mark.parametrize("kw, match", [
    ({"samples": 1}, r"samples: expected an int >= 2 \(--samples; FID/KID"),
    ({"samples": -5}, r"samples: expected an int >= 2 \(--samples"),
    ({"device_profiles": ("foo",)}, r"device_profiles: unknown device 'foo' \(--device-profile\)"),
    ({"batch_size": 0}, r"batch_size: expected an int >= 1"),
    ({"fid_extractor": "bogus"}, r"fid_extractor: expected 'auto', 'inception' or 'proxy'"),
    ({"profile": True, "profile_repeats": 0}, r"profile_repeats: expected an int >= 1"),
    ({"metrics": ("prdc",), "samples": 5}, r"samples: expected an int >= 6 \(--samples; prdc's balls need more"),
], ids=["samples-1", "samples-negative", "device", "batch", "extractor", "repeats", "prdc-samples"])
def test_options_are_checked_before_any_metric(env, monkeypatch, kw, match):
    import edgegen.eval.runs as runs

    run = load_run(_train(tiny("gan", env), env, "opts"))

    def measured(*a, **k):
        raise AssertionError("a metric was computed before the options were checked")

    monkeypatch.setattr(runs, "_fid_metrics", measured)
    with pytest.raises(ValueError, match=match):
        evaluate_run(run, _opts(**{"metrics": ("fid",), **kw}))


def test_cli_rejects_bad_options_before_any_metric(env, monkeypatch, capsys):
    import edgegen.eval.runs as runs

    run_dir = _train(tiny("gan", env), env, "cli-opts")

    def measured(*a, **k):
        raise AssertionError("a metric was computed before the options were checked")

    monkeypatch.setattr(runs, "_fid_metrics", measured)
    for flags, text in ((["--samples", "1"], "--samples"), (["--samples", "-5"], "--samples"),
                        (["--device-profile", "foo"], "--device-profile")):
        assert main(["eval", str(run_dir), *flags, "--no-log", "--no-progress"]) == 2
        assert text in capsys.readouterr().err
    assert not list(run_dir.glob("eval*.json"))


def test_cli_eval_loads_a_single_run_once(env, monkeypatch, capsys):
    import edgegen.eval.runs as runs_mod

    run_dir = _train(tiny("vae", env), env, "once")
    calls = []
    real = runs_mod.load_run
    monkeypatch.setattr(runs_mod, "load_run", lambda *a, **k: calls.append(a) or real(*a, **k))
    assert main(["eval", str(run_dir), "--metrics", "vae", "--samples", "8", "--no-log", "--no-progress"]) == 0
    assert len(calls) == 1  # checked and evaluated from one load (was: loaded twice)


def test_compare_checks_out_before_evaluating(tmp_path, monkeypatch, capsys):
    import edgegen.eval.runs as runs
    from edgegen.cli.main import main

    evaluated = []
    monkeypatch.setattr(runs, "check_options", lambda *a, **k: None)
    monkeypatch.setattr(runs, "run_config", lambda *a, **k: None)
    monkeypatch.setattr(runs, "load_run", lambda *a, **k: evaluated.append(a))
    blocker = tmp_path / "table.md"
    blocker.write_text("x")
    assert main(["compare", str(tmp_path), "--out", str(blocker), "--no-log"]) == 2
    assert f"--out: {blocker} is a file, expected a folder" in capsys.readouterr().err
    assert main(["compare", str(tmp_path), "--out", str(blocker / "sub"), "--no-log"]) == 2
    assert "--out: cannot create the folder" in capsys.readouterr().err
    assert evaluated == []


def test_compare_profile_can_be_turned_off():
    from edgegen.cli.main import build_parser

    parse = build_parser().parse_args
    assert parse(["compare", "a"]).profile is True
    assert parse(["compare", "a", "--no-profile"]).profile is False
    assert parse(["eval", "a"]).profile is False and parse(["eval", "a", "--profile"]).profile is True


def test_a_saved_evaluation_is_strict_json_with_null_for_a_number_that_is_not_finite(tmp_path):
    from edgegen.eval.runs import save_eval

    path = save_eval({"eval_id": "last-shipped", "metrics": {"perplexity": float("inf"), "loss": 2.5},
                      "checkpoint": tmp_path}, tmp_path)

    def refuse(token):
        raise ValueError(f"not strict JSON: {token}")
    assert json.loads(path.read_text(), parse_constant=refuse) == {
        "eval_id": "last-shipped", "metrics": {"perplexity": None, "loss": 2.5}, "checkpoint": str(tmp_path)}
