"""Behaviour of the base layer and of sweeps on the paths the other tests do not take: tensor-file
aliases (dtype views, offsets, strides, non-contiguous tensors), the transform verbs' model and
filter checks and handler options, config merging and --set parsing (keys, empty values,
booleans, numbers as a whole, YAML positions and top-level lists, empty sections), and sweep
summaries (one seed, difference direction, alpha, duplicate seeds, the parent run's status, the
default baseline, earlier results, progressive runs on disk, deleted and failed runs)."""

import json

import pytest
import torch
from torch import nn

from tests.helpers import record_tracker_finishes


# =========================================================================== tensor_files
def _round_trip(state, tmp_path, name="s.safetensors"):
    from edgegen.tensor_files import read_safetensors, write_safetensors

    path = tmp_path / name
    write_safetensors(state, path)
    return read_safetensors(path)


def test_a_dtype_view_of_a_tensor_is_not_an_alias():
    """storage_key without the dtype makes a float tensor and its int32 view
    (same storage, offset, shape, strides) one tensor: written, the int view would be an alias of
    the floats and read back as floats. (As it is, write_safetensors of such a pair is refused by
    safetensors itself as shared memory, which is loud; without the dtype it would be silently
    wrong.)"""
    from edgegen.tensor_files import dedupe, storage_key

    f = torch.arange(4, dtype=torch.float32)
    bits = f.view(torch.int32)
    assert storage_key(f) != storage_key(bits)
    out, aliases = dedupe({"f": f, "bits": bits})
    assert aliases == {} and sorted(out) == ["bits", "f"] and out["bits"].dtype == torch.int32


def test_equal_shaped_slices_of_one_buffer_are_not_aliases(tmp_path):
    """storage_key without storage_offset folds the second half of a buffer
    into the first (same storage, shape and strides): its values are lost on reading."""
    buf = torch.arange(8.0)
    state, meta = _round_trip({"lo": buf[:4], "hi": buf[4:]}, tmp_path)
    assert json.loads(meta["edgegen_aliases"]) == {}
    assert torch.equal(state["lo"], torch.arange(4.0)) and torch.equal(state["hi"], torch.arange(4.0, 8.0))


def test_a_transposed_square_weight_is_not_an_alias(tmp_path):
    """storage_key without the strides makes W and W.T (square: same shape,
    offset and storage) one tensor: W.T is read back as W."""
    w = torch.arange(9.0).reshape(3, 3)
    state, meta = _round_trip({"w": w, "wt": w.t()}, tmp_path)
    assert json.loads(meta["edgegen_aliases"]) == {}
    assert torch.equal(state["w"], w) and torch.equal(state["wt"], w.t())


def test_a_non_contiguous_tensor_is_written(tmp_path):
    """without .contiguous() safetensors refuses a transposed (non-contiguous)
    tensor: saving a model with a transposed weight fails."""
    w = torch.arange(6.0).reshape(2, 3).t()
    assert not w.is_contiguous()
    state, _ = _round_trip({"wt": w}, tmp_path)
    assert torch.equal(state["wt"], w)


def test_a_file_written_without_edgegen_metadata_is_read(tmp_path):
    """restore_aliases indexing metadata['edgegen_aliases'] fails with
    KeyError on any safetensors file not written by edgegen (e.g. a Hugging Face checkpoint)."""
    from safetensors.torch import save_file

    from edgegen.tensor_files import read_safetensors

    path = tmp_path / "foreign.safetensors"
    save_file({"a": torch.ones(2)}, str(path))  # no metadata at all
    state, meta = read_safetensors(path)
    assert sorted(state) == ["a"] and meta == {}
    save_file({"b": torch.zeros(3)}, str(path), metadata={"format": "pt"})
    state, meta = read_safetensors(path)
    assert sorted(state) == ["b"] and meta == {"format": "pt"}


# =========================================================================== transform
@pytest.mark.parametrize("verb", ["quantize_", "prune_", "sparsify_attention_", "reduce_"])
def test_every_verb_names_a_filter_fn_that_is_not_callable(verb):
    """without check_filter_fn a non-callable filter_fn fails deep in a
    handler ('str' object is not callable) or, where no module reaches it, is silently ignored."""
    import edgegen.attention as attention
    import edgegen.prune as prune
    import edgegen.quant as quant
    import edgegen.reduce as reduce

    from edgegen.transform import check_filter_fn

    check_filter_fn(None)
    check_filter_fn(lambda m, n: True)
    with pytest.raises(TypeError, match=r"^filter_fn: expected a callable \(module, name\) -> bool, got str$"):
        check_filter_fn("0")
    model = nn.Sequential(nn.Linear(4, 4))
    call = {"quantize_": lambda: quant.quantize_(model, quant.Int8DynamicConfig(), filter_fn="0"),
            "prune_": lambda: prune.prune_(model, prune.MagnitudeConfig(0.5), filter_fn="0"),
            "sparsify_attention_": lambda: attention.sparsify_attention_(model, attention.SparseAttentionConfig(),
                                                                         filter_fn="0"),
            "reduce_": lambda: reduce.reduce_(model, reduce.LowRankConfig(0.5), filter_fn="0")}[verb]
    with pytest.raises(TypeError, match=r"^filter_fn: expected a callable"):
        call()
    assert type(model[0]) is nn.Linear  # refused before anything was changed


