"""Distances between feature distributions: the Frechet distance of FID (Heusel et al. 2017) on
streaming Gaussian statistics, and KID (Binkowski et al. 2018), the unbiased squared MMD with the
cubic polynomial kernel, averaged over subsets.

Both take features (one row per sample). Which network produced them decides what the number is
called: Inception-v3 pool features from the standard weights give FID/KID; anything else must be
reported under another name (edgegen labels its fallback "FID-proxy").
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

__all__ = ["GaussianStats", "frechet_distance", "frechet_distance_checked", "frechet_distance_stats", "kid",
           "KIDResult"]


def _as_float64(x, name: str, shape_ok, expected: str) -> np.ndarray:
    """x (tensor or array) as a finite float64 array whose shape passes ``shape_ok``."""
    if isinstance(x, Tensor):
        x = x.detach().cpu().to(torch.float64).numpy()
    a = np.asarray(x, dtype=np.float64)
    if not shape_ok(a.shape):
        raise ValueError(f"{name}: expected {expected}, got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name}: contains NaN or infinite values")
    return a


def _as_float64_matrix(x, name: str) -> np.ndarray:
    return _as_float64(x, name, lambda s: len(s) == 2, "a 2-D array [samples, features]")


class GaussianStats:
    """Running mean and covariance of feature rows, in float64, merged batch by batch (Chan et
    al.'s pairwise update), so any number of samples streams through without being kept.

    ``update(features)`` takes [n, d] (tensor or array); ``mean`` and ``covariance`` (unbiased,
    n - 1) are ready at any time; ``merge(other)`` combines two accumulators; ``state_dict`` /
    ``from_state_dict`` let statistics of real data be cached.
    """

    def __init__(self, dim: int | None = None):
        self.dim = dim
        self.count = 0
        self._mean = None if dim is None else np.zeros(dim)
        self._comoment = None if dim is None else np.zeros((dim, dim))

    def update(self, features) -> "GaussianStats":
        x = _as_float64_matrix(features, "features")
        if self.dim is None:
            self.dim = x.shape[1]
            self._mean = np.zeros(self.dim)
            self._comoment = np.zeros((self.dim, self.dim))
        if x.shape[1] != self.dim:
            raise ValueError(f"features: expected {self.dim} features per row, got {x.shape[1]}")
        n = x.shape[0]
        if n == 0:
            return self
        mean_b = x.mean(axis=0)
        centred = x - mean_b
        self._combine(n, mean_b, centred.T @ centred)
        return self

    def _combine(self, n_b: int, mean_b: np.ndarray, comoment_b: np.ndarray) -> None:
        n_a = self.count
        n = n_a + n_b
        delta = mean_b - self._mean
        self._mean = self._mean + delta * (n_b / n)
        self._comoment = self._comoment + comoment_b + np.outer(delta, delta) * (n_a * n_b / n)
        self.count = n

    def merge(self, other: "GaussianStats") -> "GaussianStats":
        if other.count == 0:
            return self
        if self.dim is None:
            self.dim = other.dim
            self._mean = np.zeros(self.dim)
            self._comoment = np.zeros((self.dim, self.dim))
        if other.dim != self.dim:
            raise ValueError(f"other: expected statistics of {self.dim} features, got {other.dim}")
        self._combine(other.count, other._mean, other._comoment)
        return self

    @property
    def mean(self) -> np.ndarray:
        if self.count == 0:
            raise ValueError("GaussianStats: no samples yet")
        return self._mean.copy()

    @property
    def covariance(self) -> np.ndarray:
        if self.count < 2:
            raise ValueError(f"GaussianStats: a covariance needs at least 2 samples, have {self.count}")
        return self._comoment / (self.count - 1)

    def state_dict(self) -> dict:
        return {"count": self.count, "mean": self._mean, "comoment": self._comoment}

    @classmethod
    def from_state_dict(cls, state: dict) -> "GaussianStats":
        if state.get("mean") is None:
            raise ValueError("state: expected the statistics of an accumulator that knows its feature count, got "
                             "mean None (an empty GaussianStats() without dim: nothing to restore)")
        s = cls(int(np.asarray(state["mean"]).shape[0]))
        s.count = int(state["count"])
        s._mean = np.asarray(state["mean"], dtype=np.float64)
        s._comoment = np.asarray(state["comoment"], dtype=np.float64)
        return s


#: Largest accepted relative residual ||R R - S1 S2||_F / ||S1 S2||_F of the square root R.
#: scipy's float64 roots of covariance products leave residuals near 1e-14 (also when a feature is
#: constant on one or both sides, e.g. a ReLU unit that never fires, when scipy warns that the
#: product is singular); a residual above 1e-8 means R is not a root of S1 S2 to the precision the
#: distance needs, and the root is taken again with ``eps`` on the diagonals.
SQRTM_RESIDUAL_TOL = 1e-8
#: Largest imaginary part of the root, relative to its largest real entry, taken as rounding. The
#: root of a product of two covariances is real; a larger imaginary part in the first root (e.g.
#: fewer samples than features, many eigenvalues rounded around 0) is regularised, and after
#: ``eps`` is an error (the inputs are not covariances).
SQRTM_IMAG_TOL = 1e-3


def _sqrtm_product(sigma1: np.ndarray, sigma2: np.ndarray, diagnose: bool = True) -> tuple[np.ndarray, str]:
    """(S1 S2)^(1/2) and what is wrong with it: "" when it is finite, real up to
    :data:`SQRTM_IMAG_TOL` and its relative residual is at most :data:`SQRTM_RESIDUAL_TOL`, else a
    description. scipy's LinAlgWarning (a singular product) alone is no defect: a product with a
    zero eigenvalue can have an exact root. ``diagnose=False`` skips the checks (the root of the
    regularised product, which is used as it is: no second residual product)."""
    from scipy import linalg

    product = sigma1 @ sigma2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        with np.errstate(all="ignore"):
            root = linalg.sqrtm(product)
    if isinstance(root, tuple):  # older scipy returned (root, error estimate)
        root = root[0]
    if not diagnose:
        return root, ""
    if not np.isfinite(root).all():
        return root, "is not finite"
    imag = _relative_imag(root)
    if imag > SQRTM_IMAG_TOL:
        return root, f"has an imaginary part of {imag:.3g} of its largest real entry (above {SQRTM_IMAG_TOL:g})"
    with np.errstate(all="ignore"):
        scale = np.linalg.norm(product)
        error = np.linalg.norm(root @ root - product)
    residual = error / scale if scale > 0 else error  # a zero product: its root must be zero
    if not residual <= SQRTM_RESIDUAL_TOL:
        return root, (f"has a relative residual ||R R - S1 S2|| / ||S1 S2|| of {residual:.3g} (above "
                      f"{SQRTM_RESIDUAL_TOL:g})")
    return root, ""


def _relative_imag(root: np.ndarray) -> float:
    if not np.iscomplexobj(root):
        return 0.0
    return float(np.abs(root.imag).max() / max(np.abs(root.real).max(), 1e-300))


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6) -> float:
    """||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)), in float64.

    Inputs are numpy arrays or tensors. When scipy's square root R of the product of the
    covariances is not finite, not real (imaginary part above :data:`SQRTM_IMAG_TOL` of the
    largest real entry) or not a root (relative residual ||R R - S1 S2|| / ||S1 S2|| above
    :data:`SQRTM_RESIDUAL_TOL`), it is taken again with ``eps`` added to both diagonals, with a
    warning saying which. A singular product alone (constant features, fewer samples than
    features) is not regularised when its root is exact. An imaginary part that is still not
    negligible after that is an error; a negligible one (rounding) is discarded.
    """
    value, regularised, why = _frechet(mu1, sigma1, mu2, sigma2, eps)
    if regularised:
        warnings.warn(f"frechet_distance: scipy's square root of the product of the covariances {why}; adding {eps:g} "
                      "to their diagonals (the distance is then approximate)", RuntimeWarning, stacklevel=2)
    return value


def frechet_distance_checked(mu1, sigma1, mu2, sigma2, eps: float = 1e-6) -> tuple[float, bool]:
    """(:func:`frechet_distance`, whether ``eps`` had to be added to the diagonals because the
    square root of the product of the covariances was not finite or not accurate), without the
    warning: for callers that report the approximation themselves (:func:`edgegen.eval.fid` sets
    ``reliable=False``)."""
    value, regularised, _ = _frechet(mu1, sigma1, mu2, sigma2, eps)
    return value, regularised


def _frechet(mu1, sigma1, mu2, sigma2, eps: float) -> tuple[float, bool, str]:
    """(distance, whether ``eps`` was added, what was detected in the first square root)."""
    m1 = np.atleast_1d(_as_vector(mu1, "mu1"))
    m2 = np.atleast_1d(_as_vector(mu2, "mu2"))
    s1 = _as_square(sigma1, "sigma1", m1.shape[0])
    s2 = _as_square(sigma2, "sigma2", m1.shape[0])
    if m2.shape != m1.shape:
        raise ValueError(f"mu2: expected shape {m1.shape} (that of mu1), got {m2.shape}")
    if not (math.isfinite(eps) and eps > 0):
        raise ValueError(f"eps: expected a finite value > 0, got {eps}")
    diff = m1 - m2
    root, why = _sqrtm_product(s1, s2)
    if why:
        offset = np.eye(s1.shape[0]) * eps
        root, _ = _sqrtm_product(s1 + offset, s2 + offset, diagnose=False)
    imag = _relative_imag(root)
    if imag > SQRTM_IMAG_TOL:
        raise ValueError(f"frechet_distance: the matrix square root has an imaginary part of {imag:.3g} of its "
                         "largest real entry; the covariances are not valid (symmetric positive semi-definite) or "
                         "too ill-conditioned")
    root = root.real
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * np.trace(root)), bool(why), why


def frechet_distance_stats(stats1: GaussianStats, stats2: GaussianStats, eps: float = 1e-6) -> float:
    """frechet_distance of two accumulated feature distributions. Warns when either side has no
    more samples than features: its covariance is then singular and the distance unreliable
    (FID is normally computed from 10,000 to 50,000 samples of 2,048 features)."""
    for name, st in (("stats1", stats1), ("stats2", stats2)):
        if not isinstance(st, GaussianStats):
            raise TypeError(f"{name}: expected GaussianStats, got {type(st).__name__}")
        if st.count <= (st.dim or 0):
            warnings.warn(f"{name}: {st.count} samples of {st.dim} features: the covariance is singular and the "
                          "Frechet distance unreliable at this size", RuntimeWarning, stacklevel=2)
    return frechet_distance(stats1.mean, stats1.covariance, stats2.mean, stats2.covariance, eps)


def _as_vector(x, name: str) -> np.ndarray:
    return _as_float64(x, name, lambda s: len(s) == 1, "a 1-D mean vector")


def _as_square(x, name: str, d: int) -> np.ndarray:
    return _as_float64(x, name, lambda s: s == (d, d), f"a [{d}, {d}] covariance matrix")


@dataclass
class KIDResult:
    """KID estimate: the mean of the unbiased MMD^2 over subsets, and its standard error."""

    value: float
    std_error: float
    subsets: int
    subset_size: int


def kid(features1, features2, subsets: int = 100, subset_size: int = 1000, seed: int = 0) -> KIDResult:
    """Kernel Inception Distance: unbiased MMD^2 between the two feature sets with the kernel
    k(x, y) = (x.y / d + 1)^3, computed on ``subsets`` random subsets of ``subset_size`` samples
    drawn without replacement from each side (capped at the smaller set's size), averaged; the
    standard error is the subsets' standard deviation / sqrt(subsets) (NaN when every subset is the
    whole of both sets, which leaves no spread to measure). Deterministic for a seed."""
    a = _as_float64_matrix(features1, "features1")
    b = _as_float64_matrix(features2, "features2")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"features2: expected {a.shape[1]} features per row (those of features1), got {b.shape[1]}")
    if not isinstance(subsets, int) or subsets < 1:
        raise ValueError(f"subsets: expected an int >= 1, got {subsets!r}")
    if not isinstance(subset_size, int) or subset_size < 2:
        raise ValueError(f"subset_size: expected an int >= 2, got {subset_size!r}")
    m = min(subset_size, a.shape[0], b.shape[0])
    if m < 2:
        raise ValueError(f"features1, features2: KID needs at least 2 samples on each side, got {a.shape[0]} and "
                         f"{b.shape[0]}")
    d = a.shape[1]
    rng = np.random.default_rng(seed)
    values = np.empty(subsets)
    for s in range(subsets):
        x = a[rng.choice(a.shape[0], m, replace=False)]
        y = b[rng.choice(b.shape[0], m, replace=False)]
        kxx = (x @ x.T / d + 1.0) ** 3
        kyy = (y @ y.T / d + 1.0) ** 3
        kxy = (x @ y.T / d + 1.0) ** 3
        values[s] = ((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
                     - 2.0 * kxy.mean())
    # Subsets holding every sample of both sides are all the same set: no spread to estimate.
    whole = m == a.shape[0] and m == b.shape[0]
    se = float(values.std(ddof=1) / math.sqrt(subsets)) if subsets > 1 and not whole else float("nan")
    return KIDResult(float(values.mean()), se, subsets, m)
