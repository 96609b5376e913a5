"""Samples of models and of trained runs: seeded latents, image grids and labelled panels against
arrays built by hand, text continuations against ``generate`` called by hand, and
``edgegen sample`` end to end (files, side-by-side groups, the index, bad input)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from edgegen.cli import main
from edgegen.eval.run_samples import sample_runs
from edgegen.eval.runs import load_run
from edgegen.eval.samples import (generate_images, image_grid, image_latents, labelled_panels, reconstruct_images,
                                   sample_text, save_png)
from edgegen.models import GPT2, GPT2Config
from edgegen.train.loop import Trainer
from tests.data.test_text import tiny_tokenizer_dir  # noqa: F401  (fixture)
from tests.train.helpers import tiny


# ------------------------------------------------------------------------------------- latents


def test_latents_are_one_seeded_draw_whatever_the_batch():
    whole = torch.randn(10, 6, generator=torch.Generator().manual_seed(3))
    for batch in (1, 4, 10, 64):
        parts = list(image_latents(6, 10, seed=3, batch=batch))
        assert [p.shape[0] for p in parts] == [min(batch, 10 - i) for i in range(0, 10, batch)]
        assert torch.equal(torch.cat(parts), whole)
    assert not torch.equal(torch.cat(list(image_latents(6, 10, seed=4))), whole)
    assert list(image_latents(6, 0)) == []


@pytest.mark.parametrize("args, name", [((0, 4), "size"), ((3, -1), "n"), ((3, 4, 0, 0), "batch"),
                                        ((3, 4, -1), "seed"), ((3.0, 4), "size"), ((True, 4), "size")],
                         ids=["size0", "n-neg", "batch0", "seed-neg", "size-float", "size-bool"])
def test_latents_bad_arguments_are_named(args, name):
    size, n, *rest = args
    seed = rest[0] if rest else 0
    batch = rest[1] if len(rest) > 1 else 64
    with pytest.raises(ValueError, match=f"^{name}: expected an int"):
        list(image_latents(size, n, seed=seed, batch=batch))


def test_generated_images_are_the_models_outputs_on_those_latents():
    from edgegen.models import BetaVAE, BetaVAEConfig, DCGANConfig

    gen = DCGANConfig(nz=8, ngf=8, ndf=8).build()[0].eval()
    z = torch.randn(5, 8, generator=torch.Generator().manual_seed(1))
    got = torch.cat(list(generate_images(gen, "dcgan", 5, batch=2, seed=1)))
    with torch.no_grad():  # batch by batch: a convolution's result may depend on the batch size
        assert torch.equal(got, torch.cat([gen(z[i:i + 2]) for i in range(0, 5, 2)]))
    vae = BetaVAE(BetaVAEConfig(latent_dim=4)).eval()
    z = torch.randn(3, 4, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(torch.cat(list(generate_images(vae, "vae", 3))), vae.decode(z))
    # A model moved to float64 gets the same latents in float64 (not a dtype error).
    vae64 = vae.to(torch.float64)
    with torch.no_grad():
        got = torch.cat(list(generate_images(vae64, "vae", 3)))
        assert got.dtype == torch.float32 and torch.equal(got, vae64.decode(z.double()).float())
    with pytest.raises(ValueError, match="kind: expected one of"):
        next(generate_images(gen, "gpt2", 1))
    with pytest.raises(ValueError, match="model: expected a Beta-VAE whose config names its latent size"):
        next(generate_images(torch.nn.Linear(2, 2), "vae", 1))


# ---------------------------------------------------------------------------------------- grids


def test_grid_layout_and_value_mapping_by_hand():
    # Three 2x3 images, two per row, one pixel of padding: a 2-row grid with its last cell empty.
    imgs = torch.empty(3, 3, 2, 3)
    imgs[0] = -1.0  # -> 0
    imgs[1] = 1.0  # -> 255
    imgs[2] = 0.0  # -> 127.5, rounded half to even: 128
    grid, bad = image_grid(imgs, nrow=2, padding=1)
    assert bad == 0 and grid.dtype == np.uint8 and grid.shape == (2 * 3 + 1, 2 * 4 + 1, 3)
    expected = np.full((7, 9, 3), 255, dtype=np.uint8)
    expected[1:3, 1:4] = 0
    expected[1:3, 5:8] = 255
    expected[4:6, 1:4] = 128
    np.testing.assert_array_equal(grid, expected)


def test_grid_clips_counts_non_finite_values_and_repeats_one_channel():
    imgs = torch.tensor([[[[-3.0, 3.0, 0.5, float("nan"), float("inf"), -float("inf")]]]])  # [1, 1, 1, 6]
    grid, bad = image_grid(imgs, padding=0)
    assert bad == 3
    # 0.5 -> 191.25 -> 191; non-finite values drawn black; the one channel repeated three times.
    np.testing.assert_array_equal(grid[0, :, 0], [0, 255, 191, 0, 0, 0])
    assert (grid[..., 0] == grid[..., 1]).all() and (grid[..., 1] == grid[..., 2]).all()
    # Another value range, and uint8 taken as it is.
    grid, _ = image_grid(torch.tensor([[[[0.0, 0.5, 1.0]]]]), padding=0, value_range=(0.0, 1.0))
    np.testing.assert_array_equal(grid[0, :, 0], [0, 128, 255])
    u8 = torch.tensor([[[[7, 200]]]], dtype=torch.uint8).expand(1, 3, 1, 2)
    grid, bad = image_grid(u8, padding=0)
    assert bad == 0
    np.testing.assert_array_equal(grid[0, :, 0], [7, 200])


def test_grid_default_rows_and_more_columns_than_images():
    grid, _ = image_grid(torch.zeros(5, 3, 4, 4), padding=0)  # ceil(sqrt(5)) = 3 per row, 2 rows
    assert grid.shape == (8, 12, 3)
    grid, _ = image_grid(torch.zeros(2, 3, 4, 4), nrow=8, padding=0)  # never wider than the images
    assert grid.shape == (4, 8, 3)


@pytest.mark.parametrize("kwargs, exc, match", [
    ({"images": torch.zeros(3, 4, 4)}, ValueError, r"images: expected at least one image as \[N, 1 or 3, h, w\]"),
    ({"images": torch.zeros(0, 3, 4, 4)}, ValueError, "images: expected at least one image"),
    ({"images": torch.zeros(1, 2, 4, 4)}, ValueError, "images: expected at least one image"),
    ({"images": torch.zeros(1, 3, 4, 4, dtype=torch.int32)}, TypeError, "images: expected floating-point or uint8"),
    ({"nrow": 0}, ValueError, "nrow: expected None or an int >= 1"),
    ({"padding": -1}, ValueError, "padding: expected an int >= 0"),
    ({"value_range": (1.0, 1.0)}, ValueError, "value_range: expected finite"),
    ({"value_range": (0.0, float("inf"))}, ValueError, "value_range: expected finite"),
], ids=["3d", "empty", "two-channels", "int32", "nrow0", "padding-neg", "range-flat", "range-inf"])
def test_grid_bad_input_is_named(kwargs, exc, match):
    args = {"images": torch.zeros(2, 3, 4, 4), **kwargs}
    with pytest.raises(exc, match=match):
        image_grid(**args)


def test_panels_sit_under_their_labels_and_long_labels_wrap():
    a = np.zeros((10, 40, 3), dtype=np.uint8)
    b = np.full((6, 30, 3), 50, dtype=np.uint8)
    out = labelled_panels([a, b], ["A", "B"], gap=5)
    strip = out.shape[0] - 10
    assert out.shape == (strip + 10, 40 + 5 + 30, 3) and strip > 0
    np.testing.assert_array_equal(out[strip:, :40], a)
    np.testing.assert_array_equal(out[strip:strip + 6, 45:], b)
    assert (out[strip + 6:, 45:] == 255).all() and (out[:, 40:45] == 255).all()  # white around and between
    assert (out[:strip, :40] < 128).any() and (out[:strip, 45:] < 128).any()  # each label drawn
    long = labelled_panels([a, b], ["a label much wider than its panel", "B"], gap=5)
    assert long.shape[0] > out.shape[0]  # wrapped onto more lines, not cut
    np.testing.assert_array_equal(long[long.shape[0] - 10:, :40], a)
    with pytest.raises(ValueError, match="panels, labels: expected as many labels as panels"):
        labelled_panels([a], ["A", "B"])
    with pytest.raises(ValueError, match=r"panels\[1\]: expected a non-empty uint8"):
        labelled_panels([a, a.astype(np.float32)], ["A", "B"])
    with pytest.raises(ValueError, match="gap: expected an int >= 0"):
        labelled_panels([a], ["A"], gap=-1)


def test_png_round_trip_replaces_the_file(tmp_path):
    from PIL import Image

    img = np.random.default_rng(0).integers(0, 256, (7, 5, 3), dtype=np.uint8)
    path = tmp_path / "x.png"
    path.write_bytes(b"old")
    save_png(img, path)
    np.testing.assert_array_equal(np.asarray(Image.open(path)), img)
    assert [p.name for p in tmp_path.iterdir()] == ["x.png"]  # no temporary file left behind
    with pytest.raises(ValueError, match=r"image: expected a uint8 \[H, W, 3\] array"):
        save_png(img[..., :1], path)


# ----------------------------------------------------------------------------------------- text


def _lm(vocab=64, n_positions=16):
    torch.manual_seed(0)
    return GPT2(GPT2Config(vocab_size=vocab, n_positions=n_positions, n_embd=16, n_layer=1, n_head=2)).eval()


def test_text_continuations_equal_generate_by_hand_for_prompts_of_any_length():
    model = _lm()
    prompts = [[1, 2, 3], [5], [7, 8, 9, 10, 11]]
    got = sample_text(model, prompts, 4, temperature=0.9, top_k=10, seed=11)
    g = torch.Generator().manual_seed(11)
    for p, cont in zip(prompts, got):
        full = model.generate(torch.tensor([p]), 4, temperature=0.9, top_k=10, generator=g)
        assert cont == full[0, len(p):].tolist() and len(cont) == 4
    # Greedy continuations do not depend on the prompts before them.
    assert sample_text(model, [[5]], 4, greedy=True) == [sample_text(model, prompts, 4, greedy=True)[1]]


def test_text_stops_at_the_end_token():
    model = _lm()
    first = sample_text(model, [[1, 2]], 6, greedy=True)[0]
    cut = sample_text(model, [[1, 2]], 6, greedy=True, eos_token_id=first[1])[0]
    assert cut == first[:first.index(first[1]) + 1] and cut[-1] == first[1]


def test_text_checks_every_prompt_before_the_first_token(monkeypatch):
    model = _lm(n_positions=8)
    calls = []
    monkeypatch.setattr(model, "generate", lambda *a, **k: calls.append(a))
    with pytest.raises(ValueError, match=r"prompts\[1\]: max_new_tokens: the prompt length \(6\)"):
        sample_text(model, [[1], [1, 2, 3, 4, 5, 6]], 4)
    with pytest.raises(ValueError, match=r"prompts\[0\]: expected a non-empty list of int token ids"):
        sample_text(model, [[]], 2)
    with pytest.raises(ValueError, match=r"prompts\[0\]: expected a non-empty list of int token ids"):
        sample_text(model, [[1.5]], 2)
    with pytest.raises(ValueError, match="prompts: expected a non-empty list"):
        sample_text(model, "hello", 2)
    with pytest.raises(ValueError, match="temperature"):
        sample_text(model, [[1]], 2, temperature=0.0)
    with pytest.raises(ValueError, match="seed: expected an int >= 0"):
        sample_text(model, [[1]], 2, seed=-1)
    with pytest.raises(TypeError, match="model: expected a language model with generate"):
        sample_text(torch.nn.Linear(2, 2), [[1]], 2)
    assert calls == []


def test_reconstructions_are_the_posterior_mean_decoded_in_eval_mode_whatever_the_batch():
    from edgegen.models import BetaVAE, BetaVAEConfig

    vae = BetaVAE(BetaVAEConfig(latent_dim=4))
    x = torch.rand(5, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        want = vae.decode(vae.encode(x)[0])
    vae.train()
    vae.decoder[1].eval()  # one module's own flag, which must come back as it was
    flags = {m: m.training for m in vae.modules()}
    seen = []
    hook = vae.decoder[0].register_forward_hook(lambda m, i, o: seen.append(m.training))
    got = reconstruct_images(vae, x, batch=2)
    hook.remove()
    assert seen == [False, False, False]  # three batches, each in eval mode
    assert {m: m.training for m in vae.modules()} == flags
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    torch.testing.assert_close(reconstruct_images(vae, x, batch=5), got, rtol=0, atol=1e-5)
    # uint8 images are read as [0, 255] -> [-1, 1].
    u8 = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    torch.testing.assert_close(reconstruct_images(vae, u8), reconstruct_images(vae, u8.float() / 127.5 - 1))
    # A float64 model takes float64 images and still returns float32.
    got64 = reconstruct_images(vae.double(), x.double())
    assert got64.dtype == torch.float32
    torch.testing.assert_close(got64, want, rtol=0, atol=1e-4)


def test_generated_images_do_not_depend_on_the_training_flag_and_leave_it_alone():
    from edgegen.models import DCGANConfig, DCGANGenerator

    torch.manual_seed(3)
    gen = DCGANGenerator(DCGANConfig(nz=8))
    bns = [m for m in gen.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns
    for m in bns:  # running statistics unlike a batch's, so batch statistics would change the images
        m.running_mean.uniform_(-0.5, 0.5)
        m.running_var.uniform_(0.5, 2.0)
    gen.eval()
    want = torch.cat(list(generate_images(gen, "dcgan", 6, batch=6, seed=1)))
    gen.train()
    got = torch.cat(list(generate_images(gen, "dcgan", 6, batch=4, seed=1)))
    assert all(m.training for m in gen.modules())
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


@pytest.mark.parametrize("model, images, kwargs, exc, match", [
    ("linear", "ok", {}, TypeError, "model: expected an edgegen BetaVAE"),
    ("vae", "3d", {}, ValueError, r"images: expected at least one image as \[N, C, h, w\], got \(3, 64, 64\)"),
    ("vae", "empty", {}, ValueError, "images: expected at least one image"),
    ("vae", "int", {}, TypeError, "images: expected floating-point or uint8 values, got torch.int64"),
    ("vae", "nan", {}, ValueError, "images: expected finite values, got 1 NaN"),
    ("vae", "ok", {"batch": 0}, ValueError, "batch: expected an int >= 1, got 0"),
], ids=["not-vae", "3d", "empty", "int64", "nan", "batch0"])
def test_reconstruction_bad_input_is_named(model, images, kwargs, exc, match):
    from edgegen.models import BetaVAE, BetaVAEConfig

    m = torch.nn.Linear(2, 2) if model == "linear" else BetaVAE(BetaVAEConfig(latent_dim=4))
    x = torch.zeros(2, 3, 64, 64)
    x = {"ok": x, "3d": x[0], "empty": x[:0], "int": x.long(), "nan": x.clone().index_put_((torch.tensor(0),) * 4,
                                                                                         torch.tensor(float("nan")))}[images]
    with pytest.raises(exc, match=match):
        reconstruct_images(m, x, **kwargs)


# ------------------------------------------------------------------------------------- run level


@pytest.fixture(scope="module")
def image_runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("image-runs")
    runs = {}
    ptq = {"compress": {"ptq": {"kind": "Int8DynamicConfig"}}}
    for name, base, extra in (("gan", "gan", {}), ("gan-ptq", "gan", ptq), ("vae", "vae", {}), ("vae-ptq", "vae", ptq)):
        runs[name] = tmp / name
        Trainer(tiny(base, tmp, name=name, train={"steps_per_epoch": 2}, **extra), runs[name], progress=False).fit()
    return runs


def test_runs_get_grids_of_shared_latents_an_index_and_one_side_by_side_per_kind(image_runs, tmp_path):
    out = tmp_path / "out"
    res = sample_runs([image_runs["gan"], image_runs["gan-ptq"], image_runs["vae"]], out, n=6, seed=2)
    from PIL import Image

    # Each grid is exactly the run's shipped model on latents seeded with 2.
    for entry, key in zip(res["runs"], ("gan", "gan-ptq", "vae")):
        run = load_run(image_runs[key])
        want, bad = image_grid(torch.cat(list(generate_images(run.model, run.kind, 6, seed=2))))
        np.testing.assert_array_equal(np.asarray(Image.open(out / entry["files"][0])), want)
        assert entry["form"] == run.form and entry["non_finite"] == bad == 0
    assert res["runs"][1]["form"].startswith("int8")
    # The two DCGANs (same kind and latent size) side by side; the lone VAE has none.
    assert [p.rsplit("/", 1)[1] for p in res["side_by_side"]] == ["side_by_side-dcgan-z8.png"]
    assert res["runs"][0]["side_by_side"] == res["runs"][1]["side_by_side"] == "side_by_side-dcgan-z8.png"
    assert "side_by_side" not in res["runs"][2]
    index = (out / "samples.md").read_text()
    assert "seeded with 2" in index and "![side_by_side-dcgan-z8.png](side_by_side-dcgan-z8.png)" in index
    vae_row = next(line for line in index.splitlines() if line.startswith("| vae |"))
    assert "no other run of its kind and latent size" in vae_row
    saved = json.loads((out / "samples.json").read_text())
    assert saved["settings"]["seed"] == 2 and [r["label"] for r in saved["runs"]] == [r["label"] for r in res["runs"]]


def test_the_same_run_twice_gets_two_files_and_non_finite_output_is_reported(image_runs, tmp_path, monkeypatch):
    import edgegen.eval.samples as samples_mod

    real = samples_mod.generate_images

    def with_nan(model, kind, n, batch=64, seed=0):
        for x in real(model, kind, n, batch, seed):
            x[0, 0, 0, :3] = float("nan")
            yield x

    monkeypatch.setattr(samples_mod, "generate_images", with_nan)
    res = sample_runs([image_runs["gan"], image_runs["gan"]], tmp_path / "o", n=2)
    labels = [r["label"] for r in res["runs"]]
    assert labels[1] == labels[0] + "-2" and all((tmp_path / "o" / f"{lab}.png").is_file() for lab in labels)
    assert [r["non_finite"] for r in res["runs"]] == [3, 3]
    assert "3 non-finite values drawn black" in (tmp_path / "o" / "samples.md").read_text()


def test_everything_is_checked_before_anything_is_written(image_runs, tmp_path):
    out = tmp_path / "never"
    with pytest.raises(FileNotFoundError, match="does not exist"):
        sample_runs([image_runs["gan"], tmp_path / "missing"], out)
    with pytest.raises(ValueError, match="prompts: none of the runs is a language model"):
        sample_runs([image_runs["gan"]], out, prompts=["hello"])
    with pytest.raises(ValueError, match="prompt_ids: none of the runs is a language model"):
        sample_runs([image_runs["gan"]], out, prompt_ids=[[1]])
    with pytest.raises(ValueError, match="prompts, prompt_ids: give prompts as text or as token ids, not both"):
        sample_runs([image_runs["gan"]], out, prompts=["a"], prompt_ids=[[1]])
    with pytest.raises(ValueError, match="n: expected an int >= 1"):
        sample_runs([image_runs["gan"]], out, n=0)
    with pytest.raises(ValueError, match="paths: expected at least one"):
        sample_runs([], out)
    with pytest.raises(ValueError, match="top_k"):
        sample_runs([image_runs["gan"]], out, top_k=0)
    assert not out.exists()


def test_vae_runs_reconstruct_the_same_held_out_images_side_by_side(image_runs, tmp_path):
    from PIL import Image

    from edgegen.eval.image import ssim
    from edgegen.eval.runs import EvalOptions, _real_images

    out = tmp_path / "out"
    res = sample_runs([image_runs["vae"], image_runs["vae-ptq"], image_runs["gan"]], out, n=5, seed=0)
    real, what = _real_images(load_run(image_runs["vae"]).config, EvalOptions(samples=5))
    assert real.dtype == torch.uint8 and real.shape == (5, 3, 64, 64)
    grids = []
    for entry, key in zip(res["runs"][:2], ("vae", "vae-ptq")):
        run = load_run(image_runs[key])
        rec = reconstruct_images(run.model, real)
        want, bad = image_grid(rec)
        np.testing.assert_array_equal(np.asarray(Image.open(out / entry["reconstructions"])), want)
        grids.append(want)
        assert entry["files"] == [f"{entry['label']}.png", f"{entry['label']}-reconstructions.png"]
        assert entry["reconstructed"] == 5 and entry["recon_non_finite"] == bad == 0
        score = float(ssim((rec.clamp(-1, 1) + 1) / 2, real.float() / 255, data_range=1.0))
        assert entry["recon_ssim_shown"] == pytest.approx(score, abs=1e-12)
        assert entry["reconstructions_side_by_side"] == "reconstructions-synthetic-images.png"
    assert res["runs"][1]["form"].startswith("int8")
    # The DCGAN reconstructs nothing.
    assert "reconstructions" not in res["runs"][2] and "no_reconstructions" not in res["runs"][2]
    # One panel image: the held-out images, then both runs' reconstructions, under their labels.
    assert [p.rsplit("/", 1)[1] for p in res["reconstructions"]] == ["reconstructions-synthetic-images.png"]
    panel = np.asarray(Image.open(res["reconstructions"][0]))
    names = [f"held out: {what}"] + [f"{r['name']} ({r['form']})" for r in res["runs"][:2]]
    want = labelled_panels([image_grid(real)[0], *grids], names)
    np.testing.assert_array_equal(panel, want)
    index = (out / "samples.md").read_text()
    assert "Reconstructions: each Beta-VAE run encodes the first held-out images" in index
    row = next(line for line in index.splitlines() if line.startswith("| vae |"))
    assert f"of 5 held-out images, SSIM {res['runs'][0]['recon_ssim_shown']:.3f}" in row
    assert "![reconstructions-synthetic-images.png]" in index
    saved = json.loads((out / "samples.json").read_text())
    assert saved["reconstructions"] == [{"file": "reconstructions-synthetic-images.png", "images": what,
                                         "runs": [str(image_runs["vae"]), str(image_runs["vae-ptq"])]}]
    assert "_grid" not in saved["runs"][0]


def test_required_reconstructions_name_the_run_whatever_the_reader_raised(image_runs, tmp_path, monkeypatch):
    """An error type that cannot be built from a message alone (UnicodeDecodeError, a ValueError)
    still becomes the ValueError naming the run, not a TypeError from rebuilding it."""
    import edgegen.eval.runs as runs_mod

    def undecodable(cfg, opts):
        raise UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte")

    monkeypatch.setattr(runs_mod, "_real_images", undecodable)
    with pytest.raises(ValueError, match="reconstructions: the held-out images of .* cannot be read: 'utf-8' codec"):
        sample_runs([image_runs["vae"]], tmp_path / "o", n=2, reconstructions=True)


def test_different_held_out_images_get_a_panel_each(image_runs, tmp_path, monkeypatch):
    import edgegen.eval.runs as runs_mod

    real = runs_mod._real_images

    def per_run(cfg, opts):  # the same dataset name, different pixels for the PTQ run
        images, what = real(cfg, opts)
        return (255 - images, what + " (inverted)") if cfg.name == "vae-ptq" else (images, what)

    monkeypatch.setattr(runs_mod, "_real_images", per_run)
    res = sample_runs([image_runs["vae"], image_runs["vae-ptq"], image_runs["vae"]], tmp_path / "o", n=2)
    names = [p.rsplit("/", 1)[1] for p in res["reconstructions"]]
    assert names == ["reconstructions-synthetic-images.png", "reconstructions-synthetic-images-2.png"]
    assert [r["reconstructions_side_by_side"] for r in res["runs"]] == [names[0], names[1], names[0]]
    saved = json.loads((tmp_path / "o" / "samples.json").read_text())["reconstructions"]
    assert saved[1]["images"].endswith("(inverted)") and len(saved[0]["runs"]) == 2


def test_reconstructions_off_required_or_noted_where_the_data_is_missing(image_runs, tmp_path, monkeypatch):
    res = sample_runs([image_runs["vae"]], tmp_path / "off", n=2, reconstructions=False)
    assert res["reconstructions"] == [] and "reconstructions" not in res["runs"][0]
    assert sorted(p.name for p in (tmp_path / "off").iterdir()) == sorted([f"{res['runs'][0]['label']}.png",
                                                                             "samples.json", "samples.md"])
    import edgegen.eval.runs as runs_mod

    def missing(cfg, opts):
        raise FileNotFoundError("celeba: no such folder /nowhere")

    monkeypatch.setattr(runs_mod, "_real_images", missing)
    with pytest.raises(FileNotFoundError, match="reconstructions: the held-out images of .* cannot be read: celeba"):
        sample_runs([image_runs["vae"]], tmp_path / "required", n=2, reconstructions=True)
    assert not any((tmp_path / "required").glob("*.png"))
    res = sample_runs([image_runs["vae"]], tmp_path / "auto", n=2)
    assert res["reconstructions"] == [] and "reconstructions" not in res["runs"][0]
    assert res["runs"][0]["no_reconstructions"] == "no held-out images to reconstruct: celeba: no such folder /nowhere"
    assert "no held-out images to reconstruct: celeba" in (tmp_path / "auto" / "samples.md").read_text()
    with pytest.raises(ValueError, match="reconstructions: expected None"):
        sample_runs([image_runs["vae"]], tmp_path / "bad", reconstructions="yes")


@pytest.fixture
def lm_runs(tmp_path, tiny_tokenizer_dir, monkeypatch):  # noqa: F811
    """A run of the fixture tokenizer's vocabulary (260 tokens, end-of-text 259), one of a
    synthetic 64-token vocabulary, and a data root holding the tokenizer."""
    tok_dir, vocab = tiny_tokenizer_dir
    root = tmp_path / "data"
    (root / "gpt2").mkdir(parents=True)
    for name in ("encoder.json", "vocab.bpe"):
        (root / "gpt2" / name).write_bytes((tok_dir / name).read_bytes())
    monkeypatch.setenv("EDGEGEN_DATA_DIR", str(root))
    runs = {}
    for name, v in (("text", len(vocab)), ("synthetic", 64)):
        runs[name] = tmp_path / name
        cfg = tiny("lm", tmp_path, name=name, model={"vocab_size": v}, train={"steps_per_epoch": 2})
        Trainer(cfg, runs[name], progress=False).fit()
    return runs, root


@pytest.mark.filterwarnings("ignore:.*differs from OpenAI's published:UserWarning")  # the fixture tokenizer
def test_text_runs_continue_text_prompts_and_decode_them(lm_runs, tmp_path):
    from edgegen.data.tokenizer import GPT2Tokenizer

    runs, root = lm_runs
    tok = GPT2Tokenizer.from_dir(root / "gpt2")
    res = sample_runs([runs["text"]], tmp_path / "o", prompts=["hello world", "he"], max_new_tokens=5, seed=4,
                      top_k=None)
    entry = res["runs"][0]
    ids = [tok.encode("hello world"), tok.encode("he")]
    want = sample_text(load_run(runs["text"]).model, ids, 5, seed=4, eos_token_id=tok.eot_id)
    assert [s["continuation_ids"] for s in entry["samples"]] == want
    assert [s["prompt"] for s in entry["samples"]] == ["hello world", "he"]
    assert [s["continuation"] for s in entry["samples"]] == [tok.decode(c) for c in want]
    page = (tmp_path / "o" / entry["files"][0]).read_text()
    assert "hello world" in page and "````text" in page
    # No prompt: <|endoftext|> alone, unconditional samples.
    res = sample_runs([runs["text"]], tmp_path / "o2", max_new_tokens=3)
    assert res["runs"][0]["samples"][0]["prompt_ids"] == [tok.eot_id]


@pytest.mark.filterwarnings("ignore:.*differs from OpenAI's published:UserWarning")
def test_a_synthetic_vocabulary_takes_token_ids_only(lm_runs, tmp_path):
    runs, _ = lm_runs
    with pytest.raises(ValueError, match="has a vocabulary of 64 tokens, fewer than the tokenizer's 260"):
        sample_runs([runs["synthetic"]], tmp_path / "o", prompts=["hello"])
    with pytest.raises(ValueError, match=r"prompt_ids: \[99\] outside the vocabulary \[0, 64\)"):
        sample_runs([runs["synthetic"]], tmp_path / "o", prompt_ids=[[1, 99]])
    res = sample_runs([runs["synthetic"]], tmp_path / "o", max_new_tokens=4, greedy=True)
    sample = res["runs"][0]["samples"][0]
    assert sample["prompt_ids"] == [0] and "continuation" not in sample and len(sample["continuation_ids"]) == 4
    assert not res["runs"][0]["decoded"] and "not_decoded" not in res["runs"][0]


@pytest.mark.filterwarnings("ignore:.*differs from OpenAI's published:UserWarning")
def test_ids_beyond_the_tokenizer_in_a_padded_vocabulary_are_written_as_ids(lm_runs):
    from edgegen.data.tokenizer import GPT2Tokenizer
    from edgegen.eval.run_samples import _decode

    _, root = lm_runs
    tok = GPT2Tokenizer.from_dir(root / "gpt2")
    he = tok.encode("he")
    assert _decode(tok, he + [300] + he + [260, 301]) == "he<|id 300|>he<|id 260|><|id 301|>"
    assert _decode(tok, he) == tok.decode(he) and _decode(tok, []) == ""


def test_a_prompt_beyond_a_models_context_fails_before_any_file_is_written(lm_runs, image_runs, tmp_path):
    """The image run listed first is not drawn: every LM prompt plus max_new_tokens is checked
    against its model's context (32 positions here) before anything is generated."""
    runs, _ = lm_runs
    out = tmp_path / "o"
    with pytest.raises(ValueError, match=r"prompt_ids\[1\]: .*synthetic: max_new_tokens: the prompt length \(20\) plus "
                                         r"max_new_tokens \(20\) is 40, beyond the model's context n_positions \(32\)"):
        sample_runs([image_runs["gan"], runs["synthetic"]], out, prompt_ids=[[1], [2] * 20], max_new_tokens=20)
    assert list(out.iterdir()) == []  # created and checked writable, nothing in it
    res = sample_runs([image_runs["gan"], runs["synthetic"]], out, prompt_ids=[[1], [2] * 12], max_new_tokens=20)
    assert [len(s["prompt_ids"]) for s in res["runs"][1]["samples"]] == [1, 12]


