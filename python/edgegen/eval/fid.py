"""FID and KID of generated images, with the standard Inception weights when they are present
and a labelled proxy extractor when they are not.

``fid(generated, real)``: each side is an image tensor [N, C, H, W], an iterable of such batches
(or of ``(images, labels)`` tuples), or precomputed :class:`GaussianStats`. Statistics stream batch
by batch in float64, so no side is ever held in memory (unless KID, which needs the features, is
asked for). Images are floats in ``value_range`` (default [0, 1]; edgegen's generators give
[-1, 1]) or uint8 in [0, 255]; one channel is repeated to three.

Extractors (:func:`get_extractor`):

- ``inception``: :class:`~edgegen.eval.inception.FIDInceptionV3` with the weights from
  ``$EDGEGEN_FID_WEIGHTS``. The result is called **FID** only when the file's SHA-256 is that of
  the official ``pt_inception-2015-12-05-6726825d.pth``; other weights of the same layout give
  **FID-nonstandard** (MLflow key ``fid_nonstandard``), labelled with the file's SHA-256 prefix.
- ``proxy``: the 256-d penultimate features of a small CNN trained once on the staged real data
  (CIFAR-10 classes, or CelebA's 40 attributes) and cached, with its held-out accuracy in the
  label. The result is called **FID-proxy** everywhere (``metric``, ``label``, the MLflow key
  ``fid_proxy``): its values are not comparable with published FIDs, only between runs measured
  with the same proxy.
"""

from __future__ import annotations

import hashlib
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edgegen._atomic import replacing
from edgegen.eval.frechet import GaussianStats, KIDResult, _frechet, kid as _kid
from edgegen.eval.manifold import ManifoldResult, manifold_metrics
from edgegen.ops._args import as_int, is_int

__all__ = ["FeatureExtractor", "FIDResult", "ProxyNet", "get_extractor", "train_proxy_extractor", "image_statistics",
           "real_statistics", "fid", "PROXY_DATASETS", "METRIC_KEYS"]

PROXY_DATASETS = ("cifar10", "celeba")
PROXY_VERSION = 1  # bump when ProxyNet or its training recipe changes: cached proxies are keyed by it
PROXY_SIZE = 64
# What each extractor's distance is called, and its MLflow keys (FID, KID): nothing but the
# official Inception weights is reported under "fid".
METRIC_KEYS = {"FID": ("fid", "kid"), "FID-proxy": ("fid_proxy", "kid_proxy"),
               "FID-nonstandard": ("fid_nonstandard", "kid_nonstandard")}


@dataclass
class FeatureExtractor:
    """A network mapping images in [0, 1] to feature rows, and what its distance is called.

    ``metric``: "FID" (the official Inception weights), "FID-nonstandard" (the Inception-v3 layout
    with other weights) or "FID-proxy"; ``name``: a stable identifier that includes a fingerprint of
    the weights (it keys cached real-image statistics); ``info``: provenance (for the proxy:
    dataset, held-out accuracy and size; for Inception: the weights file and its SHA-256)."""

    net: nn.Module
    name: str
    metric: str
    dim: int
    info: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.metric not in METRIC_KEYS:
            raise ValueError(f"metric: expected one of {tuple(METRIC_KEYS)}, got {self.metric!r}")

    @property
    def label(self) -> str:
        if self.metric == "FID":
            return "FID (Inception-v3, pt_inception-2015-12-05)"
        if self.metric == "FID-nonstandard":
            sha = str(self.info.get("sha256", "unknown"))[:16]
            return (f"FID-nonstandard (Inception-v3 layout with non-standard weights, sha256 {sha}..., not the "
                    f"official pt_inception-2015-12-05-6726825d; not comparable with published FID)")
        acc = self.info.get("heldout_accuracy")
        what = self.info.get("heldout_metric", "accuracy")
        return (f"FID-proxy ({self.name}; held-out {what} {acc:.3f} on {self.info.get('heldout_n')} images; "
                "not comparable with published FID)" if acc is not None else f"FID-proxy ({self.name})")

    @property
    def device(self) -> torch.device:
        p = next(self.net.parameters(), None)
        return p.device if p is not None else torch.device("cpu")

    @torch.no_grad()
    def __call__(self, images: Tensor) -> Tensor:
        return self.net(images.to(self.device, torch.float32)).float()


