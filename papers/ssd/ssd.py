"""Speculative speculative decoding (SSD / Saguaro): the draft pre-speculates on its own device.

While the target verifies round T's speculation s_1..s_K (after the last emitted token `root`), the draft
builds a *speculation cache* for every likely verification outcome v = (k accepted, bonus token t*):

  glue   the K + 1 verified tokens [root, s_1..s_K] are decoded by the draft (KV for the kept prefix);
  forks  at each depth j the draft's top-F_j tokens after root, s_1..s_j, excluding s_{j+1} (a rejected
         token has zero residual mass, so it can never be the bonus token after j acceptances);
  tree   K decode steps over all sum(F_j) branches at once, each branch attending to the prefix, glue
         tokens 0..j and its own earlier tokens (an ancestor mask; RoPE positions are depths, not slots).

When the outcome arrives, the branch (k, t*) is looked up: a hit is the next speculation at once, a miss runs
a fallback, either just-in-time neural drafting (used only for the rows that missed) or a fast point-mass
proposal (lossless: verified as a point mass). Only the chosen path's KV survives: the glue of the next round
re-encodes it, the tree's slots are scratch.

Exactness: every proposal reaches the verifier with the distribution it was drawn from (sigma_{F,C} of the
draft's transformed distribution, or a point mass for fast-fallback tokens), and the verifier is
papers.ssd.sampling's chain rule, so the output law is exactly the target's; tests/ssd_ssd_exactness_test.py.

Devices, the jitted programs and the host loop live in papers.ssd.ssd_runtime (`make_ssd`, `place`); the run's
statistics and the per-piece timing in papers.ssd.ssd_stats.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from papers.ssd import engine, sampling, saguaro

SOURCE_INITIAL, SOURCE_HIT, SOURCE_MISS = 0, 1, 2
SOURCE_NAMES = {"initial": SOURCE_INITIAL, "hit": SOURCE_HIT, "miss": SOURCE_MISS}


@dataclasses.dataclass(frozen=True)
class SSDConfig:
    num_draft: int = 4                          # K
    fan_out_hit: tuple[int, ...] = (2, 2, 2, 2, 2)     # F^p: forks per depth 0..K after a cache hit
    fan_out_miss: tuple[int, ...] | None = None         # F^b: after a miss (None: the same as F^p)
    saguaro_c: float = 1.0                      # C of sigma_{F,C}; 1 = plain sampling
    backup: str = "jit"                         # "jit": neural drafting for missed rows; "fast": point masses
    lookup: str = "draft"                       # "draft" (handshake) or "target" (cache copied over)
    max_new_tokens: int = 64
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    stop_tokens: tuple[int, ...] = ()
    lag: int = 2                                # rounds between enqueueing a round and reading its done flag

    def __post_init__(self):
        k = self.num_draft
        if k < 1:
            raise ValueError(f"SSD needs num_draft >= 1, got {k}.")
        for name in ("fan_out_hit", "fan_out_miss"):
            fan = getattr(self, name)
            if fan is None:
                continue
            if len(fan) != k + 1 or min(fan) < 0 or sum(fan) < 1:
                raise ValueError(f"{name} needs num_draft + 1 = {k + 1} non-negative counts with a positive "
                                 f"sum (one per accepted length 0..K), got {tuple(fan)}.")
        if self.backup not in ("jit", "fast"):
            raise ValueError(f"backup must be 'jit' or 'fast', got {self.backup!r}.")
        if self.lookup not in ("draft", "target"):
            raise ValueError(f"lookup must be 'draft' or 'target', got {self.lookup!r}.")
        if self.lookup == "target" and self.backup == "jit":
            raise ValueError("lookup='target' needs backup='fast': the neural fallback runs on the draft's "
                             "device, so use lookup='draft' with backup='jit'.")
        if not 0.0 < self.saguaro_c <= 1.0:
            raise ValueError(f"saguaro_c must lie in (0, 1], got {self.saguaro_c}.")
        if self.max_new_tokens < 1 or self.lag < 0:
            raise ValueError("max_new_tokens must be >= 1 and lag >= 0.")
        sampling.sampling_probs(jnp.zeros(2), self.temperature, self.top_k, self.top_p)  # validates them

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    @property
    def miss_fan_out(self) -> tuple[int, ...]:
        return self.fan_out_hit if self.fan_out_miss is None else self.fan_out_miss

    @property
    def fan_out_union(self) -> tuple[int, ...]:
        """Fork slots per depth in the compiled tree: rows use the first F^p_j or F^b_j of them."""
        return tuple(max(a, b) for a, b in zip(self.fan_out_hit, self.miss_fan_out))


@dataclasses.dataclass(frozen=True)
class TreeLayout:
    """The draft's feed [glue 0..K | level 0 (forks) | level 1 | ... | level K-1], one slot per branch per
    level; branch b forks at depth branch_depth[b] with the branch_rank[b]-th best non-drafted token."""
    num_draft: int
    branch_depth: np.ndarray     # int32[NB]
    branch_rank: np.ndarray      # int32[NB]
    depths: np.ndarray           # int32[S]: RoPE offset of each feed slot from the root's position
    mask: np.ndarray             # bool[S, S]: ancestor mask over the feed

    @property
    def num_branches(self) -> int:
        return len(self.branch_depth)

    @property
    def size(self) -> int:
        return len(self.depths)

    def level(self, index: int) -> slice:
        start = self.num_draft + 1 + index * self.num_branches
        return slice(start, start + self.num_branches)


def tree_layout(num_draft: int, fan_out: Sequence[int]) -> TreeLayout:
    k = num_draft
    branch_depth = np.concatenate([np.full(f, j) for j, f in enumerate(fan_out)]).astype(np.int32)
    branch_rank = np.concatenate([np.arange(f) for f in fan_out]).astype(np.int32)
    nb = len(branch_depth)
    size = k + 1 + k * nb
    depths = np.zeros(size, np.int32)
    mask = np.zeros((size, size), bool)
    depths[:k + 1] = np.arange(k + 1)
    mask[:k + 1, :k + 1] = np.tril(np.ones((k + 1, k + 1), bool))
    for level in range(k):
        for b in range(nb):
            slot = k + 1 + level * nb + b
            depths[slot] = branch_depth[b] + 1 + level
            mask[slot, :branch_depth[b] + 1] = True
            mask[slot, [k + 1 + earlier * nb + b for earlier in range(level + 1)]] = True
    return TreeLayout(k, branch_depth, branch_rank, depths, mask)


# ----------------------------------------------------------------------------------------------------------
# Device-side state.

@jax.tree_util.register_dataclass
@dataclasses.dataclass
class Speculation:
    tokens: jax.Array            # int32[B, K]
    probs: jax.Array | None      # float32[B, K, V] proposal distributions (None at T = 0)
    source: jax.Array            # int32[B]: SOURCE_INITIAL / HIT / MISS


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class SpeculationCache:
    forks: jax.Array             # int32[B, NB]: the bonus token each branch assumes
    tokens: jax.Array            # int32[B, NB, K]: the branch's pre-drafted next speculation
    probs: jax.Array | None      # float32[B, NB, K, V] (None at T = 0)


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class TargetLoop:
    cache: Any
    root: jax.Array              # int32[B]: last emitted token (in neither cache)
    out: jax.Array
    count: jax.Array
    done: jax.Array
    rounds: jax.Array            # int32[B, 3]: rounds by the speculation's source
    accepted: jax.Array          # int32[B, 3]: accepted draft tokens by source


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class DraftLoop:
    cache: Any
    root: jax.Array              # int32[B]
    spec: jax.Array              # int32[B, K]: the speculation the target is verifying now
    source: jax.Array            # int32[B]: where that speculation came from
    hits: jax.Array              # int32[B, K+1]: cache hits by accepted length
    outcomes: jax.Array          # int32[B, K+1]: lookups by accepted length
    fallback_calls: jax.Array    # int32[]: rounds in which the neural fallback ran


@dataclasses.dataclass
class SSDResult:
    tokens: np.ndarray           # int32[B, max_new_tokens]
    num_tokens: np.ndarray       # int32[B]
    rounds: int                  # rounds enqueued (the batch's; finished rows ride along)
    stats: dict                  # papers.ssd.ssd_stats.run_stats


# ----------------------------------------------------------------------------------------------------------
# Pure pieces (shared by both devices' programs).

def _draw_row(key, logits, fan_out: int, config: SSDConfig):
    return saguaro.draw(key, logits, fan_out, config.saguaro_c, config.temperature, config.top_k, config.top_p)


def chain_draft(lm, draft, cache, start, key, fan_out: Sequence[int], config: SSDConfig):
    """K draft tokens after `start` (one decode each); the cache's lengths are restored afterwards."""
    lengths = cache.lengths
    token, tokens, probs = start, [], []
    for i in range(config.num_draft):
        logits, cache = lm.decode(draft, token, cache)
        token, prob = _draw_row(jax.random.fold_in(key, i), logits, fan_out[i], config)
        tokens.append(token)
        probs.append(prob)
    stacked = None if config.greedy else jnp.stack(probs, 1)
    return jnp.stack(tokens, 1), stacked, lm.rollback(cache, lengths)


