"""Samples of generative models, to look at what compression does to them: images of a DCGAN
generator or a Beta-VAE decoder from seeded latents (the same seed gives the same latents to
every model of a kind and size, so the grids of a baseline and its compressed variants compare
image by image), tiled into grids and labelled panels, and text continuations of a GPT-2-style
model, one prompt at a time (prompts of any lengths)."""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from edgegen.models.gpt2 import check_generation, check_sampling
from edgegen.ops._args import is_int

__all__ = ["image_latents", "generate_images", "reconstruct_images", "image_grid", "labelled_panels", "save_png",
           "sample_text"]

IMAGE_KINDS = ("dcgan", "vae")


def _latent_size(model: nn.Module, kind: str) -> int:
    if kind not in IMAGE_KINDS:
        raise ValueError(f"kind: expected one of {IMAGE_KINDS}, got {kind!r}")
    cfg = getattr(model, "config", None)
    size = getattr(cfg, "nz" if kind == "dcgan" else "latent_dim", None)
    if not is_int(size) or size < 1:
        raise ValueError(f"model: expected a {'DCGAN generator' if kind == 'dcgan' else 'Beta-VAE'} whose config "
                         f"names its latent size ({'nz' if kind == 'dcgan' else 'latent_dim'}), got "
                         f"{type(model).__name__}")
    return size


def image_latents(size: int, n: int, seed: int = 0, batch: int = 64) -> Iterator[Tensor]:
    """Standard normal latents [k, size] for ``n`` images in batches of at most ``batch``, drawn
    from one CPU generator seeded with ``seed``: the latents of image i are the same whatever
    ``batch`` is."""
    for name, v, low in (("size", size, 1), ("n", n, 0), ("batch", batch, 1), ("seed", seed, 0)):
        if not is_int(v) or v < low:
            raise ValueError(f"{name}: expected an int >= {low}, got {v!r}")
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, size, generator=g)  # drawn at once: the same rows whatever the batch
    for i in range(0, n, batch):
        yield z[i:i + batch]


def generate_images(model: nn.Module, kind: str, n: int, batch: int = 64, seed: int = 0) -> Iterator[Tensor]:
    """Batches of ``n`` generated images, float32 on the CPU: a DCGAN generator's output
    (``kind`` "dcgan") or a Beta-VAE's decoding of prior samples ("vae"), from
    :func:`image_latents` (moved to the model's device and its input dtype), in eval mode (each
    module's training flag restored after each batch), without gradients."""
    from edgegen.models.blocks import input_dtype
    from edgegen.prune.graph import eval_mode

    size = _latent_size(model, kind)
    device = next((t.device for t in (*model.parameters(), *model.buffers())), torch.device("cpu"))
    # The latents in the dtype the model's first layer takes (a model moved to float64 or
    # bfloat16 with .to), drawn in float32 first so every dtype starts from the same values.
    dtype = input_dtype(model.net[0] if kind == "dcgan" else model.decoder[0])
    for z in image_latents(size, n, seed, batch):
        with eval_mode(model), torch.no_grad():  # batch statistics would make image i depend on its batch
            z = z.to(device, dtype)
            out = (model(z) if kind == "dcgan" else model.decode(z)).float().cpu()
        yield out


def reconstruct_images(model: nn.Module, images: Tensor, batch: int = 64) -> Tensor:
    """A Beta-VAE's reconstructions of ``images`` [N, C, h, w] (float in [-1, 1], or uint8 in
    [0, 255], mapped to [-1, 1]): each image encoded to its posterior mean and decoded, as the
    reconstruction metrics score them (:func:`edgegen.eval.vae_metrics`), deterministic; in
    batches of at most ``batch``, in the model's device and input dtype, in eval mode, without
    gradients. Returns float32 on the CPU, as the decoder produced it (not clipped)."""
    from edgegen.models.blocks import input_dtype
    from edgegen.prune.graph import eval_mode

    if not callable(getattr(model, "reconstruct", None)) or not hasattr(model, "encoder"):
        raise TypeError(f"model: expected an edgegen BetaVAE (reconstruct, encoder), got {type(model).__name__}")
    if not isinstance(images, Tensor) or images.dim() != 4 or images.shape[0] < 1:
        got = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"images: expected at least one image as [N, C, h, w], got {got}")
    if images.dtype == torch.uint8:
        images = images.float() / 127.5 - 1.0
    elif not images.is_floating_point():
        raise TypeError(f"images: expected floating-point or uint8 values, got {images.dtype}")
    elif not torch.isfinite(images).all():
        raise ValueError(f"images: expected finite values, got {int((~torch.isfinite(images)).sum())} NaN or "
                         "infinite values")
    if not is_int(batch) or batch < 1:
        raise ValueError(f"batch: expected an int >= 1, got {batch!r}")
    device = next((t.device for t in (*model.parameters(), *model.buffers())), torch.device("cpu"))
    dtype = input_dtype(model.encoder[0])
    out = []
    with eval_mode(model), torch.no_grad():
        for i in range(0, images.shape[0], batch):
            x = images[i:i + batch].to(device, dtype)
            out.append(model.reconstruct(x).float().cpu())  # the posterior mean, decoded
    return torch.cat(out)


