"""Exact speculative sampling: sampling transforms, chain verification and token-tree verification.

Everything here is a pure, jittable function of target/draft distributions, draft tokens and a key; the
engine (engine.py) only supplies the numbers. Conventions:

  * `target_probs[B, K+1, V]` are the target's *transformed* next-token distributions (temperature, top-k,
    top-p applied by `sampling_probs`) at the K+1 verified positions; row i predicts the token after draft
    token i (row 0 follows the last emitted token, row K gives the bonus token).
  * `draft_probs[B, K, V]` are the draft's transformed distributions the draft tokens were sampled from,
    or None for point-mass proposals (tokens without probabilities, e.g. greedy or n-gram drafts).
  * Results are `(n_accepted[B], next_token[B])`: the first n draft tokens are kept, then `next_token`
    (the residual sample after a rejection, or the bonus token) is emitted, so each step emits n + 1 tokens.

The output distribution equals the target's (transformed) distribution exactly: tests/ssd_exactness_test.py
checks the joint of the first three emitted tokens of context-dependent toy models against enumeration.
T = 0 has its own argmax path (`verify_greedy`, `verify_tree_greedy`); at T > 0 acceptance is always the
ratio rule; there is no greedy-acceptance shortcut, which biases the output (SSD paper §1.8 as summarised in papers/ssd/README.md).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from papers.ssd.tree import TreeSpec


# ----------------------------------------------------------------------------------------------------------
# Sampling transforms.

def top_k_indices(x: jax.Array, k: int) -> jax.Array:
    """Indices [..., k] of the k largest of finite `x` along its last axis, largest first, ties to the lowest
    index: lax.top_k's indices. For k <= 8 as k argmax passes, each masking the last pick: lax.top_k over a
    vocabulary lowers to a segmented radix sort on the GPU, 27% of a batch-32 tree round's device time on the
    H200 (benchmarks/results/tree_round_hlo.json), where k passes read the row k times."""
    if k > 8:
        return jax.lax.top_k(x, k)[1]
    positions = jnp.arange(x.shape[-1])
    picks = []
    for _ in range(k):
        pick = jnp.argmax(x, -1)
        picks.append(pick)
        x = jnp.where(positions == pick[..., None], -jnp.inf, x)
    return jnp.stack(picks, -1)


def sampling_probs(logits: jax.Array, temperature: float, top_k: int = 0, top_p: float = 1.0) -> jax.Array:
    """Logits [..., V] -> float32 probabilities after temperature, then top-k, then top-p (nucleus).

    Must be applied identically to target and draft: speculative sampling is then exact for the transformed
    target. T = 0 gives the one-hot argmax (ties to the lowest index, like jnp.argmax). top_k = 0 and
    top_p = 1 switch the filters off. Top-p keeps the smallest prefix of the sorted distribution whose mass
    reaches top_p (every token tied with its last member included), then renormalises.
    """
    if temperature < 0 or top_k < 0 or not 0.0 < top_p <= 1.0:
        raise ValueError(f"Sampling needs temperature >= 0, top_k >= 0 and 0 < top_p <= 1; got "
                         f"{temperature}, {top_k}, {top_p}.")
    logits = logits.astype(jnp.float32)
    vocab = logits.shape[-1]
    if temperature == 0.0:
        return jax.nn.one_hot(jnp.argmax(logits, -1), vocab, dtype=jnp.float32)
    logits = logits / temperature
    if 0 < top_k < vocab:
        kth_largest = jax.lax.top_k(logits, top_k)[0][..., -1:]
        logits = jnp.where(logits >= kth_largest, logits, -jnp.inf)
    probs = jax.nn.softmax(logits, -1)
    if top_p < 1.0:
        descending = -jnp.sort(-probs, -1)
        mass_before = jnp.cumsum(descending, -1) - descending
        kept = mass_before < top_p
        smallest_kept = jnp.min(jnp.where(kept, descending, jnp.inf), -1, keepdims=True)
        probs = jnp.where(probs >= smallest_kept, probs, 0.0)
        probs = probs / probs.sum(-1, keepdims=True)
    return probs


def sample(key: jax.Array, probs: jax.Array) -> jax.Array:
    """One token per row of (possibly unnormalised) non-negative weights [..., V] -> int32[...]."""
    log_weights = jnp.where(probs > 0, jnp.log(jnp.maximum(probs, 1e-38)), -jnp.inf)
    return jax.random.categorical(key, log_weights, -1).astype(jnp.int32)


def sample_logits(key: jax.Array, logits: jax.Array, temperature: float, top_k: int = 0,
                  top_p: float = 1.0) -> tuple[jax.Array, jax.Array]:
    """Draws a token from the transformed distribution; returns (token int32[...], probs float32[..., V])."""
    probs = sampling_probs(logits, temperature, top_k, top_p)
    if temperature == 0.0:
        return jnp.argmax(logits, -1).astype(jnp.int32), probs
    return sample(key, probs), probs


def _residual(p: jax.Array, q: jax.Array) -> jax.Array:
    """norm(max(0, p - q)) over the last axis. It is all-zero only when p == q, where a rejection has
    probability 0; falling back to p there keeps rounding noise from producing NaNs."""
    r = jnp.maximum(p - q, 0.0)
    total = r.sum(-1, keepdims=True)
    return jnp.where(total > 0, r / jnp.where(total > 0, total, 1.0), p)


def _first_rejection(accept: jax.Array) -> jax.Array:
    """bool[B, K] -> int32[B]: length of the all-accepted prefix."""
    return jnp.sum(jnp.cumprod(accept.astype(jnp.int32), -1), -1).astype(jnp.int32)


# ----------------------------------------------------------------------------------------------------------
# Chains.

def verify_greedy(target_logits: jax.Array, draft_tokens: jax.Array) -> tuple[jax.Array, jax.Array]:
    """T = 0: accept while draft == argmax target; next token = target argmax after the accepted prefix.

    target_logits [B, K+1, V] (or argmax tokens int[B, K+1]); draft_tokens int[B, K].
    """
    target_tokens = target_logits if target_logits.ndim == 2 else jnp.argmax(target_logits, -1)
    target_tokens = target_tokens.astype(jnp.int32)
    num_draft = draft_tokens.shape[1]
    n = _first_rejection(draft_tokens == target_tokens[:, :num_draft])
    return n, jnp.take_along_axis(target_tokens, n[:, None], 1)[:, 0]


def verify_chain(key: jax.Array, target_probs: jax.Array, draft_probs: jax.Array | None,
                 draft_tokens: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Leviathan/Chen speculative sampling over a batch of K-token chains.

    Accept x_i with probability min(1, p_i(x_i)/q_i(x_i)) (tested as u * q < p, no division); at the first
    rejection draw from norm(max(0, p_i - q_i)); if all K are accepted draw the bonus from p_{K+1}, which is
    the same formula with q_{K+1} = 0. With draft_probs=None each proposal is a point mass q = one-hot(x):
    accept with probability p(x), else draw from p with x zeroed; this is exact for tokens from any
    proposal independent of the verification coins (P(y) = Q(y)p(y) + sum_{x != y} Q(x) p(y) = p(y)).
    """
    batch, num_draft = draft_tokens.shape
    key_accept, key_next = jax.random.split(key)
    p_at_draft = jnp.take_along_axis(target_probs[:, :num_draft], draft_tokens[..., None], -1)[..., 0]
    if draft_probs is None:
        q_at_draft = jnp.ones_like(p_at_draft)
    else:
        q_at_draft = jnp.take_along_axis(draft_probs, draft_tokens[..., None], -1)[..., 0]
    u = jax.random.uniform(key_accept, (batch, num_draft))
    n = _first_rejection(u * q_at_draft < p_at_draft)

    rows = jnp.arange(batch)
    p_row = target_probs[rows, n]
    rejected_at = jnp.minimum(n, num_draft - 1)
    was_rejected = (n < num_draft)[:, None]
    if draft_probs is None:
        q_row = jax.nn.one_hot(draft_tokens[rows, rejected_at], p_row.shape[-1], dtype=p_row.dtype)
    else:
        q_row = draft_probs[rows, rejected_at].astype(p_row.dtype)
    q_row = jnp.where(was_rejected, q_row, 0.0)
    return n, sample(key_next, _residual(p_row, q_row))


