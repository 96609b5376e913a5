"""`edgegen reproduce`: the paper data parse and cover every table, bad input is named, and a
smoke run on fixture data in the real formats fills every table, writes the figures and a
REPORT.md whose numbers equal the MLflow metrics, and a rerun skips every finished step."""

import json
import shutil

import pytest

from edgegen.reproduce import TABLES, reproduce
from edgegen.reproduce.runner import load_papers, load_recipes, metric_key
from tests.data.test_celeba import make_celeba
from tests.data.test_cifar import make_cifar
from tests.data.test_text import make_wikitext, tiny_tokenizer_dir  # noqa: F401  (fixture)


def _refuse(token):
    raise ValueError(f"not strict JSON: {token}")


def test_paper_data_covers_every_table():
    papers = load_papers()
    assert set(papers["tables"]) == set(TABLES)
    for name, t in papers["tables"].items():
        assert t["paper"] in papers["papers"] and t["table"] and t["title"]
        for key, v in (t["values"] or {}).items():
            assert "/" in key and isinstance(v["value"], (int, float)) and len(v["source"]) > 10
    headline = papers["tables"]["headline"]["values"]
    assert headline["quantization/latency_reduction_pct"] == {
        "value": 70.3, "std": 3.2, "source": "lrg abstract: latency -70.3 +- 3.2% from quantization"}


def test_recipes_cover_every_preset_and_model():
    r = load_recipes()
    assert set(r["presets"]) == {"cpu-smoke", "cpu-small", "paper"}
    for p in r["presets"].values():
        assert set(p["eval"]) == {"fid_samples", "proxy_epochs", "ppl_max_tokens", "profile_min_time_s"}
        assert set(p["models"]) <= set(r["models"])


def test_bad_table_preset_and_seeds(tmp_path):
    with pytest.raises(ValueError, match="table: unknown 'sizes'; expected one of size, latency"):
        reproduce("sizes", out_dir=tmp_path, track=False)
    with pytest.raises(ValueError, match="preset: table 'size' has no preset 'gpu'"):
        reproduce("size", preset="gpu", out_dir=tmp_path, track=False)
    for seeds, msg in (([1, 1], "at least one seed, each once"), ([], "at least one seed, each once"),
                       ("012", "a sequence of non-negative integers"), (5, "a sequence of non-negative integers"),
                       ([0.5, 1.5], "non-negative integers, got 0.5"), ([True, 2], "non-negative integers, got True"),
                       ([-1], "non-negative integers, got -1"), (["a"], "non-negative integers, got 'a'")):
        with pytest.raises(ValueError, match=f"seeds: expected {msg}"):
            reproduce("size", seeds=seeds, out_dir=tmp_path, track=False)
    assert not (tmp_path / "REPORT.md").exists()  # nothing ran


@pytest.mark.parametrize("change, where", [
    (lambda r: r.pop("presets"), "presets: expected a non-empty mapping"),
    (lambda r: r.pop("models"), "models: expected a non-empty mapping"),
    (lambda r: r["presets"]["cpu-smoke"].pop("eval"), "presets.cpu-smoke.eval: expected a mapping"),
    (lambda r: r["presets"]["cpu-smoke"]["eval"].pop("fid_samples"), "presets.cpu-smoke.eval: expected the keys .*; missing fid_samples"),
    (lambda r: r["presets"]["cpu-smoke"]["models"].update({"nope": {}}), "presets.cpu-smoke.models"),
    (lambda r: r["models"]["gpt2-student"].update({"base": "gpt3"}), "models.gpt2-student.base"),
    (lambda r: r["models"].update({"x": 3}), "models.x: expected a mapping"),
], ids=["no-presets", "no-models", "no-eval", "eval-key", "preset-model", "base", "model-not-mapping"])
def test_bad_recipes_are_named(tmp_path, change, where):
    import copy

    recipes = copy.deepcopy(load_recipes())
    change(recipes)
    with pytest.raises(ValueError, match=f"recipes: {where}"):
        reproduce("size", seeds=[0], out_dir=tmp_path, track=False, recipes=recipes)
    with pytest.raises(ValueError, match="recipes: top level"):
        reproduce("size", seeds=[0], out_dir=tmp_path, track=False, recipes=[1])


