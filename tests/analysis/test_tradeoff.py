"""Trade-off analysis: fits recover known parameters, C* is the global maximum (against a brute
grid) and monotone in lambda, the Pareto front equals a brute-force dominance check, the scores
match hand computations."""

import math

import numpy as np
import pytest

from edgegen.analysis.tradeoff import (atei, fit_tradeoff, optimal_complexity, pareto_front, pareto_scores,
                                      to_higher_is_better, utility)
from tests.helpers import figure_texts


def test_fit_recovers_known_parameters():
    alpha, q_max, beta, gamma = 2e-6, 0.8, 3e-7, 0.5
    c = np.geomspace(1e5, 5e6, 9)
    q = q_max * (1 - np.exp(-alpha * c))
    e = 1 / (beta * c + gamma)
    fit = fit_tradeoff(c, q, e)
    assert fit.alpha == pytest.approx(alpha, rel=1e-4) and fit.q_max == pytest.approx(q_max, rel=1e-4)
    # E is fitted after division by its largest value: beta and gamma scale by that factor
    s = e.max()
    assert fit.beta == pytest.approx(beta * s, rel=1e-4) and fit.gamma == pytest.approx(gamma * s, rel=1e-4)
    assert fit.r2_quality > 0.9999 and fit.r2_efficiency > 0.9999
    np.testing.assert_allclose(fit.efficiency(c), e / s, rtol=1e-4)
    assert "divided by its largest value" in fit.efficiency_transform


def test_fit_with_noise_and_lower_is_better_metrics():
    rng = np.random.default_rng(0)
    alpha, q_max, beta, gamma = 1e-6, 0.05, 2e-6, 1.0  # quality = 1/FID, efficiency = 1/latency
    c = np.geomspace(2e5, 8e6, 12)
    fid_values = 1 / (q_max * (1 - np.exp(-alpha * c))) * (1 + 0.01 * rng.standard_normal(12))
    latency = (beta * c + gamma) * (1 + 0.01 * rng.standard_normal(12))
    fit = fit_tradeoff(c, fid_values, latency, quality_lower_is_better=True, efficiency_lower_is_better=True)
    assert fit.alpha == pytest.approx(alpha, rel=0.1) and fit.q_max == pytest.approx(q_max, rel=0.05)
    assert fit.beta / fit.gamma == pytest.approx(beta / gamma, rel=0.1)  # the shape, free of the scale
    assert fit.alpha_se > 0 and fit.beta_se > 0
    assert "reciprocal" in fit.quality_transform and "reciprocal" in fit.efficiency_transform


def test_fit_standard_errors_match_a_direct_least_squares_fit():
    """alpha_se, q_max_se, beta_se, gamma_se: sqrt(diag(pcov)) of scipy's curve_fit run here on
    the raw complexity (no rescaling), on Q = 1/FID and E = (1/latency) / max(1/latency)."""
    from scipy.optimize import curve_fit

    rng = np.random.default_rng(0)
    alpha, q_max, beta, gamma = 1e-6, 0.05, 2e-6, 1.0
    c = np.geomspace(2e5, 8e6, 12)
    fid_values = 1 / (q_max * (1 - np.exp(-alpha * c))) * (1 + 0.01 * rng.standard_normal(12))
    latency = (beta * c + gamma) * (1 + 0.01 * rng.standard_normal(12))
    fit = fit_tradeoff(c, fid_values, latency, quality_lower_is_better=True, efficiency_lower_is_better=True)
    q = 1 / fid_values
    e = (1 / latency) / (1 / latency).max()
    (a, qm), qcov = curve_fit(lambda x, a, qm: qm * (1 - np.exp(-a * x)), c, q, p0=[alpha, q_max], method="lm")
    (b, g), ecov = curve_fit(lambda x, b, g: 1 / (b * x + g), c, e, p0=[beta, gamma], method="lm")
    assert (fit.alpha, fit.q_max, fit.beta, fit.gamma) == (pytest.approx(a, rel=1e-6), pytest.approx(qm, rel=1e-6),
                                                           pytest.approx(b, rel=1e-6), pytest.approx(g, rel=1e-6))
    qse, ese = np.sqrt(np.diag(qcov)), np.sqrt(np.diag(ecov))
    assert fit.alpha_se == pytest.approx(qse[0], rel=1e-4) and fit.q_max_se == pytest.approx(qse[1], rel=1e-4)
    assert fit.beta_se == pytest.approx(ese[0], rel=1e-4) and fit.gamma_se == pytest.approx(ese[1], rel=1e-4)


