"""Fan-out vectors for the speculation cache and the SSD paper's analytic model (notes/ssd.md §1.3, §1.5, §1.7).

A fan-out vector F = (F_0, ..., F_K) says how many bonus tokens the draft pre-speculates for each verification
outcome "k of K draft tokens accepted": F_k forks at depth k. The miss rate of one depth is modelled as a power
law 1 - p_hit(F) = F^(-r) (the paper's empirical law); `fit_power_law` estimates r from measured hit rates.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np


def uniform(num_draft: int, fan_out: int) -> tuple[int, ...]:
    """The official code's default: F forks at every depth 0..K."""
    if num_draft < 1 or fan_out < 1:
        raise ValueError(f"Uniform fan-out needs num_draft >= 1 and fan_out >= 1, got {num_draft}, {fan_out}.")
    return (fan_out,) * (num_draft + 1)


def geometric_weights(num_draft: int, acceptance: float, r: float) -> np.ndarray:
    """Theorem 12's unnormalised optimum: F_k ~ a^(k/(1+r)) for k < K, F_K ~ a^(K/(1+r)) (1-a)^(-1/(1+r)).

    Depth k is the outcome "exactly k accepted" (probability ~ a^k (1-a)); depth K ("all accepted") carries
    a^K, hence its extra (1-a)^(-1/(1+r)) factor.
    """
    if not 0.0 < acceptance < 1.0 or r <= 0:
        raise ValueError(f"Geometric fan-out needs 0 < acceptance < 1 and r > 0, got {acceptance}, {r}.")
    k = np.arange(num_draft + 1, dtype=np.float64)
    weights = acceptance ** (k / (1 + r))
    weights[-1] *= (1 - acceptance) ** (-1 / (1 + r))
    return weights


def geometric(num_draft: int, budget: int, acceptance: float, r: float) -> tuple[int, ...]:
    """Theorem 12 rounded to integers that sum to `budget` (largest remainders; depths may get 0 forks)."""
    if budget < 1:
        raise ValueError(f"The fan-out budget must be at least 1, got {budget}.")
    weights = geometric_weights(num_draft, acceptance, r)
    exact = budget * weights / weights.sum()
    counts = np.floor(exact).astype(int)
    for index in np.argsort(-(exact - counts), kind="stable")[: budget - counts.sum()]:
        counts[index] += 1
    return tuple(int(c) for c in counts)


def fit_power_law(fan_outs: Sequence[float], hit_rates: Sequence[float]) -> float:
    """Least-squares r in log(1 - p_hit) = -r log F (through the origin); points with p_hit = 1 are dropped."""
    f = np.asarray(fan_outs, np.float64)
    miss = 1.0 - np.asarray(hit_rates, np.float64)
    keep = (miss > 0) & (f > 1)
    if keep.sum() < 1:
        raise ValueError("Fitting r needs at least one fan-out > 1 with a hit rate below 1.")
    x, y = np.log(f[keep]), np.log(miss[keep])
    return float(-(x * y).sum() / (x * x).sum())


def theorem7_speedup(p_hit: float, e_hit: float, e_miss: float, t_primary: float, t_backup: float) -> float:
    """SSD tokens per unit of verify time, relative to AR (one token per verify):
    [p E_hit + (1-p) E_miss] / [p max(1, T_p) + (1-p)(1 + T_b)], with T_p, T_b the primary (tree) and backup
    speculation latencies in verify units and E the expected tokens per round."""
    return (p_hit * e_hit + (1 - p_hit) * e_miss) / (p_hit * max(1.0, t_primary) + (1 - p_hit) * (1 + t_backup))


def crossover_batch(p_hit: float, e_hit: float, e_jit: float, e_fast: float, t_primary: float,
                    t_backup: float) -> float:
    """Batch size b* above which the fast fallback beats just-in-time neural drafting.

    A round stalls for the neural backup when any of the b rows misses (probability 1 - p^b); the fast backup
    never stalls but its rows accept fewer tokens. Per-round tokens A_jit = p E_hit + (1-p) E_jit, A_fast
    likewise; round time (verify units) M = max(1, T_p) for fast and p^b M + (1 - p^b)(1 + T_b) for jit.
    Fast wins iff p^b <= 1 - M (A_jit / A_fast - 1) / (1 + T_b - M), so
    b* = log(1 - M (A_jit/A_fast - 1) / (1 + T_b - M)) / log p. Returns inf when fast never wins, 0 when
    it always does.
    """
    m = max(1.0, t_primary)
    a_jit = p_hit * e_hit + (1 - p_hit) * e_jit
    a_fast = p_hit * e_hit + (1 - p_hit) * e_fast
    stall = 1 + t_backup - m
    if a_jit <= a_fast:
        return 0.0
    if stall <= 0 or p_hit >= 1:
        return math.inf          # a miss costs nothing, or never happens: jit always wins
    bound = 1 - m * (a_jit / a_fast - 1) / stall
    if bound <= 0:
        return math.inf
    if p_hit <= 0:
        return 0.0
    return max(0.0, math.log(bound) / math.log(p_hit))