def test_yaml_errors_name_the_file(tmp_path, monkeypatch):
    import yaml

    import edgegen.reproduce.runner as runner

    (tmp_path / "recipes.yaml").write_text("models: {a: [1,\n", encoding="utf-8")
    monkeypatch.setattr(runner, "HERE", tmp_path)
    with pytest.raises(yaml.YAMLError, match="recipes.yaml"):
        runner.load_recipes()


TINY = {
    "models": {
        "dcgan-cifar10": {"task": "gan", "model": {"kind": "dcgan", "nz": 8, "ngf": 8, "ndf": 8},
                          "data": {"name": "cifar10", "val_batches": 1},
                          "optim": {"name": "adam", "lr": 2e-4, "betas": [0.5, 0.999]},
                          "train": {"epochs": 1, "batch_size": 8, "steps_per_epoch": 3}},
        "dcgan-cifar10-pruned50": {"base": "dcgan-cifar10", "compress": {"prune": {"kind": "ChannelConfig",
                                                                                  "amount": 0.5}}},
        "dcgan-celeba": {"base": "dcgan-cifar10", "data": {"name": "celeba", "val_batches": 1},
                         "train": {"batch_size": 4}},
        "dcgan-celeba-pruned50": {"base": "dcgan-celeba", "compress": {"prune": {"kind": "ChannelConfig",
                                                                                "amount": 0.5}}},
        "vae-celeba": {"task": "vae", "model": {"kind": "vae", "latent_dim": 8, "beta": 1.0},
                       "data": {"name": "celeba", "val_batches": 1},
                       "optim": {"name": "adam", "lr": 1e-3, "betas": [0.9, 0.999]},
                       "train": {"epochs": 1, "batch_size": 4, "steps_per_epoch": 3}},
        "gpt2-teacher": {"task": "lm", "model": {"kind": "gpt2", "n_layer": 2, "n_embd": 32, "n_head": 2,
                                                 "vocab_size": 50257, "n_positions": 32},
                         "data": {"name": "openwebtext", "seq_len": 16, "val_batches": 1},
                         "optim": {"name": "adamw", "lr": 1e-3, "betas": [0.9, 0.95]},
                         "train": {"epochs": 1, "batch_size": 4, "steps_per_epoch": 3}},
        "gpt2-student": {"base": "gpt2-teacher", "task": "distill",
                         "model": {"kind": "gpt2", "n_layer": 1, "n_embd": 16, "n_head": 2, "vocab_size": 50257,
                                   "n_positions": 32},
                         "distill": {"teachers": [{"kind": "gpt2", "init_from": "@gpt2-teacher"}],
                                     "temperature": 2.0, "alpha": 0.5, "fused": True}},
    },
    "presets": {
        "paper": {"models": {}, "eval": {"fid_samples": 24, "proxy_epochs": 1, "ppl_max_tokens": 200,
                                         "profile_min_time_s": 0.0}},
        "cpu-smoke": {"models": {}, "eval": {"fid_samples": 24, "proxy_epochs": 1, "ppl_max_tokens": 200,
                                             "profile_min_time_s": 0.0}},
    },
}