def test_text_prompts_without_the_tokenizer_name_the_download(lm_runs, tmp_path, monkeypatch):
    runs, _ = lm_runs
    monkeypatch.setenv("EDGEGEN_DATA_DIR", str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError, match=r"prompts: text prompts need GPT-2's tokenizer: .*"
                                                r"download_gpt2_tokenizer"):
        sample_runs([runs["text"]], tmp_path / "o", prompts=["hello"])


def test_gpt2_vocabulary_without_the_tokenizer_gives_ids_and_says_why(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEGEN_DATA_DIR", str(tmp_path / "empty"))
    cfg = tiny("lm", tmp_path, name="big", model={"vocab_size": 50257}, train={"steps_per_epoch": 1})
    Trainer(cfg, tmp_path / "big", progress=False).fit()
    res = sample_runs([tmp_path / "big"], tmp_path / "o", max_new_tokens=2)
    entry = res["runs"][0]
    assert entry["samples"][0]["prompt_ids"] == [50256] and "continuation" not in entry["samples"][0]
    assert "download_gpt2_tokenizer" in entry["not_decoded"]
    page = (tmp_path / "o" / entry["files"][0]).read_text()
    assert f"- token ids only: {entry['not_decoded']}" in page
    assert "token ids only (no tokenizer)" in (tmp_path / "o" / "samples.md").read_text()


# ------------------------------------------------------------------------------------------- CLI


def test_cli_writes_the_samples_and_prints_where(image_runs, tmp_path, capsys):
    rc = main(["sample", str(image_runs["gan"]), str(image_runs["gan-ptq"]), "--out", str(tmp_path / "s"),
               "--n", "4", "--seed", "1"])
    out = capsys.readouterr().out
    assert rc == 0
    assert f"side by side: {tmp_path / 's' / 'side_by_side-dcgan-z8.png'}" in out
    assert f"index: {tmp_path / 's' / 'samples.md'}" in out
    assert json.loads((tmp_path / "s" / "samples.json").read_text())["settings"]["n"] == 4


def test_cli_prints_reconstructions_and_why_there_are_none(image_runs, tmp_path, capsys, monkeypatch):
    rc = main(["sample", str(image_runs["vae"]), "--out", str(tmp_path / "s"), "--n", "2"])
    out = capsys.readouterr().out
    assert rc == 0 and f"reconstructions: {tmp_path / 's' / 'reconstructions-synthetic-images.png'}" in out
    assert "-reconstructions.png" in out.splitlines()[0]
    rc = main(["sample", str(image_runs["vae"]), "--out", str(tmp_path / "n"), "--n", "2", "--reconstructions", "no"])
    assert rc == 0 and "reconstructions" not in capsys.readouterr().out
    import edgegen.eval.runs as runs_mod

    def missing(cfg, opts):
        raise FileNotFoundError("celeba: absent")

    monkeypatch.setattr(runs_mod, "_real_images", missing)
    rc = main(["sample", str(image_runs["vae"]), "--out", str(tmp_path / "m"), "--n", "2"])
    assert rc == 0 and "no held-out images to reconstruct: celeba: absent" in capsys.readouterr().err
    rc = main(["sample", str(image_runs["vae"]), "--out", str(tmp_path / "r"), "--n", "2", "--reconstructions", "yes"])
    assert rc != 0 and "reconstructions: the held-out images of" in capsys.readouterr().err


@pytest.mark.parametrize("extra, message", [
    (["--prompt-ids", "1 x"], "--prompt-ids: expected token ids separated by spaces or commas, got '1 x'"),
    (["--prompt-ids", " , "], "--prompt-ids: expected at least one token id"),
    (["--top-k", "-1"], "--top-k: expected an int >= 0"),
    (["--n", "0"], "n: expected an int >= 1"),
], ids=["ids-not-int", "ids-empty", "topk-neg", "n0"])
def test_cli_bad_input_is_an_error_naming_it(image_runs, tmp_path, capsys, extra, message):
    rc = main(["sample", str(image_runs["gan"]), "--out", str(tmp_path / "s"), *extra])
    assert rc == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "s").exists()
