"""Bounds against hand-computed values; the range coder round-trips and costs about the empirical entropy."""

import math

import numpy as np
import pytest

from papers.generalization import bounds, coding


def test_occam_bound_hand_computed():
    # C = 100 ln 2 + ln 20 = 72.31038; sqrt(C / 20000) = 0.0601293
    assert bounds.occam_bound(0.1, 100, 10_000, 0.05) == pytest.approx(0.1601293, abs=1e-6)


def test_kl_bound_zero_train_error_closed_form():
    # kl(0 || p) = -ln(1 - p), so the bound is 1 - exp(-C / n) = 1 - exp(-0.007231038) = 0.0072050
    assert bounds.kl_bound(0.0, 100, 10_000, 0.05) == pytest.approx(0.0072050, abs=1e-6)


def test_kl_inverse_solves_kl_equation_and_beats_occam():
    budget = bounds.complexity(2000, 0.05) / 60_000
    p = bounds.kl_inverse(0.03, budget)
    assert bounds.bernoulli_kl(0.03, p) == pytest.approx(budget, rel=1e-6)
    assert 0.03 < p < bounds.occam_bound(0.03, 2000, 60_000)


def test_catoni_infimum_over_beta_is_the_kl_bound():
    for r, bits in ((0.05, 3000), (0.2, 500), (0.0, 100)):
        kl = bounds.kl_bound(r, bits, 60_000)
        assert bounds.catoni_best(r, bits, 60_000) == pytest.approx(kl, rel=2e-3)
        assert bounds.catoni_bound(r, bits, 60_000, beta=1.0) >= kl


def test_bounds_are_vacuous_when_bits_exceed_n():
    assert bounds.kl_bound(0.0, 50_000, 2_000) > 0.9999
    assert bounds.occam_bound(0.0, 50_000, 2_000) == 1.0


def test_kl_inverse_rejects_bad_input():
    with pytest.raises(ValueError, match="q in"):
        bounds.kl_inverse(1.5, 0.1)


@pytest.mark.parametrize("num_levels,skew", [(7, 0.5), (15, 2.0), (2, 0.0)])
def test_range_coder_round_trip_and_length_near_entropy(num_levels, skew):
    rng = np.random.default_rng(num_levels)
    probs = np.exp(-skew * np.arange(num_levels))
    symbols = rng.choice(num_levels, size=3000, p=probs / probs.sum()).astype(np.int32)
    words, counts = coding.encode(symbols, num_levels)
    np.testing.assert_array_equal(coding.decode(words, counts), symbols)
    length = coding.code_length_bits(symbols, num_levels)
    assert length["entropy_bits"] - 2 <= length["payload_bits"] <= length["entropy_bits"] + 64
    assert length["total_bits"] == length["payload_bits"] + coding.header_bits(3000, num_levels)


def test_empirical_entropy_of_uniform_symbols():
    symbols = np.tile(np.arange(8), 100)
    assert coding.empirical_entropy_bits(symbols, 8) == pytest.approx(800 * 3.0)
    assert math.isclose(coding.empirical_entropy_bits(np.zeros(50, np.int64), 4), 0.0, abs_tol=1e-12)
