"""`edgegen reproduce`: the paper data parse and cover every table, bad input is named, and a
smoke run on fixture data in the real formats fills every table, writes the figures and a
REPORT.md whose numbers equal the MLflow metrics, and a rerun skips every finished step."""

import json
import math
import shutil
from pathlib import Path

import pytest

from edgegen.reproduce import TABLES, reproduce
from edgegen.reproduce.runner import load_papers, load_recipes, metric_key
from tests.data.test_celeba import make_celeba
from tests.data.test_cifar import make_cifar
from tests.data.test_text import make_wikitext, tiny_tokenizer_dir  # noqa: F401  (fixture)
from tests.helpers import figure_texts


def _refuse(token):
    raise ValueError(f"not strict JSON: {token}")


def test_paper_data_covers_every_table():
    papers = load_papers()
    assert set(papers["tables"]) == set(TABLES)
    for name, t in papers["tables"].items():
        assert t["paper"] in papers["papers"] and t["table"] and t["title"]
        for key, v in (t["values"] or {}).items():
            assert "/" in key and isinstance(v["value"], (int, float)) and len(v["source"]) > 10
            assert v.get("cited_from", t["paper"]) in papers["papers"]
            assert set(v) <= {"value", "std", "source", "row", "cited_from"}, key
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
    # precision / recall beside FID, named and labelled after its network; the recall a
    # compressed variant lost, paired by seed
    for key in ("dcgan-celeba-pruned50/precision_proxy", "vae-celeba-int8/recall_proxy",
                "dcgan-cifar10-pruned50/diff_vs_dcgan-cifar10_recall_proxy"):
        assert quality[key]["label"] == "FID-proxy" and 0.0 <= abs(quality[key]["mean"]) <= 1.0
    assert not any(k.endswith(("/precision", "/recall")) for k in quality)
    # samples of each model beside its compressed variant, named in the table's notes
    for base in ("dcgan-cifar10", "dcgan-celeba", "vae-celeba"):
        side = next((out / "figures" / "samples" / base).glob("side_by_side-*.png"))
        assert side.relative_to(out).as_posix() in report
    recon = out / "figures" / "samples" / "vae-celeba" / "reconstructions-celeba.png"
    assert recon.is_file() and recon.relative_to(out).as_posix() in report
    texts = sorted((out / "figures" / "samples" / "gpt2").glob("*.md"))
    assert len(texts) == 4 and all(p.relative_to(out).as_posix() in report for p in texts if p.name != "samples.md")
    # the WikiText-2 fixture is not the published file: its perplexity is named and labelled so
    ppl = quality["gpt2-student-int8/wikitext2_ppl_prefix_nonstandard"]
    assert ppl["label"] == "WikiText-2-nonstandard (prefix)"
    assert metric_key(ppl["key"], ppl["label"]) == "gpt2-student-int8/wikitext2_ppl_prefix_nonstandard"
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
    assert metric_key("pair/quality_loss_pct", "WikiText-2-nonstandard (prefix)") == "pair/quality_loss_pct_nonstandard"


@pytest.mark.parametrize("key, label", [
    ("wikitext2_ppl", "measured"), ("wikitext2_ppl_prefix", "measured (prefix)"),
    ("wikitext2_ppl_nonstandard", "WikiText-2-nonstandard"),
    ("wikitext2_ppl_prefix_nonstandard", "WikiText-2-nonstandard (prefix)"),
], ids=["full", "prefix", "nonstandard", "prefix-nonstandard"])
def test_perplexity_labels_follow_the_evaluation_key(key, label):
    """A perplexity on a WikiText-2 file other than the published one was labelled "measured
    (prefix)" like any prefix."""
    from edgegen.reproduce.runner import _ppl_label

    assert _ppl_label(key) == label


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


