"""Statistics over seeds against hand-computed values and scipy's own functions."""

import math

import pytest

from edgegen.analysis import paired_ttest, summarize


def test_summary_hand_computed():
    s = summarize([1.0, 2.0, 3.0])
    assert s.n == 3 and s.mean == 2.0 and s.std == 1.0
    half = 4.302652729911275 * 1.0 / math.sqrt(3)  # t_{0.975, 2}
    assert s.ci_low == pytest.approx(2.0 - half) and s.ci_high == pytest.approx(2.0 + half)
    one = summarize([5.0])
    assert math.isnan(one.std) and math.isnan(one.ci_low)  # one seed measures no spread
    assert str(one) == "5 (n=1: no spread)"
    assert str(s).startswith("2 +- 1 (95% CI")


def test_summary_interval_matches_scipy_at_other_levels():
    from scipy import stats

    vals = [0.3, 1.9, 2.2, 4.0, 2.5]
    s = summarize(vals, confidence=0.9)
    lo, hi = stats.t.interval(0.9, len(vals) - 1, loc=stats.tmean(vals), scale=stats.sem(vals))
    assert (s.ci_low, s.ci_high) == (pytest.approx(lo), pytest.approx(hi))
    assert "90% CI" in str(s)


def test_paired_ttest_matches_the_formula():
    base = [1.0, 2.0, 3.0, 4.0]
    var = [1.5, 2.4, 3.7, 4.4]
    d = [0.5, 0.4, 0.7, 0.4]
    mean = sum(d) / 4
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / 3)
    t = mean / (sd / 2)
    r = paired_ttest(base, var)
    assert r["t"] == pytest.approx(t) and r["mean_diff"] == pytest.approx(mean)
    assert r["significant"] and 0 < r["p"] < 0.01
    same = paired_ttest(base, base)
    assert same["p"] == 1.0 and not same["significant"]


def test_constant_nonzero_difference_is_significant_with_infinite_t():
    """Every pair differs by the same amount: no spread, so t is infinite with the sign of the
    difference and p is 0 (whatever alpha)."""
    up = paired_ttest([1, 2, 3], [2, 3, 4])
    assert up == {"t": math.inf, "p": 0.0, "mean_diff": 1.0, "significant": True}
    down = paired_ttest([1.0, 2.0, 3.0], [0.5, 1.5, 2.5], alpha=1e-9)
    assert down == {"t": -math.inf, "p": 0.0, "mean_diff": -0.5, "significant": True}
    same = paired_ttest([1.0, 2.0], [1.0, 2.0])
    assert math.isnan(same["t"]) and same["p"] == 1.0 and same["mean_diff"] == 0.0 and not same["significant"]


def test_bad_input():
    with pytest.raises(ValueError, match="values"):
        summarize([])
    with pytest.raises(ValueError, match="values"):
        summarize([1.0, float("nan")])
    with pytest.raises(ValueError, match="variant"):
        paired_ttest([1, 2], [1])
    with pytest.raises(ValueError, match="baseline"):
        paired_ttest([1], [2])
    for level in (95, 0.0, 1.0, -0.5, True):
        with pytest.raises(ValueError, match="confidence"):
            summarize([1.0, 2.0, 3.0], confidence=level)
    with pytest.raises(ValueError, match="values"):
        summarize(["a", 1.0])
    with pytest.raises(ValueError, match="variant"):
        paired_ttest([1, 2], [float("inf"), 3])
    with pytest.raises(ValueError, match="baseline"):
        paired_ttest([float("nan"), 2], [1, 3])
    with pytest.raises(ValueError, match="alpha"):
        paired_ttest([1, 2], [2, 4], alpha=5)


def test_two_seeds_print_no_interval():
    two = summarize([1.0, 2.0])
    assert str(two) == "1.5 +- 0.71 (n=2: no interval)"  # std sqrt(0.5); t on 1 degree of freedom: no CI shown
    half = 4.302652729911275 * math.sqrt(7 / 3) / math.sqrt(3)  # t_{0.975, 2} x std / sqrt(n); std^2 = 7/3
    assert str(summarize([1.0, 2.0, 4.0])) == f"2.333 +- 1.5 (95% CI {7 / 3 - half:.4g} .. {7 / 3 + half:.4g}, n=3)"


@pytest.mark.parametrize("values, kind", [("123", "str"), (b"12", "bytes"), ({"1.5": 0, "2.5": 0}, "dict")],
                         ids=["str", "bytes", "dict"])
def test_strings_and_mappings_are_not_values(values, kind):
    with pytest.raises(ValueError, match=f"^values: expected a sequence of numbers, got a {kind}$"):
        summarize(values)
    with pytest.raises(ValueError, match=f"^baseline: expected a sequence of numbers, got a {kind}$"):
        paired_ttest(values, [1.0, 2.0])