def build_tree(lm, draft, cache, root, spec, key, layout: TreeLayout, config: SSDConfig):
    """Glue + forks + K tree steps -> (SpeculationCache, cache with lengths unchanged).

    Each forward runs the whole feed through verify_tree (one tree-masked pass, KV written at scratch slots
    after the prefix); slots not yet drafted hold placeholders that the ancestor mask hides from every slot
    that is read.
    """
    k = config.num_draft
    batch = root.shape[0]
    depths, mask = jnp.asarray(layout.depths), jnp.asarray(layout.mask)
    feed = jnp.zeros((batch, layout.size), jnp.int32).at[:, :k + 1].set(jnp.concatenate([root[:, None], spec], 1))
    logits, cache = lm.verify_tree(draft, feed, depths, mask, cache)
    glue = logits[:, :k + 1].astype(jnp.float32)
    vocab = glue.shape[-1]
    drafted = jnp.pad(jax.nn.one_hot(spec, vocab, dtype=bool), ((0, 0), (0, 1), (0, 0)))
    # the forks: each glue position's best tokens other than the drafted one (argmax passes, not a sort)
    num_forks = max(1, int(layout.branch_rank.max()) + 1)
    ranked = sampling.top_k_indices(jnp.where(drafted, -jnp.inf, glue).reshape(-1, vocab), num_forks)
    ranked = ranked.reshape(batch, k + 1, num_forks)
    forks = ranked[:, layout.branch_depth, layout.branch_rank].astype(jnp.int32)       # [B, NB]
    feed = feed.at[:, layout.level(0)].set(forks)
    tokens, probs = [], []
    for level in range(k):   # K more forwards: level `level`'s logits give the branch's draft token level+1
        logits, cache = lm.verify_tree(draft, feed, depths, mask, cache)
        token, prob = _draw_row(jax.random.fold_in(key, level), logits[:, layout.level(level)],
                                config.fan_out_hit[level], config)
        tokens.append(token)
        probs.append(prob)
        if level + 1 < k:
            feed = feed.at[:, layout.level(level + 1)].set(token)
    stacked = None if config.greedy else jnp.stack(probs, 2)
    return SpeculationCache(forks, jnp.stack(tokens, 2), stacked), cache


