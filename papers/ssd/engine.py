"""Batched decoding over the KV cache: autoregressive, chain speculative decoding and tree speculative decoding.

One `generate` call is one compiled program: prefill, then a `lax.while_loop` of rounds until every sequence
has hit a stop token or `max_new_tokens`; the caches are donated and handed back for reuse.

Bookkeeping that keeps every round uniform (no ragged feeds, no special first round):
  * `root[B]` is the last emitted token; it is in neither cache. The target cache holds everything before it.
  * `pending[B]` is the token before `root`; the draft cache holds everything before `pending`. Each round the
    draft first consumes [pending, root] (2 tokens), which gives its distribution after root.
  * After a round that accepted n draft tokens d_1..d_n and emitted t: the target keeps root, d_1..d_n
    (length + 1 + n) and the draft keeps pending, root, d_1..d_{n-1} (length + 1 + n); the new pending is
    d_n (root when n = 0) and the new root is t. The draft never needs the KV of d_K (not computed in chain
    mode), because d_n is always re-fed.
  * Finished rows still ride along in the batch but their lengths are frozen and nothing is emitted.

Chain rounds: draft K tokens (one 2-token verify, then K - 1 decodes in a `lax.scan`), verify K + 1 tokens
with the target in one forward, accept with papers.ssd.sampling, roll both caches back by length.
Tree rounds: the draft expands a static tree level by level (each level one tree-masked forward over all
nodes; unfinished levels are masked off by the ancestor mask), the target verifies all nodes in one
tree-masked forward, and the accepted path is compacted into both caches.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from papers.ssd import sampling
from papers.ssd.tree import TreeSpec


@dataclasses.dataclass(frozen=True)
class DecodeConfig:
    mode: str = "ar"                 # "ar" | "chain" | "tree"
    max_new_tokens: int = 64
    num_draft: int = 4               # K, chain mode
    tree: TreeSpec | None = None     # tree mode
    tree_children: str = "sample"    # "sample": i.i.d. from q (SpecInfer); "topk": the draft's top-k (point masses)
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    stop_tokens: tuple[int, ...] = ()

    def __post_init__(self):
        if self.mode not in ("ar", "chain", "tree"):
            raise ValueError(f"Unknown decode mode {self.mode!r}; use ar, chain or tree.")
        if self.mode == "chain" and self.num_draft < 1:
            raise ValueError("Chain speculative decoding needs num_draft >= 1.")
        if self.mode == "tree" and (self.tree is None or self.tree.max_depth < 1):
            raise ValueError("Tree speculative decoding needs a TreeSpec with depth >= 1 (papers.ssd.tree).")
        if self.tree_children not in ("sample", "topk"):
            raise ValueError(f"tree_children must be 'sample' or 'topk', got {self.tree_children!r}.")
        if self.max_new_tokens < 1:
            raise ValueError("max_new_tokens must be at least 1.")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    @property
    def tokens_per_round(self) -> int:
        if self.mode == "ar":
            return 1
        if self.mode == "chain":
            return self.num_draft + 1
        return self.tree.max_depth + 1

    def cache_length(self, prompt_length: int) -> int:
        """KV slots a sequence can touch: prompt, outputs, and the speculative tokens of the last round."""
        speculative = {"ar": 1, "chain": self.num_draft + 2,
                       "tree": (self.tree.num_nodes + 2) if self.tree else 0}[self.mode]
        return prompt_length + self.max_new_tokens + speculative


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class DecodeResult:
    tokens: jax.Array        # int32[B, max_new_tokens], valid up to num_tokens
    num_tokens: jax.Array    # int32[B]
    rounds: jax.Array        # int32[B]: target forwards after prefill while the row was active
    accepted: jax.Array      # int32[B]: draft tokens accepted over those rounds


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class _Loop:
    target_cache: Any
    draft_cache: Any
    root: jax.Array
    pending: jax.Array
    out: jax.Array
    count: jax.Array
    done: jax.Array
    rounds: jax.Array
    accepted: jax.Array
    step: jax.Array


def _default_lm():
    from core.nn import transformer  # imported late: the engine also runs on papers.ssd.toy_lm
    return transformer


def init_caches(target_config, draft_config, config: DecodeConfig, batch: int, prompt_length: int,
                dtype=jnp.bfloat16, lm=None) -> tuple[Any, Any]:
    lm = lm or _default_lm()
    length = config.cache_length(prompt_length)
    draft_cache = None if config.mode == "ar" else lm.init_cache(draft_config, batch, length, dtype)
    return lm.init_cache(target_config, batch, length, dtype), draft_cache


def make_generate(target_graphdef: nnx.GraphDef, draft_graphdef: nnx.GraphDef | None,
                  config: DecodeConfig, lm=None) -> Callable:
    """-> jitted generate(target_state, draft_state, target_cache, draft_cache, prompts[B, L],
    prompt_lengths[B], key) -> (DecodeResult, target_cache, draft_cache); caches are donated.

    Prompts are right-padded; every prompt needs at least one token. `lm` is the module with the KV-cache
    API (init_cache, prefill, decode, verify, rollback, verify_tree, commit_tree_path): core.nn.transformer
    by default, papers.ssd.toy_lm in the exactness tests.
    """
    lm = lm or _default_lm()

    @functools.partial(jax.jit, donate_argnames=("target_cache", "draft_cache"))
    def generate(target_state, draft_state, target_cache, draft_cache, prompts, prompt_lengths, key):
        target = nnx.merge(target_graphdef, target_state)
        draft = None if draft_graphdef is None else nnx.merge(draft_graphdef, draft_state)
        return _generate(lm, target, draft, target_cache, draft_cache, prompts, prompt_lengths, key, config)

    return generate


def _pick(key, logits, config: DecodeConfig):
    """(token, transformed probs or None at T = 0) from logits [..., V]."""
    if config.greedy:
        return jnp.argmax(logits, -1).astype(jnp.int32), None
    return sampling.sample_logits(key, logits, config.temperature, config.top_k, config.top_p)


def _generate(lm, target, draft, target_cache, draft_cache, prompts, prompt_lengths, key, config):
    batch = prompts.shape[0]
    prompt_lengths = prompt_lengths.astype(jnp.int32)
    rows = jnp.arange(batch)
    # Caches come back from the previous call (donated); prefill writes from slot 0, so empty them first.
    empty = jnp.zeros_like(prompt_lengths)
    logits, target_cache = lm.prefill(target, prompts, prompt_lengths, lm.rollback(target_cache, empty))
    key_first, key = jax.random.split(key)
    first, _ = _pick(key_first, logits[rows, prompt_lengths - 1], config)
    pending = prompts[rows, prompt_lengths - 1].astype(jnp.int32)
    if config.mode != "ar":
        _, draft_cache = lm.prefill(draft, prompts, prompt_lengths, lm.rollback(draft_cache, empty))
        draft_cache = lm.rollback(draft_cache, prompt_lengths - 1)

    width = config.tokens_per_round
    zeros = jnp.zeros(batch, jnp.int32)
    loop = _Loop(target_cache, draft_cache, first, pending,
                 out=jnp.zeros((batch, config.max_new_tokens + width), jnp.int32), count=zeros,
                 done=jnp.zeros(batch, bool), rounds=zeros, accepted=zeros, step=jnp.int32(0))
    loop = _emit(loop, first[:, None], jnp.ones(batch, jnp.int32), config)
    round_fn = {"ar": _ar_round, "chain": _chain_round, "tree": _tree_round}[config.mode]

    def body(loop):
        return round_fn(lm, target, draft, loop, jax.random.fold_in(key, loop.step), config)

    loop = jax.lax.while_loop(lambda loop: ~jnp.all(loop.done), body, loop)
    result = DecodeResult(loop.out[:, :config.max_new_tokens], loop.count, loop.rounds, loop.accepted)
    return result, loop.target_cache, loop.draft_cache


def _emit(loop: _Loop, tokens: jax.Array, num: jax.Array, config: DecodeConfig) -> _Loop:
    """Appends tokens[:, :num] to active rows, truncating after a stop token or at max_new_tokens."""
    index = jnp.arange(tokens.shape[1])[None]
    valid = index < num[:, None]
    if config.stop_tokens:
        is_stop = valid & jnp.isin(tokens, jnp.asarray(config.stop_tokens, tokens.dtype))
        stopped = is_stop.any(-1)
        num = jnp.where(stopped, jnp.argmax(is_stop, -1) + 1, num)
    else:
        stopped = jnp.zeros_like(loop.done)
    num = jnp.where(loop.done, 0, jnp.minimum(num, config.max_new_tokens - loop.count))
    position = jnp.where(index < num[:, None], loop.count[:, None] + index, loop.out.shape[1])
    out = loop.out.at[jnp.arange(tokens.shape[0])[:, None], position].set(tokens, mode="drop")
    count = loop.count + num
    done = loop.done | stopped | (count >= config.max_new_tokens)
    return dataclasses.replace(loop, out=out, count=count, done=done)


def _finish_round(loop: _Loop, target_cache, draft_cache, root, pending, emitted, n, config) -> _Loop:
    active = ~loop.done
    loop = dataclasses.replace(
        loop, target_cache=target_cache, draft_cache=draft_cache,
        root=jnp.where(active, root, loop.root), pending=jnp.where(active, pending, loop.pending),
        rounds=loop.rounds + active, accepted=loop.accepted + jnp.where(active, n, 0), step=loop.step + 1)
    return _emit(loop, emitted, n + 1, config)


def _ar_round(lm, target, draft, loop: _Loop, key, config):
    del draft
    logits, target_cache = lm.decode(target, loop.root, loop.target_cache)
    token, _ = _pick(key, logits, config)
    n = jnp.zeros_like(token)
    return _finish_round(loop, target_cache, None, token, loop.root, token[:, None], n, config)


def _chain_round(lm, target, draft, loop: _Loop, key, config):
    num_draft = config.num_draft
    key_draft, key_verify = jax.random.split(key)
    draft_keys = jax.random.split(key_draft, num_draft)
    target_length, draft_length = loop.target_cache.lengths, loop.draft_cache.lengths

    # Draft: [pending, root] in one forward, then K - 1 single-token decodes in one compiled loop.
    logits, draft_cache = lm.verify(draft, jnp.stack([loop.pending, loop.root], 1), loop.draft_cache)
    first, first_probs = _pick(draft_keys[0], logits[:, 1], config)

    def draft_step(carry, step_key):
        token, cache = carry
        logits, cache = lm.decode(draft, token, cache)
        token, probs = _pick(step_key, logits, config)
        return (token, cache), (token, probs)

    (_, draft_cache), (tokens, probs) = jax.lax.scan(draft_step, (first, draft_cache), draft_keys[1:])
    draft_tokens = jnp.concatenate([first[:, None], tokens.T], 1)

    logits, target_cache = lm.verify(target, jnp.concatenate([loop.root[:, None], draft_tokens], 1),
                                      loop.target_cache)
    if config.greedy:
        n, next_token = sampling.verify_greedy(logits, draft_tokens)
    else:
        draft_probs = jnp.concatenate([first_probs[:, None], jnp.swapaxes(probs, 0, 1)], 1)
        target_probs = sampling.sampling_probs(logits, config.temperature, config.top_k, config.top_p)
        n, next_token = sampling.verify_chain(key_verify, target_probs, draft_probs, draft_tokens)

    n = jnp.where(loop.done, 0, n)
    keep = jnp.where(loop.done, 0, 1 + n)
    target_cache = lm.rollback(target_cache, target_length + keep)
    draft_cache = lm.rollback(draft_cache, draft_length + keep)
    chain = jnp.concatenate([loop.root[:, None], draft_tokens], 1)
    pending = jnp.take_along_axis(chain, n[:, None], 1)[:, 0]
    index = jnp.arange(num_draft + 1)[None]
    emitted = jnp.where(index < n[:, None], jnp.pad(draft_tokens, ((0, 0), (0, 1))), next_token[:, None])
    return _finish_round(loop, target_cache, draft_cache, next_token, pending, emitted, n, config)


def _draft_tree_layout(tree: TreeSpec) -> tuple[np.ndarray, np.ndarray]:
    """Depths and ancestor mask of the draft's tree feed [pending, root, nodes 1..N-1]."""
    size = tree.num_nodes + 1
    depths = np.concatenate([[0], tree.depths + 1]).astype(np.int32)
    mask = np.zeros((size, size), bool)
    mask[:, 0] = True
    mask[1:, 1:] = tree.ancestor_mask
    return depths, mask


