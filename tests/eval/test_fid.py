"""FID / KID on images: the standard network's layout, the weights loader, the labelled proxy,
streaming equal to one-shot statistics, and every bad input."""

import hashlib
import os
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from edgegen.eval import GaussianStats, frechet_distance, kid
from edgegen.eval.fid import FeatureExtractor, fid, get_extractor, image_statistics, real_statistics, \
    train_proxy_extractor
import edgegen.eval.inception as inception_module
from edgegen.eval.inception import FID_WEIGHTS_ENV, FIDInceptionV3, _avg3, download_fid_weights, load_fid_inception
from tests.data.test_cifar import make_cifar, write_batch


class _Flat(nn.Module):
    """A fixed linear map of the flattened pixels: a feature extractor whose features a test can
    compute directly."""

    def __init__(self, pixels: int, dim: int = 6):
        super().__init__()
        self.proj = nn.Linear(pixels, dim)

    def forward(self, x):
        return self.proj(x.flatten(1))


def _extractor(pixels=3 * 8 * 8, dim=6, metric="FID-proxy"):
    torch.manual_seed(3)
    return FeatureExtractor(_Flat(pixels, dim).eval(), "flat-test", metric, dim, {})


def _ref_features(ext, images01):
    with torch.no_grad():
        return ext.net(images01.float()).double().numpy()


# ----------------------------------------------------------------------------- the standard network
def test_inception_has_the_published_layout():
    net = FIDInceptionV3()
    # torchvision documents 27,161,264 parameters for Inception-v3 with its auxiliary head; the head
    # holds 768*128 + 2*128 + 128*768*25 + 2*768 + 768*1000 + 1000 = 3,326,696, and the FID network
    # has no head and a 1008-way classifier (8 * 2048 + 8 more).
    assert sum(p.numel() for p in net.parameters()) == 27_161_264 - 3_326_696 + 8 * 2049
    sd = net.state_dict()
    assert tuple(sd["Conv2d_1a_3x3.conv.weight"].shape) == (32, 3, 3, 3)
    assert tuple(sd["Mixed_7c.branch_pool.conv.weight"].shape) == (192, 2048, 1, 1)
    assert tuple(sd["fc.weight"].shape) == (1008, 2048)
    assert net.Conv2d_1a_3x3.bn.eps == 0.001
    assert net.Mixed_7c.max_pool and not net.Mixed_7b.max_pool


def test_inception_pools_ignore_padding():
    x = torch.ones(1, 2, 5, 5)
    torch.testing.assert_close(_avg3(x), x)  # counting the zero padding would give 4/9 at corners


def test_inception_preprocessing_resizes_and_rescales():
    x = torch.rand(2, 3, 32, 32)
    y = FIDInceptionV3.preprocess(x)
    assert y.shape == (2, 3, 299, 299)
    assert -1.0 <= y.min() and y.max() <= 1.0
    ref = torch.nn.functional.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False) * 2 - 1
    torch.testing.assert_close(y, ref)