@pytest.mark.parametrize("args, match", [
    (([1, 2], [1, 2], [1, 2]), "complexity: expected at least 3 points"),
    (([1, 1, 1], [1, 2, 3], [1, 2, 3]), "at least 2 distinct"),
    (([1, 2, -3], [1, 2, 3], [1, 2, 3]), "complexity: expected finite values > 0"),
    (([1, 2, 3], [1, 2], [1, 2, 3]), "quality: expected 3 values"),
    (([1, 2, 3], [1, 2, float("nan")], [1, 2, 3]), "quality: contains NaN"),
    (([1, 2, 3], [1, 2, 3], [1, 0, 3]), "efficiency: expected values > 0"),
], ids=["few", "same-c", "negative-c", "length", "nan", "zero-eff"])
def test_fit_bad_input(args, match):
    with pytest.raises(ValueError, match=match):
        fit_tradeoff(*args)


def _brute(alpha, beta, gamma, lam, lo, hi):
    xs = np.linspace(lo, hi, 400_001)
    f = utility(xs, alpha, beta, gamma, lam)
    return xs[f.argmax()], f.max()


@pytest.mark.parametrize("params", [
    (1.0, 0.5, 1.0, 0.5, 0.0, 10.0),     # an interior maximum
    (1.0, 0.5, 1.0, 0.02, 0.0, 10.0),    # efficiency dominates: C* = c_min
    (1.0, 0.01, 1.0, 0.98, 0.0, 10.0),   # quality dominates: C* near c_max
    (0.5, 0.5, 0.25, 0.7, 0.0, 10.0),    # a local minimum, then a local maximum below F(c_min)
    (0.5, 0.5, 0.25, 0.8, 0.0, 10.0),    # the same shape, the interior maximum is the global one
    (0.2, 2.0, 0.3, 0.6, 0.0, 20.0),
], ids=["interior", "low-boundary", "high", "local-below-boundary", "two-stationary", "mixed"])
def test_optimum_is_global(params):
    alpha, beta, gamma, lam, lo, hi = params
    c_star = optimal_complexity(alpha, beta, gamma, lam, lo, hi)
    x, fmax = _brute(alpha, beta, gamma, lam, lo, hi)
    assert utility(c_star, alpha, beta, gamma, lam) >= fmax - 1e-9
    assert c_star == pytest.approx(x, abs=(hi - lo) * 1e-4)


def test_two_stationary_points_case_has_them():
    alpha, beta, gamma, lam = 0.5, 0.5, 0.25, 0.7
    xs = np.linspace(0.0, 10.0, 20001)
    d = lam * alpha * np.exp(-alpha * xs) - (1 - lam) * beta / (beta * xs + gamma) ** 2
    assert (np.sign(d[:-1]) != np.sign(d[1:])).sum() == 2  # the case really has a min and a max
    # ... and the local maximum near 7 is not the answer: F(0) is larger
    assert optimal_complexity(alpha, beta, gamma, lam, 0.0, 10.0) == 0.0


def test_optimum_is_monotone_in_lambda():
    lams = np.linspace(0, 1, 41)
    for alpha, beta, gamma in [(1.0, 0.5, 1.0), (0.5, 0.5, 0.25), (0.2, 2.0, 0.3)]:
        cs = [optimal_complexity(alpha, beta, gamma, float(l), 0.0, 10.0) for l in lams]
        assert all(b >= a - 1e-9 for a, b in zip(cs, cs[1:]))
    assert optimal_complexity(1.0, 1.0, 1.0, 0.0, 0.5, 4.0) == 0.5  # efficiency only: smallest
    assert optimal_complexity(1.0, 1.0, 1.0, 1.0, 0.5, 4.0) == 4.0  # quality only: largest


@pytest.mark.parametrize("kw, match", [
    (dict(alpha=0.0), "alpha: expected a finite value > 0"),
    (dict(lam=1.5), r"lam: expected a value in \[0, 1\]"),
    (dict(c_min=5.0, c_max=1.0), "c_min, c_max: expected 0 <= c_min < c_max"),
    (dict(c_min="1"), "c_min: expected a number \\(a complexity\\), got '1'"),
    (dict(c_max=None), "c_max: expected a number \\(a complexity\\), got None"),
], ids=["alpha", "lam", "range", "c_min-str", "c_max-none"])
def test_optimum_bad_input(kw, match):
    args = dict(alpha=1.0, beta=1.0, gamma=1.0, lam=0.5, c_min=0.0, c_max=1.0)
    args.update(kw)
    with pytest.raises(ValueError, match=match):
        optimal_complexity(**args)


