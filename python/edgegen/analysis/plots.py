"""Figures of the trade-off analysis (matplotlib, Agg backend, PNG): each function writes one file
and returns its path. Titles and axis labels carry the units and the labels (measured /
estimated / projected, FID-proxy) of what is drawn."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

__all__ = ["plot_fit", "plot_utility", "plot_optimal_lambda", "plot_pareto", "plot_scatter", "plot_bars"]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path) -> str:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _plt().close(fig)
    return str(path)


def plot_fit(fit, complexity, quality, efficiency, path, quality_name: str = "quality",
             efficiency_name: str = "efficiency") -> str:
    """Measured points (transformed as the fit states) and the fitted Q(C) and E(C), side by side."""
    from edgegen.analysis.tradeoff import to_higher_is_better

    plt = _plt()
    c = np.asarray(complexity, dtype=float)
    q, _ = to_higher_is_better(quality, "reciprocal" in fit.quality_transform, "quality")
    e, _ = to_higher_is_better(efficiency, "reciprocal" in fit.efficiency_transform, "efficiency")
    grid = np.linspace(0, c.max() * 1.1, 200)
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.6))
    a.scatter(c, q, label="measured")
    a.plot(grid, fit.quality(grid), label=f"Qmax(1-exp(-aC)), a={fit.alpha:.3g}, R2={fit.r2_quality:.3f}")
    a.set_xlabel(f"complexity ({fit.complexity_unit})")
    a.set_ylabel(f"{quality_name}\n[{fit.quality_transform}]", fontsize=8)
    a.legend(fontsize=7)
    b.scatter(c, e / fit.efficiency_scale, label="measured")
    b.plot(grid, fit.efficiency(grid), label=f"1/(bC+g), R2={fit.r2_efficiency:.3f}")
    b.set_xlabel(f"complexity ({fit.complexity_unit})")
    b.set_ylabel(f"{efficiency_name}\n[{fit.efficiency_transform}]", fontsize=8)
    b.legend(fontsize=7)
    return _save(fig, path)


def plot_utility(fit, lams: Sequence[float], c_min: float, c_max: float, path, quality_name: str = "quality") -> str:
    """F(C) for several lambda, C* marked on each curve; ``quality_name`` (as in :func:`plot_fit`)
    says what Q is, with its label (e.g. 1/FID-proxy)."""
    plt = _plt()
    grid = np.linspace(c_min, c_max, 400)
    fig, ax = plt.subplots(figsize=(6, 4))
    for lam in lams:
        line, = ax.plot(grid, fit.utility(grid, lam), label=f"lambda={lam:g}")
        cs = fit.optimal(lam, c_min, c_max)
        ax.plot([cs], [fit.utility(cs, lam)], "o", color=line.get_color())
    ax.set_xlabel(f"complexity ({fit.complexity_unit})")
    ax.set_ylabel(f"utility F(C) = lambda Q/Qmax + (1-lambda) E\nQ = {quality_name}", fontsize=8)
    ax.set_title(f"utility and its maximum C* (dots), Q = {quality_name}")
    ax.legend(fontsize=7)
    return _save(fig, path)


def plot_optimal_lambda(fit, c_min: float, c_max: float, path, points: int = 51,
                        quality_name: str = "quality") -> str:
    """C*(lambda) over [0, 1]; ``quality_name`` as in :func:`plot_utility`."""
    plt = _plt()
    lams = np.linspace(0, 1, points)
    fig, ax = plt.subplots(figsize=(5, 3.6))
    ax.plot(lams, [fit.optimal(float(l), c_min, c_max) for l in lams])
    ax.set_xlabel(f"lambda (weight of quality, Q = {quality_name})")
    ax.set_ylabel(f"C* ({fit.complexity_unit})")
    ax.set_title(f"optimal complexity against lambda, Q = {quality_name}")
    return _save(fig, path)


def plot_pareto(points, front, names: Sequence[str], axis_names: Sequence[str], path, title: str = "") -> str:
    """A 2-D scatter of the first two columns with the non-dominated rows highlighted."""
    plt = _plt()
    p = np.asarray(points, dtype=float)
    on = np.zeros(len(p), dtype=bool)
    on[np.asarray(front, dtype=int)] = True
    fig, ax = plt.subplots(figsize=(5.5, 4))
    ax.scatter(p[~on, 0], p[~on, 1], c="0.6", label="dominated")
    order = np.argsort(p[on, 0])
    ax.plot(p[on, 0][order], p[on, 1][order], "o-", c="C3", label="Pareto front")
    for (x, y), n in zip(p[:, :2], names):
        ax.annotate(n, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel(axis_names[0])
    ax.set_ylabel(axis_names[1])
    ax.set_title(title or "Pareto front")
    ax.legend(fontsize=7)
    return _save(fig, path)


def plot_scatter(x, y, names: Sequence[str], x_name: str, y_name: str, path, title: str = "") -> str:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 4))
    ax.scatter(x, y)
    for xi, yi, n in zip(x, y, names):
        ax.annotate(n, (xi, yi), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel(x_name)
    ax.set_ylabel(y_name)
    if title:
        ax.set_title(title)
    return _save(fig, path)


def plot_bars(values, names: Sequence[str], y_name: str, path, title: str = "", errors=None) -> str:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(4.0, 0.8 * len(names) + 2), 3.6))
    ax.bar(range(len(values)), values, yerr=errors, capsize=3)
    ax.set_xticks(range(len(values)))
    ax.set_xticklabels(names, rotation=30, ha="right", fontsize=7)
    ax.set_ylabel(y_name)
    if title:
        ax.set_title(title)
    return _save(fig, path)
