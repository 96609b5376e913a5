"""Samples of trained runs, side by side: what ``edgegen sample`` writes. Each run is loaded as it
ships (:func:`edgegen.eval.runs.load_run`); image models draw a grid from seeded latents shared
by every run of the same latent size (so a baseline and its compressed variants compare image by
image), language models continue the same prompts. An index (``samples.md``) says what each
file shows and how it was made; ``samples.json`` holds the same in machine-readable form."""

from __future__ import annotations

import os

import torch

from edgegen import _atomic
from edgegen.ops._args import is_int

__all__ = ["sample_runs", "GPT2_VOCAB", "GPT2_EOT"]

GPT2_VOCAB = 50257
GPT2_EOT = 50256  # <|endoftext|>: the default prompt (unconditional samples) and the end token


def _tokenizer(root):
    """GPT-2's tokenizer from ``<data root>/gpt2``, or (None, the reason) when its files are not there."""
    from edgegen.eval.runs import gpt2_tokenizer

    try:
        return gpt2_tokenizer(root), None
    except FileNotFoundError as exc:
        return None, str(exc)


def _speaks(vocab: int, tok) -> bool:
    """Whether a model of ``vocab`` tokens reads and writes the tokenizer's ids (all of them)."""
    return tok is not None and vocab >= tok.vocab_size


def _end_token(vocab: int, tok) -> int | None:
    """The end-of-text id of a model of ``vocab`` tokens: the tokenizer's where the model takes
    its ids, GPT-2's for a model of GPT-2's vocabulary without the tokenizer at hand, else none."""
    if _speaks(vocab, tok):
        return tok.eot_id
    return GPT2_EOT if vocab == GPT2_VOCAB else None


def _decode(tok, ids: list[int]) -> str:
    """``ids`` as text; an id the tokenizer does not have (a model whose vocabulary is padded
    beyond it) is written ``<|id N|>`` in its place rather than failing the whole sample."""
    out, run = [], []
    for t in ids:
        if t < tok.vocab_size:
            run.append(t)
            continue
        if run:
            out.append(tok.decode(run))
            run = []
        out.append(f"<|id {t}|>")
    if run:
        out.append(tok.decode(run))
    return "".join(out)


def _check(n, seed, max_new_tokens, prompts, prompt_ids, greedy, temperature, top_k, top_p) -> None:
    from edgegen.models.gpt2 import check_sampling

    for name, v, low in (("n", n, 1), ("seed", seed, 0), ("max_new_tokens", max_new_tokens, 0)):
        if not is_int(v) or v < low:
            raise ValueError(f"{name}: expected an int >= {low}, got {v!r}")
    if prompts and prompt_ids:
        raise ValueError("prompts, prompt_ids: give prompts as text or as token ids, not both")
    if prompts is not None and (isinstance(prompts, str) or not all(isinstance(p, str) and p for p in prompts)):
        raise ValueError(f"prompts: expected a list of non-empty strings, got {prompts!r:.80}")
    if prompt_ids is not None and (isinstance(prompt_ids, str) or not all(
            isinstance(p, (list, tuple)) and p and all(is_int(t) and t >= 0 for t in p) for p in prompt_ids)):
        raise ValueError(f"prompt_ids: expected a list of non-empty lists of token ids >= 0, got {prompt_ids!r:.80}")
    check_sampling(greedy, temperature, top_p, top_k)


def _labels(runs) -> list[str]:
    """A file name per run (config name, run folder, checkpoint and form), made unique."""
    from edgegen.eval.runs import _slug

    out: list[str] = []
    for r in runs:
        folder = "" if _slug(r.run_dir.name) == _slug(r.name) else f"-{r.run_dir.name}"
        base = _slug(f"{r.name}{folder}-{r.eval_id}")
        label, k = base, 2
        while label in out:
            label, k = f"{base}-{k}", k + 1
        out.append(label)
    return out


