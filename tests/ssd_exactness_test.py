"""Speculative sampling is exact: the joint of the first three emitted tokens matches enumeration.

Toy models are bigram tables (V = 6): the next-token distribution depends on the previous token, so a
verifier that uses the wrong conditional anywhere (wrong position, wrong residual, bonus from the wrong
row) changes the joint of (x1, x2, x3), which is enumerated exactly from the transformed target table.
Each case runs the whole procedure (draft K tokens or a tree, verify, continue from the emitted tokens)
for N independent sequences at once and applies a G-test to the V^3 = 216 joint cells (cells with expected
count < 5 pooled; cells the target gives probability 0 must stay empty). Significance 1e-3 with a Bonferroni
correction over every case in this file.

Power (scipy noncentral chi-square, df ~ 200, alpha = 1e-3 / 18): a deviation with Pearson divergence
sum (p' - p)^2 / p >= 1.6e-3 is rejected with probability 0.99 at the CI size N = 1e5, and >= 1.6e-4 at
N = 1e6 (slow tests), i.e. about a 4% (1.3%) relative error spread over the cells. The biased samplers
below (greedy acceptance at T > 0, in every round or in 25% of them, bonus from q, resampling from p
instead of the residual, unnormalised or stale tree residuals) are asserted to fail the same test at the CI
size, and greedy acceptance in only 5% of rounds (joint TV ~ 0.01) at the full size.
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from papers.ssd import sampling
from papers.ssd import tree as tree_lib

VOCAB = 6
START = 0
NUM_EMITTED = 3
N_CI = 100_000
N_SLOW = 1_000_000


def toy_tables(seed: int, draft_noise: float = 0.9) -> tuple[np.ndarray, np.ndarray]:
    """(target, draft) logits [V_prev, V]: random bigram tables, the draft a noisy copy of the target."""
    rng = np.random.default_rng(seed)
    target = 1.0 * rng.normal(size=(VOCAB, VOCAB))
    draft = target + draft_noise * rng.normal(size=(VOCAB, VOCAB))
    return target.astype(np.float32), draft.astype(np.float32)


def exact_joint(target_probs: np.ndarray) -> np.ndarray:
    """P(x1, x2, x3) of plain sampling from the bigram target, flattened to [V^3], in float64."""
    p = np.asarray(target_probs, np.float64)
    p = p / p.sum(-1, keepdims=True)
    joint = p[START][:, None, None] * p[:, :, None] * p[None, :, :]
    return joint.reshape(-1)


def g_test(samples: np.ndarray, expected_probs: np.ndarray) -> tuple[float, float]:
    """(p-value, G) of the emitted triples against the exact joint; structural zeros must be unobserved."""
    codes = samples[:, 0] * VOCAB**2 + samples[:, 1] * VOCAB + samples[:, 2]
    observed = np.bincount(codes, minlength=VOCAB**3).astype(np.float64)
    expected = expected_probs * len(samples)
    if observed[expected_probs == 0].sum() > 0:
        return 0.0, np.inf
    big = expected >= 5
    obs = np.append(observed[big], observed[~big].sum())
    exp = np.append(expected[big], expected[~big].sum())
    if exp[-1] == 0:
        obs, exp = obs[:-1], exp[:-1]
    statistic, pvalue = stats.power_divergence(obs, exp * obs.sum() / exp.sum(), lambda_="log-likelihood")
    return float(pvalue), float(statistic)


# ----------------------------------------------------------------------------------------------------------
# The end-to-end procedures, batched over N independent sequences.

ChainVerifier = Callable[[jax.Array, jax.Array, jax.Array, jax.Array], tuple[jax.Array, jax.Array]]


def exact_chain(key, target_probs, draft_probs, draft_tokens):
    return sampling.verify_chain(key, target_probs, draft_probs[:, :-1], draft_tokens)


def exact_point_mass(key, target_probs, draft_probs, draft_tokens):
    del draft_probs
    return sampling.verify_chain(key, target_probs, None, draft_tokens)


def _emit(out, count, tokens, n, next_token):
    """Appends tokens[:, :n] then next_token to out[N, 3] at per-row offsets `count` (overflow dropped)."""
    rows = jnp.arange(tokens.shape[0])
    width = tokens.shape[1] + 1
    index = jnp.arange(width)[None]
    emitted = jnp.where(index < n[:, None], jnp.pad(tokens, ((0, 0), (0, 1))), next_token[:, None])
    position = jnp.where(index <= n[:, None], count[:, None] + index, NUM_EMITTED)
    out = out.at[rows[:, None], position].set(emitted, mode="drop")
    return out, count + n + 1


@functools.partial(jax.jit, static_argnames=("num_runs", "num_draft", "verifier", "proposal"))
def run_chain(key, target_probs, draft_probs, num_runs: int, num_draft: int, verifier: ChainVerifier,
              proposal: str = "sample"):
    """Chain SD rounds until three tokens are out; proposal 'sample' draws from q, 'argmax' is greedy."""
    out = jnp.zeros((num_runs, NUM_EMITTED), jnp.int32)
    count = jnp.zeros(num_runs, jnp.int32)
    last = jnp.full(num_runs, START, jnp.int32)
    for round_index in range(NUM_EMITTED):  # each round emits >= 1 token
        key_draft, key_verify = jax.random.split(jax.random.fold_in(key, round_index))
        prev, tokens = last, []
        for i in range(num_draft):
            q = draft_probs[prev]
            if proposal == "sample":
                prev = sampling.sample(jax.random.fold_in(key_draft, i), q)
            else:
                prev = jnp.argmax(q, -1).astype(jnp.int32)
            tokens.append(prev)
        tokens = jnp.stack(tokens, 1)
        context = jnp.concatenate([last[:, None], tokens], 1)
        n, next_token = verifier(key_verify, target_probs[context], draft_probs[context], tokens)
        out, count = _emit(out, count, tokens, n, next_token)
        last = next_token
    return out


def _run_tree(key, target_probs, draft_probs, num_runs: int, tree: tree_lib.TreeSpec, proposal: str):
    """Tree SD rounds: children i.i.d. from q ('sample', verified with q) or the draft's top-k ('topk',
    verified as point masses)."""
    out = jnp.zeros((num_runs, NUM_EMITTED), jnp.int32)
    count = jnp.zeros(num_runs, jnp.int32)
    last = jnp.full(num_runs, START, jnp.int32)
    sibling_rank = np.zeros(tree.num_nodes, np.int32)
    for node in range(1, tree.num_nodes):
        sibling_rank[node] = list(tree.children[tree.parents[node]]).index(node)
    for round_index in range(NUM_EMITTED):
        key_draft, key_verify = jax.random.split(jax.random.fold_in(key, round_index))
        nodes = [last]
        for node in range(1, tree.num_nodes):
            q = draft_probs[nodes[tree.parents[node]]]
            if proposal == "sample":
                nodes.append(sampling.sample(jax.random.fold_in(key_draft, node), q))
            else:
                nodes.append(jax.lax.top_k(q, sibling_rank[node] + 1)[1][:, -1].astype(jnp.int32))
        tokens = jnp.stack(nodes, 1)
        q_nodes = draft_probs[tokens] if proposal == "sample" else None
        path, n, next_token = sampling.verify_tree(key_verify, target_probs[tokens], q_nodes, tokens, tree)
        out, count = _emit(out, count, jnp.take_along_axis(tokens, path, 1), n, next_token)
        last = next_token
    return out


run_tree = jax.jit(_run_tree, static_argnames=("num_runs", "tree", "proposal"))


def tables(seed, temperature, top_k=0, top_p=1.0, draft_noise=0.9):
    target_logits, draft_logits = toy_tables(seed, draft_noise)
    transform = functools.partial(sampling.sampling_probs, temperature=temperature, top_k=top_k, top_p=top_p)
    return transform(jnp.asarray(target_logits)), transform(jnp.asarray(draft_logits))


CHAIN_CASES = {
    # name: (seed, temperature, top_k, top_p, K, verifier, proposal, draft_noise)
    "chain_T1_K2": (1, 1.0, 0, 1.0, 2, exact_chain, "sample", 0.9),
    "chain_T05_K3": (2, 0.5, 0, 1.0, 3, exact_chain, "sample", 0.9),
    "chain_topk3_T1": (3, 1.0, 3, 1.0, 3, exact_chain, "sample", 0.9),
    "chain_topp08_T1": (4, 1.0, 0, 0.8, 2, exact_chain, "sample", 0.9),
    "chain_topk4_topp09_T05": (5, 0.5, 4, 0.9, 2, exact_chain, "sample", 0.9),
    "point_mass_argmax_draft_T1": (6, 1.0, 0, 1.0, 3, exact_point_mass, "argmax", 0.9),
    "point_mass_sampled_draft_T05": (7, 0.5, 0, 1.0, 2, exact_point_mass, "sample", 0.9),
    "chain_p_equals_q": (8, 1.0, 0, 1.0, 3, exact_chain, "sample", 0.0),
}
TREE_CASES = {
    # name: (seed, temperature, top_k, top_p, branching, proposal)
    "tree_sampled_221_T1": (11, 1.0, 0, 1.0, (2, 2, 1), "sample"),
    "tree_sampled_32_T05_topp09": (12, 0.5, 0, 0.9, (3, 2), "sample"),
    "tree_topk_221_T1": (13, 1.0, 0, 1.0, (2, 2, 1), "topk"),
    "tree_topk_311_T05_topk4": (14, 0.5, 4, 1.0, (3, 1, 1), "topk"),
}

NUM_BIASED = 6
ALPHA = 1e-3 / (len(CHAIN_CASES) + len(TREE_CASES) + NUM_BIASED)  # Bonferroni over every G-test here


def chain_samples(name, num_runs, seed_offset=0, verifier=None):
    seed, temperature, top_k, top_p, num_draft, exact_verifier, proposal, noise = CHAIN_CASES[name]
    p, q = tables(seed, temperature, top_k, top_p, noise)
    out = run_chain(jax.random.key(1000 + seed + seed_offset), p, q, num_runs, num_draft,
                    verifier or exact_verifier, proposal)
    return np.asarray(out), exact_joint(p)


def tree_samples(name, num_runs, seed_offset=0, runner=None):
    seed, temperature, top_k, top_p, branching, proposal = TREE_CASES[name]
    p, q = tables(seed, temperature, top_k, top_p)
    out = (runner or run_tree)(jax.random.key(1000 + seed + seed_offset), p, q, num_runs,
                   tree_lib.tree_from_branching(branching), proposal)
    return np.asarray(out), exact_joint(p)


@pytest.mark.parametrize("name", sorted(CHAIN_CASES))
def test_chain_matches_exact_joint(name):
    samples, joint = chain_samples(name, N_CI)
    pvalue, g = g_test(samples, joint)
    assert pvalue > ALPHA, f"{name}: G={g:.1f}, p={pvalue:.2e}"


@pytest.mark.parametrize("name", sorted(TREE_CASES))
def test_tree_matches_exact_joint(name):
    samples, joint = tree_samples(name, N_CI)
    pvalue, g = g_test(samples, joint)
    assert pvalue > ALPHA, f"{name}: G={g:.1f}, p={pvalue:.2e}"


def test_p_equals_q_accepts_everything_without_nan():
    p, _ = tables(8, 1.0)
    tokens = jax.random.randint(jax.random.key(0), (4096, 3), 0, VOCAB)
    context = jnp.concatenate([jnp.zeros((4096, 1), jnp.int32), tokens], 1)
    n, next_token = sampling.verify_chain(jax.random.key(1), p[context], p[context[:, :-1]], tokens)
    assert bool(jnp.all(n == 3)) and bool(jnp.all((next_token >= 0) & (next_token < VOCAB)))


# ----------------------------------------------------------------------------------------------------------
# Power: biased samplers fail the same test.

def _prefix(accept):
    return jnp.sum(jnp.cumprod(accept.astype(jnp.int32), -1), -1)


def greedy_acceptance(key, target_probs, draft_probs, draft_tokens):
    """The SSD sync-path bug: accept iff the draft token is the target argmax, then sample from p."""
    num_draft = draft_tokens.shape[1]
    n = _prefix(draft_tokens == jnp.argmax(target_probs[:, :num_draft], -1))
    return n, sampling.sample(key, target_probs[jnp.arange(len(n)), n])


def bonus_from_draft(key, target_probs, draft_probs, draft_tokens):
    """Correct ratio test and residual, but the bonus token after K acceptances comes from q_{K+1}."""
    n, next_token = exact_chain(key, target_probs, draft_probs, draft_tokens)
    bonus = sampling.sample(jax.random.fold_in(key, 7), draft_probs[:, -1])
    return n, jnp.where(n == draft_tokens.shape[1], bonus, next_token)


def resample_from_target(key, target_probs, draft_probs, draft_tokens):
    """Correct ratio test, but a rejection resamples from p instead of norm(max(0, p - q))."""
    key_accept, key_next = jax.random.split(key)
    num_draft = draft_tokens.shape[1]
    p_x = jnp.take_along_axis(target_probs[:, :num_draft], draft_tokens[..., None], -1)[..., 0]
    q_x = jnp.take_along_axis(draft_probs[:, :num_draft], draft_tokens[..., None], -1)[..., 0]
    n = _prefix(jax.random.uniform(key_accept, p_x.shape) * q_x < p_x)
    return n, sampling.sample(key_next, target_probs[jnp.arange(len(n)), n])


def rare_greedy_shortcut(key, target_probs, draft_probs, draft_tokens, rate=0.25):
    """The exact rule, except that a fraction `rate` of rounds takes the greedy-acceptance shortcut."""
    key_exact, key_greedy, key_mix = jax.random.split(key, 3)
    exact = exact_chain(key_exact, target_probs, draft_probs, draft_tokens)
    biased = greedy_acceptance(key_greedy, target_probs, draft_probs, draft_tokens)
    use_biased = jax.random.uniform(key_mix, exact[0].shape) < rate
    return tuple(jnp.where(use_biased, b, e) for b, e in zip(biased, exact))


# 5% of rounds: joint TV ~ 0.01, about 3x the Pearson divergence that 1e5 samples detect (G excess ~ +50
# over df ~ 200 in trials, not reliable at alpha), so it is asserted at the full size only.
subtle_greedy_shortcut = functools.partial(rare_greedy_shortcut, rate=0.05)
subtle_greedy_shortcut.__name__ = "subtle_greedy_shortcut"


@pytest.mark.parametrize("verifier", [greedy_acceptance, bonus_from_draft, resample_from_target,
                                      rare_greedy_shortcut], ids=lambda f: f.__name__)
def test_biased_chain_samplers_fail(verifier):
    samples, joint = chain_samples("chain_T1_K2", N_CI, verifier=verifier)
    pvalue, g = g_test(samples, joint)
    assert pvalue < ALPHA, f"{verifier.__name__} passed: G={g:.1f}, p={pvalue:.2e}"


def _unnormalised_residual(p, q):
    return jnp.maximum(p - q, 0.0)


def _stale_residual(p, q):
    del q
    return p


@pytest.mark.parametrize("residual", [_unnormalised_residual, _stale_residual], ids=lambda f: f.__name__)
def test_biased_tree_samplers_fail(residual, monkeypatch):
    monkeypatch.setattr(sampling, "_residual", residual)
    # A new function object, so the trace picks up the patched residual instead of a cached one.
    runner = jax.jit(lambda *args: _run_tree(*args), static_argnums=(3, 4, 5))
    samples, joint = tree_samples("tree_sampled_221_T1", N_CI, seed_offset=1, runner=runner)
    pvalue, g = g_test(samples, joint)
    assert pvalue < ALPHA, f"{residual.__name__} passed: G={g:.1f}, p={pvalue:.2e}"


# ----------------------------------------------------------------------------------------------------------
# Full size, run by hand: pytest -m slow tests/ssd_exactness_test.py -s

@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CHAIN_CASES) + sorted(TREE_CASES))
def test_exact_joint_full_size(name):
    make = chain_samples if name in CHAIN_CASES else tree_samples
    samples = np.concatenate([make(name, N_SLOW // 4, seed_offset=100 + i)[0] for i in range(4)])
    joint = make(name, 8)[1]
    pvalue, g = g_test(samples, joint)
    tv = 0.5 * np.abs(np.bincount(samples @ np.array([VOCAB**2, VOCAB, 1]), minlength=VOCAB**3)
                      / len(samples) - joint).sum()
    print(f"\n{name}: N={len(samples)} G={g:.1f} p={pvalue:.3f} TV={tv:.4f}")
    assert pvalue > ALPHA, f"{name}: G={g:.1f}, p={pvalue:.2e}"


@pytest.mark.slow
@pytest.mark.parametrize("verifier", [greedy_acceptance, bonus_from_draft, resample_from_target,
                                      subtle_greedy_shortcut], ids=lambda f: f.__name__)
def test_biased_full_size_effect(verifier):
    samples = np.concatenate([chain_samples("chain_T1_K2", N_SLOW // 4, 200 + i, verifier)[0]
                              for i in range(4)])
    joint = chain_samples("chain_T1_K2", 8)[1]
    pvalue, g = g_test(samples, joint)
    tv = 0.5 * np.abs(np.bincount(samples @ np.array([VOCAB**2, VOCAB, 1]), minlength=VOCAB**3)
                      / len(samples) - joint).sum()
    print(f"\n{verifier.__name__}: N={len(samples)} G={g:.1f} p={pvalue:.2e} TV={tv:.4f}")
    assert pvalue < ALPHA
