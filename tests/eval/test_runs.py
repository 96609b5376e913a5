"""Trained runs loaded as the model a user ships, compressed after training, evaluated (metrics
equal to the instruments applied by hand), compared, and driven from the command line."""

import csv
import io
import json
import os
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
    assert (run_dir / "model-shrunk.pt").is_file()
    shipped, flt = load_run(run_dir), load_run(run_dir, form="float")
    assert shipped.form == "pruned, shrunk" and flt.form == "float, pruned (masks baked in)"
    n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert n(shipped.model) < n(flt.model)
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(shipped.model.reconstruct(x), flt.model.reconstruct(x), atol=1e-4, rtol=1e-4)


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

    tokens, _ = _lm_tokens(_opts(data_root=str(REAL)))
    ref = perplexity(run.model, tokens, context=64, stride=32, max_tokens=300)
    assert m["wikitext2_ppl_prefix"] == pytest.approx(ref.perplexity, rel=1e-9)
    assert 0.0 <= m["distinct_2"] <= 1.0 and 0.0 <= m["bleu"] <= 100.0


def test_compare_table(env):
    a = {"name": "base", "form": "float", "metrics": {"fid_proxy": 50.0, "latency_ms_p50": 2.0, "params": 100.0},
         "labels": {"fid_proxy": "FID-proxy (x)"}}
    b = {"name": "pruned", "form": "pruned, shrunk", "metrics": {"fid_proxy": 55.0, "latency_ms_p50": 1.0,
                                                                  "params": 40.0, "sparsity": 0.6},
         "labels": {"fid_proxy": "FID-proxy (x)"}}
    t = compare_runs([a, b], env / "cmp")
    assert t["columns"] == ["run", "form", "fid_proxy", "params", "sparsity", "latency_ms_p50"]
    rows = list(csv.reader(io.StringIO(t["csv"])))
    assert rows[1] == ["base", "float", "50.0", "100.0", "", "2.0"] and rows[2][0] == "pruned"
    assert "| pruned | pruned, shrunk | 55 | 40 | 0.6 | 1 |" in t["markdown"]
    assert t["markdown"].count("FID-proxy (x)") == 1  # a shared label once
    assert set(t["paths"]) == {"markdown", "csv", "plot"} and Path(t["paths"]["plot"]).is_file()
    with pytest.raises(ValueError, match="results: expected at least one"):
        compare_runs([])


def test_compare_table_keeps_nonstandard_fid_apart(env):
    """FID from non-standard Inception weights has its own column: never merged into fid."""
    runs = [{"name": n, "form": "float", "metrics": {"fid_nonstandard": v, "kid_nonstandard": 0.1},
             "labels": {"fid_nonstandard": "FID-nonstandard (sha256 ab12...)"}} for n, v in (("a", 10.0), ("b", 12.0))]
    t = compare_runs(runs)
    assert t["columns"] == ["run", "form", "fid_nonstandard", "kid_nonstandard"]
    assert "fid" not in t["columns"] and "| a | float | 10 | 0.1 |" in t["markdown"]


@pytest.mark.slow
def test_cli_eval_logs_to_the_training_run_and_compare(env, capsys):
    cfg = tiny("gan", env, tracking={"enabled": True, "uri": f"sqlite:///{env / 'mlflow.db'}"})
    run_dir = _train_tracked(cfg, env)
    assert main(["eval", str(run_dir), "--metrics", "fid", "--samples", "30", "--no-progress"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert "fid_proxy" in out["metrics"] and (run_dir / "eval.json").is_file()
    from mlflow.tracking import MlflowClient

    info = json.loads((run_dir / "mlflow_run.json").read_text())
    metrics = MlflowClient(info["uri"]).get_run(info["run_id"]).data.metrics
    assert metrics["eval/fid_proxy"] == pytest.approx(out["metrics"]["fid_proxy"])
    (env / "ptq.yaml").write_text("compress: {ptq: {kind: Int8DynamicConfig}}\n")
    assert main(["compress", "--from", str(run_dir), str(env / "ptq.yaml")]) == 0
    capsys.readouterr()
    assert main(["compare", str(run_dir), str(run_dir) + "-int8dynamic", "--metrics", "fid", "--samples", "30",
                 "--out", str(env / "cmp"), "--no-log", "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "| t-gan-int8dynamic | compressed after training: int8dynamic |" in text
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
    # the VAE decoder's Linear layers are quantized, its ConvTranspose layers are not (dynamic mode)
    assert 0 < m["onnx_int8_quantized_weight_fraction"] < 1
    assert "weight tensors in 8 bits" in res["labels"]["onnx"]


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