@pytest.fixture
def weights_file(tmp_path):
    torch.manual_seed(1)
    net = FIDInceptionV3()
    sd = {k: v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
    torch.save(sd, path)
    return path, net.eval()


def test_loader_reads_a_state_dict_in_the_published_layout(weights_file):
    path, ref = weights_file
    net = load_fid_inception(path)
    assert not net.training
    x = torch.rand(2, 3, 40, 40)
    with torch.no_grad():
        f = net(x)
        torch.testing.assert_close(f, ref(x))
    assert f.shape == (2, 2048)


def test_loader_rejects_a_wrong_file(tmp_path):
    bad = tmp_path / "bad.pth"
    torch.save({"conv.weight": torch.zeros(3)}, bad)
    with pytest.raises(ValueError, match="not the FID Inception-v3 state dict"):
        load_fid_inception(bad)
    with pytest.raises(FileNotFoundError, match="path: the FID Inception weights file"):
        load_fid_inception(tmp_path / "absent.pth")


def test_env_var_names_a_missing_file(tmp_path, monkeypatch):
    monkeypatch.setenv(FID_WEIGHTS_ENV, str(tmp_path / "absent.pth"))
    with pytest.raises(FileNotFoundError, match=r"\$EDGEGEN_FID_WEIGHTS"):
        get_extractor("auto")


def _sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_standard_weights_give_fid_not_proxy(weights_file, monkeypatch):
    # The official file is not here: make the fixture's digest the official one, so the branch
    # that names the distance FID is the one under test.
    monkeypatch.setattr(inception_module, "FID_WEIGHTS_SHA256_PREFIX", _sha256(weights_file[0])[:8])
    monkeypatch.setenv(FID_WEIGHTS_ENV, str(weights_file[0]))
    ext = get_extractor("auto")
    assert ext.metric == "FID" and ext.dim == 2048 and ext.name.startswith("inception-v3-2015-12-05-")
    assert ext.label.startswith("FID (Inception-v3")
    stats, feats = image_statistics(torch.rand(3, 3, 16, 16), ext, keep_features=True)
    assert stats.dim == 2048 and feats.shape == (3, 2048)
    # The result of a standard extractor is called FID (a fake network, to keep the 2048-d square
    # root out of the unit tests).
    res = fid(torch.rand(10, 3, 8, 8), torch.rand(10, 3, 8, 8), _extractor(metric="FID"), kid=True,
              kid_subsets=3, kid_subset_size=5)
    assert set(res.as_metrics()) == {"fid", "fid_n_generated", "kid", "kid_std_error"}


def test_nonstandard_inception_weights_are_not_called_fid(weights_file):
    """A file in the published layout with other values (here random init; its name even carries
    the official hash prefix) loads, but what it measures is FID-nonstandard, everywhere."""
    path, _ = weights_file
    sha = _sha256(path)
    assert not sha.startswith("6726825d")
    with pytest.warns(RuntimeWarning, match=f"has SHA-256 {sha[:16]}.*labelled FID-nonstandard"):
        ext = get_extractor("inception", weights=path)
    assert ext.metric == "FID-nonstandard" and ext.dim == 2048
    assert ext.info["sha256"] == sha and load_fid_inception(path).weights_sha256 == sha
    assert not ext.name.startswith("inception-v3-2015-12-05") and ext.name.startswith("inception-v3-nonstandard-")
    assert ext.label.startswith("FID-nonstandard") and f"sha256 {sha[:16]}" in ext.label
    assert "not comparable with published FID" in ext.label
    # The result and its MLflow keys carry the name (a fake network of the same metric, to keep the
    # 2048-d square root out of the unit tests).
    res = fid(torch.rand(10, 3, 8, 8), torch.rand(10, 3, 8, 8), _extractor(metric="FID-nonstandard"), kid=True,
              kid_subsets=3, kid_subset_size=5)
    assert res.metric == "FID-nonstandard" and res.key == "fid_nonstandard"
    assert set(res.as_metrics()) == {"fid_nonstandard", "fid_nonstandard_n_generated", "kid_nonstandard",
                                     "kid_nonstandard_std_error"}
    with pytest.raises(ValueError, match="metric: expected one of"):
        _extractor(metric="FID (my weights)")


def test_weights_hash_is_computed_once_per_file_version(tmp_path, monkeypatch):
    import edgegen.data.download as download

    calls = []
    real = download.file_digest
    monkeypatch.setattr(download, "file_digest", lambda p, algorithm: calls.append(p) or real(p, algorithm))
    f = tmp_path / "w.bin"
    f.write_bytes(b"first version")
    assert inception_module.fid_weights_sha256(f) == hashlib.sha256(b"first version").hexdigest()
    assert inception_module.fid_weights_sha256(f) == hashlib.sha256(b"first version").hexdigest()
    assert len(calls) == 1  # remembered by path, size and mtime
    f.write_bytes(b"second, longer version")
    os.utime(f, ns=(1_000_000_000, 1_000_000_000))
    assert inception_module.fid_weights_sha256(f) == hashlib.sha256(b"second, longer version").hexdigest()
    assert len(calls) == 2


def test_inception_kind_requires_the_weights(monkeypatch):
    monkeypatch.delenv(FID_WEIGHTS_ENV, raising=False)
    with pytest.raises(FileNotFoundError, match="weights: the standard FID Inception weights"):
        get_extractor("inception")
    with pytest.raises(ValueError, match="kind: expected"):
        get_extractor("vgg")


def test_download_checks_the_hash_prefix(tmp_path, monkeypatch):
    import edgegen.data.download as dl

    def fake_fetch(url, dest, **_):
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(b"not the weights")
        return dest

    monkeypatch.setattr(dl, "fetch", fake_fetch)
    with pytest.raises(OSError, match="does not start with 6726825d"):
        download_fid_weights(tmp_path)
    assert not (tmp_path / "pt_inception-2015-12-05-6726825d.pth").exists()


# ----------------------------------------------------------------------------- fid() on known features
def test_fid_equals_frechet_distance_of_the_features():
    ext = _extractor()
    g, r = torch.rand(40, 3, 8, 8), torch.rand(50, 3, 8, 8) * 0.8
    res = fid(g, r, ext, batch_size=7)
    fg, fr = _ref_features(ext, g), _ref_features(ext, r)
    expected = frechet_distance(fg.mean(0), np.cov(fg, rowvar=False), fr.mean(0), np.cov(fr, rowvar=False))
    assert res.value == pytest.approx(expected, rel=1e-6)  # float32 features, batched differently
    assert (res.n_generated, res.n_real, res.reliable, res.metric) == (40, 50, True, "FID-proxy")
    assert set(res.as_metrics()) == {"fid_proxy", "fid_proxy_n_generated"}


@pytest.mark.parametrize("split", [[40], [1, 39], [13, 13, 14], [39, 1]], ids=["one", "1-39", "13-13-14", "39-1"])
def test_streaming_any_batch_split_equals_one_shot(split):
    ext = _extractor()
    g, r = torch.rand(40, 3, 8, 8), torch.rand(30, 3, 8, 8)
    one = fid(g, r, ext).value
    parts = list(torch.split(g, split))
    assert fid(iter(parts), r, ext, batch_size=5).value == pytest.approx(one, rel=1e-6)
    # (images, labels) tuples from a DataLoader
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(r, torch.zeros(30)), batch_size=11)
    assert fid(g, loader, ext).value == pytest.approx(one, rel=1e-6)


