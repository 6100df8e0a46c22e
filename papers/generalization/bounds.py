"""Generalisation bounds for one hypothesis out of a countable set with prior P(h) = 2^-bits(h).

For a loss in [0, 1], n i.i.d. samples and confidence 1 - delta, with complexity C = bits * ln 2 + ln(1/delta):
  * Occam / Hoeffding:  R <= R_hat + sqrt(C / (2n)),
  * kl (Langford-Seeger, Chernoff union bound): kl(R_hat || R) <= C / n, i.e. R <= kl^-1(R_hat, C / n),
  * Catoni: R <= (1 - exp(-beta R_hat - C / n)) / (1 - exp(-beta)) for any fixed beta > 0; its infimum over beta
    is the kl bound, so the kl-inverse is the tightest member of Catoni's family (`catoni_bound` checks it).
Bits spent on choosing hyperparameters (log2 of the grid searched) are part of `bits` (see `total_bits`).
"""

from __future__ import annotations

import math

import numpy as np


def bernoulli_kl(q: float, p: float) -> float:
    """kl(q || p) between Bernoulli(q) and Bernoulli(p), with 0 log 0 = 0."""
    p = min(max(p, 1e-300), 1 - 1e-16)
    out = 0.0
    if q > 0:
        out += q * math.log(q / p)
    if q < 1:
        out += (1 - q) * math.log((1 - q) / (1 - p))
    return out


def kl_inverse(q: float, budget: float, tol: float = 1e-12) -> float:
    """The largest p >= q with kl(q || p) <= budget (bisection; kl is increasing in p on [q, 1])."""
    if not 0.0 <= q <= 1.0 or budget < 0:
        raise ValueError(f"kl_inverse needs q in [0, 1] and budget >= 0, got q={q}, budget={budget}.")
    lo, hi = q, 1.0
    if bernoulli_kl(q, hi) <= budget:
        return 1.0
    while hi - lo > tol:
        mid = 0.5 * (lo + hi)
        if bernoulli_kl(q, mid) > budget:
            hi = mid
        else:
            lo = mid
    return lo


def complexity(bits: float, delta: float) -> float:
    return bits * math.log(2) + math.log(1.0 / delta)


def occam_bound(train_error: float, bits: float, n: int, delta: float = 0.05) -> float:
    return min(1.0, train_error + math.sqrt(complexity(bits, delta) / (2 * n)))


def kl_bound(train_error: float, bits: float, n: int, delta: float = 0.05) -> float:
    return kl_inverse(train_error, complexity(bits, delta) / n)


def catoni_bound(train_error: float, bits: float, n: int, beta: float, delta: float = 0.05) -> float:
    return min(1.0, (1 - math.exp(-beta * train_error - complexity(bits, delta) / n)) / (1 - math.exp(-beta)))


def catoni_best(train_error: float, bits: float, n: int, delta: float = 0.05) -> float:
    """min over a fine beta grid of Catoni's bound (an oracle choice of beta: for checking, not for reporting)."""
    return min(catoni_bound(train_error, bits, n, b, delta) for b in np.geomspace(1e-3, 1e3, 4001))


def total_bits(code_bits: float, search_bits: float) -> float:
    """Prefix-code length of the hypothesis plus the bits that pay for the hyperparameter search."""
    return float(code_bits) + float(search_bits)