def _brute_front(p, minimize):
    cost = np.where(minimize, p, -p)
    keep = []
    for i in range(len(p)):
        if not any((cost[j] <= cost[i]).all() and (cost[j] < cost[i]).any() for j in range(len(p)) if j != i):
            keep.append(i)
    return keep


@pytest.mark.parametrize("seed", range(5), ids=[f"seed{s}" for s in range(5)])
def test_pareto_front_equals_brute_force(seed):
    rng = np.random.default_rng(seed)
    p = rng.integers(0, 6, size=(40, 3)).astype(float)  # ties and duplicates on purpose
    minimize = [True, False, True]
    assert pareto_front(p, minimize).tolist() == _brute_front(p, np.array(minimize))


def test_pareto_front_small_cases_and_bad_input():
    assert pareto_front([[1, 1]], [True, True]).tolist() == [0]
    assert pareto_front([[1, 2], [1, 2]], [True, True]).tolist() == [0, 1]  # duplicates both kept
    assert pareto_front([[1, 5], [2, 3], [3, 4]], [True, True]).tolist() == [0, 1]
    with pytest.raises(ValueError, match="minimize: expected 2 flags"):
        pareto_front([[1, 2]], [True])
    with pytest.raises(ValueError, match=r"points: expected a non-empty 2-D array"):
        pareto_front([1, 2, 3], [True])
    with pytest.raises(ValueError, match="points: contains NaN"):
        pareto_front([[1, float("nan")]], [True, True])
    with pytest.raises(ValueError, match=r"points: expected a non-empty 2-D array \[n, d\] of numbers \("):
        pareto_front([[1, 2], [2]], [True, True])  # ragged
    assert pareto_front([[1, 2], [2, 1]], np.array([True, False])).tolist() == [0]  # numpy bools are bools


@pytest.mark.parametrize("minimize", [["False", "True"], "tt", [1, 0], True],
                         ids=["strings", "string", "ints", "scalar"])
def test_minimize_flags_must_be_bools(minimize):
    # ["False", "True"] used to become [True, True]: each string is truthy
    with pytest.raises(ValueError, match="^minimize: expected a list of bools \\(one per column\\), got "):
        pareto_front([[1, 2], [2, 1]], minimize)
    with pytest.raises(ValueError, match="^minimize: expected a list of bools"):
        pareto_scores([[1, 2], [2, 1]], minimize)


def test_pareto_scores_by_hand():
    # latency (min) and quality (max); row 2 is dominated by row 1
    p = [[10.0, 0.9], [5.0, 0.5], [8.0, 0.4]]
    s = pareto_scores(p, [True, False])
    # normalised: row0 (0, 1), row1 (1, 0.2), row2 (0.4, 0); nearest front row of row2 is row1 at
    # distance sqrt(0.36 + 0.04)
    assert s[0] == 1.0 and s[1] == 1.0
    assert s[2] == pytest.approx(1 - math.sqrt(0.4) / math.sqrt(2))


def test_atei_by_hand():
    fid_values, latency, deploy = [20.0, 30.0], [4.0, 2.0], [0.5, 1.0]
    v = atei(fid_values, latency, deploy)
    assert v[0] == pytest.approx(0.4 * 1 + 0.3 * 0 + 0.3 * 0.5)
    assert v[1] == pytest.approx(0.4 * 0 + 0.3 * 1 + 0.3 * 1.0)
    with pytest.raises(ValueError, match="weights: expected"):
        atei(fid_values, latency, deploy, weights={"quality": 1.0})
    with pytest.raises(ValueError, match=r"deployment: expected values in \[0, 1\]"):
        atei(fid_values, latency, [2.0, 0.0])
    with pytest.raises(ValueError, match="equal non-zero lengths"):
        atei([1.0], latency, deploy)