@pytest.mark.parametrize("verb", ["quantize_", "prune_", "sparsify_attention_", "reduce_"])
def test_every_verb_names_a_model_that_is_not_a_module(verb):
    """without check_model a verb given a non-module fails with an
    AttributeError ('str' object has no attribute 'named_modules') that names nothing."""
    import edgegen.attention as attention
    import edgegen.prune as prune
    import edgegen.quant as quant
    import edgegen.reduce as reduce

    call = {"quantize_": lambda: quant.quantize_("model.pt", quant.Int8DynamicConfig()),
            "prune_": lambda: prune.prune_("model.pt", prune.MagnitudeConfig(0.5)),
            "sparsify_attention_": lambda: attention.sparsify_attention_("model.pt", attention.SparseAttentionConfig()),
            "reduce_": lambda: reduce.reduce_("model.pt", reduce.LowRankConfig(0.5))}[verb]
    with pytest.raises(TypeError, match=r"^model: expected an nn\.Module, got str$"):
        call()


def test_the_direct_children_of_a_transformer_layer_are_read_by_it():
    """name.partition('.') takes the first component of the name as the
    parent: a top-level 'linear1' becomes its own parent and a nested MultiheadAttention's
    projection gets its grandparent."""
    from edgegen.transform import weight_read_by_parent

    enc = nn.TransformerEncoderLayer(16, 2, 32)
    assert weight_read_by_parent(enc, "linear1") and weight_read_by_parent(enc, "self_attn.out_proj")

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = nn.MultiheadAttention(16, 2)
            self.fc = nn.Linear(16, 16)

    model = nn.Sequential(Block())
    assert weight_read_by_parent(model, "0.attn.out_proj")  # parent: the MultiheadAttention
    assert not weight_read_by_parent(model, "0.fc")


def test_example_inputs_are_ignored_by_prune_handlers_that_do_not_take_them():
    """prune_ passes example_inputs to every handler; without the
    'ignorable' exemption, prune_(model, MagnitudeConfig, example_inputs=...) is refused."""
    from edgegen.prune import MagnitudeConfig, prune_, sparsity

    model = nn.Sequential(nn.Linear(8, 8))
    prune_(model, MagnitudeConfig(0.5), example_inputs=(torch.randn(1, 8),))
    assert sparsity(model) == 0.5


def test_a_handler_with_var_keywords_receives_every_option():
    """a handler declared with **options must receive the verb's options;
    detecting *args instead refuses them ('calibration: ... does not take calibration')."""
    from edgegen.transform import Handlers

    class Cfg:
        pass

    verb = Handlers("verb_")

    @verb.register(Cfg)
    def _handler(model, config, filter_fn, **options):
        return options

    assert verb(nn.Linear(2, 2), Cfg(), None, calibration=[1], example_inputs=None) == \
        {"calibration": [1], "example_inputs": None}


# =========================================================================== config
def test_merge_result_never_shares_a_mapping_with_its_inputs():
    """a shallow copy of base shares its nested sections with the result:
    changing the merged config (as apply_overrides / presets do) changes base, e.g. every
    variant of a sweep after the first."""
    from edgegen.config import merge

    base = {"optim": {"lr": 1.0, "betas": [0.9, 0.99]}, "data": {"name": "x"}}
    out = merge(base, {"train": {"epochs": 2}})
    out["optim"]["lr"] = 5.0
    out["data"]["name"] = "y"
    assert base == {"optim": {"lr": 1.0, "betas": [0.9, 0.99]}, "data": {"name": "x"}}
    upd = {"model": {"kind": "vae"}}
    out = merge({}, upd)
    out["model"]["kind"] = "gpt2"
    assert upd == {"model": {"kind": "vae"}}