# ---------------------------------------------------------------------------------- the proxy network
class ProxyNet(nn.Module):
    """A small CNN on 64x64 images: four stride-2 3x3 convolutions (32, 64, 128, 256 channels,
    batch norm, ReLU), one more 3x3 at 4x4, global average pooling to 256 features (the proxy's
    feature space), then a linear head. Input: images in [0, 1], any size (resized to 64)."""

    def __init__(self, outputs: int):
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for cout in (32, 64, 128, 256):
            layers += [nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(cout),
                       nn.ReLU(inplace=True)]
            cin = cout
        layers += [nn.Conv2d(256, 256, 3, padding=1, bias=False), nn.BatchNorm2d(256), nn.ReLU(inplace=True),
                   nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(256, outputs)

    @staticmethod
    def preprocess(images: Tensor) -> Tensor:
        if images.shape[-2:] != (PROXY_SIZE, PROXY_SIZE):
            images = F.interpolate(images, size=(PROXY_SIZE, PROXY_SIZE), mode="bilinear", align_corners=False)
        return (images - 0.5) / 0.25

    def forward(self, images: Tensor) -> Tensor:
        return self.features(self.preprocess(images))

    def classify(self, images: Tensor) -> Tensor:
        return self.head(self.forward(images))


def _weights_fingerprint(net: nn.Module) -> str:
    h = hashlib.sha256()
    for k, v in sorted(net.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:10]


def _cache_root(cache_dir) -> Path:
    from edgegen.data.root import CACHE_ENV_VAR, DEFAULT_CACHE

    return Path(cache_dir or os.environ.get(CACHE_ENV_VAR) or DEFAULT_CACHE).expanduser()


def _proxy_data(dataset: str, root, limit: int | None):
    """(train images uint8, train targets, held-out images, held-out targets, multi_label)."""
    if dataset == "cifar10":
        from edgegen.data.cifar import CIFAR10

        tr, te = CIFAR10(root, "train", image_size=PROXY_SIZE), CIFAR10(root, "test", image_size=PROXY_SIZE)
        xs, ys, xt, yt = tr.images, tr.labels.astype(np.int64), te.images, te.labels.astype(np.int64)
        multi = False
    elif dataset == "celeba":
        from edgegen.data.celeba import CelebA

        tr, te = CelebA(root, "train", image_size=PROXY_SIZE), CelebA(root, "test", image_size=PROXY_SIZE)
        if tr.attributes.shape[1] == 0:
            raise FileNotFoundError("dataset: the CelebA folder has no list_attr_celeba.txt; the proxy is trained on "
                                    "the 40 attributes")
        xs, ys, xt, yt = tr.images, tr.attributes.astype(np.float32), te.images, te.attributes.astype(np.float32)
        multi = True
    else:
        raise ValueError(f"dataset: expected one of {PROXY_DATASETS}, got {dataset!r}")
    if limit is not None:
        xs, ys = xs[:limit], ys[:limit]
    return np.asarray(xs), ys, np.asarray(xt), yt, multi


def train_proxy_extractor(dataset: str = "cifar10", root=None, epochs: int = 20, seed: int = 0,
                          limit: int | None = None, cache_dir=None, threads: int | None = None,
                          progress: bool = False) -> FeatureExtractor:
    """Train (or load from the cache) the proxy feature network on the real training split of
    ``dataset`` (cifar10: 10-way classification; celeba: the 40 binary attributes) and measure it on
    the held-out split (CIFAR-10 test; CelebA test). Cached under
    ``$EDGEGEN_CACHE_DIR/fid-proxy/`` by dataset, recipe, data fingerprint and seed."""
    if not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs: expected an int >= 1, got {epochs!r}")
    if limit is not None and (not isinstance(limit, int) or limit < 2):
        raise ValueError(f"limit: expected None or an int >= 2, got {limit!r}")
    xs, ys, xt, yt, multi = _proxy_data(dataset, root, limit)
    digest = hashlib.sha256(xs.tobytes() + np.ascontiguousarray(ys).tobytes()).hexdigest()[:10]
    path = _cache_root(cache_dir) / "fid-proxy" / f"proxy-v{PROXY_VERSION}-{dataset}-{digest}-e{epochs}-s{seed}.pt"
    outputs = ys.shape[1] if multi else 10
    net = ProxyNet(outputs)
    if path.is_file():
        saved = torch.load(path, map_location="cpu", weights_only=True)
        net.load_state_dict(saved["state_dict"])
        info = dict(saved["info"])
    else:
        info = _train_proxy(net, xs, ys, xt, yt, multi, epochs, seed, threads, progress)
        info.update(dataset=dataset, epochs=epochs, seed=seed, train_n=int(len(xs)), version=PROXY_VERSION)
        from edgegen.tensor_files import save_atomic

        try:
            save_atomic({"state_dict": net.state_dict(), "info": info}, path)
        except OSError as exc:
            warnings.warn(f"train_proxy_extractor: could not cache the proxy at {path} ({exc})", RuntimeWarning,
                          stacklevel=2)
    net.eval()
    name = f"proxy-{dataset}-cnn-v{PROXY_VERSION}-{_weights_fingerprint(net)}"
    return FeatureExtractor(net, name, "FID-proxy", 256, info)


def _to_unit(x_uint8: np.ndarray) -> Tensor:
    return torch.from_numpy(np.array(x_uint8)).float().div_(255.0)


def _train_proxy(net, xs, ys, xt, yt, multi, epochs, seed, threads, progress) -> dict:
    from tqdm import tqdm

    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    old_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    t0 = time.perf_counter()
    try:
        opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=5e-4)
        batch = 128
        steps = epochs * max(1, (len(xs) + batch - 1) // batch)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps)
        target = torch.from_numpy(np.ascontiguousarray(ys))
        net.train()
        for _ in tqdm(range(epochs), disable=not progress, desc="FID-proxy", unit="epoch"):
            order = torch.randperm(len(xs), generator=g)
            for i in range(0, len(xs), batch):
                idx = order[i:i + batch].numpy()
                if len(idx) < 2:
                    continue
                x = _to_unit(xs[np.sort(idx)])
                y = target[np.sort(idx)]
                flip = torch.rand(len(idx), generator=g) < 0.5
                x[flip] = x[flip].flip(-1)
                out = net.classify(x)
                loss = F.binary_cross_entropy_with_logits(out, y) if multi else F.cross_entropy(out, y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
        net.eval()
        correct, count = 0.0, 0
        with torch.no_grad():
            for i in range(0, len(xt), 256):
                out = net.classify(_to_unit(xt[i:i + 256]))
                y = torch.from_numpy(np.ascontiguousarray(yt[i:i + 256]))
                if multi:
                    correct += ((out > 0).float() == y).float().mean(1).sum().item()
                else:
                    correct += (out.argmax(1) == y).sum().item()
                count += len(y)
    finally:
        torch.set_num_threads(old_threads)
    return {"heldout_accuracy": correct / max(count, 1), "heldout_n": count,
            "heldout_metric": "mean attribute accuracy" if multi else "top-1 accuracy",
            "train_seconds": round(time.perf_counter() - t0, 1)}


def get_extractor(kind: str = "auto", weights: str | os.PathLike | None = None, proxy_dataset: str = "cifar10",
                  device: str | torch.device = "cpu", **proxy_kwargs) -> FeatureExtractor:
    """``kind``: "inception" (Inception weights required: ``weights`` or ``$EDGEGEN_FID_WEIGHTS``),
    "proxy" (the cached proxy trained on ``proxy_dataset``), or "auto": the Inception network when
    weights are given, else the proxy with a warning that the result is FID-proxy.

    The weights file's SHA-256 decides the name: the official file gives "FID"; any other file of
    the same layout gives "FID-nonstandard" (with a warning), never "FID"."""
    from edgegen.eval.inception import (FID_WEIGHTS_ENV, FID_WEIGHTS_SHA256_PREFIX, fid_weights_path,
                                        is_official_fid_weights, load_fid_inception)

    if kind not in ("auto", "inception", "proxy"):
        raise ValueError(f"kind: expected 'auto', 'inception' or 'proxy', got {kind!r}")
    if kind != "proxy":
        path = fid_weights_path(weights)
        if path is not None:
            net = load_fid_inception(path).to(device)
            sha = net.weights_sha256
            info = {"weights": str(path), "sha256": sha}
            if is_official_fid_weights(sha):
                return FeatureExtractor(net, f"inception-v3-2015-12-05-{_weights_fingerprint(net)}", "FID", 2048,
                                        info)
            warnings.warn(f"weights: {path} has SHA-256 {sha[:16]}..., not the official FID Inception weights "
                          f"(SHA-256 {FID_WEIGHTS_SHA256_PREFIX}...); results are labelled FID-nonstandard and are "
                          "not comparable with published FID", RuntimeWarning, stacklevel=2)
            return FeatureExtractor(net, f"inception-v3-nonstandard-{_weights_fingerprint(net)}", "FID-nonstandard",
                                    2048, info)
        if kind == "inception":
            raise FileNotFoundError(f"weights: the standard FID Inception weights are needed for kind='inception'; "
                                    f"pass weights= or set ${FID_WEIGHTS_ENV}")
        warnings.warn(f"FID: no standard Inception weights (${FID_WEIGHTS_ENV} unset); using the proxy extractor "
                      f"trained on {proxy_dataset}: results are labelled FID-proxy and are not comparable with "
                      "published FID", RuntimeWarning, stacklevel=2)
    ext = train_proxy_extractor(proxy_dataset, **proxy_kwargs)
    ext.net.to(device)
    return ext


# ---------------------------------------------------------------------------------- streaming statistics
def _check_range(value_range) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in value_range)
    except (TypeError, ValueError):
        raise ValueError(f"value_range: expected (low, high), got {value_range!r}") from None
    if not (np.isfinite(lo) and np.isfinite(hi) and hi > lo):
        raise ValueError(f"value_range: expected finite low < high, got {value_range!r}")
    return lo, hi


def _normalise(x, name: str, lo: float, hi: float) -> Tensor:
    """A batch as float [N, 3, H, W] in [0, 1], or a clear error naming ``name``."""
    if isinstance(x, (tuple, list)) and x and isinstance(x[0], Tensor):
        x = x[0]  # (images, labels) from a DataLoader
    if not isinstance(x, Tensor):
        raise TypeError(f"{name}: expected image tensors [N, C, H, W], got {type(x).__name__}")
    if x.dim() != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"{name}: expected images [N, 1 or 3, H, W], got shape {tuple(x.shape)}")
    if x.shape[-1] < 8 or x.shape[-2] < 8:
        raise ValueError(f"{name}: expected images of at least 8x8 pixels, got {tuple(x.shape[-2:])}")
    if x.dtype == torch.uint8:
        x = x.float() / 255.0
    elif x.is_floating_point():
        x = x.float()
        if x.numel() and not torch.isfinite(x).all():
            raise ValueError(f"{name}: contains NaN or infinite values")
        tol = 1e-3 * (hi - lo)
        if x.numel() and (x.min().item() < lo - tol or x.max().item() > hi + tol):
            raise ValueError(f"{name}: values in [{x.min().item():.4g}, {x.max().item():.4g}], expected value_range "
                             f"[{lo:g}, {hi:g}] (pass value_range=(-1, 1) for tanh outputs)")
        x = ((x - lo) / (hi - lo)).clamp_(0.0, 1.0)
    else:
        raise TypeError(f"{name}: expected float or uint8 images, got {x.dtype}")
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    return x


