"""Frechet distance and KID against closed forms and direct formulas; streaming statistics equal
the one-shot ones for any split; bad input named."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from scipy import linalg

from edgegen.eval import GaussianStats, frechet_distance, frechet_distance_stats, kid
from edgegen.eval.frechet import frechet_distance_checked


def _spd(d, rng, scale=1.0):
    a = rng.standard_normal((d, d))
    return scale * (a @ a.T / d + 0.1 * np.eye(d))


def test_closed_forms():
    d = 7
    mu = np.arange(d, dtype=np.float64)
    eye = np.eye(d)
    assert frechet_distance(mu, eye, mu, eye) == pytest.approx(0.0, abs=1e-10)
    # Means only: ||mu1 - mu2||^2.
    assert frechet_distance(mu, eye, mu + 2.0, eye) == pytest.approx(4.0 * d, rel=1e-12)
    # Isotropic: d (sqrt(a) - sqrt(b))^2.
    a, b = 4.0, 0.25
    assert frechet_distance(mu, a * eye, mu, b * eye) == pytest.approx(d * (2.0 - 0.5) ** 2, rel=1e-12)
    # Commuting diagonal covariances: sum (sqrt(s1) - sqrt(s2))^2.
    s1, s2 = np.diag(np.arange(1.0, d + 1)), np.diag(np.linspace(0.5, 3.0, d))
    expected = float(((np.sqrt(np.diag(s1)) - np.sqrt(np.diag(s2))) ** 2).sum())
    assert frechet_distance(mu, s1, mu, s2) == pytest.approx(expected, rel=1e-10)


def test_general_case_matches_the_formula_and_accepts_tensors():
    rng = np.random.default_rng(0)
    d = 12
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    s1, s2 = _spd(d, rng), _spd(d, rng, 2.0)
    root = linalg.sqrtm(s1 @ s2).real
    expected = float((mu1 - mu2) @ (mu1 - mu2) + np.trace(s1 + s2 - 2 * root))
    got = frechet_distance(torch.tensor(mu1), torch.tensor(s1), mu2, s2)
    assert got == pytest.approx(expected, rel=1e-9)
    assert frechet_distance(mu2, s2, mu1, s1) == pytest.approx(expected, rel=1e-8)  # symmetric


@pytest.mark.parametrize("splits", [[100], [1, 99], [37, 13, 50], [10] * 10], ids=["one", "1+99", "three", "ten"])
def test_streaming_equals_one_shot(splits):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((100, 6)) * 3 + 5
    st = GaussianStats()
    start = 0
    for n in splits:
        st.update(torch.from_numpy(x[start:start + n]))
        start += n
    np.testing.assert_allclose(st.mean, x.mean(0), rtol=1e-12)
    np.testing.assert_allclose(st.covariance, np.cov(x, rowvar=False), rtol=1e-10, atol=1e-12)
    # Merging two accumulators equals one over everything; state round trip.
    a, b = GaussianStats().update(x[:30]), GaussianStats().update(x[30:])
    a.merge(b)
    np.testing.assert_allclose(a.covariance, np.cov(x, rowvar=False), rtol=1e-10, atol=1e-12)
    c = GaussianStats.from_state_dict(a.state_dict())
    assert c.count == 100
    np.testing.assert_allclose(c.mean, a.mean)


@pytest.mark.parametrize("parts", [[40], [25, 15], [1, 30, 9]], ids=["one", "two", "three"])
def test_merging_into_an_empty_accumulator_equals_the_merged_data(parts):
    """GaussianStats() (dim None) takes the dimension, count, mean and covariance of what is
    merged into it: those of all the rows together, in float64."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((sum(parts), 5)) * np.array([1.0, 2.0, 0.5, 3.0, 1.5]) + np.arange(5.0)
    x32 = x.astype(np.float32)  # float32 features: the statistics are still float64
    acc = GaussianStats()
    start = 0
    for n in parts:
        acc.merge(GaussianStats().update(torch.from_numpy(x32[start:start + n])))
        start += n
    ref = x32.astype(np.float64)
    assert (acc.dim, acc.count) == (5, sum(parts))
    assert acc.mean.dtype == np.float64 and acc.covariance.dtype == np.float64
    np.testing.assert_allclose(acc.mean, ref.mean(0), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(acc.covariance, np.cov(ref, rowvar=False), rtol=1e-10, atol=1e-12)
    # merging an empty accumulator changes nothing; later updates continue from the merged state
    acc.merge(GaussianStats()).merge(GaussianStats(5))
    assert acc.count == sum(parts)
    extra = rng.standard_normal((7, 5))
    acc.update(extra)
    both = np.concatenate([ref, extra])
    np.testing.assert_allclose(acc.mean, both.mean(0), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(acc.covariance, np.cov(both, rowvar=False), rtol=1e-10, atol=1e-12)


def test_stats_distance_and_small_sample_warning():
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((500, 4)), rng.standard_normal((400, 4)) + 1.0
    d = frechet_distance_stats(GaussianStats().update(x), GaussianStats().update(y))
    assert d == pytest.approx(frechet_distance(x.mean(0), np.cov(x, rowvar=False), y.mean(0),
                                               np.cov(y, rowvar=False)), rel=1e-10)
    with pytest.warns(RuntimeWarning, match="unreliable"):
        frechet_distance_stats(GaussianStats().update(x[:3]), GaussianStats().update(y))


def _scipy_reference(m1, s1, m2, s2):
    """The textbook float64 computation: scipy's sqrtm of S1 S2, its real part."""
    diff = m1 - m2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(np.real(linalg.sqrtm(s1 @ s2))))


def _symmetric_reference(m1, s1, m2, s2):
    """tr (S1 S2)^(1/2) = tr (S1^(1/2) S2 S1^(1/2))^(1/2), by symmetric eigendecompositions."""
    w, v = np.linalg.eigh(s1)
    r1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    m = r1 @ s2 @ r1
    diff = m1 - m2
    return float(diff @ diff + np.trace(s1) + np.trace(s2)
                 - 2 * np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0, None)).sum())


