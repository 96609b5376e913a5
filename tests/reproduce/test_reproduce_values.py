"""The numbers and labels of the reproduced tables on stubbed measurements whose answers are
known: reductions and ratios (direction, denominator, device), the labels that say estimated,
projected, FID-proxy or RAPL, the report's notes and counts, preset scaling, the cache
fingerprint, and the published figures and recipes as quoted."""

import copy
import json

import pytest

from edgegen.reproduce import runner
from edgegen.reproduce.runner import Context, Row, load_papers, load_recipes

NAMES = ("dcgan_generator", "dcgan_generator_pruned50", "dcgan_generator_int8", "vae", "vae_int8", "gpt2_teacher",
         "gpt2_student", "gpt2_student_int8")


def _entry(params, lat, energy, rapl=False):
    d = {"params": params, "nonzero_params": params, "flops": 2 * params, "macs": params, "bytes_on_disk": 4 * params,
         "latency_ms_p50": lat, "throughput_per_s": 1000 / lat, "energy_method": "x", "disk_format": "pt",
         ("energy_j" if rapl else "energy_j_estimated"): energy}
    for i, dev in enumerate(runner.DEVICES):
        d[f"{dev}_latency_ms_projected"] = 100.0 * (i + 1) * lat
        d[f"{dev}_energy_j_projected"] = 0.1 * (i + 1)
    return d


def _eff(rapl=False):
    p = {"dcgan_generator": 4000, "dcgan_generator_pruned50": 1000, "dcgan_generator_int8": 4000, "vae": 800,
         "vae_int8": 800, "gpt2_teacher": 1000, "gpt2_student": 250, "gpt2_student_int8": 250}
    lat = {"dcgan_generator": 10.0, "dcgan_generator_int8": 5.0, "vae": 10.0, "vae_int8": 7.5, "gpt2_student": 10.0,
           "gpt2_student_int8": 10.0}  # reductions 50, 25, 0 -> mean 25
    en = {"dcgan_generator": 1.0, "dcgan_generator_int8": 0.5, "vae": 1.0, "vae_int8": 1.0, "gpt2_student": 1.0,
          "gpt2_student_int8": 1.0}  # reductions 50, 0, 0
    return {n: _entry(p[n], lat.get(n, 10.0), en.get(n, 1.0), rapl) for n in NAMES}


def _ctx(tmp_path, seeds=(0,), preset="cpu-smoke", **kw):
    return Context(preset, list(seeds), tmp_path, False, kw.get("data_root"), lambda m: None, load_recipes())


def _stubbed(ctx, monkeypatch, result):
    monkeypatch.setattr(ctx, "step", lambda name, fn: copy.deepcopy(result))
    return ctx


def test_size_reductions(tmp_path, monkeypatch):
    ctx = _stubbed(_ctx(tmp_path), monkeypatch, _eff())
    rows = {r.key: r for r in runner._size_latency_memory_power(ctx, "size")}
    assert rows["dcgan_generator_pruned50/params_reduction_pct"].values == [75.0]
    assert rows["gpt2_student/params_reduction_pct"].values == [75.0]
    assert rows["gpt2_student/flops_reduction_pct"].values == [75.0]


def test_edge_latency_is_the_rpi4_projection(tmp_path, monkeypatch):
    ctx = _stubbed(_ctx(tmp_path), monkeypatch, _eff())
    rows = {r.key: r for r in runner._size_latency_memory_power(ctx, "latency")}
    assert rows["dcgan_generator/edge_latency_ms"].values == [1000.0]  # rpi4 = 100 x 10 ms in the stub
    assert rows["dcgan_generator/edge_latency_ms"].label == "projected"


@pytest.mark.parametrize("rapl, key, label", [(False, "energy_j_estimated", "estimated"),
                                               (True, "energy_j", "measured (RAPL)")])
def test_power_and_headline_energy_labels(tmp_path, monkeypatch, rapl, key, label):
    ctx = _stubbed(_ctx(tmp_path), monkeypatch, _eff(rapl))
    power = {r.key: r for r in runner._size_latency_memory_power(ctx, "power")}
    assert power[f"vae/{key}"].label == label
    head = {r.key: r for r in runner._headline(ctx)}
    assert head["quantization/energy_reduction_pct"].label == label


def test_headline_means(tmp_path, monkeypatch):
    ctx = _stubbed(_ctx(tmp_path), monkeypatch, _eff())
    head = {r.key: r for r in runner._headline(ctx)}
    assert head["quantization/latency_reduction_pct"].values == [pytest.approx(25.0)]
    assert head["quantization/energy_reduction_pct"].values == [pytest.approx(50.0 / 3)]
    assert head["dcgan_generator_int8/latency_reduction_pct"].values == [pytest.approx(50.0)]


def _pair(q0, q1, qkey="vae_neg_elbo"):
    side = lambda b, q, lat: {"metrics": {"bytes_on_disk": b, "latency_ms_p50": lat, "throughput_per_s": 1000 / lat,
                                          "peak_memory_bytes": 10 * b, qkey: q, "energy_j_estimated": lat / 100}}
    return side(4000, q0, 10.0), side(1000, q1, 5.0)