def test_figures_of_another_paper_are_marked_cited_and_name_it(tmp_path):
    from edgegen.reproduce.runner import Context, Row, _table_markdown

    papers = load_papers()
    ctx = Context("cpu-smoke", [0], tmp_path, False, None, lambda m: None, load_recipes())
    spec = papers["tables"]["lightweight"]
    assert {v.get("cited_from") for v in spec["values"].values()} == {"oged"}
    md = _table_markdown("lightweight", spec, [Row("int8_ptq/size_reduction_pct", [74.0], "measured")], ctx, None,
                         papers)
    oged = papers["papers"]["oged"]
    assert f"The paper column's cells marked (cited) are figures of {oged}, not of this table's paper." in md
    line = next(x for x in md.splitlines() if x.startswith("| int8_ptq/size_reduction_pct |"))
    assert "| 73.5 (cited) |" in line and f"cited from {oged}, not a value of this table's paper" in line
    assert "published:" not in line
    assert f"| measured | cited from {oged}" in line  # a row without a note of its own: no stray separator
    size = _table_markdown("size", papers["tables"]["size"], [Row("dcgan_generator/params", [3.58e6], "measured")],
                           ctx, None, papers)
    assert "(cited)" not in size and "| measured | published: lrg: the DCGAN generator has 4.2 M parameters" in size
    size = _table_markdown("size", papers["tables"]["size"],
                           [Row("dcgan_generator/params", [3.58e6], "measured", "random weights")], ctx, None, papers)
    assert "| measured | random weights; published: lrg: the DCGAN generator has 4.2 M parameters" in size


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


def test_unfittable_value_error_for_one_seed_keeps_the_others_fits_and_labels_the_figures(tmp_path, monkeypatch):
    from edgegen.reproduce import runner

    def points(seed):  # seed 1 measured a FID-proxy of 0 once: its reciprocal cannot be fitted
        return {"points": [{"ratio": r, "params": 1000 * (10 - i),
                            "fid_proxy": 0.0 if seed and i == 3 else 50.0 + 3 * i, "latency_ms_p50": 10.0 - 0.8 * i,
                            "bytes_on_disk": 4000 * (10 - i), "energy_j_estimated": 0.1 - 0.008 * i}
                           for i, r in enumerate((0.0,) + runner.SWEEP)]}

    texts = figure_texts(monkeypatch)
    ctx = runner.Context("cpu-smoke", [0, 1], tmp_path, False, None, lambda m: None, load_recipes())
    monkeypatch.setattr(ctx, "step", lambda name, fn: points(int(name[-1])))
    rows = {r.key: r for r in runner._tradeoff(ctx)}
    assert len(rows["sweep_30%/fid_proxy"].values) == 2 and rows["sweep_30%/fid_proxy"].values[1] == 0.0
    assert len(rows["fit/alpha"].values) == 1 and "fitted for 1 of 2 seeds" in rows["fit/alpha"].note
    assert "seed 1: quality: lower-is-better values must be > 0" in ctx.table_notes["tradeoff"][0]
    # the figures drawn from the quality measure say which one it is
    assert texts["tradeoff_utility.png"][0] == "utility and its maximum C* (dots), Q = 1/FID-proxy"
    assert texts["tradeoff_cstar.png"][0] == "optimal complexity against lambda, Q = 1/FID-proxy"


class _Tracker:
    """An MLflow stand-in: what each table's run was given."""

    def __init__(self):
        self.metrics = {}

    def child(self, name, run_dir):
        self.name = name
        return self

    def log_params(self, params):
        pass

    def log_metrics(self, metrics, step):
        self.metrics[self.name] = dict(metrics)

    def set_tags(self, tags):
        pass

    def log_artifact(self, path):
        pass

    def finish(self, status="FINISHED"):
        pass