def _relu_features(dead_generated, dead_real, n=2000, d=64):
    rng = np.random.default_rng(0)
    a = np.maximum(rng.standard_normal((n, d)), 0)
    b = np.maximum(rng.standard_normal((n, d)) + 0.1, 0)
    a[:, :dead_generated] = 0.0  # ReLU units that never fire on these samples
    b[:, :dead_real] = 0.0
    return a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False)


@pytest.mark.parametrize("dead_generated, dead_real", [(1, 0), (0, 1), (3, 3)],
                         ids=["dead-generated-side", "dead-real-side", "dead-both-sides"])
def test_dead_units_keep_the_exact_root(dead_generated, dead_real):
    """A feature constant on one side makes S1 S2 singular and scipy warns, but its root is exact
    (residual ~1e-14): the distance is scipy's float64 value, not regularised."""
    m1, s1, m2, s2 = _relu_features(dead_generated, dead_real)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # neither a RuntimeWarning nor scipy's LinAlgWarning escapes
        v, regularised = frechet_distance_checked(m1, s1, m2, s2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        expected = _scipy_reference(m1, s1, m2, s2)
    assert not regularised
    assert v == pytest.approx(expected, rel=1e-12)
    assert v == pytest.approx(_symmetric_reference(m1, s1, m2, s2), rel=1e-10)


def test_rank_deficient_covariances_with_an_exact_root_are_not_regularised():
    d = 5
    s1 = np.zeros((d, d))
    s1[0, 0] = 1.0  # rank 1
    s2 = np.eye(d)
    s2[4, 4] = 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        v = frechet_distance(np.zeros(d), s1, np.zeros(d), s2)
    # (S1 S2)^(1/2) = diag(1, 0, 0, 0, 0): 1 + 4 - 2.
    assert v == 3.0


@pytest.mark.parametrize("s1, s2, match", [
    (np.diag([0.0, 1.0]), np.array([[1.0, 1e-9], [1e-9, 0.0]]), "is not finite"),
    (np.diag([1e-18, 1.0]), np.array([[1.0, 1e-9], [1e-9, 0.0]]), "has an imaginary part of 0.618 of its largest"),
], ids=["nilpotent-not-finite", "complex-root"])
def test_degenerate_products_get_eps_with_a_warning(s1, s2, match):
    """S2 is PSD up to rounding (eigenvalues 1 and -1e-18). With S1 = diag(0, 1), S1 S2 =
    [[0, 0], [1e-9, 0]] is nilpotent: no square root, scipy's is not finite. With S1 =
    diag(1e-18, 1), scipy's root is complex, its imaginary part 0.6 of its real one (the root of a
    product of covariances is real). Either way the root is taken again with eps on both
    diagonals, and the warning says what was detected."""
    eps = 1e-6
    with pytest.warns(RuntimeWarning, match=f"{match}.*; adding 1e-06 to their diagonals"):
        v = frechet_distance(np.zeros(2), s1, np.zeros(2), s2, eps)
    offset = np.eye(2) * eps
    expected = float(np.trace(s1) + np.trace(s2) - 2 * np.trace(np.real(linalg.sqrtm((s1 + offset) @ (s2 + offset)))))
    assert v == pytest.approx(expected, rel=1e-12)
    assert frechet_distance_checked(np.zeros(2), s1, np.zeros(2), s2, eps) == (v, True)


def test_invalid_covariance_is_an_error():
    d = 3
    bad = np.array([[1.0, 2.0, 0.0], [2.0, 1.0, 0.0], [0.0, 0.0, 1.0]])  # indefinite
    with pytest.raises(ValueError, match="imaginary"):
        frechet_distance(np.zeros(d), bad, np.zeros(d), np.diag([1.0, 3.0, 1.0]))


def test_bad_input_names_the_argument():
    with pytest.raises(ValueError, match="sigma1"):
        frechet_distance(np.zeros(3), np.eye(2), np.zeros(3), np.eye(3))
    with pytest.raises(ValueError, match="mu2"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(3))
    with pytest.raises(ValueError, match="mu1"):
        frechet_distance(np.array([0.0, np.nan]), np.eye(2), np.zeros(2), np.eye(2))
    with pytest.raises(ValueError, match="features"):
        GaussianStats().update(np.zeros((4, 3))).update(np.zeros((4, 2)))
    with pytest.raises(ValueError, match="at least 2 samples"):
        GaussianStats().update(np.zeros((1, 3))).covariance


def test_state_of_an_empty_accumulator_is_a_clear_error():
    with pytest.raises(ValueError, match="state: expected the statistics of an accumulator that knows its feature "
                                         "count, got mean None"):
        GaussianStats.from_state_dict(GaussianStats().state_dict())
    empty = GaussianStats.from_state_dict(GaussianStats(3).state_dict())  # the feature count is known
    assert (empty.dim, empty.count) == (3, 0)


def _kid_direct(x, y):
    """Unbiased MMD^2 with k(a, b) = (a.b / d + 1)^3, written out pair by pair."""
    d = x.shape[1]
    k = lambda a, b: (a @ b / d + 1.0) ** 3  # noqa: E731
    m, n = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return xx + yy - 2 * xy


def test_kid_matches_the_direct_formula_and_is_unbiased_near_zero():
    rng = np.random.default_rng(3)
    x, y = rng.standard_normal((20, 5)), rng.standard_normal((20, 5)) + 0.5
    r = kid(x, y, subsets=1, subset_size=20)  # one subset of everything: the full estimate
    assert r.value == pytest.approx(_kid_direct(x, y), rel=1e-10)
    assert r.subset_size == 20 and math.isnan(r.std_error)
    # Same distribution: the unbiased estimate averages to about 0 (within a few standard errors).
    a, b = rng.standard_normal((400, 8)), rng.standard_normal((400, 8))
    same = kid(a, b, subsets=50, subset_size=100)
    assert abs(same.value) < 4 * same.std_error + 1e-3
    diff = kid(a, b + 1.0, subsets=50, subset_size=100)
    assert diff.value > 10 * diff.std_error
    assert kid(a, b, subsets=5, subset_size=50, seed=7) == kid(a, b, subsets=5, subset_size=50, seed=7)


def test_kid_value_and_standard_error_from_the_subsets():
    """Mean and standard error (sample std, ddof=1, over sqrt(subsets)) of the per-subset estimates,
    recomputed pair by pair on the same draws: one index set from each side per subset, seeded rng."""
    import statistics

    rng = np.random.default_rng(11)
    a, b = rng.standard_normal((25, 4)), rng.standard_normal((18, 4)) + 0.3
    subsets, m = 8, 10
    draw = np.random.default_rng(5)
    per_subset = []
    for _ in range(subsets):
        ia = draw.choice(len(a), m, replace=False)
        ib = draw.choice(len(b), m, replace=False)
        per_subset.append(_kid_direct(a[ia], b[ib]))
    r = kid(a, b, subsets=subsets, subset_size=m, seed=5)
    assert (r.subsets, r.subset_size) == (subsets, m)
    assert r.value == pytest.approx(statistics.fmean(per_subset), rel=1e-10)
    assert r.std_error == pytest.approx(statistics.stdev(per_subset) / math.sqrt(subsets), rel=1e-10)


def test_kid_bad_input():
    with pytest.raises(ValueError, match="features2"):
        kid(np.zeros((5, 3)), np.zeros((5, 4)))
    with pytest.raises(ValueError, match="at least 2 samples"):
        kid(np.zeros((1, 3)), np.zeros((5, 3)))
    with pytest.raises(ValueError, match="subsets"):
        kid(np.zeros((5, 3)), np.zeros((5, 3)), subsets=0)


def test_kid_subsets_of_everything_have_no_standard_error():
    rng = np.random.default_rng(4)
    a, b = rng.standard_normal((30, 4)), rng.standard_normal((30, 4))
    r = kid(a, b, subsets=10, subset_size=1000)  # capped at 30: every subset is both whole sets
    assert r.subset_size == 30 and math.isnan(r.std_error)
    half = kid(a, b, subsets=10, subset_size=15)
    assert half.std_error > 0