@pytest.fixture
def data(tmp_path, monkeypatch, tiny_tokenizer_dir):  # noqa: F811
    root = tmp_path / "data"
    make_cifar(root, n=24)
    make_celeba(root, parts=(0,) * 16 + (1,) * 4 + (2,) * 6)
    make_wikitext(root)
    wiki = root / "wikitext-2-raw" / "wiki.test.raw"
    wiki.write_text(wiki.read_text(encoding="utf-8") * 40, encoding="utf-8", newline="")
    (root / "openwebtext").mkdir()
    (root / "openwebtext" / "a.txt").write_text("hello world, the small web text. " * 120, encoding="utf-8")
    shutil.copytree(tiny_tokenizer_dir[0], root / "gpt2", ignore=shutil.ignore_patterns("data", "*.npy"))
    monkeypatch.setenv("EDGEGEN_DATA_DIR", str(root))
    monkeypatch.setenv("EDGEGEN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("EDGEGEN_FID_WEIGHTS", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return root


@pytest.mark.slow
def test_smoke_run_fills_every_table_and_resumes(data, tmp_path):
    out = tmp_path / "rep"
    res = reproduce("all", "cpu-smoke", seeds=[0], out_dir=out, recipes=TINY, log=lambda m: None)
    errors = {n: t["error"] for n, t in res["tables"].items() if t["error"]}
    assert not errors
    assert all(res["tables"][n]["rows"] for n in TABLES)
    report = (out / "REPORT.md").read_text(encoding="utf-8")
    for n in TABLES:
        assert f"## {n}:" in report
    for fig in ("tradeoff_fit", "tradeoff_utility", "tradeoff_cstar", "tradeoff_pareto", "latency_vs_size",
                "fid_vs_compression", "energy_per_sample"):
        assert (out / "figures" / f"{fig}.png").is_file()
    # labels: no standard weights, so the image quality is FID-proxy everywhere
    quality = {r["key"]: r for r in res["tables"]["quality"]["rows"]}
    assert "dcgan-cifar10/fid_proxy" in quality and quality["dcgan-cifar10/fid_proxy"]["label"] == "FID-proxy"
    assert not any(k.endswith("/fid") for k in quality)
    assert "gpt2-student-int8/wikitext2_ppl_prefix" in quality
    power = res["tables"]["power"]["rows"]
    assert all(r["label"] in ("estimated", "measured (RAPL)", "projected") for r in power)
    # the published numbers sit beside ours
    assert "| quantization/latency_reduction_pct | 70.3 +- 3.2 |" in report
    assert "| dcgan_generator/params | 4.200e+06 |" in report
    # the report's numbers are the MLflow metrics
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{(out / 'mlflow.db').resolve()}")
    exp = client.get_experiment_by_name("edgegen-reproduce")
    runs = {r.data.params.get("table"): r for r in client.search_runs([exp.experiment_id])
            if "table" in r.data.params}
    assert set(runs) == set(TABLES)
    saved = json.loads((out / "results.json").read_text(), parse_constant=_refuse)  # strict JSON
    for name in TABLES:
        metrics = runs[name].data.metrics
        for row in saved["tables"][name]["rows"]:
            assert metrics[metric_key(row["key"], row["label"])] == pytest.approx(row["mean"], rel=1e-12)
    # a rerun reuses every finished step and trains nothing
    again = reproduce("all", "cpu-smoke", seeds=[0], out_dir=out, recipes=TINY, log=lambda m: None, track=False)
    assert again["steps_done"] == [] and len(again["steps_skipped"]) >= 5
    assert again["tables"]["size"]["rows"] == res["tables"]["size"]["rows"]


def test_missing_dataset_names_the_table_and_the_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEGEN_DATA_DIR", str(tmp_path / "empty"))
    monkeypatch.setenv("EDGEGEN_CACHE_DIR", str(tmp_path / "cache"))
    res = reproduce("quality", "cpu-smoke", seeds=[0], out_dir=tmp_path / "rep", recipes=TINY, log=lambda m: None,
                    track=False)
    err = res["tables"]["quality"]["error"]
    assert "dataset folder not found" in err and "cifar-10-batches-py" in err
    assert "**Not filled**: dataset folder not found" in (tmp_path / "rep" / "REPORT.md").read_text()


def test_download_fetches_what_can_be_fetched(tmp_path, monkeypatch):
    import edgegen.data.cifar as cifar
    import edgegen.data.tokenizer as tokenizer
    import edgegen.data.wikitext as wikitext

    calls = []
    monkeypatch.setattr(cifar, "download_and_extract", lambda url, root, **kw: calls.append(url))
    monkeypatch.setattr(wikitext, "download_and_extract", lambda url, root, **kw: calls.append(url))
    import edgegen.data.download as dl

    monkeypatch.setattr(dl, "fetch", lambda url, dest, **kw: calls.append(url))
    from edgegen.reproduce.runner import fetch_data

    with pytest.raises(FileNotFoundError):  # the fakes fetch nothing: the reader then names the folder
        fetch_data(str(tmp_path), log=lambda m: None)
    assert calls == [cifar.URL]
    make_cifar(tmp_path, n=4)
    calls.clear()
    with pytest.raises(FileNotFoundError):
        fetch_data(str(tmp_path), log=lambda m: None)
    assert calls == [wikitext.ARCHIVE_URL]
    make_wikitext(tmp_path)
    calls.clear()
    fetch_data(str(tmp_path), log=lambda m: None)
    assert calls == [u for u, _ in tokenizer.OFFICIAL_FILES.values()]


def test_metric_keys_carry_the_label():
    assert metric_key("dcgan_generator/edge_latency_ms", "projected") == "dcgan_generator/edge_latency_ms_projected"
    assert metric_key("x/rpi4_latency_ms_projected", "projected") == "x/rpi4_latency_ms_projected"
    assert metric_key("quantization/energy_reduction_pct", "estimated") == "quantization/energy_reduction_pct_estimated"
    assert metric_key("pair/quality_loss_pct", "FID-proxy") == "pair/quality_loss_pct_proxy"
    assert metric_key("a/fid_proxy", "FID-proxy") == "a/fid_proxy"
    assert metric_key("a/params", "measured") == "a/params"
    assert metric_key("pair/quality_loss_pct", "FID-nonstandard") == "pair/quality_loss_pct_nonstandard"


def test_image_quality_key_and_label():
    from edgegen.reproduce.runner import _fid_key

    assert _fid_key({"fid": 3.0, "fid_proxy": 1.0}) == ("fid", "measured")
    assert _fid_key({"fid_nonstandard": 3.0, "latency_ms_p50": 1.0}) == ("fid_nonstandard", "FID-nonstandard")
    assert _fid_key({"fid_proxy": 3.0}) == ("fid_proxy", "FID-proxy")
    with pytest.raises(KeyError, match="no FID, FID-nonstandard or FID-proxy"):
        _fid_key({"latency_ms_p50": 1.0})


def test_seeds_train_their_own_teacher(tmp_path, monkeypatch):
    import edgegen.train.loop as loop
    from edgegen.reproduce.runner import Context

    seen = []

    def fake_train(cfg, run_dir, progress=None, **kw):
        teachers = cfg.distill.teachers if cfg.distill else []
        seen.append((cfg.name, cfg.train.seed, teachers[0].init_from if teachers else None))
        (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        return {"final": {}}

    monkeypatch.setattr(loop, "train_experiment", fake_train)
    recipes = load_recipes()
    before = json.dumps(recipes, sort_keys=True)
    ctx = Context("cpu-smoke", [0, 1], tmp_path, False, None, lambda m: None, recipes)
    for seed in (0, 1):
        ctx.trained("gpt2-student", seed)
    students = [(s, t) for name, s, t in seen if name == "gpt2-student"]
    assert [s for s, _ in students] == [0, 1]
    assert "seed0" in students[0][1] and "seed1" in students[1][1]  # each seed's own teacher
    assert json.dumps(recipes, sort_keys=True) == before  # the recipes are never written into


def test_paired_rows():
    from edgegen.reproduce.runner import _paired

    res = [{"a": {"metrics": {"m": 1.0}}, "b": {"metrics": {"m": 1.5 + 0.1 * i}}} for i in range(3)]
    row = _paired(res, "a", "b", "m", "measured")
    assert row.key == "b/diff_vs_a_m" and row.values == pytest.approx([0.5, 0.6, 0.7])
    # diffs 0.5, 0.6, 0.7: t = 0.6 / (0.1 / sqrt 3) = 10.392 on 2 degrees of freedom, where the
    # two-sided p is 1 - t / sqrt(t^2 + 2) = 0.00913
    assert "paired t-test over 3 seeds vs a: p = 0.00913, significant at alpha 0.05" in row.note
    flat = [{"a": {"metrics": {"m": 1.0 + i}}, "b": {"metrics": {"m": 1.0 + i + (-1) ** i * 0.1}}} for i in range(3)]
    assert "not significant at alpha 0.05" in _paired(flat, "a", "b", "m", "measured").note
    short = _paired(res[:2], "a", "b", "m", "measured")
    assert "no paired t-test (at least 3 are needed)" in short.note
    assert _paired(res, "a", "c", "m", "measured") is None


def _fake_trainer(monkeypatch, seen):
    import edgegen.train.loop as loop

    def fake_train(cfg, run_dir, progress=None, **kw):
        seen.append((cfg.name, cfg.train.seed))
        (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        return {"final": {}}

    monkeypatch.setattr(loop, "train_experiment", fake_train)


def test_force_recomputes_each_model_and_step_once_per_run(tmp_path, monkeypatch):
    from edgegen.reproduce.runner import Context

    seen = []
    _fake_trainer(monkeypatch, seen)
    ctx = Context("cpu-smoke", [0], tmp_path, False, None, lambda m: None, load_recipes())
    ctx.trained("gpt2-student", 0)
    assert seen == [("gpt2-teacher", 0), ("gpt2-student", 0)]
    for force, expected in ((False, 0), (True, 2)):  # a rerun trains nothing; --force each model once
        seen.clear()
        ctx = Context("cpu-smoke", [0], tmp_path, force, None, lambda m: None, load_recipes())
        for key in ("gpt2-teacher", "gpt2-student", "gpt2-teacher", "gpt2-student"):
            ctx.trained(key, 0)
        assert len(seen) == expected and len(set(seen)) == expected
    for force, expected in ((False, 1), (False, 0), (True, 1)):  # a step asked for by several tables
        calls = []
        ctx = Context("cpu-smoke", [0], tmp_path, force, None, lambda m: None, load_recipes())
        results = [ctx.step("p/eff/seed0", lambda: calls.append(1) or {"x": 7}) for _ in range(3)]
        assert len(calls) == expected and all(r["x"] == 7 for r in results)


def test_custom_preset_is_named_in_the_report(tmp_path):
    from edgegen.reproduce.runner import Context, _departures

    ctx = Context("mine", [0], tmp_path, False, None, lambda m: None, load_recipes())
    notes = _departures(ctx, "size", [])
    assert notes[0].startswith("Preset mine: a preset of the recipes given to this run")


def test_published_power_sits_beside_our_energy_row(tmp_path):
    from edgegen.reproduce.runner import Context, Row, _table_markdown

    papers = load_papers()
    ctx = Context("cpu-smoke", [0, 1], tmp_path, False, None, lambda m: None, load_recipes())
    rows = [Row("quantization/latency_reduction_pct", [40.0, 42.0], "measured"),
            Row("quantization/energy_reduction_pct", [30.0, 34.0], "estimated", "energy per inference")]
    md = _table_markdown("headline", papers["tables"]["headline"], rows, ctx, None, papers)
    line = next(x for x in md.splitlines() if x.startswith("| quantization/energy_reduction_pct |"))
    assert "| 61.7 +- 4.1 |" in line and "power, beside our energy per inference" in line
    assert "Published but not measured" not in md
    md = _table_markdown("headline", papers["tables"]["headline"], rows[:1], ctx, None, papers)
    assert "Published but not measured here: quantization/power_reduction_pct" in md


def test_unfittable_seed_keeps_the_sweep_rows(tmp_path, monkeypatch):
    import edgegen.analysis.tradeoff as tradeoff
    from edgegen.reproduce import runner

    def points(seed):
        out = []
        for i, r in enumerate((0.0,) + runner.SWEEP):
            out.append({"ratio": r, "params": 1000 * (10 - i), "fid_proxy": 50.0 + 3 * i + seed,
                        "latency_ms_p50": 10.0 - 0.8 * i, "bytes_on_disk": 4000 * (10 - i),
                        "energy_j_estimated": 0.1 - 0.008 * i})
        return {"points": out}

    real_fit = tradeoff.fit_tradeoff
    calls = []

    def flaky_fit(*a, **kw):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("no convergence")
        return real_fit(*a, **kw)

    monkeypatch.setattr(tradeoff, "fit_tradeoff", flaky_fit)
    ctx = runner.Context("cpu-smoke", [0, 1], tmp_path, False, None, lambda m: None, load_recipes())
    monkeypatch.setattr(ctx, "step", lambda name, fn: points(int(name[-1])))
    rows = {r.key: r for r in runner._tradeoff(ctx)}
    assert len(rows["sweep_0%/fid_proxy"].values) == 2 and rows["sweep_0%/fid_proxy"].label == "FID-proxy"
    assert len(rows["fit/alpha"].values) == 1 and "fitted for 1 of 2 seeds" in rows["fit/alpha"].note
    assert rows["fit/q_max"].label == "FID-proxy" and rows["cstar/lambda_0.5"].label == "FID-proxy"
    assert rows["fit/beta"].label == "measured"  # the latency curve does not depend on the proxy
    assert "seed 0: no convergence" in ctx.table_notes["tradeoff"][0]