def lookup(table: SpeculationCache, outcome: jax.Array, source: jax.Array, layout: TreeLayout,
           config: SSDConfig) -> tuple[jax.Array, jax.Array, jax.Array | None]:
    """(hit[B], tokens[B, K], probs) for outcome[B, 3] = (k accepted, bonus t*, active).

    Rows whose current speculation came from a hit may use the first F^p_k forks at depth k, the others the
    first F^b_k. Missed rows get the fast fallback here (the caller may replace it by neural drafting): the
    best-ranked branch at depth k, proposed as point masses (lossless whatever the tokens are), or the bonus
    token repeated when depth k has no branch.
    """
    n, bonus = outcome[:, 0], outcome[:, 1]
    depth = jnp.asarray(layout.branch_depth)[None]
    rank = jnp.asarray(layout.branch_rank)[None]
    allowed = jnp.where((source == SOURCE_HIT)[:, None], jnp.asarray(config.fan_out_hit)[depth[0]][None],
                        jnp.asarray(config.miss_fan_out)[depth[0]][None])
    at_depth = (depth == n[:, None]) & (rank < allowed)
    match = at_depth & (table.forks == bonus[:, None])
    hit = match.any(-1)
    first = at_depth & (rank == 0)
    branch = jnp.where(hit, jnp.argmax(match, -1), jnp.argmax(first, -1))
    rows = jnp.arange(n.shape[0])
    tokens = table.tokens[rows, branch]
    tokens = jnp.where(hit[:, None] | first.any(-1)[:, None], tokens, bonus[:, None])
    if table.probs is None:
        return hit, tokens, None
    point_mass = jax.nn.one_hot(tokens, table.probs.shape[-1], dtype=table.probs.dtype)
    probs = jnp.where(hit[:, None, None], table.probs[rows, branch], point_mass)
    return hit, tokens, probs