def sample_runs(paths, out_dir: str | os.PathLike, *, n: int = 64, seed: int = 0, which: str = "last",
                form: str = "shipped", prompts: list[str] | None = None, prompt_ids: list[list[int]] | None = None,
                max_new_tokens: int = 40, greedy: bool = False, temperature: float = 1.0, top_k: int | None = 50,
                top_p: float | None = None, data_root=None, reconstructions: bool | None = None) -> dict:
    """Samples of each run in ``paths`` (run folders or checkpoints) written to ``out_dir``:
    ``<label>.png``, a grid of ``n`` images (DCGAN generator; Beta-VAE decoder on prior samples)
    from latents drawn by a CPU ``torch.Generator`` seeded with ``seed``; ``<label>.md``, the
    continuations of a GPT-2 run (``max_new_tokens`` each, sampled at ``temperature`` with
    ``top_k`` / ``top_p``, or ``greedy``; stopped at ``<|endoftext|>``). The tokenizer is GPT-2's
    from ``<data root>/gpt2``; a model whose vocabulary holds all its ids takes text ``prompts``
    and its samples are decoded (an id beyond the tokenizer's, in a padded vocabulary, as
    ``<|id N|>``; without the tokenizer files, a model of GPT-2's vocabulary gets token ids only,
    and the index says why). Prompts: ``prompts`` (text) or ``prompt_ids``; by
    default ``<|endoftext|>`` alone (unconditional samples), or token 0 for a model without an
    end-of-text token (a synthetic vocabulary). Two or more image runs of one kind and
    latent size (which share their latents) get ``side_by_side-<kind>-z<size>.png``: their grids in
    a row, each under its run's name and form.

    Beta-VAE runs also reconstruct the first ``n`` held-out images of their dataset (the split
    ``edgegen eval`` scores; ``data_root`` as there): each image encoded to its posterior mean and
    decoded, ``<label>-reconstructions.png``, with the SSIM of those images; and
    ``reconstructions-<dataset>.png`` sets the held-out images beside every such run's
    reconstructions of them. ``reconstructions``: None draws them where the held-out images can be
    read (the index says why not elsewhere), True requires them (missing data is an error before
    anything is written), False draws none.

    The arguments, every run's config and the output folder are checked before any model is
    loaded, and every run is loaded and its prompts checked before anything is generated or
    written. Returns ``{"index", "json", "side_by_side": [paths], "reconstructions": [paths],
    "runs": [...]}``; each run's entry names its files, its form (as ``load_run`` reports it) and,
    for images, how many non-finite values the model produced (drawn black)."""
    from edgegen.eval.runs import load_run, run_config
    from edgegen.models.gpt2 import check_generation
    from edgegen.eval.samples import IMAGE_KINDS, generate_images, image_grid, labelled_panels, save_png, \
        sample_text
    from edgegen.train.loop import prepare_run_dir

    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    paths = list(paths)
    if not paths:
        raise ValueError("paths: expected at least one run folder or checkpoint")
    _check(n, seed, max_new_tokens, prompts, prompt_ids, greedy, temperature, top_k, top_p)
    if reconstructions not in (None, True, False):
        raise ValueError(f"reconstructions: expected None (where the data is), True or False, got {reconstructions!r}")
    configs = [run_config(p, which) for p in paths]  # every run readable before any model is built
    kinds = [c.model.kind for c in configs]
    for name, given in (("prompts", prompts), ("prompt_ids", prompt_ids)):
        if given and "gpt2" not in kinds:
            raise ValueError(f"{name}: none of the runs is a language model (GPT-2); prompts apply to those only")
    tok, why_no_tok = (None, None)
    if "gpt2" in kinds:
        tok, why_no_tok = _tokenizer(data_root)
        if prompts and tok is None:
            raise FileNotFoundError(f"prompts: text prompts need GPT-2's tokenizer: {why_no_tok}")
    out = prepare_run_dir(out_dir, "out_dir")

    # Every run loaded and its prompts checked before anything is generated or written.
    runs = [load_run(p, which=which, form=form) for p in paths]
    labels = _labels(runs)
    run_prompts: list[list[list[int]] | None] = []
    for run in runs:
        if run.kind in IMAGE_KINDS:
            run_prompts.append(None)
            continue
        vocab = run.model.config.vocab_size
        if prompts and not _speaks(vocab, tok):
            raise ValueError(f"prompts: {run.run_dir} has a vocabulary of {vocab} tokens, fewer than the tokenizer's "
                             f"{tok.vocab_size}; give its prompts as token ids (prompt_ids)")
        eot = _end_token(vocab, tok)
        ids = ([tok.encode(p) for p in prompts] if prompts else
               [list(p) for p in prompt_ids] if prompt_ids else [[0 if eot is None else eot]])
        outside = [t for p in ids for t in p if t >= vocab]
        if outside:
            raise ValueError(f"prompt_ids: {outside[:5]} outside the vocabulary [0, {vocab}) of {run.run_dir}")
        flag = "prompts" if prompts else "prompt_ids"
        for k, p in enumerate(ids):  # each prompt plus max_new_tokens within this model's context
            try:
                check_generation(torch.tensor([p], dtype=torch.long), max_new_tokens, run.model.config.n_positions)
            except ValueError as exc:
                raise ValueError(f"{flag}[{k}]: {run.run_dir}: {exc}") from None
        run_prompts.append(ids)
    held, no_held = _held_out(runs, n, data_root, reconstructions)

    results, grids, grid_rows = [], [], []
    for i, (run, label, ids) in enumerate(zip(runs, labels, run_prompts)):
        entry = {"run_dir": str(run.run_dir), "name": run.name, "kind": run.kind, "form": run.form,
                 "checkpoint": str(run.checkpoint), "label": label}
        if ids is None:
            images = torch.cat(list(generate_images(run.model, run.kind, n, seed=seed)))
            grid, bad = image_grid(images)
            save_png(grid, out / f"{label}.png")
            size = run.model.config.nz if run.kind == "dcgan" else run.model.config.latent_dim
            entry.update(files=[f"{label}.png"], images=n, latent_size=size, non_finite=bad)
            grids.append((run.kind, size, grid))
            grid_rows.append(len(results))
            if i in held:
                entry.update(_reconstruct(run, held[i][1], out, label))
                entry["files"].append(entry["reconstructions"])
            elif i in no_held:
                entry["no_reconstructions"] = no_held[i]
        else:
            vocab = run.model.config.vocab_size
            conts = sample_text(run.model, ids, max_new_tokens, greedy=greedy, temperature=temperature, top_k=top_k,
                                top_p=top_p, seed=seed, eos_token_id=_end_token(vocab, tok))
            decode = (lambda ids: _decode(tok, ids)) if _speaks(vocab, tok) else None
            texts = [{"prompt_ids": p, "continuation_ids": c,
                      **({"prompt": decode(p), "continuation": decode(c)} if decode else {})}
                     for p, c in zip(ids, conts)]
            entry.update(files=[f"{label}.md"], samples=texts, decoded=decode is not None,
                         **({"not_decoded": why_no_tok} if tok is None and vocab == GPT2_VOCAB else {}))
            _atomic.write_text(out / f"{label}.md", _text_page(entry))
        results.append(entry)

    # One row of panels per group of two or more image runs sharing kind and latent size (and so
    # the latents themselves).
    groups: dict[tuple[str, int], list[int]] = {}
    for i, (kind, size, _) in enumerate(grids):
        groups.setdefault((kind, size), []).append(i)
    side = []
    for (kind, size), members in groups.items():
        if len(members) < 2:
            continue
        name = f"side_by_side-{kind}-z{size}.png"
        panels = [grids[i][2] for i in members]
        names = [f"{results[j]['name']} ({results[j]['form']})" for j in (grid_rows[i] for i in members)]
        save_png(labelled_panels(panels, names), out / name)
        for j in (grid_rows[i] for i in members):
            results[j]["side_by_side"] = name
        side.append(name)
    recon = _reconstruction_panels(held, results, out)
    settings = {"n": n, "seed": seed, "which": which, "form": form, "max_new_tokens": max_new_tokens,
                "greedy": greedy, "temperature": temperature, "top_k": top_k, "top_p": top_p,
                "reconstructions": reconstructions}
    index = {"settings": settings, "runs": results, "side_by_side": side, "reconstructions": recon}
    json_path = _atomic.write_json(out / "samples.json", index, indent=2)
    md = _atomic.write_text(out / "samples.md", _index_page(index, bool(grids)))
    return {"index": str(md), "json": str(json_path), "side_by_side": [str(out / f) for f in side],
            "reconstructions": [str(out / r["file"]) for r in recon], "runs": results}