def test_plots_are_written(tmp_path):
    from PIL import Image

    from edgegen.analysis import plots

    c = np.array([1e5, 3e5, 1e6, 3e6])
    fit = fit_tradeoff(c, [0.3, 0.5, 0.7, 0.75], [10.0, 7.0, 3.0, 1.5])
    paths = [plots.plot_fit(fit, c, [0.3, 0.5, 0.7, 0.75], [10.0, 7.0, 3.0, 1.5], tmp_path / "fit.png"),
             plots.plot_utility(fit, [0.2, 0.5, 0.8], 0.0, 4e6, tmp_path / "u.png"),
             plots.plot_optimal_lambda(fit, 0.0, 4e6, tmp_path / "cstar.png", points=11),
             plots.plot_pareto([[1, 2], [2, 1], [3, 3]], [0, 1], ["a", "b", "c"], ["x", "y"], tmp_path / "p.png"),
             plots.plot_scatter([1, 2], [3, 4], ["a", "b"], "x", "y", tmp_path / "s.png"),
             plots.plot_bars([1.0, 2.0], ["a", "b"], "J", tmp_path / "b.png", errors=[0.1, 0.2])]
    for p in paths:
        with Image.open(p) as im:
            assert im.format == "PNG" and im.size[0] > 100


def test_the_utility_figures_name_the_quality(tmp_path, monkeypatch):
    from edgegen.analysis import plots

    texts = figure_texts(monkeypatch)
    c = np.array([1e5, 3e5, 1e6, 3e6])
    fit = fit_tradeoff(c, [300.0, 200.0, 150.0, 130.0], [1.0, 2.0, 5.0, 9.0], True, True)
    plots.plot_utility(fit, [0.5], 1e5, 3e6, tmp_path / "u.png", quality_name="1/FID-proxy")
    plots.plot_optimal_lambda(fit, 1e5, 3e6, tmp_path / "cstar.png", points=5, quality_name="1/FID-proxy")
    assert texts["u.png"] == ["utility and its maximum C* (dots), Q = 1/FID-proxy", "complexity (parameters)",
                              "utility F(C) = lambda Q/Qmax + (1-lambda) E\nQ = 1/FID-proxy"]
    assert texts["cstar.png"] == ["optimal complexity against lambda, Q = 1/FID-proxy",
                                  "lambda (weight of quality, Q = 1/FID-proxy)", "C* (parameters)"]


def test_a_higher_is_better_quality_is_kept_as_measured():
    bleu = [12.5, 30.0, 21.0]
    v, how = to_higher_is_better(bleu, lower_is_better=False, name="quality")
    assert v.dtype == np.float64 and v.tolist() == [12.5, 30.0, 21.0] and "higher is better" in how
    v, how = to_higher_is_better([20.0, 40.0, 5.0], lower_is_better=True, name="quality")
    assert v.tolist() == [1 / 20.0, 1 / 40.0, 1 / 5.0] and "reciprocal" in how


def test_atei_with_a_higher_is_better_quality_ranks_the_best_bleu_first():
    """BLEU (higher better), latency (lower better): Q = (bleu - min) / (max - min),
    E = (max - lat) / (max - lat_min), ATEI = 0.4 Q + 0.3 E + 0.3 D."""
    bleu = np.array([12.0, 30.0, 21.0, 27.0])
    latency = np.array([3.0, 9.0, 5.0, 4.0])
    deploy = np.array([0.2, 0.9, 0.5, 0.7])
    q = (bleu - bleu.min()) / (bleu.max() - bleu.min())
    e = (latency.max() - latency) / (latency.max() - latency.min())
    expected = 0.4 * q + 0.3 * e + 0.3 * deploy
    v = atei(bleu, latency, deploy, quality_lower_is_better=False)
    np.testing.assert_allclose(v, expected, rtol=1e-12, atol=1e-15)
    assert v[1] == pytest.approx(0.4 * 1 + 0.3 * 0 + 0.3 * 0.9)  # best BLEU, slowest
    assert v[0] == pytest.approx(0.4 * 0 + 0.3 * 1 + 0.3 * 0.2)  # worst BLEU, fastest
    # equal latency and deployment: the higher BLEU scores higher (lower_is_better=True would invert it)
    same = atei([10.0, 20.0], [2.0, 2.0], [0.5, 0.5], quality_lower_is_better=False)
    assert same[1] > same[0] and same[1] - same[0] == pytest.approx(0.4)
    flipped = atei([10.0, 20.0], [2.0, 2.0], [0.5, 0.5])
    assert flipped[0] - flipped[1] == pytest.approx(0.4)