def test_set_values_may_contain_an_equals_sign():
    """the key is everything before the FIRST '=': a value holding '='
    (a database URI's query, a name) must stay whole."""
    from edgegen.config import apply_overrides, parse_override

    assert parse_override("tracking.uri=postgresql://h/db?sslmode=require") == \
        (["tracking", "uri"], "postgresql://h/db?sslmode=require")
    assert apply_overrides({}, ["name=a=b"]) == {"name": "a=b"}


def test_set_with_nothing_after_the_equals_is_the_empty_string():
    """`--set name=` is the empty string (what the user typed), not
    null: null would silently reset an Optional field to None / fail a str field as 'got None'."""
    from edgegen.config import parse_override

    assert parse_override("name=") == (["name"], "")
    assert parse_override("data.root=  ") == (["data", "root"], "")
    assert parse_override("a.b=null") == (["a", "b"], None)  # null only when written


def test_set_keys_are_stripped():
    """'optim.lr =1e-3' (a space before '=') must set optim.lr,
    not an unknown key 'lr '."""
    from edgegen.config import apply_overrides, parse_override

    assert parse_override(" optim.lr =0.001") == (["optim", "lr"], 0.001)
    assert apply_overrides({"optim": {"lr": 1.0}}, ["optim.lr = 0.5"]) == {"optim": {"lr": 0.5}}


@pytest.mark.parametrize("text", ["a..b=1", ".a=1", "a.=1", "=1"])
def test_set_keys_with_an_empty_part_are_refused(text):
    """'optim..lr=1' must be refused as an empty key by --set, not
    create a section named ''."""
    from edgegen.config import parse_override

    with pytest.raises(ValueError, match=r"^--set .*: empty key$"):
        parse_override(text)


def test_a_bool_is_not_a_number():
    """`lr: true` (or --set optim.lr=yes) must be refused, not read as
    a learning rate of 1.0."""
    from edgegen.config import from_dict
    from edgegen.train import ExperimentConfig

    for value in (True, False):
        with pytest.raises(TypeError, match=r"^optim\.lr: expected a number, got (True|False)$"):
            from_dict(ExperimentConfig, {"data": {"name": "synthetic-images"}, "optim": {"lr": value}})


def test_a_number_followed_by_text_names_its_key():
    """a string must be a number as a whole ('1e-3x' is a typo): a prefix
    match hands it to float(), whose ValueError names no key."""
    from edgegen.config import from_dict
    from edgegen.train import ExperimentConfig

    for text in ("1e-3x", "2e-4 # lr", "3.0.1"):
        with pytest.raises(TypeError, match=r"^optim\.lr: expected a number"):
            from_dict(ExperimentConfig, {"data": {"name": "synthetic-images"}, "optim": {"lr": text}})
    assert from_dict(ExperimentConfig, {"data": {"name": "synthetic-images"}, "optim": {"lr": " 2e-4 "}}).optim.lr \
        == 2e-4


def test_a_yaml_error_names_the_line_and_column_counted_from_one(tmp_path):
    """editors count columns from 1; the ':'
    that breaks 'a: 1 / __b: 2' is at line 2, column 4."""
    from edgegen.config import load_yaml

    path = tmp_path / "bad.yaml"
    path.write_text("a: 1\n  b: 2\n")
    with pytest.raises(ValueError, match=rf"^{path}:2:4: invalid YAML: mapping values are not allowed here$"):
        load_yaml(path)


def test_a_yaml_file_that_is_not_a_mapping_is_refused(tmp_path):
    """a list (or a scalar) at the top of a config file is a ValueError
    naming the file, not a list handed on to code expecting a mapping."""
    from edgegen.config import load_yaml

    for text, kind in (("- 1\n- 2\n", "list"), ("3\n", "int"), ("hello\n", "str")):
        path = tmp_path / "top.yaml"
        path.write_text(text)
        with pytest.raises(ValueError, match=rf"^{path}: expected a mapping at the top level, got {kind}$"):
            load_yaml(path)
    (tmp_path / "empty.yaml").write_text("")
    assert load_yaml(tmp_path / "empty.yaml") == {}


def test_flatten_keeps_empty_sections_as_values():
    """an empty mapping (e.g. LowRankConfig's ranks: {}) is a
    value of its own in the MLflow params, not dropped."""
    from edgegen.config import flatten

    assert flatten({"a": {}, "b": {"c": 1, "d": {}}}) == {"a": {}, "b.c": 1, "b.d": {}}


# =========================================================================== sweep
# Sweeps with train_experiment replaced by a fake that returns set values (as the project's
# test_paired_test_uses_the_seeds_both_sides_have does): the summary's logic, not training.
BASE = {"task": "vae", "model": {"kind": "vae", "latent_dim": 4},
        "data": {"name": "synthetic-images", "synthetic_size": 64, "val_batches": 1}}