def test_precomputed_statistics_and_value_ranges():
    ext = _extractor()
    g, r = torch.rand(20, 3, 8, 8), torch.rand(25, 3, 8, 8)
    stats, _ = image_statistics(r, ext)
    assert isinstance(stats, GaussianStats) and stats.count == 25
    base = fid(g, r, ext).value
    assert fid(g, stats, ext).value == pytest.approx(base, rel=1e-6)
    # tanh outputs in [-1, 1] and uint8 images describe the same pixels
    assert fid(g * 2 - 1, r * 2 - 1, ext, value_range=(-1, 1)).value == pytest.approx(base, rel=1e-6)
    g8 = (g * 255).round().to(torch.uint8)
    assert fid(g8, r, ext).value == pytest.approx(fid(g8.float() / 255, r, ext).value, rel=1e-6)
    # one channel is repeated to three
    grey = torch.rand(20, 1, 8, 8)
    assert fid(grey, r, ext).value == pytest.approx(fid(grey.expand(-1, 3, -1, -1), r, ext).value, rel=1e-6)


def test_kid_beside_fid_uses_the_same_features():
    ext = _extractor()
    g, r = torch.rand(30, 3, 8, 8), torch.rand(35, 3, 8, 8)
    res = fid(g, r, ext, kid=True, kid_subsets=10, kid_subset_size=20)
    ref = kid(_ref_features(ext, g), _ref_features(ext, r), subsets=10, subset_size=20)
    assert res.kid.value == pytest.approx(ref.value, rel=1e-6)
    assert res.kid.std_error == pytest.approx(ref.std_error, rel=1e-6)
    assert {"kid_proxy", "kid_proxy_std_error"} <= set(res.as_metrics())


@pytest.mark.parametrize("metric, suffix", [("FID-proxy", "_proxy"), ("FID", ""), ("FID-nonstandard", "_nonstandard")],
                         ids=["proxy", "standard", "nonstandard"])
