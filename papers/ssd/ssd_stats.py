"""Measurement of an SSD run, kept apart from the decoding algorithm in papers.ssd.ssd.

  run_stats    the counters a run accumulates on device (rounds and accepted tokens by where the speculation
               came from, cache hits by accepted length, fallback rounds) summarised as rates: the
               `stats` of every SSDResult.
  time_pieces  each piece of a round (verify, tree, advance, the transfers, the target-side lookup) run one at
               a time and blocked on, for the benchmark's idle-time breakdown.

This module imports nothing from papers.ssd.ssd or ssd_runtime: the runtime passes its counters in by name, and
time_pieces only uses the runtime's public programs and placement helpers.
"""

from __future__ import annotations

import time
from typing import Mapping, Sequence

import jax
import numpy as np


def _ratio(numerator, denominator):
    """numerator / denominator, or None when nothing was counted (not 0: a rate of no events is undefined)."""
    return numerator / denominator if denominator else None


def run_stats(rounds_by_source: Mapping[str, int], accepted_by_source: Mapping[str, int],
              hits_by_accepted: Sequence[int], outcomes_by_accepted: Sequence[int], fallback_rounds: int,
              enqueued_rounds: int, num_draft: int, host_enqueue_s: float | None = None) -> dict:
    """Rates of one run from its totals.

    rounds_by_source / accepted_by_source: verified rounds and accepted draft tokens keyed by where the
    speculation came from ("initial", "hit", "miss"); hits / outcomes_by_accepted: cache hits and lookups by
    accepted length 0..K; host_enqueue_s: host seconds spent enqueueing all rounds (None: not measured).
    """
    rounds, accepted = sum(rounds_by_source.values()), sum(accepted_by_source.values())
    hits = [float(h) for h in hits_by_accepted]
    outcomes = [float(o) for o in outcomes_by_accepted]
    stats = dict(
        rounds=int(rounds), accepted=int(accepted),
        hit_rate=_ratio(sum(hits), sum(outcomes)),
        hit_rate_by_accepted=[_ratio(h, o) for h, o in zip(hits, outcomes)],
        outcomes_by_accepted=[int(o) for o in outcomes],
        accepted_on_hit=_ratio(accepted_by_source["hit"], rounds_by_source["hit"]),
        accepted_on_miss=_ratio(accepted_by_source["miss"], rounds_by_source["miss"]),
        accepted_initial=_ratio(accepted_by_source["initial"], rounds_by_source["initial"]),
        rounds_by_source={name: int(rounds_by_source[name]) for name in ("initial", "hit", "miss")},
        fallback_rounds=int(fallback_rounds), enqueued_rounds=enqueued_rounds, num_draft=num_draft)
    stats["acceptance"] = _ratio(stats["accepted"], stats["rounds"] * num_draft)
    if host_enqueue_s is not None:
        stats["host_enqueue_s_per_round"] = host_enqueue_s / enqueued_rounds
    return stats


def time_pieces(runtime, prompts, prompt_lengths, key, num_rounds: int = 8) -> dict:
    """Median seconds of each piece of a round of `runtime` (a papers.ssd.ssd_runtime.SSDRuntime), run one at a time
    (each blocked on): target verify, draft tree, draft advance (lookup + fallback), the outcome transfer
    target -> draft, the speculation transfer draft -> target, the cache transfer and the target-side lookup.
    Compare with `generate`'s seconds per round to get the idle times."""
    times = {name: [] for name in ("verify", "tree", "advance", "outcome_transfer", "spec_transfer",
                                   "cache_transfer", "target_lookup")}

    def timed(name, fn, *args):
        t0 = time.perf_counter()
        out = jax.block_until_ready(fn(*args))
        times[name].append(time.perf_counter() - t0)
        return out

    programs = runtime.programs
    batch = np.asarray(prompts).shape[0]
    tloop, dloop, spec, (key_target, key_draft) = runtime.start(prompts, prompt_lengths, key)
    jax.block_until_ready((tloop, dloop, spec))
    for step in range(num_rounds):
        source = spec.source
        tloop, outcome, _ = timed("verify", programs.verify, runtime.target_state, tloop, spec, key_target, step)
        dloop, table = timed("tree", programs.tree, runtime.draft_state, dloop, key_draft, step)
        outcome_on_draft = timed("outcome_transfer", runtime.to_draft, outcome)
        dloop, spec_on_draft = timed("advance", programs.advance, runtime.draft_state, dloop, table,
                                     outcome_on_draft, key_draft, step)
        table_on_target = timed("cache_transfer", runtime.to_target, table, batch)
        timed("target_lookup", programs.target_lookup, table_on_target, outcome, source)
        spec = timed("spec_transfer", runtime.to_target, spec_on_draft, batch)
    runtime.keep_caches(tloop, dloop, np.asarray(prompts).shape[1])
    # The first round of each piece may include compilation.
    return {name: float(np.median(v[1:] if len(v) > 1 else v)) for name, v in times.items()}