def _check_max_samples(max_samples, lo: int) -> int | None:
    if max_samples is None:
        return None
    n = as_int(max_samples, "max_samples")
    if n < lo:
        raise ValueError(f"max_samples: expected None or an int >= {lo}, got {max_samples!r}")
    return n


def _batches(source, name: str, batch_size: int) -> Iterable:
    if isinstance(source, Tensor):
        for i in range(0, source.shape[0], batch_size):
            yield source[i:i + batch_size]
        return
    if isinstance(source, np.ndarray):
        raise TypeError(f"{name}: expected a tensor, an iterable of tensors or GaussianStats, got a numpy array "
                        "(wrap it with torch.from_numpy)")
    try:
        it = iter(source)
    except TypeError:
        raise TypeError(f"{name}: expected a tensor, an iterable of image batches or GaussianStats, got "
                        f"{type(source).__name__}") from None
    yield from it


def image_statistics(images, extractor: FeatureExtractor, batch_size: int = 50, value_range=(0.0, 1.0),
                     max_samples: int | None = None, keep_features: bool = False, name: str = "images"
                     ) -> tuple[GaussianStats, np.ndarray | None]:
    """Stream ``images`` through ``extractor``: (GaussianStats of the features, the features
    themselves when ``keep_features``). ``max_samples`` stops early (a labelled subset)."""
    lo, hi = _check_range(value_range)
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size: expected an int >= 1, got {batch_size!r}")
    max_samples = _check_max_samples(max_samples, 1)
    stats, kept, seen = GaussianStats(extractor.dim), [], 0
    for batch in _batches(images, name, batch_size):
        x = _normalise(batch, name, lo, hi)
        if max_samples is not None:
            x = x[:max(0, max_samples - seen)]
        for i in range(0, x.shape[0], batch_size):
            f = extractor(x[i:i + batch_size]).double().cpu().numpy()
            stats.update(f)
            if keep_features:
                kept.append(f)
        seen += x.shape[0]
        if max_samples is not None and seen >= max_samples:
            break
    feats = np.concatenate(kept) if kept else (np.zeros((0, extractor.dim)) if keep_features else None)
    return stats, feats