def test_precision_recall_beside_fid_use_the_same_features_and_its_name(metric, suffix):
    from edgegen.eval.manifold import manifold_metrics

    ext = _extractor(metric=metric)
    g, r = torch.rand(30, 3, 8, 8), torch.rand(35, 3, 8, 8) * 0.9
    res = fid(g, r, ext, batch_size=8, manifold=True, manifold_k=4)
    # The real side's balls against the generated side: the arguments in that order.
    ref = manifold_metrics(_ref_features(ext, r), _ref_features(ext, g), k=4)
    for name in ("precision", "recall", "density", "coverage"):
        assert getattr(res.manifold, name) == pytest.approx(getattr(ref, name), abs=1e-12)
    assert (res.manifold.n_real, res.manifold.n_generated, res.manifold.k) == (35, 30, 4)
    m = res.as_metrics()
    assert {f"precision{suffix}", f"recall{suffix}", f"density{suffix}", f"coverage{suffix}"} <= set(m)
    assert m[f"recall{suffix}"] == res.manifold.recall
    assert not ({"precision", "recall"} & set(m)) or suffix == ""  # a proxy is never named plainly


def test_precision_recall_need_features_and_a_valid_k_before_any_image_is_read():
    ext = _extractor()
    r = torch.rand(20, 3, 8, 8)
    stats, _ = image_statistics(r, ext)
    with pytest.raises(ValueError, match="real: precision/recall needs the features, not precomputed statistics"):
        fid(torch.rand(20, 3, 8, 8), stats, ext, manifold=True)

    def never():
        raise AssertionError("an image was read before the arguments were checked")
        yield

    with pytest.raises(ValueError, match="manifold_k: expected an int >= 1"):
        fid(never(), r, ext, manifold=True, manifold_k=0)


def test_max_samples_takes_a_prefix():
    ext = _extractor()
    g, r = torch.rand(30, 3, 8, 8), torch.rand(30, 3, 8, 8)
    res = fid(g, r, ext, max_samples=12, batch_size=5)
    assert (res.n_generated, res.n_real) == (12, 12)
    assert res.value == pytest.approx(fid(g[:12], r[:12], ext).value, rel=1e-6)


