"""SSD's runtime: the target on one or more devices, the draft on its own, each round's pieces as separately
jitted programs, and the host loop that enqueues them (papers.ssd.ssd holds the algorithm they run).

    runtime = make_ssd(target_model, draft_model, ssd.SSDConfig(...), place(1, separate_draft=True))
    result = runtime.generate(prompts, prompt_lengths, key)

Devices and the host. The target runs on one or more devices (the batch is split over them), the draft on
its own device (or the same one). Each piece is a separately jitted program committed to its devices, and the
host only *enqueues*: JAX's asynchronous dispatch lets target verification and the draft's tree run at the
same time, and the outcome / speculation move device-to-device (`jax.device_put`) without a host round trip.
The host reads back one `done` flag per round, `lag` rounds late, to stop the loop, and the tokens at the end.

Where the lookup runs (`lookup`), which decides what crosses devices on the critical path:
  "draft"   (the paper's handshake) outcome target -> draft, lookup (+ neural fallback) on the draft, the
            chosen speculation draft -> target: two transfers between verify T and verify T + 1.
  "target"  the whole cache (tokens, and at T > 0 the proposal distributions of every branch) is copied to
            the target while it is still verifying, and both sides run the same deterministic lookup: no
            transfer on the target's critical path (the outcome still goes to the draft, which has slack).
            Only with the fast fallback (a neural fallback must run where the draft's weights are).
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from papers.ssd import engine, ssd, ssd_stats


# ----------------------------------------------------------------------------------------------------------
# Devices.

@dataclasses.dataclass(frozen=True)
class Placement:
    target_devices: tuple
    draft_device: Any

    @property
    def separate(self) -> bool:
        return self.draft_device not in self.target_devices


def place(num_target_devices: int = 1, separate_draft: bool = True, devices: Sequence | None = None) -> Placement:
    """Target on the first num_target_devices devices, the draft on the next one (or on device 0)."""
    devices = list(jax.devices() if devices is None else devices)
    needed = num_target_devices + (1 if separate_draft else 0)
    if num_target_devices < 1 or needed > len(devices):
        raise ValueError(f"SSD asked for {num_target_devices} target device(s)"
                         f"{' + 1 draft device' if separate_draft else ''} but only {len(devices)} exist; "
                         f"ask for fewer or start with more (e.g. XLA_FLAGS/jax_num_cpu_devices on CPU).")
    target = tuple(devices[:num_target_devices])
    return Placement(target, devices[num_target_devices] if separate_draft else devices[0])


@dataclasses.dataclass(frozen=True)
class Programs:
    """The runtime's separately jitted pieces, each committed to its devices."""
    prefill_target: Any
    prefill_draft: Any
    verify: Any                  # target: verify one round -> (loop, outcome, all done)
    tree: Any                    # draft: glue + forks + tree -> (loop, ssd.SpeculationCache)
    advance: Any                 # draft: ssd.lookup + fallback -> (loop, next ssd.Speculation)
    target_lookup: Any           # target: the same ssd.lookup on a copied cache (ssd.lookup='target')