# ----------------------------------------------------------------------------------------------------------
# Trees.

def verify_tree_greedy(target_logits: jax.Array, tree_tokens: jax.Array,
                       tree: TreeSpec) -> tuple[jax.Array, jax.Array, jax.Array]:
    """T = 0 over a token tree: from the root, descend into the first child equal to the target argmax.

    target_logits [B, N, V] (or argmax tokens int[B, N]) at every node; tree_tokens int[B, N] (node 0 the
    root). Returns (path int32[B, D] accepted node indices by depth, padded with 0; n_accepted int32[B];
    next_token int32[B]).
    """
    target_tokens = target_logits if target_logits.ndim == 2 else jnp.argmax(target_logits, -1)
    target_tokens = target_tokens.astype(jnp.int32)
    children = jnp.asarray(tree.children)

    def walk(target_tokens, tokens):
        def level(carry, _):
            cur, n, path, done = carry
            kids = children[cur]
            match = (kids >= 0) & (tokens[jnp.maximum(kids, 0)] == target_tokens[cur])
            found = ~done & match.any()
            chosen = kids[jnp.argmax(match)]
            path = path.at[n].set(jnp.where(found, chosen, 0), mode="drop")
            return (jnp.where(found, chosen, cur), n + found, path, done | ~found), None

        init = (jnp.int32(0), jnp.int32(0), jnp.zeros(tree.max_depth, jnp.int32), jnp.bool_(False))
        (cur, n, path, _), _ = jax.lax.scan(level, init, None, length=tree.max_depth)
        return path, n, target_tokens[cur]

    return jax.vmap(walk)(target_tokens, tree_tokens)


