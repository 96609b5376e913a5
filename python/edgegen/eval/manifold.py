"""Fidelity and diversity of generated samples apart, where FID and KID fold them into one number:
precision and recall (Kynkaanniemi et al. 2019, "Improved Precision and Recall Metric for
Assessing Generative Models") and density and coverage (Naeem et al. 2020, "Reliable Fidelity and
Diversity Metrics for Generative Models"), on k-nearest-neighbour balls in a feature space.

Each real sample i gets a ball of radius r_i, the distance to its k-th nearest other real sample
(generated samples likewise, for recall). Then, with N real and M generated samples:

- precision: the fraction of generated samples inside at least one real ball (fidelity);
- recall: the fraction of real samples inside at least one generated ball (diversity);
- density: the number of (generated sample, real ball containing it) pairs / (k M) (fidelity that
  counts how deep inside the real manifold a sample lies; 1 on average for matching distributions,
  above 1 possible);
- coverage: the fraction of real balls holding at least one generated sample (diversity that
  ignores outliers among the generated samples).

A compressed generator that collapses onto fewer modes keeps its precision and loses recall and
coverage, which FID alone does not tell apart from blurrier samples. Like FID, the numbers are
only comparable between runs with the same feature network, k and sample counts (both
estimators depend on them); edgegen names them after the network (``precision_proxy`` with the
FID-proxy network).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from edgegen.eval.frechet import _as_float64_matrix
from edgegen.ops._args import is_int

__all__ = ["ManifoldResult", "manifold_metrics"]


@dataclass
class ManifoldResult:
    """Precision, recall, density and coverage with ``k`` neighbours on ``n_real`` and
    ``n_generated`` samples."""

    precision: float
    recall: float
    density: float
    coverage: float
    k: int
    n_real: int
    n_generated: int


def _squared_distances(a: torch.Tensor, b: torch.Tensor, b_norms: torch.Tensor) -> torch.Tensor:
    """[len(a), len(b)] squared Euclidean distances in float64, clipped at 0 (the expansion
    |a|^2 + |b|^2 - 2 a.b can round just below it)."""
    d = (a * a).sum(1, keepdim=True) + b_norms[None, :] - 2.0 * (a @ b.T)
    return d.clamp_min_(0.0)


def _radii(x: torch.Tensor, k: int, block: int) -> torch.Tensor:
    """Squared distance of each row of ``x`` to its k-th nearest other row."""
    norms = (x * x).sum(1)
    out = torch.empty(x.shape[0], dtype=x.dtype)
    for i in range(0, x.shape[0], block):
        d = _squared_distances(x[i:i + block], x, norms)
        rows = torch.arange(d.shape[0])
        d[rows, rows + i] = float("inf")  # not its own neighbour
        out[i:i + block] = d.kthvalue(k, dim=1).values
    return out


def manifold_metrics(real_features, generated_features, k: int = 5, block: int = 1024) -> ManifoldResult:
    """Precision, recall, density and coverage of ``generated_features`` [M, d] against
    ``real_features`` [N, d] (tensors or arrays, one row per sample; float64 throughout) with
    ``k`` nearest neighbours (default 5, as Naeem et al. use for all four; Kynkaanniemi et al. use
    3 for precision and recall). A sample lies inside a ball when its distance is at most the
    radius. Distances are computed in blocks of ``block`` rows, so memory stays at
    ``block * max(N, M)`` values whatever the sample counts. Needs more than ``k`` samples on each
    side; the estimates are biased at small counts (thousands of samples are usual)."""
    real = _as_float64_matrix(real_features, "real_features")
    gen = _as_float64_matrix(generated_features, "generated_features")
    if gen.shape[1] != real.shape[1]:
        raise ValueError(f"generated_features: expected {real.shape[1]} features per row (those of real_features), "
                         f"got {gen.shape[1]}")
    if not is_int(k) or k < 1:
        raise ValueError(f"k: expected an int >= 1, got {k!r}")
    if not is_int(block) or block < 1:
        raise ValueError(f"block: expected an int >= 1, got {block!r}")
    for name, x in (("real_features", real), ("generated_features", gen)):
        if x.shape[0] <= k:
            raise ValueError(f"{name}: expected more than k = {k} samples (each needs k other samples to set its "
                             f"ball), got {x.shape[0]}")
    r, g = torch.from_numpy(real), torch.from_numpy(gen)
    r_radii, g_radii = _radii(r, k, block), _radii(g, k, block)
    r_norms = (r * r).sum(1)
    inside_any = 0  # generated samples inside at least one real ball
    pairs = 0  # (generated sample, real ball) pairs
    covered = torch.zeros(r.shape[0], dtype=torch.bool)  # real balls holding a generated sample
    recalled = torch.zeros(r.shape[0], dtype=torch.bool)  # real samples inside a generated ball
    for j in range(0, g.shape[0], block):  # each (generated, real) distance computed once
        d = _squared_distances(g[j:j + block], r, r_norms)
        inside = d <= r_radii[None, :]
        inside_any += int(inside.any(1).sum())
        pairs += int(inside.sum())
        covered |= inside.any(0)
        recalled |= (d <= g_radii[j:j + block, None]).any(0)
    n, m = r.shape[0], g.shape[0]
    return ManifoldResult(precision=inside_any / m, recall=int(recalled.sum()) / n, density=pairs / (k * m),
                          coverage=int(covered.sum()) / n, k=int(k), n_real=n, n_generated=m)