class SSDRuntime:
    """Built once per (models, config, placement); `generate` may be called repeatedly."""

    def __init__(self, target_graphdef, target_state, target_config, draft_graphdef, draft_state, draft_config,
                 config: ssd.SSDConfig, placement: Placement | None = None, lm=None, cache_dtype=jnp.bfloat16):
        self.lm = lm or engine._default_lm()
        self.config, self.placement = config, placement or place(1, len(jax.devices()) > 1)
        vocab = int(target_config.vocab_size)
        if int(draft_config.vocab_size) != vocab:
            raise ValueError(f"The draft's vocabulary ({draft_config.vocab_size}) differs from the target's "
                             f"({vocab}); SSD needs one shared tokenizer.")
        too_wide = [j for j, f in enumerate(config.fan_out_union) if f > vocab - (1 if j < config.num_draft else 0)]
        if too_wide:
            raise ValueError(f"Fan-out {config.fan_out_union} exceeds the vocabulary ({vocab} tokens, minus the "
                             f"drafted token below depth K) at depth {too_wide[0]}; lower it.")
        self.target_config, self.draft_config, self.cache_dtype = target_config, draft_config, cache_dtype
        self.layout = ssd.tree_layout(config.num_draft, config.fan_out_union)
        self.target_mesh = Mesh(np.asarray(self.placement.target_devices), ("batch",))
        self.draft_sharding = jax.sharding.SingleDeviceSharding(self.placement.draft_device)
        self._target_split = NamedSharding(self.target_mesh, PartitionSpec("batch"))
        self._target_whole = NamedSharding(self.target_mesh, PartitionSpec())
        self.target_state = jax.device_put(target_state, NamedSharding(self.target_mesh, PartitionSpec()))
        self.draft_state = jax.device_put(draft_state, self.draft_sharding)
        self.target_graphdef, self.draft_graphdef = target_graphdef, draft_graphdef
        self._caches: dict = {}
        self._build()

    # -- compiled programs ---------------------------------------------------------------------------------
    def _build(self):
        lm, config, layout = self.lm, self.config, self.layout
        tg, dg = self.target_graphdef, self.draft_graphdef

        @functools.partial(jax.jit, donate_argnames=("cache",))
        def prefill_target(state, cache, prompts, lengths, key):
            target = nnx.merge(tg, state)
            logits, cache = lm.prefill(target, prompts, lengths, lm.rollback(cache, jnp.zeros_like(lengths)))
            rows = jnp.arange(prompts.shape[0])
            first, _ = engine._pick(key, logits[rows, lengths - 1], config)
            batch = prompts.shape[0]
            zeros = jnp.zeros((batch, 3), jnp.int32)
            loop = ssd.TargetLoop(cache, first, jnp.zeros((batch, config.max_new_tokens + config.num_draft + 1), jnp.int32),
                              jnp.zeros(batch, jnp.int32), jnp.zeros(batch, bool), zeros, zeros)
            return engine._emit(loop, first[:, None], jnp.ones(batch, jnp.int32), config)

        @functools.partial(jax.jit, donate_argnames=("cache",))
        def prefill_draft(state, cache, prompts, lengths, first, key):
            draft = nnx.merge(dg, state)
            _, cache = lm.prefill(draft, prompts, lengths, lm.rollback(cache, jnp.zeros_like(lengths)))
            tokens, probs, cache = ssd.chain_draft(lm, draft, cache, first, key, config.miss_fan_out, config)
            batch = prompts.shape[0]
            zeros = jnp.zeros((batch, config.num_draft + 1), jnp.int32)
            source = jnp.full(batch, ssd.SOURCE_INITIAL, jnp.int32)
            loop = ssd.DraftLoop(cache, first, tokens, source, zeros, zeros, jnp.int32(0))
            return loop, ssd.Speculation(tokens, probs, source)

        @functools.partial(jax.jit, donate_argnames=("loop",))
        def verify(state, loop, spec, key, step):
            loop, outcome = ssd.verify_round(lm, nnx.merge(tg, state), loop, spec, jax.random.fold_in(key, step),
                                          config)
            return loop, outcome, jnp.all(loop.done)   # a separate buffer: the loop is donated next round

        @functools.partial(jax.jit, donate_argnames=("loop",))
        def tree(state, loop, key, step):
            table, cache = ssd.build_tree(lm, nnx.merge(dg, state), loop.cache, loop.root, loop.spec,
                                      jax.random.fold_in(key, 2 * step), layout, config)
            return dataclasses.replace(loop, cache=cache), table

        @functools.partial(jax.jit, donate_argnames=("loop",))
        def advance(state, loop, table, outcome, key, step):
            return ssd.advance_draft(lm, nnx.merge(dg, state), loop, table, outcome,
                                  jax.random.fold_in(key, 2 * step + 1), layout, config)

        @jax.jit
        def target_lookup(table, outcome, source):
            hit, tokens, probs = ssd.lookup(table, outcome, source, layout, config)
            active = outcome[:, 2].astype(bool)
            new_source = jnp.where(active, jnp.where(hit, ssd.SOURCE_HIT, ssd.SOURCE_MISS), source).astype(jnp.int32)
            return tokens, probs, new_source

        self.programs = Programs(prefill_target, prefill_draft, verify, tree, advance, target_lookup)

    # -- placement helpers ---------------------------------------------------------------------------------
    def to_target(self, tree, batch: int):
        """Batch-leading arrays split over the target devices, everything else replicated."""
        split, whole = self._target_split, self._target_whole
        leaves, treedef = jax.tree.flatten(tree)
        shardings = [split if (getattr(x, "ndim", 0) >= 1 and x.shape[0] == batch) else whole for x in leaves]
        return jax.tree.unflatten(treedef, jax.device_put(leaves, shardings))

    def to_draft(self, tree):
        return jax.device_put(tree, self.draft_sharding)

    def cache_lengths(self, prompt_length: int) -> tuple[int, int]:
        k = self.config.num_draft
        base = prompt_length + self.config.max_new_tokens
        return base + k + 2, base + self.layout.size + k + 2

    def keep_caches(self, tloop, dloop, prompt_length: int):
        """Hands a finished run's KV caches to the next run of the same shape (no reallocation)."""
        self._caches[(tloop.cache.lengths.shape[0], prompt_length)] = (tloop.cache, dloop.cache)

    def _fresh_caches(self, batch: int, prompt_length: int):
        key = (batch, prompt_length)
        if key in self._caches:
            return self._caches.pop(key)
        target_len, draft_len = self.cache_lengths(prompt_length)
        target = self.lm.init_cache(self.target_config, batch, target_len, self.cache_dtype)
        draft = self.lm.init_cache(self.draft_config, batch, draft_len, self.cache_dtype)
        return self.to_target(target, batch), self.to_draft(draft)

    # -- the host loop -------------------------------------------------------------------------------------
    def start(self, prompts, prompt_lengths, key):
        """Prefill both models and draft the first speculation -> (target loop, draft loop, speculation on the
        target, keys)."""
        prompts = np.asarray(prompts, np.int32)
        batch = prompts.shape[0]
        if batch % len(self.placement.target_devices):
            raise ValueError(f"Batch {batch} must be a multiple of the {len(self.placement.target_devices)} "
                             f"target devices (the batch is split over them).")
        lengths = np.asarray(prompt_lengths, np.int32)
        target_cache, draft_cache = self._fresh_caches(batch, prompts.shape[1])
        key_target, key_draft = jax.random.split(key)
        key_target, key_draft = self.to_target(key_target, batch), self.to_draft(key_draft)
        tloop = self.programs.prefill_target(self.target_state, target_cache, self.to_target(prompts, batch),
                                             self.to_target(lengths, batch), key_target)
        dloop, spec = self.programs.prefill_draft(self.draft_state, draft_cache, self.to_draft(prompts),
                                                  self.to_draft(lengths), self.to_draft(tloop.root), key_draft)
        return tloop, dloop, self.to_target(spec, batch), (key_target, key_draft)

    def round(self, tloop, dloop, spec, keys, step: int):
        """Enqueues one round; returns immediately (asynchronous dispatch)."""
        batch = tloop.root.shape[0]
        key_target, key_draft = keys
        source = spec.source
        tloop, outcome, all_done = self.programs.verify(self.target_state, tloop, spec, key_target, step)
        dloop, table = self.programs.tree(self.draft_state, dloop, key_draft, step)
        outcome_on_draft = self.to_draft(outcome)
        if self.config.lookup == "target":
            tokens, probs, source = self.programs.target_lookup(self.to_target(table, batch), outcome, source)
            dloop, _ = self.programs.advance(self.draft_state, dloop, table, outcome_on_draft, key_draft, step)
            spec = ssd.Speculation(tokens, probs, source)
        else:
            dloop, spec_on_draft = self.programs.advance(self.draft_state, dloop, table, outcome_on_draft,
                                                         key_draft, step)
            spec = self.to_target(spec_on_draft, batch)
        return tloop, dloop, spec, all_done

    def generate(self, prompts, prompt_lengths, key) -> ssd.SSDResult:
        """Decodes right-padded prompts[B, L] to completion (stop token or max_new_tokens on every row)."""
        config = self.config
        tloop, dloop, spec, keys = self.start(prompts, prompt_lengths, key)
        dones, step, enqueue_s = [], 0, 0.0
        for step in range(config.max_new_tokens):   # each round emits at least one token per active row
            start = time.perf_counter()
            tloop, dloop, spec, all_done = self.round(tloop, dloop, spec, keys, step)
            enqueue_s += time.perf_counter() - start     # host time to enqueue a round (nothing waited for)
            dones.append(all_done)
            if step >= config.lag and bool(dones[step - config.lag]):
                break
        result = self._result(tloop, dloop, step + 1, enqueue_s)
        self.keep_caches(tloop, dloop, np.asarray(prompts).shape[1])
        return result

    def _result(self, tloop, dloop, rounds: int, host_enqueue_s: float) -> ssd.SSDResult:
        config = self.config
        rounds_by, accepted_by = np.asarray(tloop.rounds), np.asarray(tloop.accepted)
        stats = ssd_stats.run_stats(
            rounds_by_source={name: int(rounds_by[:, i].sum()) for name, i in ssd.SOURCE_NAMES.items()},
            accepted_by_source={name: int(accepted_by[:, i].sum()) for name, i in ssd.SOURCE_NAMES.items()},
            hits_by_accepted=np.asarray(dloop.hits).sum(0), outcomes_by_accepted=np.asarray(dloop.outcomes).sum(0),
            fallback_rounds=int(np.asarray(dloop.fallback_calls)), enqueued_rounds=rounds,
            num_draft=config.num_draft, host_enqueue_s=host_enqueue_s)
        out = np.asarray(tloop.out)[:, :config.max_new_tokens]
        return ssd.SSDResult(out, np.asarray(tloop.count), rounds, stats)


def make_ssd(target_model, draft_model, config: ssd.SSDConfig, placement: Placement | None = None, lm=None,
             cache_dtype=jnp.bfloat16) -> SSDRuntime:
    """SSDRuntime from two models with the KV-cache API (core.nn.transformer by default, or papers.ssd.toy_lm)."""
    (tg, ts), (dg, ds) = nnx.split(target_model), nnx.split(draft_model)
    return SSDRuntime(tg, ts, target_model.config, dg, ds, draft_model.config, config, placement, lm, cache_dtype)