def verify_tree(key: jax.Array, target_probs: jax.Array, draft_probs: jax.Array | None,
                tree_tokens: jax.Array, tree: TreeSpec) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Lossless multi-draft verification of a token tree (SpecInfer's multi-step speculative sampling).

    target_probs [B, N, V]: transformed target distribution at every node (what follows the node's path).
    draft_probs [B, N, V]: the distribution q_n from which the children of node n were drawn i.i.d. (with
    replacement), or None when children are deterministic (e.g. the draft's top-k) or otherwise chosen
    independently of the target.

    Walk from the root. At a node with current target distribution p, try its children c_1, c_2, ... in
    order: accept c_j with probability min(1, p(c_j)/Q_j(c_j)) and descend (p becomes the target at c_j);
    after a rejection replace p by norm(max(0, p - Q_j)) and try the next sibling. If every child is
    rejected (or the node is a leaf), emit a draw from the current p. Q_j = q_n for sampled children and
    the point mass at c_j for deterministic ones.

    Why it is exact: each sibling trial is one step of ordinary speculative sampling of the current p with
    proposal Q_j, whose output is distributed as p when its "rejected" branch draws from the residual; the
    remaining siblings plus the final draw are, by induction, exactly such a residual draw, because c_j is
    independent of the earlier siblings' coins (i.i.d. children, or fixed ones). Hence the token leaving a
    node is distributed as the node's target p, and the subtree of an accepted child was drafted after that
    child, so the argument repeats at the next depth. For deterministic distinct children the rule reduces
    to SGLang's "target-only" rule (sample y ~ p and descend iff y is a child). Duplicate sampled children
    are harmless: a rejected token has zero residual mass, so its duplicates are rejected too.

    Returns (path int32[B, D] accepted node indices by depth, padded with 0; n_accepted int32[B];
    next_token int32[B]).
    """
    children = jnp.asarray(tree.children)
    num_children = tree.children.shape[1]
    depth = tree.max_depth

    def walk(key, p_nodes, q_nodes, tokens):
        vocab = p_nodes.shape[-1]

        def level(carry, level_key):
            cur, n, path, done, next_token = carry
            keys = jax.random.split(level_key, num_children + 1)
            p = p_nodes[cur]
            chosen = jnp.int32(-1)
            for j in range(num_children):  # static sibling order
                child = children[cur, j]
                trial = (child >= 0) & (chosen < 0)
                x = tokens[jnp.maximum(child, 0)]
                proposal = jax.nn.one_hot(x, vocab, dtype=p.dtype) if q_nodes is None else q_nodes[cur]
                accept = trial & (jax.random.uniform(keys[j]) * proposal[x] < p[x])
                chosen = jnp.where(accept, child, chosen)
                p = jnp.where(trial & ~accept, _residual(p, proposal), p)
            found = ~done & (chosen >= 0)
            stop = ~done & (chosen < 0)
            next_token = jnp.where(stop, sample(keys[num_children], p), next_token)
            path = path.at[n].set(jnp.where(found, chosen, 0), mode="drop")
            return (jnp.where(found, chosen, cur), n + found, path, done | stop, next_token), None

        init = (jnp.int32(0), jnp.int32(0), jnp.zeros(depth, jnp.int32), jnp.bool_(False), jnp.int32(0))
        (_, n, path, _, next_token), _ = jax.lax.scan(level, init, jax.random.split(key, depth + 1))
        return path, n, next_token

    keys = jax.random.split(key, tree_tokens.shape[0])
    if draft_probs is None:
        return jax.vmap(lambda k, p, t: walk(k, p, None, t))(keys, target_probs, tree_tokens)
    return jax.vmap(walk)(keys, target_probs, draft_probs, tree_tokens)
