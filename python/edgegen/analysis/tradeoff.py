"""The quality/efficiency trade-off of "Lightweight Architectures for Generative AI".

Quality grows and efficiency falls with model complexity C (parameters or FLOPs):

    Q(C) = Qmax (1 - exp(-alpha C)),    E(C) = 1 / (beta C + gamma),
    F(C) = lam Q(C) / Qmax + (1 - lam) E(C),   0 <= lam <= 1,

and the optimal complexity C* maximises F. Here:

- :func:`fit_tradeoff` fits (alpha, Qmax) and (beta, gamma) to measured points with scipy
  (bounded to positive values, standard errors from the covariance). Metrics where lower is better
  (FID, perplexity, latency, energy) are turned into higher-is-better ones by the reciprocal
  ``x -> 1 / x``; efficiency is then divided by its largest observed value, so E lies in (0, 1]
  like Q / Qmax and ``lam`` weighs two comparable terms. Both transforms are recorded in the fit.
- :func:`optimal_complexity`: the global maximiser of F on [c_min, c_max]: every interior root of
  dF/dC bracketed on a grid and refined (brentq), compared with the two boundaries (F can have
  zero, one or two stationary points).
- :func:`pareto_front`, :func:`pareto_scores`, :func:`atei`: non-dominated points and two scores
  whose definitions (the paper gives none) are written down in their docstrings.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

__all__ = ["TradeoffFit", "fit_tradeoff", "utility", "optimal_complexity", "pareto_front", "pareto_scores",
           "atei", "ATEI_WEIGHTS", "to_higher_is_better"]

RECIPROCAL = "reciprocal (x -> 1/x, lower was better)"
IDENTITY = "as measured (higher is better)"


def to_higher_is_better(values, lower_is_better: bool, name: str) -> tuple[np.ndarray, str]:
    """(values as higher-is-better, the transform's description). Lower-is-better values must be
    positive: their reciprocal is used."""
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    if not np.isfinite(v).all():
        raise ValueError(f"{name}: contains NaN or infinite values")
    if lower_is_better:
        if (v <= 0).any():
            raise ValueError(f"{name}: lower-is-better values must be > 0 to be inverted, got min {v.min():g}")
        return 1.0 / v, RECIPROCAL
    if (v <= 0).any():
        raise ValueError(f"{name}: expected values > 0, got min {v.min():g}")
    return v, IDENTITY


@dataclass
class TradeoffFit:
    """Fitted Q(C) and E(C) (complexity in ``complexity_unit``; E normalised as stated in
    ``efficiency_transform``), their standard errors and R^2 on the fitted (transformed) data."""

    alpha: float
    q_max: float
    beta: float
    gamma: float
    alpha_se: float
    q_max_se: float
    beta_se: float
    gamma_se: float
    r2_quality: float
    r2_efficiency: float
    n: int
    complexity_unit: str
    quality_transform: str
    efficiency_transform: str
    efficiency_scale: float  # E = efficiency (after the transform) / efficiency_scale

    def quality(self, c) -> np.ndarray:
        return self.q_max * (1.0 - np.exp(-self.alpha * np.asarray(c, dtype=np.float64)))

    def efficiency(self, c) -> np.ndarray:
        return 1.0 / (self.beta * np.asarray(c, dtype=np.float64) + self.gamma)

    def utility(self, c, lam: float) -> np.ndarray:
        return utility(c, self.alpha, self.beta, self.gamma, lam)

    def optimal(self, lam: float, c_min: float, c_max: float) -> float:
        return optimal_complexity(self.alpha, self.beta, self.gamma, lam, c_min, c_max)

    def as_dict(self) -> dict:
        return asdict(self)


def _r2(y, pred) -> float:
    ss = float(((y - y.mean()) ** 2).sum())
    return 1.0 - float(((y - pred) ** 2).sum()) / ss if ss > 0 else float("nan")


def fit_tradeoff(complexity, quality, efficiency, quality_lower_is_better: bool = False,
                 efficiency_lower_is_better: bool = False, complexity_unit: str = "parameters") -> TradeoffFit:
    """Fit Q(C) = Qmax (1 - exp(-alpha C)) to (complexity, quality) and E(C) = 1 / (beta C +
    gamma) to (complexity, efficiency), all parameters > 0. At least 3 points with at least 2
    distinct complexities."""
    from scipy.optimize import curve_fit

    c = np.asarray(complexity, dtype=np.float64).reshape(-1)
    if c.size < 3:
        raise ValueError(f"complexity: expected at least 3 points, got {c.size}")
    if not np.isfinite(c).all() or (c <= 0).any():
        raise ValueError("complexity: expected finite values > 0")
    if np.unique(c).size < 2:
        raise ValueError("complexity: expected at least 2 distinct values")
    q, q_how = to_higher_is_better(quality, quality_lower_is_better, "quality")
    e, e_how = to_higher_is_better(efficiency, efficiency_lower_is_better, "efficiency")
    for name, arr in (("quality", q), ("efficiency", e)):
        if arr.size != c.size:
            raise ValueError(f"{name}: expected {c.size} values (one per complexity), got {arr.size}")
    scale_c = float(c.max())
    cs = c / scale_c  # fitted in units of the largest complexity: well conditioned
    e_scale = float(e.max())
    en = e / e_scale

    def q_model(x, a, qm):
        return qm * (1.0 - np.exp(-a * x))

    def e_model(x, b, g):
        return 1.0 / (b * x + g)

    tiny, big = 1e-9, 1e9
    with np.errstate(over="ignore", invalid="ignore"):
        # Qmax at least the largest observation; alpha from the median point's saturation.
        frac = min(max(np.median(q) / (1.05 * q.max()), 1e-3), 0.999)
        p0 = [max(-math.log(1.0 - frac) / max(np.median(cs), 1e-6), 1e-3), 1.05 * q.max()]
        (a, qm), qcov = curve_fit(q_model, cs, q, p0=p0, bounds=([tiny, tiny], [big, big]), maxfev=20000)
        inv = 1.0 / en  # linear in C for the efficiency model: a least-squares start
        slope, icept = np.polyfit(cs, inv, 1)
        p0e = [max(slope, 1e-6), max(icept, 1e-6)]
        (b, g), ecov = curve_fit(e_model, cs, en, p0=p0e, bounds=([tiny, tiny], [big, big]), maxfev=20000)
    qse = np.sqrt(np.clip(np.diag(qcov), 0, None)) if np.isfinite(qcov).all() else np.full(2, np.nan)
    ese = np.sqrt(np.clip(np.diag(ecov), 0, None)) if np.isfinite(ecov).all() else np.full(2, np.nan)
    return TradeoffFit(alpha=a / scale_c, q_max=float(qm), beta=b / scale_c, gamma=float(g),
                       alpha_se=float(qse[0]) / scale_c, q_max_se=float(qse[1]), beta_se=float(ese[0]) / scale_c,
                       gamma_se=float(ese[1]), r2_quality=_r2(q, q_model(cs, a, qm)),
                       r2_efficiency=_r2(en, e_model(cs, b, g)), n=int(c.size), complexity_unit=complexity_unit,
                       quality_transform=q_how,
                       efficiency_transform=f"{e_how}, divided by its largest value {e_scale:.6g}",
                       efficiency_scale=e_scale)


def _check_params(alpha, beta, gamma, lam):
    for name, v in (("alpha", alpha), ("beta", beta), ("gamma", gamma)):
        if not (isinstance(v, (int, float, np.floating)) and math.isfinite(v) and v > 0):
            raise ValueError(f"{name}: expected a finite value > 0, got {v!r}")
    if not (isinstance(lam, (int, float, np.floating)) and 0.0 <= lam <= 1.0):
        raise ValueError(f"lam: expected a value in [0, 1], got {lam!r}")


def utility(c, alpha: float, beta: float, gamma: float, lam: float) -> np.ndarray:
    """F(C) = lam (1 - exp(-alpha C)) + (1 - lam) / (beta C + gamma)."""
    _check_params(alpha, beta, gamma, lam)
    c = np.asarray(c, dtype=np.float64)
    return lam * (1.0 - np.exp(-alpha * c)) + (1.0 - lam) / (beta * c + gamma)


def optimal_complexity(alpha: float, beta: float, gamma: float, lam: float, c_min: float, c_max: float,
                       grid: int = 4097) -> float:
    """The global maximiser C* of F on [c_min, c_max]: the roots of
    dF/dC = lam alpha exp(-alpha C) - (1 - lam) beta / (beta C + gamma)^2 in every bracket of a
    ``grid``-point grid (geometric when c_min > 0), refined with brentq, compared with c_min and
    c_max. Ties go to the smaller complexity.

    Examples:
        >>> c_eff = optimal_complexity(alpha=1e-6, beta=1e-6, gamma=1.0, lam=0.0, c_min=1e4, c_max=1e7)
        >>> c_qual = optimal_complexity(alpha=1e-6, beta=1e-6, gamma=1.0, lam=1.0, c_min=1e4, c_max=1e7)
        >>> c_eff, c_qual                       # efficiency only: the smallest; quality only: the largest
        (10000.0, 10000000.0)
    """
    from scipy.optimize import brentq

    _check_params(alpha, beta, gamma, lam)
    for name, v in (("c_min", c_min), ("c_max", c_max)):
        if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
            raise ValueError(f"{name}: expected a number (a complexity), got {v!r}")
    if not (math.isfinite(c_min) and math.isfinite(c_max) and 0 <= c_min < c_max):
        raise ValueError(f"c_min, c_max: expected 0 <= c_min < c_max, finite; got {c_min!r}, {c_max!r}")

    def dfdc(x):
        return lam * alpha * math.exp(-alpha * x) - (1.0 - lam) * beta / (beta * x + gamma) ** 2

    xs = np.geomspace(c_min, c_max, grid) if c_min > 0 else np.linspace(c_min, c_max, grid)
    ds = np.array([dfdc(x) for x in xs])
    candidates = [c_min, c_max]
    for i in np.nonzero(np.sign(ds[:-1]) * np.sign(ds[1:]) < 0)[0]:
        candidates.append(brentq(dfdc, xs[i], xs[i + 1], xtol=1e-12 * max(1.0, xs[i + 1]), maxiter=200))
    candidates += list(xs[ds == 0.0])
    values = utility(np.array(candidates), alpha, beta, gamma, lam)
    best = values.max()
    return float(min(c for c, v in zip(candidates, values) if v >= best - 1e-15 * max(1.0, abs(best))))


def pareto_front(points, minimize) -> np.ndarray:
    """Indices (ascending) of the non-dominated rows of ``points`` [n, d]; ``minimize``: one bool
    per column (True: lower is better). A row is dominated when another is at least as good in
    every column and strictly better in one; identical rows do not dominate each other.

    Examples:
        >>> pareto_front([[1.0, 5.0], [2.0, 3.0], [3.0, 4.0], [4.0, 1.0]], minimize=[True, True]).tolist()
        [0, 1, 3]
    """
    try:
        p = np.asarray(points, dtype=np.float64)
    except (TypeError, ValueError) as exc:  # rows of different lengths, or something not a number
        raise ValueError(f"points: expected a non-empty 2-D array [n, d] of numbers ({exc})") from None
    if p.ndim != 2 or p.shape[0] == 0:
        raise ValueError(f"points: expected a non-empty 2-D array [n, d], got shape {p.shape}")
    if not np.isfinite(p).all():
        raise ValueError("points: contains NaN or infinite values")
    flags = list(minimize) if isinstance(minimize, (list, tuple, np.ndarray)) else None
    if flags is None or not all(isinstance(f, (bool, np.bool_)) for f in flags):  # "False" would count as True
        raise ValueError(f"minimize: expected a list of bools (one per column), got {minimize!r}")
    m = np.asarray(flags, dtype=bool).reshape(-1)
    if m.size != p.shape[1]:
        raise ValueError(f"minimize: expected {p.shape[1]} flags (one per column), got {m.size}")
    cost = np.where(m, p, -p)  # everything to be minimised
    le = (cost[:, None, :] <= cost[None, :, :]).all(-1)  # le[j, i]: j at least as good as i everywhere
    lt = (cost[:, None, :] < cost[None, :, :]).any(-1)
    dominated = (le & lt).any(0)
    return np.nonzero(~dominated)[0]


def _normalise_better(points, minimize) -> np.ndarray:
    """Each column mapped to [0, 1] with 1 the best observed value (constant columns: 1)."""
    p = np.asarray(points, dtype=np.float64)
    m = np.asarray(minimize, dtype=bool).reshape(-1)
    lo, hi = p.min(0), p.max(0)
    span = np.where(hi > lo, hi - lo, 1.0)
    good = np.where(m, (hi - p) / span, (p - lo) / span)
    return np.where(hi > lo, good, 1.0)


def pareto_scores(points, minimize) -> np.ndarray:
    """Pareto efficiency score per row, in [0, 1] (edgegen's definition; the paper names the
    score without defining it): objectives are min-max normalised over the rows compared (1 = best
    observed), and the score is 1 - d / sqrt(D), with d the Euclidean distance to the nearest
    non-dominated row in that space and D the number of objectives. Front rows score 1."""
    front = pareto_front(points, minimize)
    n = _normalise_better(points, minimize)
    d = np.sqrt(((n[:, None, :] - n[None, front, :]) ** 2).sum(-1)).min(1)
    return 1.0 - d / math.sqrt(n.shape[1])


ATEI_WEIGHTS = {"quality": 0.4, "efficiency": 0.3, "deployment": 0.3}


def atei(quality, efficiency, deployment, quality_lower_is_better: bool = True,
         efficiency_lower_is_better: bool = True, weights: dict | None = None) -> np.ndarray:
    """Adaptive Trade-off Evaluation Index per model (edgegen's definition; the paper names the
    index without defining it):

        ATEI = w_q Q + w_e E + w_d D,   default weights 0.4, 0.3, 0.3,

    with Q the quality and E the computational efficiency (e.g. FID and latency, lower better by
    default) min-max normalised over the models compared (1 = best), and D the deployment
    feasibility in [0, 1] given per model (for example the mean over the edge device profiles of
    min(1, latency budget / projected latency))."""
    w = dict(ATEI_WEIGHTS if weights is None else weights)
    if set(w) != set(ATEI_WEIGHTS) or any(not (v >= 0) for v in w.values()) or not math.isclose(sum(w.values()), 1):
        raise ValueError(f"weights: expected non-negative quality/efficiency/deployment weights summing to 1, got {w}")
    q = np.asarray(quality, dtype=np.float64).reshape(-1)
    e = np.asarray(efficiency, dtype=np.float64).reshape(-1)
    d = np.asarray(deployment, dtype=np.float64).reshape(-1)
    if not (q.size == e.size == d.size) or q.size == 0:
        raise ValueError(f"quality, efficiency, deployment: expected equal non-zero lengths, got {q.size}, {e.size}, "
                         f"{d.size}")
    if not (np.isfinite(q).all() and np.isfinite(e).all() and np.isfinite(d).all()):
        raise ValueError("quality, efficiency, deployment: contain NaN or infinite values")
    if ((d < 0) | (d > 1)).any():
        raise ValueError("deployment: expected values in [0, 1]")
    n = _normalise_better(np.stack([q, e], 1), [quality_lower_is_better, efficiency_lower_is_better])
    return w["quality"] * n[:, 0] + w["efficiency"] * n[:, 1] + w["deployment"] * d
