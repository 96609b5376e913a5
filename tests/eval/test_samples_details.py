"""The samples, ``edgegen sample`` and the Beta-VAE metrics in detail: rounding half to even on any float dtype, label wrapping against a fixed-width font by
hand, label lines and margins in the panels, atomic PNG writes, top-p text, dtype handling of
reconstructions and metrics, the helpers of ``sample_runs`` (end token, labels, grouping by latent
size, the pages), and the metrics' handling of prefixes, eval mode and bad model output."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from edgegen.eval.run_samples import _end_token, sample_runs
from edgegen.eval.samples import _wrap, image_grid, labelled_panels, reconstruct_images, sample_text, save_png
from edgegen.eval.vae import vae_metrics
from edgegen.models import GPT2, BetaVAE, BetaVAEConfig, GPT2Config
from edgegen.train.loop import Trainer
from tests.data.test_text import tiny_tokenizer_dir  # noqa: F401  (fixture)
from tests.eval.test_samples import image_runs, lm_runs  # noqa: F401  (fixtures)
from tests.eval.test_vae_metrics import vae  # noqa: F401  (fixture)
from tests.train.helpers import tiny


# ----------------------------------------------------------------------------------------- grids


def test_grid_rounds_half_to_even_not_half_up():
    # On value_range (0, 255) a float is its own byte before rounding: .5 goes to the even neighbour.
    imgs = torch.tensor([[[[0.5, 1.5, 2.5, 128.5, 129.5, 254.5]]]], dtype=torch.float64)
    grid, bad = image_grid(imgs, padding=0, value_range=(0.0, 255.0))
    assert bad == 0
    np.testing.assert_array_equal(grid[0, :, 0], [0, 2, 2, 128, 130, 254])


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bfloat16", "float16"])
def test_grid_maps_low_precision_floats_in_float64(dtype):
    """A bfloat16 / float16 image is mapped exactly (in float64), not in its own precision, whose
    rounding of (x + 1) * 127.5 would move some pixels by one."""
    x = torch.linspace(-1, 1, 4001).to(dtype).unique()  # every representable value on a fine grid
    grid, bad = image_grid(x.view(1, 1, 1, -1), padding=0)
    assert bad == 0
    want = np.round((x.double().numpy() + 1.0) * 127.5).astype(np.uint8)  # numpy rounds half to even too
    np.testing.assert_array_equal(grid[0, :, 0], want)


# ----------------------------------------------------------------------------------- wrapping


class _Mono:
    """A font whose every character is 10 pixels wide."""

    @staticmethod
    def getlength(s):
        return 10 * len(s)


@pytest.mark.parametrize("text, width, want", [
    ("ab cd", 50, ["ab cd"]),  # exactly as wide as the panel: one line
    ("ab cd", 49, ["ab", "cd"]),
    ("ab cd ef", 50, ["ab cd", "ef"]),  # broken at spaces, which stay between words
    ("abcdefgh", 30, ["abc", "def", "gh"]),  # a word wider than the panel broken where it reaches the edge
    ("ab abcdefgh xy", 40, ["ab", "abcd", "efgh", "xy"]),
    ("", 30, [""]),
], ids=["exact-fit", "one-short", "spaces-kept", "long-word", "mixed", "empty"])
def test_wrap_against_a_fixed_width_font_by_hand(text, width, want):
    lines = _wrap(text, width, _Mono)
    assert lines == want
    assert all(_Mono.getlength(line) <= width for line in lines)


def _ink_rows(strip):
    """Runs of consecutive rows of ``strip`` holding dark pixels: one per drawn line of text."""
    dark = (strip < 128).any(axis=(1, 2))
    runs, prev = 0, False
    for d in dark:
        runs += bool(d and not prev)
        prev = d
    return runs


def test_label_lines_are_drawn_one_under_another_with_space_between():
    from PIL import ImageFont

    font = ImageFont.load_default()
    w = int(font.getlength("Ag")) + 4  # "Ag" alone fits, "Ag Ag" does not: three lines
    assert _wrap("Ag Ag Ag", w - 4, font) == ["Ag", "Ag", "Ag"]
    panel = np.zeros((5, w, 3), dtype=np.uint8)
    one = labelled_panels([panel], ["Ag"])
    three = labelled_panels([panel], ["Ag Ag Ag"])
    assert _ink_rows(one[:one.shape[0] - 5]) == 1
    assert _ink_rows(three[:three.shape[0] - 5]) == 3  # each line in its own band, white rows between


def test_labels_keep_a_margin_inside_their_panel_and_the_strip_fits_the_longest():
    a = np.zeros((10, 40, 3), dtype=np.uint8)
    long = "x" * 40  # one word far wider than the panel, broken inside the word
    out = labelled_panels([a], [long])
    strip = out[:out.shape[0] - 10]
    assert (strip < 128).any()
    assert (strip[:, :2] == 255).all() and (strip[:, -2:] == 255).all()  # two white pixels either side
    # The strip is as tall as the longest label needs, whichever panel it belongs to.
    b = np.zeros((10, 40, 3), dtype=np.uint8)
    first = labelled_panels([a, b], [long, "B"])
    second = labelled_panels([a, b], ["B", long])
    assert first.shape == second.shape and first.shape[0] == out.shape[0]
    s = second.shape[0] - 10
    assert (second[:s, 40:] < 128).sum() == (first[:s, :40] < 128).sum()  # the long label drawn whole, not cut


# -------------------------------------------------------------------------------------- png


def test_png_write_that_fails_leaves_the_old_file_whole(tmp_path, monkeypatch):
    from PIL import Image

    path = tmp_path / "x.png"
    path.write_bytes(b"old")
    real_save = Image.Image.save

    def torn(self, fp, *a, **k):  # writes half a file, then fails
        with open(fp, "wb") as f:
            f.write(b"\x89PNG half")
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", torn)
    with pytest.raises(OSError, match="disk full"):
        save_png(np.zeros((2, 2, 3), dtype=np.uint8), path)
    monkeypatch.setattr(Image.Image, "save", real_save)
    assert path.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["x.png"]


# ---------------------------------------------------------------------------------------- text


def test_top_p_reaches_generate():
    torch.manual_seed(0)
    model = GPT2(GPT2Config(vocab_size=64, n_positions=16, n_embd=16, n_layer=1, n_head=2)).eval()
    prompts = [[1, 2], [3]]
    got = sample_text(model, prompts, 6, top_p=0.3, temperature=2.0, seed=5)
    g = torch.Generator().manual_seed(5)
    want = [model.generate(torch.tensor([p]), 6, temperature=2.0, top_p=0.3, generator=g)[0, len(p):].tolist()
            for p in prompts]
    assert got == want
    assert got != sample_text(model, prompts, 6, temperature=2.0, seed=5)  # top-p changes these samples


# ------------------------------------------------------------------------------ reconstructions


def test_reconstructions_cast_float32_and_uint8_images_to_a_float64_model():
    torch.manual_seed(0)
    vae = BetaVAE(BetaVAEConfig(latent_dim=4)).double().eval()
    x = torch.rand(2, 3, 64, 64) * 2 - 1  # float32 images, float64 model
    got = reconstruct_images(vae, x)
    with torch.no_grad():
        want = vae.decode(vae.encode(x.double())[0]).float()
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    u8 = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    torch.testing.assert_close(reconstruct_images(vae, u8), reconstruct_images(vae, u8.double() / 127.5 - 1))


# ------------------------------------------------------------------------------ run helpers


def test_end_token_by_vocabulary_and_tokenizer():
    class Tok:
        vocab_size, eot_id = 260, 259

    assert _end_token(260, Tok) == 259 and _end_token(300, Tok) == 259  # the model takes the tokenizer's ids
    assert _end_token(64, Tok) is None  # a synthetic vocabulary: no end token
    assert _end_token(50257, None) == 50256  # GPT-2's vocabulary without the tokenizer at hand
    assert _end_token(50304, None) is None and _end_token(64, None) is None  # unknown without the tokenizer


@pytest.mark.parametrize("kwargs, match", [
    ({"prompt_ids": [[-1]]}, r"prompt_ids: expected a list of non-empty lists of token ids >= 0"),
    ({"prompts": [""]}, "prompts: expected a list of non-empty strings"),
], ids=["negative-id", "empty-prompt"])
def test_run_prompts_are_checked_before_the_runs(image_runs, tmp_path, kwargs, match):  # noqa: F811
    with pytest.raises(ValueError, match=match):
        sample_runs([image_runs["gan"]], tmp_path / "o", **kwargs)
    assert not (tmp_path / "o").exists()


def test_labels_name_the_config_folder_checkpoint_and_form(image_runs, tmp_path):  # noqa: F811
    other = tmp_path / "other"
    shutil.copytree(image_runs["gan"], other)  # the same config name in a folder of another name
    res = sample_runs([image_runs["gan"], other], tmp_path / "o", n=1, form="float")
    assert [r["label"] for r in res["runs"]] == ["gan-last-float", "gan-other-last-float"]
    assert sorted(p.name for p in (tmp_path / "o").glob("gan*.png")) == ["gan-last-float.png",
                                                                         "gan-other-last-float.png"]


def test_side_by_side_panel_is_the_grids_under_name_and_form(image_runs, tmp_path):  # noqa: F811
    from PIL import Image

    out = tmp_path / "o"
    res = sample_runs([image_runs["gan-ptq"], image_runs["vae"], image_runs["gan"]], out, n=4, seed=1)
    gan_ptq, _, gan = res["runs"]
    grids = [np.asarray(Image.open(out / r["files"][0])) for r in (gan_ptq, gan)]
    names = [f"{r['name']} ({r['form']})" for r in (gan_ptq, gan)]
    assert names[0] != names[1]
    np.testing.assert_array_equal(np.asarray(Image.open(res["side_by_side"][0])), labelled_panels(grids, names))


def test_runs_of_one_kind_but_different_latent_sizes_are_not_side_by_side(image_runs, tmp_path):  # noqa: F811
    cfg = tiny("gan", tmp_path, name="gan4", model={"nz": 4}, train={"steps_per_epoch": 1})
    Trainer(cfg, tmp_path / "gan4", progress=False).fit()
    res = sample_runs([image_runs["gan"], tmp_path / "gan4"], tmp_path / "o", n=1)
    assert [r["latent_size"] for r in res["runs"]] == [8, 4]
    assert res["side_by_side"] == [] and all("side_by_side" not in r for r in res["runs"])


# ------------------------------------------------------------------------- text runs and pages


@pytest.mark.filterwarnings("ignore:.*differs from OpenAI's published:UserWarning")
def test_text_runs_get_the_end_token_of_their_vocabulary(lm_runs, tmp_path, monkeypatch):  # noqa: F811
    import edgegen.eval.samples as samples_mod

    runs, _ = lm_runs
    seen = []
    real = samples_mod.sample_text

    def spy(*a, **k):
        seen.append(k["eos_token_id"])
        return real(*a, **k)

    monkeypatch.setattr(samples_mod, "sample_text", spy)
    sample_runs([runs["text"], runs["synthetic"]], tmp_path / "o", max_new_tokens=2)
    assert seen == [259, None]  # the fixture tokenizer's <|endoftext|>; none for a synthetic vocabulary


@pytest.mark.filterwarnings("ignore:.*differs from OpenAI's published:UserWarning")
def test_token_id_pages_and_index_of_mixed_runs(lm_runs, image_runs, tmp_path, monkeypatch):  # noqa: F811
    runs, _ = lm_runs
    out = tmp_path / "o"
    res = sample_runs([image_runs["gan"], runs["synthetic"]], out, n=1, max_new_tokens=3, greedy=True)
    lm = res["runs"][1]
    cont = lm["samples"][0]["continuation_ids"]
    page = (out / lm["files"][0]).read_text()
    assert "prompt ids: `[0]`" in page and f"continuation ids: `{cont}`" in page
    index = (out / "samples.md").read_text()
    assert "Text: up to 3 new tokens per prompt, greedy;" in index
    lm_row = next(line for line in index.splitlines() if line.startswith(f"| {lm['name']} |"))
    assert "no other run of its kind" not in lm_row  # the note is for image runs only
    gan_row = next(line for line in index.splitlines() if line.startswith("| gan |"))
    assert "no other run of its kind and latent size" in gan_row
    # Sampled (not greedy): the index says how.
    res = sample_runs([runs["synthetic"]], tmp_path / "s", max_new_tokens=0, top_k=7, seed=3)
    assert res["runs"][0]["samples"][0]["continuation_ids"] == []  # no new tokens asked for: none
    index = (tmp_path / "s" / "samples.md").read_text()
    assert "sampled at temperature 1.0, top-k 7, top-p None, seed 3" in index and "greedy" not in index
    # A synthetic vocabulary without the tokenizer files: ids only, but nothing to explain.
    monkeypatch.setenv("EDGEGEN_DATA_DIR", str(tmp_path / "empty"))
    res = sample_runs([runs["synthetic"]], tmp_path / "e", max_new_tokens=1)
    assert "not_decoded" not in res["runs"][0]
    assert "token ids only" not in (tmp_path / "e" / res["runs"][0]["files"][0]).read_text()


# ------------------------------------------------------------------------------ held-out images


def test_held_out_images_are_read_from_the_data_root_given(image_runs, tmp_path, monkeypatch):  # noqa: F811
    import edgegen.eval.runs as runs_mod

    real, roots = runs_mod._real_images, []

    def spy(cfg, opts):
        roots.append((opts.data_root, opts.samples))
        return real(cfg, opts)

    monkeypatch.setattr(runs_mod, "_real_images", spy)
    res = sample_runs([image_runs["vae"]], tmp_path / "o", n=3, data_root=tmp_path / "root")
    assert roots == [(tmp_path / "root", 3)] and res["runs"][0]["reconstructed"] == 3


def test_a_dataset_that_cannot_give_its_split_is_noted_not_fatal(image_runs, tmp_path, monkeypatch):  # noqa: F811
    import edgegen.eval.runs as runs_mod

    def bad(cfg, opts):
        raise ValueError("celeba: the split holds 0 images")

    monkeypatch.setattr(runs_mod, "_real_images", bad)
    res = sample_runs([image_runs["vae"]], tmp_path / "o", n=2)
    assert res["runs"][0]["no_reconstructions"] == "no held-out images to reconstruct: celeba: the split holds 0 images"
    with pytest.raises(ValueError, match="reconstructions: the held-out images of .* cannot be read: celeba"):
        sample_runs([image_runs["vae"]], tmp_path / "r", n=2, reconstructions=True)


@pytest.mark.parametrize("damage", ["nan", "out-of-range"])
def test_reconstruction_score_of_damaged_output(image_runs, tmp_path, monkeypatch, damage):  # noqa: F811
    """Non-finite reconstructions get no SSIM (and say so); reconstructions beyond [-1, 1] are
    scored clipped, as they are drawn."""
    import edgegen.eval.samples as samples_mod
    from edgegen.eval.image import ssim
    from edgegen.eval.runs import EvalOptions, _real_images

    real, kept = samples_mod.reconstruct_images, []

    def damaged(model, images, batch=64):
        rec = real(model, images, batch)
        if damage == "nan":
            rec[0, 0, 0, :3] = float("nan")
        else:  # rows of pixels beyond [-1, 1] either way
            rec[:, :, :8], rec[:, :, 8:16] = 2.0, -3.0
        kept.append(rec)
        return rec

    monkeypatch.setattr(samples_mod, "reconstruct_images", damaged)
    out = tmp_path / "o"
    res = sample_runs([image_runs["vae"]], out, n=2)
    entry = res["runs"][0]
    saved = json.loads((out / "samples.json").read_text())["runs"][0]
    row = next(line for line in (out / "samples.md").read_text().splitlines() if line.startswith("| vae |"))
    if damage == "nan":
        assert entry["recon_non_finite"] == 3 and entry["recon_ssim_shown"] is None
        assert saved["recon_ssim_shown"] is None
        assert "3 non-finite values drawn black, no SSIM" in row
    else:
        images, _ = _real_images(load_cfg(image_runs["vae"]), EvalOptions(samples=2))
        a = (kept[0].double().clamp(-1, 1) + 1) / 2
        want = float(ssim(a, images.double() / 255.0, data_range=1.0))
        assert entry["recon_non_finite"] == 0 and entry["recon_ssim_shown"] == pytest.approx(want, rel=1e-5)


def load_cfg(run_dir):
    from edgegen.eval.runs import load_run

    return load_run(run_dir).config


def test_held_out_sets_with_one_description_but_different_pixels_get_a_panel_each(image_runs, tmp_path,  # noqa: F811
                                                                                    monkeypatch):
    import edgegen.eval.runs as runs_mod

    real = runs_mod._real_images

    def per_run(cfg, opts):  # the same description, other pixels for the PTQ run
        images, what = real(cfg, opts)
        return (255 - images if cfg.name == "vae-ptq" else images), what

    monkeypatch.setattr(runs_mod, "_real_images", per_run)
    res = sample_runs([image_runs["vae"], image_runs["vae-ptq"]], tmp_path / "o", n=2)
    names = [p.rsplit("/", 1)[1] for p in res["reconstructions"]]
    assert names == ["reconstructions-synthetic-images.png", "reconstructions-synthetic-images-2.png"]
    assert [r["reconstructions_side_by_side"] for r in res["runs"]] == names


# ----------------------------------------------------------------------------------- vae metrics


def test_max_images_counts_across_batches(vae):
    x = torch.rand(7, 3, 64, 64) * 2 - 1
    got = vae_metrics(vae, [x[:3], x[3:]], max_images=4)
    want = vae_metrics(vae, x[:4])
    assert got["images"] == 4
    for k in ("recon_mse", "recon_ssim", "recon_psnr_db"):
        assert got[k] == pytest.approx(want[k], rel=1e-6), k


def test_batches_beyond_max_images_are_not_read(vae):
    x = torch.rand(2, 3, 64, 64) * 2 - 1

    def batches():
        yield x
        raise AssertionError("read a batch beyond max_images")

    assert vae_metrics(vae, batches(), max_images=2)["images"] == 2


def test_metrics_are_taken_in_eval_mode(vae):
    """A model in training mode (here with a dropout layer) is measured as in eval mode."""
    import copy

    drop = copy.deepcopy(vae)
    drop.decoder = torch.nn.Sequential(*drop.decoder[:-1], torch.nn.Dropout(0.5), drop.decoder[-1])
    x = torch.rand(3, 3, 64, 64) * 2 - 1
    want = vae_metrics(vae, x, seed=2)
    got = vae_metrics(drop.train(), x, seed=2)
    for k in ("recon_mse", "recon_ssim", "elbo_reconstruction", "elbo_kl"):
        assert got[k] == pytest.approx(want[k], rel=1e-6), k
    assert drop.training


def test_bfloat16_model_is_compared_in_float32_with_the_images_as_given(vae):
    """The model reads bfloat16; its outputs are widened to float32 and compared with the float32
    images unrounded (hand reference in float64 from the same model outputs)."""
    import copy

    m = copy.deepcopy(vae).to(torch.bfloat16)
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    got = vae_metrics(m, x, seed=0)
    with torch.no_grad():
        mu, logvar = (t.double() for t in m.encode(x.bfloat16()))
        rec = m.decode(mu.bfloat16()).double()
    a, b = (rec.clamp(-1, 1) + 1) / 2, (x.double() + 1) / 2
    assert got["recon_mse"] == pytest.approx((a - b).pow(2).mean().item(), rel=1e-5)
    kl = (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(1)).mean().item()
    assert got["elbo_kl"] == pytest.approx(kl, rel=1e-5)


def test_model_returning_nan_is_an_error_naming_the_model(vae):
    with torch.no_grad():
        vae.decoder[0].weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match="model: its encoder or decoder returned NaN or infinite values"):
        vae_metrics(vae, torch.rand(2, 3, 64, 64) * 2 - 1)


def test_terms_of_a_confident_encoder_equal_the_models_loss_and_beta_weights_the_kl(vae):
    """An encoder with large means and log-variances (a fresh one gives both near 0, where
    std = exp(logvar / 2) and exp(logvar) agree and the KL is negligible beside the reconstruction)."""
    with torch.no_grad():
        vae.encoder[-1].bias[:8] = 3.0  # posterior means away from the prior's
        vae.encoder[-1].bias[8:] = 3.0  # log-variances far from 0
    x = torch.rand(3, 3, 64, 64) * 2 - 1
    m = vae_metrics(vae, x, seed=7)
    with torch.no_grad():
        out = vae(x, generator=torch.Generator().manual_seed(7))
    assert out["kl"].item() > 50  # the KL weighs in
    assert m["elbo_reconstruction"] == pytest.approx(out["reconstruction"].item(), rel=1e-5)
    assert m["elbo_kl"] == pytest.approx(out["kl"].item(), rel=1e-5)
    assert m["neg_elbo"] == pytest.approx(m["elbo_reconstruction"] + 4.0 * m["elbo_kl"], rel=1e-12)


def test_images_within_the_stated_tolerance_are_scored_as_clipped():
    """vae_metrics accepts images up to 1e-4 outside [-1, 1]; they are scored clipped to the
    range (the SSIM takes [0, 1] only), the same as the clipped images themselves."""
    torch.manual_seed(0)
    vae = BetaVAE(BetaVAEConfig(latent_dim=8)).eval()
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    x[0, 0, 0, 0], x[1, 2, 5, 5] = -1 - 5e-5, 1 + 5e-5
    got = vae_metrics(vae, x)
    want = vae_metrics(vae, x.clamp(-1, 1))
    for k in ("recon_mse", "recon_ssim", "recon_psnr_db"):
        assert got[k] == pytest.approx(want[k], rel=1e-6), k
    with pytest.raises(ValueError, match="images: expected values in \\[-1, 1\\]"):
        vae_metrics(vae, x * 1.01)