def image_grid(images: Tensor, nrow: int | None = None, padding: int = 2,
               value_range: tuple[float, float] = (-1.0, 1.0)) -> tuple[np.ndarray, int]:
    """(uint8 [H, W, 3] grid, number of non-finite values) of ``images`` [N, C, h, w] (C = 1 or
    3; one channel is repeated), ``nrow`` images per row (default ceil(sqrt(N))), left to right
    then top to bottom, ``padding`` white pixels between and around them. Floats are mapped from
    ``value_range`` to [0, 255] (clipped, rounded half to even); uint8 is taken as is. A NaN or
    infinite value is drawn black and counted, never passed on as an undefined byte."""
    if not isinstance(images, Tensor) or images.dim() != 4 or images.shape[1] not in (1, 3) or images.shape[0] < 1:
        got = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"images: expected at least one image as [N, 1 or 3, h, w], got {got}")
    if not (images.is_floating_point() or images.dtype == torch.uint8):
        raise TypeError(f"images: expected floating-point or uint8 values, got {images.dtype}")
    n = images.shape[0]
    if nrow is None:
        nrow = math.ceil(math.sqrt(n))
    if not is_int(nrow) or nrow < 1:
        raise ValueError(f"nrow: expected None or an int >= 1, got {nrow!r}")
    if not is_int(padding) or padding < 0:
        raise ValueError(f"padding: expected an int >= 0, got {padding!r}")
    lo, hi = (float(v) for v in value_range)
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"value_range: expected finite (low, high) with low < high, got {value_range!r}")
    x = images.detach().cpu()
    bad = 0
    if x.dtype != torch.uint8:
        x = x.double()
        finite = torch.isfinite(x)
        bad = int((~finite).sum())
        x = ((x.clamp(lo, hi) - lo) * (255.0 / (hi - lo))).round()
        x = torch.where(finite, x, torch.zeros_like(x)).to(torch.uint8)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    h, w = x.shape[2], x.shape[3]
    cols = min(nrow, n)
    rows = math.ceil(n / cols)
    grid = np.full((rows * (h + padding) + padding, cols * (w + padding) + padding, 3), 255, dtype=np.uint8)
    arr = x.permute(0, 2, 3, 1).numpy()
    for i in range(n):
        top, left = padding + (i // cols) * (h + padding), padding + (i % cols) * (w + padding)
        grid[top:top + h, left:left + w] = arr[i]
    return grid, bad


def _wrap(text: str, width: int, font) -> list[str]:
    """``text`` in lines no wider than ``width`` pixels in ``font``, broken at spaces where it can
    be, inside a word where a word alone is wider."""
    lines: list[str] = []
    line = ""
    for word in str(text).split(" "):
        trial = f"{line} {word}" if line else word
        if font.getlength(trial) <= width:
            line = trial
            continue
        if line:
            lines.append(line)
        line = ""
        for ch in word:  # a word wider than the panel: broken where it reaches the edge
            if line and font.getlength(line + ch) > width:
                lines.append(line)
                line = ""
            line += ch
    lines.append(line)
    return lines


def labelled_panels(panels: Sequence[np.ndarray], labels: Sequence[str], gap: int = 8) -> np.ndarray:
    """uint8 [H, W, 3] image of ``panels`` (uint8 [h_i, w_i, 3], e.g. grids) side by side, left to
    right, ``gap`` white pixels apart, each under its label in PIL's built-in font, wrapped to the
    panel's width (the label strip is as tall as the longest label needs)."""
    from PIL import Image, ImageDraw, ImageFont

    if len(panels) != len(labels) or not panels:
        raise ValueError(f"panels, labels: expected as many labels as panels (at least one), got {len(panels)} "
                         f"panels and {len(labels)} labels")
    for i, p in enumerate(panels):
        if not isinstance(p, np.ndarray) or p.dtype != np.uint8 or p.ndim != 3 or p.shape[2] != 3 or 0 in p.shape:
            raise ValueError(f"panels[{i}]: expected a non-empty uint8 [h, w, 3] array, got "
                             f"{getattr(p, 'dtype', type(p).__name__)} {getattr(p, 'shape', '')}")
    if not is_int(gap) or gap < 0:
        raise ValueError(f"gap: expected an int >= 0, got {gap!r}")
    font = ImageFont.load_default()
    top, bottom = font.getbbox("Ag")[1::2]
    line_height = bottom - top + 3
    wrapped = [_wrap(label, p.shape[1] - 4, font) for p, label in zip(panels, labels)]
    label_height = line_height * max(len(w) for w in wrapped) + 2
    height = label_height + max(p.shape[0] for p in panels)
    width = sum(p.shape[1] for p in panels) + gap * (len(panels) - 1)
    out = np.full((height, width, 3), 255, dtype=np.uint8)
    left = 0
    for p, lines in zip(panels, wrapped):
        out[label_height:label_height + p.shape[0], left:left + p.shape[1]] = p
        strip = Image.new("RGB", (p.shape[1], label_height), (255, 255, 255))
        draw = ImageDraw.Draw(strip)
        for k, line in enumerate(lines):
            draw.text((2, 1 + k * line_height - top), line, fill=(0, 0, 0), font=font)
        out[:label_height, left:left + p.shape[1]] = np.asarray(strip)
        left += p.shape[1] + gap
    return out


def save_png(image: np.ndarray, path: str | os.PathLike):
    """Writes a uint8 [H, W, 3] array as a PNG, replacing ``path`` whole (never half-written)."""
    from PIL import Image

    from edgegen import _atomic

    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image: expected a uint8 [H, W, 3] array, got {getattr(image, 'dtype', type(image))} "
                         f"{getattr(image, 'shape', '')}")
    with _atomic.replacing(path) as tmp:
        Image.fromarray(image).save(tmp, format="PNG")
    return path


