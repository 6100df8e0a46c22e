"""SSD (papers/ssd/ssd.py) is exact: the joint of the first three emitted tokens matches enumeration.

The runtime runs on two fake CPU devices (target on one, draft on the other) over N = 1e5 independent
sequences of the context-dependent toy LM (papers/ssd/toy_lm.py, V = 6). With K = 2 the first three tokens
come from the first speculation (drafted just in time) and from looked-up ones: cache hits, neural fallback
for missed rows, fast point-mass fallback, and Saguaro sampling with C < 1; each case asserts that both hits
and misses occurred. G-test over the 216 joint cells at 1e-3, Bonferroni-corrected over every test here.
Power (as in tests/ssd_exactness_test.py): at N = 1e5 a Pearson divergence >= 1.6e-3 is rejected with
probability 0.99; the biased variant below (tokens drawn from sigma_{F,C}(q) but verified against q) must fail.
CI runs two cases that together cover every path; `-m slow` adds one case per mechanism.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest

from papers.ssd import saguaro, sampling, ssd, ssd_runtime, toy_lm
from tests.tests_support import exact_joint as _exact_joint, joint_g_test as g_test

TARGET = toy_lm.ToyConfig(vocab_size=6, context_mod=5, scale=1.0, seed=7)
DRAFT = toy_lm.ToyConfig(vocab_size=6, context_mod=5, scale=1.0, seed=7, perturbation=0.8)
NUM_RUNS = 100_000
PROMPT = (2, 5)

CASES = {   # CI: every path (hit, neural fallback, fast fallback, both lookups, C < 1, top-k) in two runs
    "jit_fallback_saguaro_C05_T1": ssd.SSDConfig(num_draft=2, fan_out_hit=(2, 1, 2), fan_out_miss=(1, 1, 3),
                                                 saguaro_c=0.5, backup="jit", max_new_tokens=3, temperature=1.0),
    "fast_fallback_target_lookup_C03_T08_topk5": ssd.SSDConfig(
        num_draft=2, fan_out_hit=(1, 1, 2), saguaro_c=0.3, backup="fast", lookup="target", max_new_tokens=3,
        temperature=0.8, top_k=5),
}
SLOW_CASES = {  # pytest -m slow: one mechanism per case
    "jit_fallback_T1": ssd.SSDConfig(num_draft=2, fan_out_hit=(2, 2, 2), backup="jit", max_new_tokens=3,
                                     temperature=1.0),
    "fast_fallback_draft_lookup_T1": ssd.SSDConfig(num_draft=2, fan_out_hit=(1, 2, 1), backup="fast",
                                                   max_new_tokens=3, temperature=1.0),
    "saguaro_C02_jit_T1_topp09": ssd.SSDConfig(num_draft=2, fan_out_hit=(2, 2, 2), saguaro_c=0.2, backup="jit",
                                               max_new_tokens=3, temperature=1.0, top_p=0.9),
    "fast_K1_T05": ssd.SSDConfig(num_draft=1, fan_out_hit=(3, 3), backup="fast", max_new_tokens=3,
                                 temperature=0.5),
}
ALPHA = 1e-3 / (len(CASES) + len(SLOW_CASES) + 1)


def exact_joint(model, prompt, config) -> np.ndarray:
    return _exact_joint(model, prompt, config, toy_lm)


def run(config, seed=11):
    target, draft = toy_lm.ToyLM(TARGET), toy_lm.ToyLM(DRAFT)
    runtime = ssd_runtime.make_ssd(target, draft, config, ssd_runtime.place(1, separate_draft=True), lm=toy_lm)
    prompts = np.tile(np.asarray(PROMPT, np.int32), (NUM_RUNS, 1))
    result = runtime.generate(prompts, np.full(NUM_RUNS, len(PROMPT), np.int32), jax.random.key(seed))
    assert (result.num_tokens == 3).all()
    return result, exact_joint(target, PROMPT, config)


def check_exact(name, config):
    result, joint = run(config)
    pvalue, g = g_test(result.tokens, joint, TARGET.vocab_size)
    by_source = result.stats["rounds_by_source"]
    assert by_source["hit"] > 1000 and by_source["miss"] > 1000, by_source   # both paths exercised
    assert pvalue > ALPHA, f"{name}: G={g:.1f} p={pvalue:.2e}"


@pytest.mark.parametrize("name", sorted(CASES))
def test_ssd_matches_exact_joint(name):
    check_exact(name, CASES[name])


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SLOW_CASES))
def test_ssd_matches_exact_joint_slow(name):
    check_exact(name, SLOW_CASES[name])


def test_saguaro_mismatch_fails(monkeypatch):
    """Drafting from sigma_{F,C}(q) but verifying against q is biased and must fail the same test."""
    def mismatched(key, logits, fan_out, config):
        token, _ = saguaro.draw(key, logits, fan_out, config.saguaro_c, config.temperature, config.top_k,
                                config.top_p)
        return token, sampling.sampling_probs(logits, config.temperature, config.top_k, config.top_p)

    monkeypatch.setattr(ssd, "_draw_row", mismatched)
    config = ssd.SSDConfig(num_draft=2, fan_out_hit=(2, 2, 2), saguaro_c=0.2, backup="jit", max_new_tokens=3,
                           temperature=1.0)
    result, joint = run(config, seed=12)
    pvalue, g = g_test(result.tokens, joint, TARGET.vocab_size)
    assert pvalue < ALPHA, f"the mismatched sampler passed: G={g:.1f} p={pvalue:.2e}"