def _level_tables(tree: TreeSpec) -> tuple[np.ndarray, np.ndarray]:
    """(level_nodes int32[D, W]: the nodes at each depth < D, padded by repeating the level's last node;
    parent_slot int32[N]: where each node's parent sits in its own level's row of level_nodes)."""
    depth = tree.max_depth
    levels = [np.flatnonzero(tree.depths == d) for d in range(depth)]
    width = max(len(nodes) for nodes in levels)
    level_nodes = np.stack([np.pad(nodes, (0, width - len(nodes)), mode="edge") for nodes in levels]).astype(np.int32)
    slot_in_level = np.zeros(tree.num_nodes, np.int32)
    for nodes in levels:
        slot_in_level[nodes] = np.arange(len(nodes))
    return level_nodes, slot_in_level[np.maximum(np.asarray(tree.parents), 0)]


def _tree_round(lm, target, draft, loop: _Loop, key, config):
    tree = config.tree
    depth = tree.max_depth
    key_draft, key_verify = jax.random.split(key)
    sibling_rank = np.zeros(tree.num_nodes, np.int32)
    for node in range(1, tree.num_nodes):
        sibling_rank[node] = list(tree.children[tree.parents[node]]).index(node)
    draft_depths, draft_mask = _draft_tree_layout(tree)
    level_nodes, parent_slot = _level_tables(tree)
    node_depths = jnp.asarray(tree.depths)
    use_topk = config.greedy or config.tree_children == "topk"
    batch = loop.root.shape[0]

    # Draft the tree one level per forward; deeper (not yet drafted) nodes are placeholders that the
    # ancestor mask hides from the nodes being expanded. Only the level's own nodes (at most W of the N)
    # are expanded: their logits rows are gathered first, so the per-level top-k / softmax / sampling
    # work is [B, W, V], not [B, N, V] (the top-k as argmax passes: sampling.top_k_indices).
    def expand(level, carry):
        nodes, _, draft_cache = carry
        feed = jnp.concatenate([loop.pending[:, None], nodes], 1)
        logits, draft_cache = lm.verify_tree(draft, feed, jnp.asarray(draft_depths), jnp.asarray(draft_mask),
                                              draft_cache)
        logits = logits[:, 1:]
        level_logits = jnp.take(logits, jnp.asarray(level_nodes)[level], axis=1)      # [B, W, V]
        if use_topk:
            width, vocab = level_logits.shape[1:]
            ranked = sampling.top_k_indices(level_logits.reshape(batch * width, vocab), int(tree.children.shape[1]))
            children = ranked.reshape(batch, width, -1).astype(jnp.int32)[:, parent_slot, sibling_rank]
        else:
            level_probs = sampling.sampling_probs(level_logits, config.temperature, config.top_k, config.top_p)
            children = sampling.sample(jax.random.fold_in(key_draft, level), level_probs[:, parent_slot])
        nodes = jnp.where(node_depths == level + 1, children, nodes)
        return nodes, (None if use_topk else logits.astype(jnp.float32)), draft_cache

    nodes = jnp.zeros((batch, tree.num_nodes), jnp.int32).at[:, 0].set(loop.root)
    # Sampled children: the last level's logits (f32, as sampling_probs reads them) give every q at the end.
    last_logits = None if use_topk else jnp.zeros((batch, tree.num_nodes, draft.config.vocab_size), jnp.float32)
    init = (nodes, last_logits, loop.draft_cache)
    # After the last level every node above the leaves has its final token, so the last forward's
    # distributions are the q of every non-leaf node, and its KV is right for every node we may keep.
    nodes, last_logits, draft_cache = jax.lax.fori_loop(0, depth, expand, init)
    draft_probs = None if use_topk else sampling.sampling_probs(last_logits, config.temperature, config.top_k,
                                                                 config.top_p)

    logits, target_cache = lm.verify_tree(target, nodes, node_depths, jnp.asarray(tree.ancestor_mask),
                                           loop.target_cache)
    if config.greedy:
        path, n, next_token = sampling.verify_tree_greedy(logits, nodes, tree)
    else:
        target_probs = sampling.sampling_probs(logits, config.temperature, config.top_k, config.top_p)
        path, n, next_token = sampling.verify_tree(
            key_verify, target_probs, draft_probs, nodes, tree)

    n = jnp.where(loop.done, 0, n)
    keep = jnp.where(loop.done, 0, 1 + n)
    target_cache = lm.commit_tree_path(target_cache, jnp.concatenate([jnp.zeros((batch, 1), jnp.int32), path], 1),
                                        keep)
    # Draft feed index of tree node i is i + 1; keep pending, root and path nodes up to depth n - 1.
    draft_path = jnp.concatenate([jnp.zeros((batch, 1), jnp.int32), 1 + jnp.concatenate(
        [jnp.zeros((batch, 1), jnp.int32), path[:, :-1]], 1)], 1)
    draft_cache = lm.commit_tree_path(draft_cache, draft_path, keep)
    path_tokens = jnp.take_along_axis(nodes, path, 1)
    chain = jnp.concatenate([loop.root[:, None], path_tokens], 1)
    pending = jnp.take_along_axis(chain, n[:, None], 1)[:, 0]
    index = jnp.arange(depth + 1)[None]
    emitted = jnp.where(index < n[:, None], jnp.pad(path_tokens, ((0, 0), (0, 1))), next_token[:, None])
    return _finish_round(loop, target_cache, draft_cache, next_token, pending, emitted, n, config)

