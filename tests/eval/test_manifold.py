"""Precision, recall, density and coverage against the definitions computed directly with scipy's
exact pairwise distances, and on constructed cases whose answers are known."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist

from edgegen.eval.manifold import manifold_metrics


def reference(real: np.ndarray, gen: np.ndarray, k: int) -> tuple[float, float, float, float]:
    """The four definitions, one sample at a time, on exact distances."""
    rr, gg, gr = cdist(real, real), cdist(gen, gen), cdist(gen, real)
    np.fill_diagonal(rr, np.inf)
    np.fill_diagonal(gg, np.inf)
    r_rad = np.sort(rr, axis=1)[:, k - 1]
    g_rad = np.sort(gg, axis=1)[:, k - 1]
    precision = np.mean([any(gr[j, i] <= r_rad[i] for i in range(len(real))) for j in range(len(gen))])
    recall = np.mean([any(gr[j, i] <= g_rad[j] for j in range(len(gen))) for i in range(len(real))])
    density = sum(gr[j, i] <= r_rad[i] for j in range(len(gen)) for i in range(len(real))) / (k * len(gen))
    coverage = np.mean([any(gr[j, i] <= r_rad[i] for j in range(len(gen))) for i in range(len(real))])
    return float(precision), float(recall), float(density), float(coverage)


@pytest.mark.parametrize("k", [1, 3, 5])
@pytest.mark.parametrize("block", [1, 7, 1024])
def test_matches_the_definitions(k, block):
    rng = np.random.default_rng(k * 100 + block)
    real = rng.normal(size=(60, 7))
    gen = rng.normal(loc=0.4, scale=1.3, size=(50, 7))
    res = manifold_metrics(real, gen, k=k, block=block)
    p, r, d, c = reference(real, gen, k)
    # Counts over distinct samples: equal, not approximately (no ties in continuous data).
    assert (res.precision, res.recall, res.density, res.coverage) == pytest.approx((p, r, d, c), abs=1e-12)
    assert (res.k, res.n_real, res.n_generated) == (k, 60, 50)
    assert 0 < res.precision < 1 and 0 < res.recall < 1  # the case tells the sides apart


@pytest.mark.parametrize("k", [3, 5])
def test_matches_the_authors_package(k, capsys):
    """prdc (Naeem et al.'s code) on sklearn's distances in float32; ball membership there is
    strict (<) where edgegen follows Kynkaanniemi et al.'s <=, which differs only on ties (none in
    continuous data)."""
    from prdc import compute_prdc

    rng = np.random.default_rng(k)
    real = rng.normal(size=(300, 16)).astype(np.float32)
    gen = (rng.normal(size=(250, 16)) * 1.2 + 0.3).astype(np.float32)
    ref = compute_prdc(real, gen, nearest_k=k)
    capsys.readouterr()  # prdc prints the sample counts
    res = manifold_metrics(real, gen, k=k)
    for name in ("precision", "recall", "density", "coverage"):
        assert getattr(res, name) == pytest.approx(float(ref[name]), abs=1e-12), name


def test_identical_sets_are_fully_precise_and_covered():
    x = np.random.default_rng(0).normal(size=(40, 5))
    res = manifold_metrics(x, torch.from_numpy(x.copy()), k=3)
    assert res.precision == res.recall == res.coverage == 1.0


def test_a_collapsed_generator_keeps_precision_and_loses_recall_and_coverage():
    rng = np.random.default_rng(1)
    real = np.concatenate([rng.normal(size=(100, 4)), rng.normal(size=(100, 4)) + 50.0])
    gen = rng.normal(size=(100, 4))  # only the first mode
    res = manifold_metrics(real, gen, k=5)
    p, r, d, c = reference(real, gen, 5)
    assert (res.precision, res.recall, res.coverage) == pytest.approx((p, r, c), abs=1e-12)
    assert res.precision > 0.9 and res.recall <= 0.5 and res.coverage <= 0.5
    far = manifold_metrics(real, gen + 1000.0, k=5)
    assert far.precision == far.recall == far.density == far.coverage == 0.0


def test_a_ball_includes_its_boundary_and_duplicates_give_zero_radius():
    # Real points on a line: 0, 1, 3, 3 (a duplicate). With k = 1, point 0's ball has radius 1,
    # point 1's radius 1, each 3's radius 0. A generated point at 3 lies in the duplicates' balls
    # (distance 0 <= 0) and a generated point at -1 on the boundary of point 0's ball.
    real = np.array([[0.0], [1.0], [3.0], [3.0]])
    gen = np.array([[3.0], [-1.0], [10.0]])
    res = manifold_metrics(real, gen, k=1)
    assert res.precision == pytest.approx(2 / 3)
    assert res.density == pytest.approx((2 + 1) / 3)  # point 3 in two balls, -1 in one
    assert res.coverage == pytest.approx(3 / 4)  # the balls of 0 and of both 3s
    # Generated radii (k = 1): 3 -> 4, -1 -> 4, 10 -> 7; every real point lies in one of them.
    assert res.recall == 1.0


@pytest.mark.parametrize("args, kwargs, exc, match", [
    ((np.zeros((6, 3)), np.zeros((6, 4))), {}, ValueError, "generated_features: expected 3 features per row"),
    ((np.zeros((6, 3)), np.zeros((6, 3))), {"k": 0}, ValueError, "k: expected an int >= 1"),
    ((np.zeros((6, 3)), np.zeros((6, 3))), {"k": 2.0}, ValueError, "k: expected an int >= 1"),
    ((np.zeros((6, 3)), np.zeros((6, 3))), {"block": 0}, ValueError, "block: expected an int >= 1"),
    ((np.zeros((5, 3)), np.zeros((9, 3))), {"k": 5}, ValueError, "real_features: expected more than k = 5 samples"),
    ((np.zeros((9, 3)), np.zeros((3, 3))), {"k": 3}, ValueError, "generated_features: expected more than k = 3"),
    ((np.full((6, 3), np.nan), np.zeros((6, 3))), {"k": 1}, ValueError, "real_features: contains NaN"),
    ((np.zeros(6), np.zeros((6, 3))), {"k": 1}, ValueError, r"real_features: expected a 2-D array"),
], ids=["dims", "k0", "k-float", "block0", "few-real", "few-generated", "nan", "1d"])
def test_bad_input_is_named(args, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        manifold_metrics(*args, **kwargs)