def test_lightweight_ratios_and_labels(tmp_path, monkeypatch):
    res = {"dcgan_channel50": _pair(100.0, 110.0, "fid_proxy"), "magnitude_pruning": _pair(100.0, 110.0),
           "int8_ptq": _pair(100.0, 110.0)}
    ctx = _stubbed(_ctx(tmp_path), monkeypatch, res)
    rows = {r.key: r for r in runner._lightweight(ctx)}
    assert rows["int8_ptq/compression_ratio"].values == [4.0]
    assert rows["int8_ptq/size_reduction_pct"].values == [75.0]
    assert rows["int8_ptq/quality_loss_pct"].values == [pytest.approx(10.0)]
    assert rows["int8_ptq/existing_energy_j_estimated"].label == "estimated"
    assert rows["dcgan_channel50/quality_loss_pct"].label == "FID-proxy"


def test_paired_image_quality_rows_carry_the_fid_label(tmp_path, monkeypatch):
    m = lambda **kw: {"metrics": kw, "labels": {}}
    one = {k: m(fid_proxy=50.0) for k in ("dcgan-cifar10", "dcgan-cifar10-pruned50", "dcgan-celeba",
                                           "dcgan-celeba-pruned50")}
    one.update({k: m(fid_proxy=60.0, vae_recon_ssim=0.5, vae_neg_elbo=100.0) for k in ("vae-celeba", "vae-celeba-int8")})
    one.update({k: m(wikitext2_ppl=30.0) for k in ("gpt2-teacher", "gpt2-student", "gpt2-student-int8")})
    ctx = _stubbed(_ctx(tmp_path), monkeypatch, one)
    rows = {r.key: r for r in runner._quality(ctx)}
    assert rows["vae-celeba-int8/diff_vs_vae-celeba_fid_proxy"].label == "FID-proxy"
    assert rows["vae-celeba-int8/diff_vs_vae-celeba_vae_recon_ssim"].label == "measured"


def _points(seed):
    return {"points": [{"ratio": r, "params": 1000 * (10 - i), "fid_proxy": 50.0 + 3 * i + seed,
                        "latency_ms_p50": 10.0 - 0.8 * i, "bytes_on_disk": 4000 * (10 - i),
                        "energy_j_estimated": 0.1 - 0.008 * i} for i, r in enumerate((0.0,) + runner.SWEEP)]}


def test_tradeoff_labels_and_front(tmp_path, monkeypatch):
    ctx = _ctx(tmp_path, seeds=(0, 1))
    monkeypatch.setattr(ctx, "step", lambda name, fn: _points(int(name[-1])))
    rows = {r.key: r for r in runner._tradeoff(ctx)}
    assert rows["fit/r2_efficiency"].label == "measured" and rows["fit/r2_quality"].label == "FID-proxy"
    # FID rises as latency and size fall: every sweep point is non-dominated
    assert rows["sweep/pareto_front_size"].values == [10.0, 10.0]


def test_ci_bounds_in_order():
    assert runner._ours(runner._stat([1.0, 2.0, 3.0])) == "2 +- 1 [95% CI -0.4841, 4.484]"


def test_table_without_published_numbers_says_so(tmp_path):
    papers = load_papers()
    ctx = _ctx(tmp_path)
    md = runner._table_markdown("memory", papers["tables"]["memory"], [Row("a/b", [1.0], "measured")], ctx, None,
                                papers)
    assert "not in edgegen's record of the paper" in md
    md = runner._table_markdown("size", papers["tables"]["size"], [Row("dcgan_generator/params", [1.0], "measured")],
                                ctx, None, papers)
    assert "not in edgegen's record of the paper" not in md


def test_departure_notes(tmp_path):
    ctx = _ctx(tmp_path)
    size = runner._departures(ctx, "size", [Row("dcgan_generator/params", [3.58e6], "measured")])
    assert any("has 3.58 M parameters; the paper reports 4.2 M" in n for n in size)
    q = runner._departures(ctx, "quality", [Row("a/fid_proxy", [1.0], "FID-proxy")])
    assert any("image quality is FID-proxy" in n for n in q)
    assert not any("FID-proxy" in n for n in runner._departures(ctx, "quality", [Row("a/fid", [1.0], "measured")]))


def test_presets_scale_the_models(tmp_path):
    assert _ctx(tmp_path).model_config("dcgan-cifar10", 0)["model"]["ngf"] == 16
    assert _ctx(tmp_path, preset="paper").model_config("dcgan-cifar10", 0)["model"]["ngf"] == 64


def test_efficiency_tables_use_the_paper_architectures(tmp_path, monkeypatch):
    import edgegen.config

    seen = []

    class Stop(Exception):
        pass

    def fake_from_dict(cls, mc):
        seen.append(dict(mc))
        raise Stop

    monkeypatch.setattr(edgegen.config, "from_dict", fake_from_dict)
    with pytest.raises(Stop):
        runner._paper_architectures(_ctx(tmp_path), 0)
    assert seen[0]["ngf"] == 64 and seen[0]["nz"] == 100