def test_a_value_that_is_not_finite_is_na_and_a_failing_table_leaves_the_others(tmp_path, monkeypatch):
    from edgegen.analysis.tradeoff import fit_tradeoff
    from edgegen.reproduce import runner

    r2 = fit_tradeoff([1e5, 2e5, 4e5, 8e5], [50.0] * 4, [10, 20, 40, 80], True, True).r2_quality  # quality flat
    assert math.isnan(r2)

    def boom(ctx):
        raise RuntimeError("boom")

    monkeypatch.setattr(runner, "TABLES", ("size", "latency", "memory"))
    monkeypatch.setitem(runner.BUILDERS, "size", lambda ctx: [
        runner.Row("fit/r2_quality", [r2, r2, r2], "FID-proxy"),
        runner.Row("part/x", [1.0, float("nan"), 3.0], "measured"), runner.Row("ok/row", [1.0, 2.0, 3.0], "measured")])
    monkeypatch.setitem(runner.BUILDERS, "latency", boom)
    monkeypatch.setitem(runner.BUILDERS, "memory", lambda ctx: [runner.Row("ok/other", [2.0, 2.0, 2.0], "measured")])
    tracker = _Tracker()
    monkeypatch.setattr(runner, "_tracker", lambda ctx: tracker)
    out = tmp_path / "rep"
    res = reproduce("all", "cpu-smoke", seeds=[0, 1, 2], out_dir=out, log=lambda m: None)
    report = (out / "REPORT.md").read_text(encoding="utf-8")
    assert "| fit/r2_quality | - | n/a (no finite value) | 0 | FID-proxy | no finite value for 3 of 3 seeds" in report
    assert "| part/x | - | 2 +- 1.414 (n = 2: no interval) | 2 | measured | no finite value for 1 of 3 seeds" in report
    assert "## latency" in report and "**Not filled**: RuntimeError: boom" in report
    assert "| ok/other | - | 2 +- 0 [95% CI 2, 2] | 3 | measured |" in report
    saved = json.loads((out / "results.json").read_text(), parse_constant=_refuse)  # strict JSON
    size = {r["key"]: r for r in saved["tables"]["size"]["rows"]}
    assert size["fit/r2_quality"]["values"] == [None] * 3 and size["fit/r2_quality"]["mean"] is None
    assert size["part/x"]["values"] == [1.0, None, 3.0] and size["part/x"]["mean"] == 2.0 and size["part/x"]["n"] == 2
    assert res["tables"]["latency"]["error"] == "RuntimeError: boom"
    # MLflow gets the finite means only
    assert tracker.metrics == {"size": {"part/x": 2.0, "ok/row": 2.0}, "latency": {}, "memory": {"ok/other": 2.0}}


def test_a_quantity_some_seeds_lack_is_kept_and_noted(tmp_path):
    from edgegen.reproduce.runner import Context, _rows_from, _table_markdown

    results = [{"a": 1.0, "b": None}, {"a": 3.0, "b": 2.0}, {"a": 2.0}]
    rows = _rows_from(results, [("x/a", lambda r: r.get("a"), "measured", ""),
                                ("x/b", lambda r: r.get("b"), "measured", "from b"),
                                ("x/c", lambda r: r.get("c"), "measured", "")])
    assert [(r.key, r.values) for r in rows] == [("x/a", [1.0, 3.0, 2.0]), ("x/b", [None, 2.0, None])]  # c: nowhere
    papers = load_papers()
    ctx = Context("cpu-smoke", [0, 1, 2], tmp_path, False, None, lambda m: None, load_recipes())
    md = _table_markdown("size", papers["tables"]["size"], rows, ctx, None, papers)
    assert "| x/b | - | 2 (n = 1: no spread) | 1 | measured | from b; no finite value for 2 of 3 seeds (left out" in md
    assert "| x/a | - | 2 +- 1 [95% CI" in md