def _held_out(runs, n: int, data_root, required: bool | None) -> tuple[dict, dict]:
    """For each Beta-VAE run (by position): (what they are, the first ``n`` held-out images as
    uint8 [k, 3, 64, 64], the dataset's name) in the first dict, or why they cannot be read in the
    second. Read before anything is generated; ``required`` (True) makes a missing dataset an error, False
    reads nothing."""
    from edgegen.eval.runs import EvalOptions, _real_images

    held, why = {}, {}
    if required is False:
        return held, why
    for i, run in enumerate(runs):
        if run.kind != "vae":
            continue
        try:
            images, what = _real_images(run.config, EvalOptions(samples=n, data_root=data_root))
        except (OSError, ValueError) as exc:
            if required:  # FileNotFoundError for missing data, ValueError for unreadable data
                kind = FileNotFoundError if isinstance(exc, OSError) else ValueError
                raise kind(f"reconstructions: the held-out images of {run.run_dir} cannot be read: {exc}") from exc
            why[i] = f"no held-out images to reconstruct: {exc}"
            continue
        held[i] = (what, images, run.config.data.name)
    return held, why


def _reconstruct(run, images, out, label: str) -> dict:
    """``run``'s reconstructions of ``images`` (uint8) saved as ``<label>-reconstructions.png``;
    the entry's fields: the file, how many images, their mean SSIM (on [0, 1], None where the
    model produced non-finite values) and the count of non-finite values (drawn black)."""
    from edgegen.eval.image import ssim
    from edgegen.eval.samples import image_grid, reconstruct_images, save_png

    rec = reconstruct_images(run.model, images)
    grid, bad = image_grid(rec)
    name = f"{label}-reconstructions.png"
    save_png(grid, out / name)
    score = None if bad else float(ssim((rec.clamp(-1, 1) + 1) / 2, images.float() / 255.0, data_range=1.0))
    return {"reconstructions": name, "reconstructed": len(images), "recon_ssim_shown": score,
            "recon_non_finite": bad, "_grid": grid}