def real_statistics(dataset: str, extractor: FeatureExtractor, split: str = "train", image_size: int = 64,
                    limit: int | None = None, root=None, cache_dir=None, batch_size: int = 100) -> GaussianStats:
    """Feature statistics of a real dataset split (cifar10 or celeba, at edgegen's 64x64
    preprocessing), computed once per extractor and data and cached as .npz under
    ``$EDGEGEN_CACHE_DIR/fid-stats/``. The cache key holds the dataset's content key (its folder
    and each file's name, size and modification time, as its decoded-image cache uses), so two
    folders with the same number of images never share statistics, and changed files are measured
    again."""
    if dataset == "cifar10":
        from edgegen.data.cifar import CIFAR10

        data = CIFAR10(root, split, image_size=image_size)
    elif dataset == "celeba":
        from edgegen.data.celeba import CelebA

        data = CelebA(root, split, image_size=image_size)
    else:
        raise ValueError(f"dataset: expected 'cifar10' or 'celeba', got {dataset!r}")
    images = data.images
    n = len(images) if limit is None else min(limit, len(images))
    path = (_cache_root(cache_dir) / "fid-stats" /
            f"{extractor.name}.data-{data.content_key}.{dataset}.{split}.{image_size}.{n}.npz")
    if path.is_file():
        with np.load(path) as z:
            cached = GaussianStats.from_state_dict({k: z[k] for k in z.files})
        if cached.count == n:  # a file holding another count (written before a fix) is measured again
            return cached
    stats, _ = image_statistics((torch.from_numpy(np.array(images[i:min(i + batch_size, n)]))
                                 for i in range(0, n, batch_size)), extractor, batch_size, name="real")
    try:
        with replacing(path) as tmp:
            np.savez(tmp, **stats.state_dict())
    except OSError as exc:
        warnings.warn(f"real_statistics: could not cache {path} ({exc})", RuntimeWarning, stacklevel=2)
    return stats