def test_the_data_root_in_effect_keys_the_trained_models(tmp_path, monkeypatch):
    import edgegen.train.loop as loop
    from edgegen.reproduce.runner import Context

    roots = []

    def fake_train(cfg, run_dir, progress=None, **kw):
        roots.append(cfg.data.root)
        (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        return {"final": {}}

    monkeypatch.setattr(loop, "train_experiment", fake_train)
    dirs = []
    for env, given in (("/data/old", None), ("/data/new", None), ("/data/old", None), (None, "/data/new")):
        if env is None:
            monkeypatch.delenv("EDGEGEN_DATA_DIR")
        else:
            monkeypatch.setenv("EDGEGEN_DATA_DIR", env)
        dirs.append(Context("cpu-smoke", [0], tmp_path, False, given, lambda m: None, load_recipes()).trained(
            "vae-celeba", 0))
    # another $EDGEGEN_DATA_DIR trains anew; the same root, from the environment or --data-root, is reused
    assert roots == ["/data/old", "/data/new"]
    assert dirs[0] != dirs[1] and dirs[2] == dirs[0] and dirs[3] == dirs[1]


def _versioned_trainer(monkeypatch):
    """A trainer whose every run writes a new checkpoint: v1, v2, ..."""
    import itertools

    import edgegen.train.loop as loop

    version = itertools.count(1)

    def fake_train(cfg, run_dir, progress=None, **kw):
        (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        (run_dir / "checkpoints" / "last.pt").write_text(f"v{next(version)}")
        return {"final": {}}

    monkeypatch.setattr(loop, "train_experiment", fake_train)


def test_steps_measured_on_a_model_rebuilt_since_are_measured_again(tmp_path, monkeypatch):
    from edgegen.reproduce.runner import Context

    _versioned_trainer(monkeypatch)
    kill = []

    def run(force, tables):
        ctx = Context("cpu-smoke", [0], tmp_path, force, None, lambda m: None, load_recipes())

        def measure():
            weights = (ctx.trained("vae-celeba", 0) / "checkpoints" / "last.pt").read_text()
            if kill:
                raise KeyboardInterrupt
            return {"weights": weights}

        return {t: ctx.step(f"cpu-smoke/{t}/seed0", measure)["weights"] for t in tables}

    assert run(False, ["quality"]) == {"quality": "v1"}
    kill.append(1)
    with pytest.raises(KeyboardInterrupt):  # a forced run killed after retraining, inside the first step
        run(True, ["quality", "lightweight"])
    kill.clear()
    assert run(False, ["quality", "lightweight"]) == {"quality": "v2", "lightweight": "v2"}  # not v1 beside v2
    assert run(False, ["quality"]) == {"quality": "v2"}  # and kept from then on


def test_compressed_models_follow_a_rebuilt_source(tmp_path, monkeypatch):
    import edgegen.train.posthoc as posthoc
    from edgegen.reproduce.runner import Context, _compressed

    _versioned_trainer(monkeypatch)

    def fake_compress(src, spec, dest):
        (dest / "checkpoints").mkdir(parents=True)
        (dest / "checkpoints" / "last.pt").write_text("int8 of " + (src / "checkpoints" / "last.pt").read_text())

    monkeypatch.setattr(posthoc, "compress_from", fake_compress)
    spec = {"ptq": {"kind": "Int8DynamicConfig"}}

    def ctx(force):
        return Context("cpu-smoke", [0], tmp_path, force, None, lambda m: None, load_recipes())

    first = ctx(False)
    assert (Path(_compressed(first, first.trained("vae-celeba", 0), spec, "int8")) / "checkpoints" / "last.pt"
            ).read_text() == "int8 of v1"
    ctx(True).trained("vae-celeba", 0)  # a forced run killed after retraining, before compressing
    again = ctx(False)
    assert (Path(_compressed(again, again.trained("vae-celeba", 0), spec, "int8")) / "checkpoints" / "last.pt"
            ).read_text() == "int8 of v2"


@pytest.mark.parametrize("bases, where, cycle", [
    ({"vae-celeba": "vae-celeba"}, "vae-celeba", "vae-celeba -> vae-celeba"),
    ({"dcgan-cifar10": "dcgan-celeba"}, "dcgan-celeba", "dcgan-cifar10 -> dcgan-celeba -> dcgan-cifar10"),
], ids=["self", "two"])
def test_a_cycle_of_bases_is_named(bases, where, cycle):
    import copy

    from edgegen.reproduce.runner import check_recipes

    recipes = copy.deepcopy(load_recipes())
    for name, base in bases.items():
        recipes["models"][name]["base"] = base
    with pytest.raises(ValueError, match=f"^recipes: models.{where}.base: expected a chain of bases that ends, "
                                         f"got the cycle {cycle}$"):
        check_recipes(recipes)


def test_one_table_is_merged_into_the_results_of_the_others(tmp_path, monkeypatch):
    from edgegen.reproduce import runner

    runs = []

    def size(ctx):
        ctx.table_notes.setdefault("size", []).append("a note of the size table")
        return [runner.Row("a/size_row", [1.0], "measured")]

    def latency(ctx):
        runs.append(1)
        return [runner.Row("a/latency_row", [float(len(runs))], "measured")]

    monkeypatch.setattr(runner, "TABLES", ("size", "latency"))
    monkeypatch.setitem(runner.BUILDERS, "size", size)
    monkeypatch.setitem(runner.BUILDERS, "latency", latency)
    out = tmp_path / "rep"

    def run(table, seeds):
        res = reproduce(table, "cpu-smoke", seeds=seeds, out_dir=out, track=False, log=lambda m: None)
        saved = json.loads((out / "results.json").read_text())
        tables = {n: [(r["key"], r["values"]) for r in t["rows"]] for n, t in saved["tables"].items()}
        return res, tables, (out / "REPORT.md").read_text(encoding="utf-8")

    run("all", [0])
    res, tables, report = run("latency", [0])
    assert list(res["tables"]) == ["latency"]  # this run's tables
    assert tables == {"size": [("a/size_row", [1.0])], "latency": [("a/latency_row", [2.0])]}
    assert report.startswith("# edgegen reproduction: size, latency\n")
    assert "Kept from an earlier run into this folder (same preset, seeds, recipes and data root): size; this run " \
           "rebuilt latency." in report
    assert "## size" in report and "| a/size_row | - | 1 (n = 1: no spread)" in report
    assert "- a note of the size table" in report  # the size table's departures too
    assert "| a/latency_row | - | 2 (n = 1: no spread)" in report
    # other seeds: the earlier tables are not mixed in, and the report says they were replaced
    res, tables, report = run("latency", [1])
    assert tables == {"latency": [("a/latency_row", [3.0])]} and "## size" not in report
    assert "The earlier results.json in this folder (preset cpu-smoke, seeds [0]) came from other settings " \
           "(preset, seeds, recipes, data root or edgegen's measurement definitions): replaced, not merged." in report


def _measuring_vae(tmp_out, measured, log=lambda m: None):
    """A step of the cpu-smoke VAE's seed 0 into ``tmp_out``; ``measured`` counts the computations."""
    from edgegen.reproduce.runner import Context

    ctx = Context("cpu-smoke", [0], tmp_out, False, None, log, load_recipes())

    def measure():
        measured.append(1)
        return {"weights": (ctx.trained("vae-celeba", 0) / "checkpoints" / "last.pt").read_text()}

    return ctx, ctx.step("cpu-smoke/quality/seed0", measure)


def test_cached_steps_survive_moving_the_output_folder(tmp_path, monkeypatch):
    """Steps name the models they read relative to the output folder: a moved (or copied) folder,
    named by a relative or an absolute path, reuses them (was: every step measured again)."""
    _versioned_trainer(monkeypatch)
    measured = []
    ctx, first = _measuring_vae(tmp_path / "repro", measured)
    step = json.loads(next((tmp_path / "repro" / "steps").rglob("seed0.json")).read_text())
    assert list(step["_models"]) == [str(Path("models", "cpu-smoke", ctx.trained("vae-celeba", 0).parent.name,
                                              "seed0"))]
    shutil.move(tmp_path / "repro", tmp_path / "moved")
    monkeypatch.chdir(tmp_path)
    for out in (Path("moved"), tmp_path / "moved"):
        ctx, again = _measuring_vae(out, measured)
        assert ctx.skipped_steps == ["cpu-smoke/quality/seed0"] and not ctx.done_steps and again == first
    assert len(measured) == 1 and first["weights"] == "v1"  # not retrained either


def test_step_files_of_an_earlier_definition_are_not_reused(tmp_path, monkeypatch):
    """The fingerprint keying the steps holds STEPS_VERSION: a step file written before it (or
    before a bump) is not read (was: reused whatever its measurement definition)."""
    import hashlib

    from edgegen.reproduce import runner

    _versioned_trainer(monkeypatch)
    measured = []
    ctx, _ = _measuring_vae(tmp_path, measured)
    name = "cpu-smoke/quality/seed0.json"
    current = tmp_path / "steps" / ctx.fingerprint / name
    # as edgegen wrote it before the version was in the fingerprint (its result: another definition)
    older = hashlib.sha256(json.dumps([ctx.recipes, ctx.data_dir], sort_keys=True, default=str).encode()
                           ).hexdigest()[:10]
    assert older != ctx.fingerprint
    kept = json.loads(current.read_text())
    (tmp_path / "steps" / older / name).parent.mkdir(parents=True)
    (tmp_path / "steps" / older / name).write_text(json.dumps(dict(kept, weights="old definition")))
    current.unlink()
    ctx, res = _measuring_vae(tmp_path, measured)
    assert ctx.done_steps == ["cpu-smoke/quality/seed0"] and res["weights"] == "v1" and len(measured) == 2
    # a bump moves to another folder
    monkeypatch.setattr(runner, "STEPS_VERSION", runner.STEPS_VERSION + 1)
    ctx, _ = _measuring_vae(tmp_path, measured)
    assert ctx.done_steps and len(measured) == 3


def test_a_step_file_without_the_models_it_read_is_measured_again(tmp_path, monkeypatch):
    """Where the fingerprint matches, a step file recording no model builds is not trusted (was:
    reused, after its model was rebuilt too)."""
    from edgegen.reproduce.runner import Context

    _versioned_trainer(monkeypatch)
    measured = []
    ctx, _ = _measuring_vae(tmp_path, measured)
    current = tmp_path / "steps" / ctx.fingerprint / "cpu-smoke/quality/seed0.json"
    current.write_text(json.dumps({k: v for k, v in json.loads(current.read_text()).items() if k != "_models"}))
    Context("cpu-smoke", [0], tmp_path, True, None, lambda m: None, load_recipes()).trained("vae-celeba", 0)  # rebuilt
    logs = []
    ctx, res = _measuring_vae(tmp_path, measured, logs.append)
    assert ctx.done_steps and len(measured) == 2 and res["weights"] == "v2"
    assert "  cpu-smoke/quality/seed0: its file does not record which models it measured: measured again" in logs


@pytest.mark.parametrize("tables", [("size", "latency"), ("latency",)], ids=["after-a-table", "first"])
def test_a_file_not_found_without_a_message_leaves_its_table_empty(tmp_path, monkeypatch, tables):
    """A FileNotFoundError raised with no message: the table is not filled, its error is the
    exception's repr (was: the previous table's rows reused with no error, or UnboundLocalError)."""
    from edgegen.reproduce import runner

    def latency(ctx):
        raise FileNotFoundError()

    monkeypatch.setattr(runner, "TABLES", tables)
    monkeypatch.setitem(runner.BUILDERS, "size", lambda ctx: [runner.Row("a/size_row", [1.0], "measured")])
    monkeypatch.setitem(runner.BUILDERS, "latency", latency)
    res = reproduce("all", "cpu-smoke", seeds=[0], out_dir=tmp_path, track=False, log=lambda m: None)
    assert res["tables"]["latency"]["rows"] == [] and res["tables"]["latency"]["error"] == "FileNotFoundError()"
    assert "**Not filled**: FileNotFoundError()" in (tmp_path / "REPORT.md").read_text(encoding="utf-8")


def test_results_of_an_earlier_edgegen_without_a_fingerprint_are_named_as_such(tmp_path, monkeypatch):
    from edgegen.reproduce import runner

    monkeypatch.setattr(runner, "TABLES", ("size", "latency"))
    monkeypatch.setitem(runner.BUILDERS, "size", lambda ctx: [runner.Row("a/size_row", [1.0], "measured")])
    (tmp_path / "results.json").write_text(json.dumps({"preset": "cpu-smoke", "seeds": [0], "tables": {
        "latency": {"rows": [{"key": "a/latency_row", "values": [2.0], "label": "measured", "note": "", "mean": 2.0,
                              "std": None, "n": 1, "ci": None}], "error": None}}}))
    logs = []
    reproduce("size", "cpu-smoke", seeds=[0], out_dir=tmp_path, track=False, log=logs.append)
    said = ("The earlier results.json in this folder (preset cpu-smoke, seeds [0]) was written without a fingerprint "
            "of its recipes, data root and measurement definitions (by an earlier edgegen): replaced, not merged.")
    assert said in logs and said in (tmp_path / "REPORT.md").read_text(encoding="utf-8")
    assert list(json.loads((tmp_path / "results.json").read_text())["tables"]) == ["size"]