def _reconstruction_panels(held: dict, results: list, out) -> list[dict]:
    """One ``reconstructions-<dataset>.png`` per set of held-out images (the same pixels): the
    images, then each run's reconstructions of them, labelled. Takes the grids out of the
    entries."""
    import hashlib

    from edgegen.eval.runs import _slug
    from edgegen.eval.samples import image_grid, labelled_panels, save_png

    groups: dict[str, list[int]] = {}
    for i, (what, images, _) in held.items():
        key = what + hashlib.sha256(images.numpy().tobytes()).hexdigest()
        groups.setdefault(key, []).append(i)
    made, names = [], set()
    for members in groups.values():
        what, images, dataset = held[members[0]]
        base = f"reconstructions-{_slug(dataset)}"
        name, k = f"{base}.png", 2
        while name in names:
            name, k = f"{base}-{k}.png", k + 1
        names.add(name)
        panels = [image_grid(images)[0]] + [results[i]["_grid"] for i in members]
        labels = [f"held out: {what}"] + [f"{results[i]['name']} ({results[i]['form']})" for i in members]
        save_png(labelled_panels(panels, labels), out / name)
        for i in members:
            results[i]["reconstructions_side_by_side"] = name
        made.append({"file": name, "images": what, "runs": [results[i]["run_dir"] for i in members]})
    for r in results:
        r.pop("_grid", None)
    return made