def _sweep_spec(tmp_path, variants, **extra):
    return {"name": "sw", "metric": "val_loss",
            "base": {**BASE, "output_dir": str(tmp_path / "runs"), "tracking": {"enabled": False}},
            "variants": {v: {} for v in variants}, **extra}


@pytest.fixture
def fake_training(monkeypatch):
    """values[(variant, seed)] -> the final val_loss, or an Exception to raise; ckpt: where the
    fake run leaves its checkpoint ('checkpoints' or 'stage1/checkpoints'; None: none)."""
    import edgegen.train.loop as loop

    setup = {"values": {}, "ckpt": "checkpoints", "ran": []}

    def fake(cfg, run_dir, tracker=None, resume=False, progress=None):
        variant, seed = cfg.name[len("sw-"):], cfg.train.seed
        setup["ran"].append((variant, seed))
        run_dir.mkdir(parents=True, exist_ok=True)
        value = setup["values"][(variant, seed)]
        if isinstance(value, Exception):
            raise value
        if setup["ckpt"]:
            (run_dir / setup["ckpt"]).mkdir(parents=True, exist_ok=True)
            (run_dir / setup["ckpt"] / "last.pt").write_bytes(b"")
        return {"final": {"val_loss": value, "val_examples": 100.0 + value}}

    monkeypatch.setattr(loop, "train_experiment", fake)
    return setup


def _run(spec, seeds, **kw):
    from edgegen.train.sweep import run_sweep

    return run_sweep(spec, seeds, log=lambda m: None, progress=False, **kw)


def _row(out, variant):
    return next(r for r in out["rows"] if r["variant"] == variant)


def test_one_seed_has_no_std(tmp_path, fake_training):
    """with one seed the std is None ('' in summary.csv, '(n = 1)' in the
    table), not NaN: 'nan' in the CSV, '+- n/a' in the table and a NaN std metric in MLflow."""
    import csv

    fake_training["values"] = {("a", 0): 1.5}
    out = _run(_sweep_spec(tmp_path, ["a"]), [0])
    assert _row(out, "a")["std"] is None
    assert "| a | 1 | 1.5 (n = 1) |" in out["markdown"]
    rows = list(csv.DictReader(open(tmp_path / "runs" / "sw" / "summary.csv")))
    assert rows[0]["std"] == "" and rows[0]["mean"] == "1.5"


def test_diff_vs_baseline_is_variant_minus_baseline_below_three_seeds(tmp_path, fake_training):
    """with 1-2 shared seeds (no t-test) the difference must still be variant -
    baseline, as the t-test's mean_diff is from 3 seeds on: a worse (higher-loss) variant shows +."""
    fake_training["values"] = {("base", 0): 1.0, ("base", 1): 2.0, ("worse", 0): 1.5, ("worse", 1): 3.5}
    out = _run(_sweep_spec(tmp_path, ["base", "worse"], baseline="base"), [0, 1])
    row = _row(out, "worse")
    assert row["diff_vs_baseline"] == pytest.approx(1.0) and row["paired_seeds"] == 2
    assert "| worse | 2 | 2.5 +- 1.4 | n/a | +1 | n/a | n/a |" in out["markdown"]


def test_the_sweeps_alpha_decides_significance(tmp_path, fake_training):
    """`alpha: 0.01` in the sweep file must be used by the paired t-test
    (p = 0.012 here: significant at 0.05, not at 0.01)."""
    from edgegen.analysis import paired_ttest

    base, var = [1.0, 2.0, 3.0, 4.0], [1.2, 2.5, 3.3, 4.4]
    fake_training["values"] = {**{("base", s): v for s, v in enumerate(base)},
                               **{("var", s): v for s, v in enumerate(var)}}
    out = _run(_sweep_spec(tmp_path, ["base", "var"], baseline="base", alpha=0.01), [0, 1, 2, 3])
    row = _row(out, "var")
    assert row["p"] == pytest.approx(paired_ttest(base, var)["p"]) and 0.01 < row["p"] < 0.05
    assert row["significant"] is False
    assert "alpha 0.01" in out["markdown"] and out["markdown"].rstrip().endswith("| no |")


def test_repeated_seeds_are_refused(tmp_path, fake_training):
    """`--seeds 0 0` would silently run (and count) one seed, not the two asked
    for: refused before anything runs."""
    with pytest.raises(ValueError, match=r"^--seeds: expected distinct seeds, got \[0, 0\]$"):
        _run(_sweep_spec(tmp_path, ["a"]), [0, 0])
    with pytest.raises(ValueError, match="--seeds: expected distinct seeds"):
        _run(_sweep_spec(tmp_path, ["a"]), [1, "1"])
    assert fake_training["ran"] == [] and not (tmp_path / "runs" / "sw").exists()


