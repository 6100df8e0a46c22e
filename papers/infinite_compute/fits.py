"""Power-law fits L(x) = A / x^alpha + E, bootstrap intervals, and the data-efficiency multiplier.

x is normalised by its smallest value before fitting (A is then the excess loss at the smallest x), which
keeps the least-squares problem well scaled for parameter counts, ensemble sizes and token counts alike.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class PowerLaw:
    A: float          # in units of x / x_ref
    alpha: float
    E: float
    x_ref: float

    def __call__(self, x) -> np.ndarray:
        return self.A / (np.asarray(x, np.float64) / self.x_ref) ** self.alpha + self.E

    def inverse(self, loss: float) -> float:
        """x at which the law reaches `loss` (inf when loss <= E: never)."""
        if loss <= self.E:
            return float("inf")
        return float(self.x_ref * (self.A / (loss - self.E)) ** (1.0 / self.alpha))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _solve_given_alpha(u: np.ndarray, y: np.ndarray, alphas: np.ndarray, e_max: float):
    """For each alpha the law is linear in (A, E): closed-form least squares with A >= 0, 0 <= E <= e_max."""
    x = u[None, :] ** -alphas[:, None]                                   # [n_alpha, n]
    xm, ym = x.mean(1), y.mean()
    cov = ((x - xm[:, None]) * (y - ym)[None]).sum(1)
    var = np.maximum(((x - xm[:, None]) ** 2).sum(1), 1e-300)
    a = cov / var
    e = ym - a * xm
    clipped = (e < 0) | (e > e_max) | (a < 0)
    e = np.clip(e, 0.0, e_max)
    a_fixed_e = np.maximum(((y[None] - e[:, None]) * x).sum(1) / np.maximum((x * x).sum(1), 1e-300), 0.0)
    a = np.where(clipped, a_fixed_e, np.maximum(a, 0.0))
    sse = ((a[:, None] * x + e[:, None] - y[None]) ** 2).sum(1)
    return a, e, sse


def fit_power_law(x: Sequence[float], y: Sequence[float], max_alpha: float = 4.0) -> PowerLaw:
    """Least squares over (A >= 0, 0 < alpha <= max_alpha, 0 <= E <= min y): exact in (A, E) for each
    alpha, a log-spaced search over alpha refined twice (fast enough to bootstrap thousands of times)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x.size < 3 or np.unique(x).size < 3:
        raise ValueError(f"A power law with an asymptote needs >= 3 distinct x values, got {np.unique(x).size}.")
    if not np.all(np.isfinite(y)):
        raise ValueError("The power-law fit got non-finite losses.")
    x_ref = float(x.min())
    u = x / x_ref
    alphas = np.geomspace(1e-3, max_alpha, 400)
    for _ in range(3):
        a, e, sse = _solve_given_alpha(u, y, alphas, float(y.min()))
        best = int(np.argmin(sse))
        lo, hi = alphas[max(best - 1, 0)], alphas[min(best + 1, alphas.size - 1)]
        alphas = np.linspace(lo, hi, 101)
    a, e, sse = _solve_given_alpha(u, y, alphas, float(y.min()))
    best = int(np.argmin(sse))
    return PowerLaw(A=float(a[best]), alpha=float(alphas[best]), E=float(e[best]), x_ref=x_ref)


def at_bound(law: PowerLaw, y: Sequence[float]) -> bool:
    """True when E sits on a bound (0 or the smallest loss): the points show no curvature to fit an asymptote."""
    return bool(law.E <= 1e-9 or law.E >= float(np.min(y)) - 1e-9)


def interval(values: Sequence[float], level: float = 0.95) -> list[float]:
    values = np.asarray([v for v in values if np.isfinite(v)], np.float64)
    if values.size == 0:
        return [float("nan"), float("nan")]
    tail = (1 - level) / 2 * 100
    return [float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail))]


def bootstrap_fit(x: Sequence[float], samples: Sequence[Sequence[float]], num_boot: int = 500,
                  seed: int = 0) -> dict:
    """Fit on per-x means, plus a bootstrap over seeds: each draw takes one replicate per x (with
    replacement). Where no x has replicates, residuals of the mean fit are resampled instead."""
    x = np.asarray(x, np.float64)
    samples = [np.asarray(s, np.float64) for s in samples]
    means = np.asarray([s.mean() for s in samples])
    law = fit_power_law(x, means)
    rng = np.random.default_rng(seed)
    has_replicates = any(s.size > 1 for s in samples)
    residuals = means - law(x)
    draws = []
    for _ in range(num_boot):
        if has_replicates:
            y = np.asarray([rng.choice(s) for s in samples])
        else:
            y = law(x) + rng.choice(residuals, size=x.size, replace=True)
        try:
            draws.append(fit_power_law(x, y).E)
        except ValueError:
            continue
    return dict(law=law.to_dict(), E=law.E, E_interval=interval(draws), num_boot=len(draws),
                E_at_bound=at_bound(law, means),
                bootstrap="seed replicates" if has_replicates else "residuals", x=x.tolist(), y=means.tolist())


def ensemble_k_fit(subset_losses: dict[tuple[int, ...], float], num_members: int, num_orders: int = 200,
                   seed: int = 0) -> dict:
    """L(K) = A / K^beta + E from logit-averaged ensembles of every member subset.

    The point estimate fits the mean loss over all subsets of each size K; the interval refits the prefix
    curves of random member orders (each order is one assignment of seeds to K = 1..M)."""
    ks = np.arange(1, num_members + 1)
    mean_by_k = np.asarray([np.mean([v for s, v in subset_losses.items() if len(s) == k]) for k in ks])
    law = fit_power_law(ks, mean_by_k)
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(num_orders):
        order = rng.permutation(num_members)
        y = [subset_losses[tuple(sorted(order[:k].tolist()))] for k in ks]
        try:
            draws.append(fit_power_law(ks, y).E)
        except ValueError:
            continue
    return dict(law=law.to_dict(), E=law.E, E_interval=interval(draws), E_at_bound=at_bound(law, mean_by_k),
                K=ks.tolist(), loss_by_K=mean_by_k.tolist())


def data_efficiency(standard_law: PowerLaw, loss: float, tokens: float) -> float:
    """How many times more data the standard recipe needs to reach `loss` than the `tokens` used."""
    return standard_law.inverse(loss) / tokens