def verify_round(lm, target, loop: TargetLoop, spec: Speculation, key, config: SSDConfig):
    """Target side: verify [root, s_1..s_K], roll back, emit; -> (loop, outcome int32[B, 3])."""
    length = loop.cache.lengths
    logits, cache = lm.verify(target, jnp.concatenate([loop.root[:, None], spec.tokens], 1), loop.cache)
    if config.greedy:
        n, bonus = sampling.verify_greedy(logits, spec.tokens)
    else:
        target_probs = sampling.sampling_probs(logits, config.temperature, config.top_k, config.top_p)
        n, bonus = sampling.verify_chain(key, target_probs, spec.probs, spec.tokens)
    active = ~loop.done
    n = jnp.where(active, n, 0)
    cache = lm.rollback(cache, length + jnp.where(active, 1 + n, 0))
    by_source = jax.nn.one_hot(spec.source, 3, dtype=jnp.int32) * active[:, None]
    index = jnp.arange(config.num_draft + 1)[None]
    emitted = jnp.where(index < n[:, None], jnp.pad(spec.tokens, ((0, 0), (0, 1))), bonus[:, None])
    loop = dataclasses.replace(loop, cache=cache, root=jnp.where(active, bonus, loop.root),
                               rounds=loop.rounds + by_source, accepted=loop.accepted + by_source * n[:, None])
    loop = engine._emit(loop, emitted, n + 1, config)
    return loop, jnp.stack([n, bonus, active.astype(jnp.int32)], 1)


def fallback_buckets(batch: int) -> tuple[int, ...]:
    """Sub-batch sizes the neural fallback compiles for: batch / 8, / 4, / 2 and the batch (rounded up), so
    a few missed rows cost at most an eighth of a full-batch drafting pass, for four compiled copies."""
    return tuple(sorted({-(-batch // 2 ** i) for i in range(4)}))


def _neural_fallback(lm, draft, cache, need, bonus, tokens, probs, key, config: SSDConfig):
    """Just-in-time drafting for the rows that missed only: they are gathered into the smallest sub-batch
    bucket that holds them (a lax.switch over static sizes), drafted from their own cache rows (the drafting
    writes only scratch slots of the gathered copy), and scattered back; nothing runs when no row missed."""
    batch = need.shape[0]
    buckets = fallback_buckets(batch)
    order = jnp.argsort(~need, stable=True)          # missed rows first

    def run(size):
        def branch(operands):
            tokens, probs = operands
            rows = order[:size]
            sub = jax.tree.map(lambda x: x[rows] if (x.ndim >= 1 and x.shape[0] == batch) else x, cache)
            new_tokens, new_probs, _ = chain_draft(lm, draft, sub, bonus[rows], key, config.miss_fan_out, config)
            use = need[rows]
            tokens = tokens.at[rows].set(jnp.where(use[:, None], new_tokens, tokens[rows]))
            if probs is not None:
                probs = probs.at[rows].set(jnp.where(use[:, None, None], new_probs, probs[rows]))
            return tokens, probs
        return branch

    count = need.sum()
    index = jnp.searchsorted(jnp.asarray(buckets), count)
    branches = [lambda operands: operands] + [run(size) for size in buckets]
    return jax.lax.switch(jnp.where(count > 0, index + 1, 0), branches, (tokens, probs))


def advance_draft(lm, draft, loop: DraftLoop, table: SpeculationCache, outcome, key, layout: TreeLayout,
                   config: SSDConfig):
    """Draft side, once the outcome arrived: keep the glue of the accepted path, look the outcome up, run the
    neural fallback for missed rows (backup 'jit'), and move on -> (loop, next Speculation)."""
    n, bonus, active = outcome[:, 0], outcome[:, 1], outcome[:, 2].astype(bool)
    hit, tokens, probs = lookup(table, outcome, loop.source, layout, config)
    cache = lm.rollback(loop.cache, loop.cache.lengths + jnp.where(active, 1 + n, 0))
    calls = loop.fallback_calls
    if config.backup == "jit":
        need = active & ~hit
        tokens, probs = _neural_fallback(lm, draft, cache, need, bonus, tokens, probs, key, config)
        calls = calls + need.any().astype(jnp.int32)
    source = jnp.where(hit, SOURCE_HIT, SOURCE_MISS).astype(jnp.int32)
    by_depth = jax.nn.one_hot(n, config.num_draft + 1, dtype=jnp.int32) * active[:, None]
    loop = DraftLoop(cache=cache, root=jnp.where(active, bonus, loop.root),
                     spec=jnp.where(active[:, None], tokens, loop.spec),
                     source=jnp.where(active, source, loop.source),
                     hits=loop.hits + by_depth * hit[:, None], outcomes=loop.outcomes + by_depth,
                     fallback_calls=calls)
    return loop, Speculation(loop.spec, probs, loop.source)