# ---------------------------------------------------------------------------------- the metric
@dataclass
class FIDResult:
    """``value``: the Frechet distance; ``metric``: "FID", "FID-nonstandard" or "FID-proxy";
    ``label``: the full description (extractor, its held-out accuracy or weights digest);
    ``reliable``: False when a side has no more samples than features, or when scipy's square root
    of the product of the covariances was not finite, not real or not a root (see
    :func:`~edgegen.eval.frechet_distance`) and the distance was taken with ``eps`` on the
    diagonals (an approximation; a singular product with an exact root, e.g. from a feature that
    is constant on every image, is not one); ``unreliable_reason`` says which; ``kid``: KID on the
    same features, if asked."""

    value: float
    metric: str
    label: str
    extractor: str
    n_generated: int
    n_real: int
    reliable: bool
    kid: KIDResult | None = None
    unreliable_reason: str = ""
    manifold: ManifoldResult | None = None

    @property
    def key(self) -> str:
        """The MLflow key of the distance: ``fid``, ``fid_nonstandard`` or ``fid_proxy``."""
        return METRIC_KEYS[self.metric][0]

    def as_metrics(self, prefix: str = "") -> dict[str, float]:
        """Flat, labelled metrics for MLflow: ``fid`` (official Inception weights only),
        ``fid_nonstandard`` or ``fid_proxy`` (and ``kid``/``kid_nonstandard``/``kid_proxy`` with
        ``*_std_error``; ``precision``, ``recall``, ``density``, ``coverage`` with the same suffix),
        never an unlabelled proxy."""
        key, k = METRIC_KEYS[self.metric]
        out = {prefix + key: self.value, prefix + key + "_n_generated": float(self.n_generated)}
        if self.kid is not None:
            out[prefix + k] = self.kid.value
            out[prefix + k + "_std_error"] = self.kid.std_error
        if self.manifold is not None:
            suffix = key[len("fid"):]  # "", "_proxy" or "_nonstandard": named after the network as FID is
            for name in ("precision", "recall", "density", "coverage"):
                out[prefix + name + suffix] = getattr(self.manifold, name)
        return out