def test_the_sweep_run_is_failed_when_a_variant_failed(tmp_path, fake_training, monkeypatch):
    """the parent (sweep) run is closed FAILED when a variant failed, so the
    MLflow UI shows the sweep as failed; FINISHED when all ran."""
    finished = record_tracker_finishes(monkeypatch)
    fake_training["values"] = {("ok", 0): 1.0, ("bad", 0): RuntimeError("boom")}
    out = _run(_sweep_spec(tmp_path, ["ok", "bad"]), [0])
    assert out["failed"] == ["bad"]
    assert finished == [("ok/seed0", "FINISHED"), ("bad/seed0", "FAILED"), ("sw", "FAILED")]


def test_the_default_baseline_is_the_first_variant_listed():
    """without `baseline:` the first variant in the file is the
    baseline (the one every other is tested against), not the alphabetically first."""
    from edgegen.train.sweep import _parse

    sw = _parse({"base": dict(BASE), "variants": {"fp32": {}, "amp": {}, "int8": {}}})
    assert sw["baseline"] == "fp32"


def test_earlier_runs_of_another_metric_are_left_out_of_the_summary(tmp_path, fake_training):
    """results.json of an earlier selection that compared another
    metric must not be mixed into this summary (its values are of the other metric)."""
    fake_training["values"] = {("a", 0): 1.0, ("b", 0): 2.0}
    _run(_sweep_spec(tmp_path, ["a", "b"]), [0], only=["a"])
    out = _run(_sweep_spec(tmp_path, ["a", "b"], metric="val_examples"), [0], only=["b"])
    assert [r["variant"] for r in out["rows"]] == ["b"] and _row(out, "b")["mean"] == 102.0


def test_a_finished_staged_run_of_an_earlier_selection_stays_in_the_summary(tmp_path, fake_training):
    """a progressive-distillation run keeps its checkpoints under
    stage<i>/checkpoints/; a later --only selection must still count it as finished."""
    fake_training["values"] = {("a", 0): 1.0, ("b", 0): 2.0}
    fake_training["ckpt"] = "stage1/checkpoints"
    _run(_sweep_spec(tmp_path, ["a", "b"]), [0], only=["a"])
    out = _run(_sweep_spec(tmp_path, ["a", "b"]), [0], only=["b"])
    assert [(r["variant"], r["n"]) for r in out["rows"]] == [("a", 1), ("b", 1)]


def test_a_deleted_run_of_an_earlier_selection_leaves_the_summary(tmp_path, fake_training):
    """a run folder deleted since (to drop a bad run) must leave the
    summary, although results.json still lists it."""
    import shutil

    fake_training["values"] = {("a", 0): 1.0, ("b", 0): 2.0}
    _run(_sweep_spec(tmp_path, ["a", "b"]), [0], only=["a"])
    shutil.rmtree(tmp_path / "runs" / "sw" / "a" / "seed0")
    out = _run(_sweep_spec(tmp_path, ["a", "b"]), [0], only=["b"])
    assert [r["variant"] for r in out["rows"]] == ["b"]


def test_a_failed_run_of_an_earlier_selection_stays_in_the_summary(tmp_path, fake_training):
    """a run that failed before its first checkpoint is still on disk
    (its folder); the next selection's summary must keep naming it as failed."""
    fake_training["values"] = {("a", 0): RuntimeError("no memory"), ("b", 0): 2.0}
    _run(_sweep_spec(tmp_path, ["a", "b"]), [0], only=["a"])
    out = _run(_sweep_spec(tmp_path, ["a", "b"]), [0], only=["b"])
    row = _row(out, "a")
    assert row["n"] == 0 and row["error"] == "seed 0: RuntimeError: no memory"
    assert "| a | 0 | FAILED: seed 0: RuntimeError: no memory |" in out["markdown"]


@pytest.mark.parametrize("text", ["train.seed =5", " train.seed=5"])
def test_a_seed_override_with_spaces_is_refused_too(tmp_path, fake_training, text):
    """parse_override strips the key, so 'train.seed =5' WOULD set
    every run's seed to 5 (all seeds the same run): the sweep must see it as train.seed too."""
    with pytest.raises(ValueError, match="a sweep sets train.seed for each run"):
        _run(_sweep_spec(tmp_path, ["a"]), [0, 1], overrides=[text])
    assert fake_training["ran"] == []