def test_fingerprint_holds_the_data_root(tmp_path):
    assert _ctx(tmp_path, data_root="/a").fingerprint != _ctx(tmp_path, data_root="/b").fingerprint


def _two_tables(monkeypatch):
    monkeypatch.setattr(runner, "TABLES", ("size", "latency"))

    def table(key):
        def build(ctx):
            ctx.step("cpu-smoke/shared/seed0", lambda: {"x": 1.0})
            return [Row(key, [1.0], "measured")]
        return build

    monkeypatch.setitem(runner.BUILDERS, "size", table("a/size_row"))
    monkeypatch.setitem(runner.BUILDERS, "latency", table("a/latency_row"))


def test_results_of_other_recipes_are_not_merged(tmp_path, monkeypatch):
    _two_tables(monkeypatch)
    runner.reproduce("all", "cpu-smoke", seeds=[0], out_dir=tmp_path, track=False, log=lambda m: None)
    other = copy.deepcopy(load_recipes())
    other["presets"]["cpu-smoke"]["eval"]["fid_samples"] = 301
    runner.reproduce("latency", "cpu-smoke", seeds=[0], out_dir=tmp_path, track=False, log=lambda m: None,
                     recipes=other)
    assert list(json.loads((tmp_path / "results.json").read_text())["tables"]) == ["latency"]
    assert "came from other settings" in (tmp_path / "REPORT.md").read_text()


def test_report_counts_each_reused_step_once(tmp_path, monkeypatch):
    _two_tables(monkeypatch)
    runner.reproduce("all", "cpu-smoke", seeds=[0], out_dir=tmp_path, track=False, log=lambda m: None)
    runner.reproduce("all", "cpu-smoke", seeds=[0], out_dir=tmp_path, track=False, log=lambda m: None)
    assert "(0 steps computed, 1 reused from an earlier run)" in (tmp_path / "REPORT.md").read_text()


@pytest.mark.parametrize("n_positions, tokens", [(1024, 128), (64, 64)], ids=["long-context", "short-context"])
def test_gpt2_is_measured_on_128_tokens_or_its_whole_context(n_positions, tokens):
    from edgegen.models import GPT2, GPT2Config

    model = GPT2(GPT2Config(vocab_size=50, n_positions=n_positions, n_embd=8, n_layer=1, n_head=2))
    (idx,) = runner._inputs(model, 0)
    assert idx.shape == (1, tokens) and int(idx.max()) < 50


def test_one_seed_has_no_spread_and_three_have_an_interval():
    assert runner._stat([5.0]) == {"mean": 5.0, "std": None, "n": 1, "ci": None}
    two = runner._stat([1.0, 3.0])
    assert two["std"] == pytest.approx(2 ** 0.5) and two["ci"] is None
    assert runner._stat([1.0, 2.0, 3.0])["ci"] == [pytest.approx(-0.4841, abs=1e-4), pytest.approx(4.484, abs=1e-3)]


def test_published_figures_as_quoted():
    t = load_papers()["tables"]
    assert {k: v["value"] for k, v in t["latency"]["values"].items()} == {
        "dcgan_generator/edge_latency_ms": 310, "dcgan_generator_pruned50/edge_latency_ms": 194}
    assert {k: (v["value"], v.get("std")) for k, v in t["lightweight"]["values"].items()} == {
        "magnitude_pruning/size_reduction_pct": (67.8, None), "magnitude_pruning/quality_loss_pct": (2.3, None),
        "int8_ptq/size_reduction_pct": (73.5, None), "int8_ptq/quality_loss_pct": (1.9, None)}
    assert t["size"]["values"]["dcgan_generator/params"]["value"] == 4.2e6


def test_every_published_figure_has_a_row(tmp_path, monkeypatch):
    papers = load_papers()["tables"]
    ctx = _stubbed(_ctx(tmp_path), monkeypatch, _eff())
    keys = {t: {r.key for r in runner._size_latency_memory_power(ctx, t)} for t in ("size", "latency", "memory",
                                                                                   "power")}
    keys["headline"] = {r.key for r in runner._headline(ctx)}
    res = {"dcgan_channel50": _pair(100.0, 110.0, "fid_proxy"), "magnitude_pruning": _pair(100.0, 110.0),
           "int8_ptq": _pair(100.0, 110.0)}
    ctx = _stubbed(_ctx(tmp_path), monkeypatch, res)
    keys["lightweight"] = {r.key for r in runner._lightweight(ctx)}
    for table, rows in keys.items():
        for k, pv in (papers[table]["values"] or {}).items():
            assert pv.get("row", k) in rows, (table, k)


def test_paper_recipe_uses_the_published_settings():
    m = load_recipes()["models"]
    for k in ("dcgan-cifar10", "vae-celeba"):
        assert (m[k]["train"]["batch_size"], m[k]["optim"]["lr"], m[k]["train"]["epochs"]) == (32, 2e-4, 100)
    assert (m["gpt2-teacher"]["train"]["batch_size"], m["gpt2-teacher"]["optim"]["lr"],
            m["gpt2-teacher"]["train"]["epochs"]) == (8, 2e-4, 3)
    assert m["gpt2-student"]["distill"]["temperature"] == 2.0