def fid(generated, real, extractor: FeatureExtractor | None = None, batch_size: int = 50, value_range=(0.0, 1.0),
        max_samples: int | None = None, kid: bool = False, kid_subsets: int = 100, kid_subset_size: int = 1000,
        seed: int = 0, manifold: bool = False, manifold_k: int = 5) -> FIDResult:
    """FID (or FID-proxy, by the extractor) between ``generated`` and ``real``.

    Each side: an image tensor, an iterable of batches, or GaussianStats computed with the same
    extractor. ``extractor`` defaults to :func:`get_extractor` ("auto"). ``kid=True`` also computes
    KID (unbiased, standard error over ``kid_subsets``); ``manifold=True`` precision, recall,
    density and coverage with ``manifold_k`` neighbours (:func:`~edgegen.eval.manifold_metrics`)
    on the same features. Both need images on both sides."""
    if extractor is None:
        extractor = get_extractor("auto")
    if not isinstance(extractor, FeatureExtractor):
        raise TypeError(f"extractor: expected a FeatureExtractor (edgegen.eval.get_extractor), got "
                        f"{type(extractor).__name__}")
    max_samples = _check_max_samples(max_samples, 2)  # FID needs 2 samples a side
    if manifold and (not is_int(manifold_k) or manifold_k < 1):  # before any image is read
        raise ValueError(f"manifold_k: expected an int >= 1, got {manifold_k!r}")
    sides, feats = [], []
    for name, src in (("generated", generated), ("real", real)):
        if isinstance(src, GaussianStats):
            if kid or manifold:
                what = "KID" if kid else "precision/recall"
                raise ValueError(f"{name}: {what} needs the features, not precomputed statistics")
            if src.dim != extractor.dim:
                raise ValueError(f"{name}: statistics of {src.dim} features, expected {extractor.dim} "
                                 f"({extractor.name})")
            st, f = src, None
        else:
            st, f = image_statistics(src, extractor, batch_size, value_range, max_samples,
                                     keep_features=kid or manifold, name=name)
        if st.count < 2:
            raise ValueError(f"{name}: FID needs at least 2 images, got {st.count}")
        sides.append(st)
        feats.append(f)
    reasons = []
    if not all(s.count > s.dim for s in sides):
        reasons.append(f"{sides[0].count} generated and {sides[1].count} real images for {extractor.dim} features: "
                       f"the covariance is singular and {extractor.metric} is unreliable at this size")
    eps = 1e-6
    value, regularised, why = _frechet(sides[0].mean, sides[0].covariance, sides[1].mean, sides[1].covariance, eps)
    if regularised:
        reasons.append(f"scipy's square root of the product of the covariances {why}: {extractor.metric} was "
                       f"computed with {eps:g} added to their diagonals and is approximate")
    reason = "; ".join(reasons)
    if reason:
        warnings.warn(f"fid: {reason} (reliable=False)", RuntimeWarning, stacklevel=2)
    kid_result = _kid(feats[0], feats[1], kid_subsets, kid_subset_size, seed) if kid else None
    manifold_result = manifold_metrics(feats[1], feats[0], manifold_k) if manifold else None
    return FIDResult(value, extractor.metric, extractor.label, extractor.name, sides[0].count, sides[1].count,
                     not reasons, kid_result, reason, manifold_result)