def test_collapsed_generator_gets_the_exact_distance():
    """40 identical generated images: their features have covariance exactly 0, so S1 S2 = 0 and
    its root 0 is exact (scipy warns that the product is singular; that alone is no reason to
    regularise). The distance is the exact ||mu1 - mu2||^2 + tr(S2), and reliable."""
    ext = _extractor()
    g = torch.full((40, 3, 8, 8), 0.5)
    r = torch.rand(50, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    fg, fr = _ref_features(ext, g), _ref_features(ext, r)
    exact = float(((fg.mean(0) - fr.mean(0)) ** 2).sum() + np.trace(np.cov(fr, rowvar=False)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = fid(g, r, ext)
    assert res.reliable and res.unreliable_reason == ""
    assert res.value == pytest.approx(exact, rel=1e-9)


class _DeadUnits(nn.Module):
    """Features relu(4 x - 2) of the first 16 pixels: unit i fires only where pixel i is above
    0.5; units 0 and 1 are also zeroed on every image (dead on both sides)."""

    def forward(self, x):
        f = torch.relu(x.flatten(1)[:, :16] * 4 - 2)
        f[:, :2] = 0
        return f


@pytest.mark.parametrize("dark_generated", [False, True], ids=["dead-both-sides", "dead-generated-side-too"])
def test_dead_feature_units_keep_fid_exact_and_reliable(dark_generated):
    """A ReLU unit that never fires gives a zero-variance feature: S1 S2 is singular and scipy
    warns, but its root is exact. fid() equals scipy's float64 value and stays reliable, on one
    side (pixel 2 dark on every generated image) or both (units 0 and 1)."""
    from scipy import linalg

    ext = FeatureExtractor(_DeadUnits(), "dead-units", "FID-proxy", 16, {})
    gen = torch.Generator().manual_seed(0)
    g, r = torch.rand(500, 3, 8, 8, generator=gen), torch.rand(500, 3, 8, 8, generator=gen)
    if dark_generated:
        g.view(500, -1)[:, 2] *= 0.5  # unit 2 never fires on the generated images
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = fid(g, r, ext)
    fg, fr = _ref_features(ext, g), _ref_features(ext, r)
    assert (fg[:, 2] == 0).all() == dark_generated and (fr[:, 2] > 0).any()
    m1, s1, m2, s2 = fg.mean(0), np.cov(fg, rowvar=False), fr.mean(0), np.cov(fr, rowvar=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        root = np.real(linalg.sqrtm(s1 @ s2))
    expected = float((m1 - m2) @ (m1 - m2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(root))
    assert res.reliable and res.unreliable_reason == ""
    assert res.value == pytest.approx(expected, rel=1e-9)  # float64 statistics streamed in batches


def test_statistics_without_a_root_are_flagged_unreliable():
    """Covariances whose product has no square root (S1 S2 = [[0, 0], [1e-9, 0]], nilpotent; S2
    PSD up to rounding): scipy's root is not finite, the distance is taken with eps on the
    diagonals, and the reason says what was detected."""
    ext = FeatureExtractor(nn.Identity(), "two-features", "FID-proxy", 2, {})

    def stats(cov):
        return GaussianStats.from_state_dict({"count": 100, "mean": np.zeros(2), "comoment": cov * 99})

    from scipy import linalg

    a, b = stats(np.diag([0.0, 1.0])), stats(np.array([[1.0, 1e-9], [1e-9, 0.0]]))
    with pytest.warns(RuntimeWarning, match="reliable=False"):
        res = fid(a, b, ext)
    assert not res.reliable
    assert res.unreliable_reason == ("scipy's square root of the product of the covariances is not finite: FID-proxy "
                                     "was computed with 1e-06 added to their diagonals and is approximate")
    s1, s2 = a.covariance + 1e-6 * np.eye(2), b.covariance + 1e-6 * np.eye(2)
    expected = float(np.trace(a.covariance) + np.trace(b.covariance) - 2 * np.trace(np.real(linalg.sqrtm(s1 @ s2))))
    assert res.value == pytest.approx(expected, rel=1e-12)


def test_small_samples_warn_unreliable():
    ext = _extractor()
    with pytest.warns(RuntimeWarning, match="unreliable at this size"):
        r = fid(torch.rand(4, 3, 8, 8), torch.rand(5, 3, 8, 8), ext)
    assert not r.reliable and np.isfinite(r.value)
    assert "4 generated and 5 real images for 6 features" in r.unreliable_reason


@pytest.mark.parametrize("bad, err, match", [
    (torch.rand(5, 4, 8, 8), ValueError, r"generated: expected images \[N, 1 or 3, H, W\]"),
    (torch.rand(5, 3, 8), ValueError, "generated: expected images"),
    (torch.rand(5, 3, 8, 8) * 2, ValueError, r"generated: values in .* expected value_range \[0, 1\]"),
    (torch.full((5, 3, 8, 8), float("nan")), ValueError, "generated: contains NaN"),
    (torch.rand(1, 3, 8, 8), ValueError, "generated: FID needs at least 2 images, got 1"),
    (torch.zeros(0, 3, 8, 8), ValueError, "generated: FID needs at least 2 images, got 0"),
    (np.zeros((5, 3, 8, 8)), TypeError, "generated: .*numpy array"),
    (torch.zeros(5, 3, 8, 8, dtype=torch.int32), TypeError, "generated: expected float or uint8"),
    (42, TypeError, "generated: expected a tensor"),
], ids=["channels", "rank", "range", "nan", "one-image", "empty", "numpy", "int32", "int"])
def test_bad_images(bad, err, match):
    with pytest.raises(err, match=match):
        fid(bad, torch.rand(5, 3, 8, 8), _extractor())


def test_bad_arguments():
    ext, x = _extractor(), torch.rand(5, 3, 8, 8)
    with pytest.raises(ValueError, match="value_range: expected finite low < high"):
        fid(x, x, ext, value_range=(1, 0))
    with pytest.raises(TypeError, match="extractor: expected a FeatureExtractor"):
        fid(x, x, extractor=nn.Identity())
    stats, _ = image_statistics(x, ext)
    with pytest.raises(ValueError, match="real: KID needs the features"):
        fid(x, stats, ext, kid=True)
    with pytest.raises(ValueError, match="real: statistics of 6 features, expected 4"):
        fid(x, stats, _extractor(dim=4))
    with pytest.raises(ValueError, match="batch_size: expected an int >= 1"):
        fid(x, x, ext, batch_size=0)


@pytest.mark.parametrize("bad, err, match", [
    (1.5, TypeError, "max_samples: expected an integer, got 1.5"),
    ("10", TypeError, "max_samples: expected an integer, got '10'"),
    (True, TypeError, "max_samples: expected an integer, got a bool"),
    (0, ValueError, "max_samples: expected None or an int >= 2, got 0"),
    (-5, ValueError, "max_samples: expected None or an int >= 2, got -5"),
    (1, ValueError, "max_samples: expected None or an int >= 2, got 1"),
], ids=["float", "str", "bool", "zero", "negative", "one"])
def test_bad_max_samples_is_named(bad, err, match):
    x = torch.rand(5, 3, 8, 8)
    with pytest.raises(err, match=match):
        fid(x, x, _extractor(), max_samples=bad)


# ----------------------------------------------------------------------------- the proxy
def test_proxy_is_trained_once_cached_and_labelled(tmp_path, monkeypatch):
    from edgegen.data.cifar import CIFAR10

    batches = make_cifar(tmp_path / "data", n=24)
    monkeypatch.delenv(FID_WEIGHTS_ENV, raising=False)
    kw = dict(root=tmp_path / "data", epochs=1, cache_dir=tmp_path / "cache")
    with pytest.warns(RuntimeWarning, match="labelled FID-proxy"):
        ext = get_extractor("auto", proxy_dataset="cifar10", **kw)
    assert ext.metric == "FID-proxy" and ext.dim == 256
    info = ext.info
    assert info["heldout_n"] == 24 and info["train_n"] == 120
    # Held-out top-1 accuracy: the trained classifier's argmax against the test batch's labels,
    # on the test images at the proxy's 64x64 scaled to [0, 1].
    test_images = CIFAR10(tmp_path / "data", "test", image_size=64, cache_dir=tmp_path / "c").images
    with torch.no_grad():
        logits = ext.net.classify(torch.from_numpy(np.array(test_images)).float() / 255.0)
    labels = np.array(batches["test_batch"][b"labels"])
    hits = int((logits.argmax(1).numpy() == labels).sum())
    assert info["heldout_accuracy"] == pytest.approx(hits / 24, abs=1e-12)
    assert hits != int((logits.argmin(1).numpy() == labels).sum())  # so argmin hits would not pass the check
    assert "FID-proxy" in ext.label and f"held-out top-1 accuracy {hits / 24:.3f} on 24 images" in ext.label
    assert "not comparable" in ext.label
    cached = list((tmp_path / "cache" / "fid-proxy").glob("proxy-v1-cifar10-*.pt"))
    assert len(cached) == 1
    again = train_proxy_extractor("cifar10", **kw)  # from the cache: same weights, same name
    assert again.name == ext.name and again.info == info
    x = torch.rand(3, 3, 32, 32)
    torch.testing.assert_close(again(x), ext(x))
    # Real statistics: computed once per extractor/dataset/split/size, then read back.
    s1 = real_statistics("cifar10", ext, split="test", root=tmp_path / "data", cache_dir=tmp_path / "cache")
    assert s1.count == 24 and len(list((tmp_path / "cache" / "fid-stats").glob("*.npz"))) == 1
    s2 = real_statistics("cifar10", ext, split="test", root=tmp_path / "data", cache_dir=tmp_path / "cache")
    np.testing.assert_array_equal(s1.mean, s2.mean)
    np.testing.assert_array_equal(s1.covariance, s2.covariance)


def test_proxy_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="dataset: expected one of"):
        train_proxy_extractor("mnist", root=tmp_path)
    with pytest.raises(ValueError, match="epochs: expected an int >= 1"):
        train_proxy_extractor("cifar10", epochs=0, root=tmp_path)
    with pytest.raises(FileNotFoundError, match="dataset folder not found"):
        train_proxy_extractor("cifar10", root=tmp_path / "empty")
    with pytest.raises(ValueError, match="dataset: expected 'cifar10' or 'celeba'"):
        real_statistics("lsun", _extractor())


def test_real_statistics_are_keyed_on_the_data(tmp_path, monkeypatch):
    """Two folders with the same number of test images but different pixels get their own
    statistics, each equal to the statistics of its images computed directly."""
    monkeypatch.setenv("EDGEGEN_CACHE_DIR", str(tmp_path / "cache"))
    make_cifar(tmp_path / "a", n=6)
    make_cifar(tmp_path / "b", n=6)
    write_batch(tmp_path / "b" / "cifar-10-batches-py" / "test_batch", 6, 99)
    ext = _extractor(pixels=3 * 64 * 64, dim=4)
    from edgegen.data.cifar import CIFAR10

    for _ in range(2):  # computed, then read back from the cache
        for root in ("a", "b"):
            got = real_statistics("cifar10", ext, split="test", root=tmp_path / root)
            imgs = np.array(CIFAR10(tmp_path / root, "test", image_size=64).images)
            ref = _ref_features(ext, torch.from_numpy(imgs).float() / 255)
            np.testing.assert_allclose(got.mean, ref.mean(0), rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(got.covariance, np.cov(ref, rowvar=False), rtol=1e-5, atol=1e-6)
    assert len(list((tmp_path / "cache" / "fid-stats").glob("*.npz"))) == 2


@pytest.mark.parametrize("limit, batch_size", [(4, 3), (5, 100)], ids=["uneven-batches", "one-short-batch"])
def test_real_statistics_use_exactly_the_first_limit_images(tmp_path, monkeypatch, limit, batch_size):
    """A limit that is not a multiple of the batch size: the last batch stops at the limit (was:
    a whole batch, so --samples 10 measured 24 images while saying 10)."""
    monkeypatch.setenv("EDGEGEN_CACHE_DIR", str(tmp_path / "cache"))
    make_cifar(tmp_path / "a", n=12)
    ext = _extractor(pixels=3 * 64 * 64, dim=4)
    from edgegen.data.cifar import CIFAR10

    got = real_statistics("cifar10", ext, split="test", root=tmp_path / "a", limit=limit, batch_size=batch_size)
    imgs = np.array(CIFAR10(tmp_path / "a", "test", image_size=64).images)[:limit]
    ref = _ref_features(ext, torch.from_numpy(imgs).float() / 255)
    assert got.count == limit
    np.testing.assert_allclose(got.mean, ref.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got.covariance, np.cov(ref, rowvar=False), rtol=1e-5, atol=1e-6)


def test_cached_statistics_of_another_count_are_measured_again(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEGEN_CACHE_DIR", str(tmp_path / "cache"))
    make_cifar(tmp_path / "a", n=12)
    ext = _extractor(pixels=3 * 64 * 64, dim=4)
    first = real_statistics("cifar10", ext, split="test", root=tmp_path / "a", limit=5)
    (cached,) = (tmp_path / "cache" / "fid-stats").glob("*.npz")
    with np.load(cached) as z:
        state = {k: z[k] for k in z.files}
    state["count"] = np.asarray(12)  # as the whole-batch bug wrote it: more images than the name says
    np.savez(cached, **state)
    again = real_statistics("cifar10", ext, split="test", root=tmp_path / "a", limit=5)
    assert again.count == 5
    np.testing.assert_allclose(again.mean, first.mean, rtol=1e-6)


def test_proxy_separates_real_from_noise_on_fixture_data(tmp_path):
    """A meaning check on the proxy: held-out images of the training distribution are closer to
    the training images than constant grey images are."""
    make_cifar(tmp_path / "data", n=40)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        ext = train_proxy_extractor("cifar10", root=tmp_path / "data", epochs=1, cache_dir=tmp_path / "cache")
        from edgegen.data.cifar import CIFAR10

        tr = torch.from_numpy(np.asarray(CIFAR10(tmp_path / "data", "train", cache_dir=tmp_path / "c").images))
        te = torch.from_numpy(np.asarray(CIFAR10(tmp_path / "data", "test", cache_dir=tmp_path / "c").images))
        same = fid(te, tr, ext).value
        flat = fid(torch.full((40, 3, 64, 64), 0.5), tr, ext).value
    assert same < flat