def _text_page(entry) -> str:
    lines = [f"# Samples of {entry['name']}", "", f"- run: `{entry['run_dir']}`", f"- form: {entry['form']}",
             f"- checkpoint: `{entry['checkpoint']}`"]
    if entry.get("not_decoded"):
        lines.append(f"- token ids only: {entry['not_decoded']}")
    for i, s in enumerate(entry["samples"]):
        lines += ["", f"## Prompt {i + 1}", ""]
        if "prompt" in s:
            # A four-backtick fence: generated text may hold three.
            lines += ["````text", s["prompt"], "````", "", "Continuation:", "", "````text", s["continuation"], "````"]
        else:
            lines += [f"prompt ids: `{s['prompt_ids']}`", "", f"continuation ids: `{s['continuation_ids']}`"]
    return "\n".join(lines) + "\n"


def _index_page(index: dict, images: bool) -> str:
    st = index["settings"]
    lines = ["# Samples", "",
             f"Checkpoint `{st['which']}`, form `{st['form']}` (the model as it ships unless `float`)."]
    if images:
        lines.append(f"Images: {st['n']} per run from standard normal latents drawn by a CPU torch.Generator seeded "
                     f"with {st['seed']}; runs of one kind and latent size get the same latents, image i of one grid "
                     "beside image i of another (left to right, top to bottom).")
    if index["reconstructions"]:
        lines.append("Reconstructions: each Beta-VAE run encodes the first held-out images of its dataset (the split "
                     "`edgegen eval` scores) to the posterior mean and decodes them; the SSIM in the notes is over "
                     "those images only (on [0, 1]); `edgegen eval --metrics vae` scores more.")
    if any(r["kind"] == "gpt2" for r in index["runs"]):
        how = "greedy" if st["greedy"] else (f"sampled at temperature {st['temperature']}, top-k {st['top_k']}, "
                                             f"top-p {st['top_p']}, seed {st['seed']}")
        lines.append(f"Text: up to {st['max_new_tokens']} new tokens per prompt, {how}; GPT-2-vocabulary runs stop "
                     "at <|endoftext|>.")
    lines += ["", "| run | folder | kind | form | file | notes |", "|---|---|---|---|---|---|"]
    for r in index["runs"]:
        notes = []
        if r.get("non_finite"):
            notes.append(f"{r['non_finite']} non-finite values drawn black")
        if r.get("not_decoded"):
            notes.append("token ids only (no tokenizer)")
        if images and r["kind"] != "gpt2" and not r.get("side_by_side"):
            notes.append("no other run of its kind and latent size to set beside it")
        if r.get("reconstructions"):
            score = r["recon_ssim_shown"]
            notes.append(f"[reconstructions]({r['reconstructions']}) of {r['reconstructed']} held-out images, "
                         + (f"SSIM {score:.3f}" if score is not None else
                            f"{r['recon_non_finite']} non-finite values drawn black, no SSIM"))
        if r.get("no_reconstructions"):
            notes.append(" ".join(r["no_reconstructions"].replace("|", "/").split()))
        lines.append(f"| {r['name']} | `{r['run_dir']}` | {r['kind']} | {r['form']} | [{r['files'][0]}]"
                     f"({r['files'][0]}) | {'; '.join(notes)} |")
    for name in index["side_by_side"] + [r["file"] for r in index["reconstructions"]]:
        lines += ["", f"![{name}]({name})"]
    return "\n".join(lines) + "\n"