def sample_text(model: nn.Module, prompts: Sequence[Sequence[int]], max_new_tokens: int, *, greedy: bool = False,
                temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None, seed: int = 0,
                eos_token_id: int | None = None) -> list[list[int]]:
    """The continuation (new token ids only) of each prompt by ``model.generate``, one prompt at a
    time so prompts may differ in length, from one generator on the model's device seeded with
    ``seed`` (prompt i's continuation depends on the prompts before it when sampling; greedy ones
    do not). A
    continuation stops early at ``eos_token_id`` (kept as its last token). Everything is checked
    before the first token: the sampling settings as ``generate`` checks them, and each prompt (a
    non-empty list of int token ids) with ``max_new_tokens`` against the model's context."""
    if not hasattr(model, "generate"):
        raise TypeError(f"model: expected a language model with generate(), got {type(model).__name__}")
    if isinstance(prompts, (str, bytes)) or not isinstance(prompts, Sequence) or not prompts:
        raise ValueError(f"prompts: expected a non-empty list of token-id lists, got {type(prompts).__name__}")
    if not is_int(seed) or seed < 0:
        raise ValueError(f"seed: expected an int >= 0, got {seed!r}")
    rows = []
    for i, p in enumerate(prompts):
        ids = list(p) if isinstance(p, Sequence) and not isinstance(p, (str, bytes)) else None
        if not ids or not all(is_int(t) for t in ids):
            raise ValueError(f"prompts[{i}]: expected a non-empty list of int token ids, got {p!r:.80}")
        rows.append(ids)
    # Every prompt and setting checked before the first token is generated.
    check_sampling(greedy, temperature, top_p, top_k)
    n_positions = getattr(getattr(model, "config", None), "n_positions", None)
    for i, ids in enumerate(rows):
        try:
            check_generation(torch.tensor([ids], dtype=torch.long), max_new_tokens,
                             n_positions if is_int(n_positions) else None)
        except ValueError as exc:
            raise ValueError(f"prompts[{i}]: {exc}") from None
    device = next((t.device for t in model.parameters()), torch.device("cpu"))
    g = torch.Generator(device=device).manual_seed(seed)
    out = []
    for ids in rows:
        idx = torch.tensor([ids], dtype=torch.long, device=device)
        with torch.no_grad():
            full = model.generate(idx, max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                                  greedy=greedy, generator=g, eos_token_id=eos_token_id)
        out.append(full[0, len(ids):].tolist())  # one row: generation ends at its end token
    return out
