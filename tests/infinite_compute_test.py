"""Pre-training under infinite compute: vmapped members, fits, the data mixer, resumable sweeps."""

import dataclasses
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from core import ensemble
from papers.infinite_compute import data as data_lib
from papers.infinite_compute import fits, recipe
from papers.infinite_compute.recipe import Point

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE = dict(d_model=16, n_layers=1, n_heads=2, head_dim=8, mlp_dim=32)
VOCAB, SEQ, BATCH = 64, 16, 4


def _optim():
    from configs.infinite_compute import sweep
    return sweep.get_config("smoke").optim


def _windows(count=40, seed=0):
    return jnp.asarray(np.random.default_rng(seed).integers(0, VOCAB, (count, SEQ + 1)), jnp.int32)


@pytest.fixture(scope="module")
def program():
    cfg = recipe.model_config(SIZE, VOCAB, SEQ)
    return recipe.make_group_program(cfg, 3, _optim(), BATCH, real_capacity=40, synthetic_capacity=0,
                                     chunk_steps=4, eval_batch=8, compute_dtype=jnp.float32)


def test_vmapped_group_equals_members_trained_alone(program):
    """Three points with different lr, wd, epochs and seeds in one program == each in its own program."""
    points = [Point("t", "standard", 3e-3, 0.1, 2, seed=0), Point("t", "regularized", 1e-2, 1.6, 1, seed=1),
              Point("t", "ensemble", 1e-3, 0.4, 3, seed=2)]
    windows = _windows()
    together, info = recipe.train_group(program, points, windows, 40, {}, BATCH, SEQ, 4, 0.1)
    assert info["steps"] == [20, 10, 30]
    for i, point in enumerate(points):
        alone, _ = recipe.train_group(program, [point] * 3, windows, 40, {}, BATCH, SEQ, 4, 0.1)
        chex.assert_trees_all_close(jax.tree.map(lambda x: x[i], together.params),
                                    jax.tree.map(lambda x: x[0], alone.params), atol=2e-5)
    # Members differ (own init, data, hyperparameters), and a finished member no longer moves: its lr is 0.
    w = together.params["embed"].get_value()
    assert not np.allclose(w[0], w[1])
    state = jax.tree.map(lambda x: x[1], together.opt_state)
    schedule = [s for s in jax.tree.leaves(state, is_leaf=lambda s: isinstance(s, recipe.MemberSchedule))
                if isinstance(s, recipe.MemberSchedule)][0]
    assert float(recipe.member_learning_rate(schedule)) == 0.0


def test_logit_average_is_softmax_of_mean_logits():
    logits = jax.random.normal(jax.random.key(0), (3, 5, 7))
    expected = jax.nn.log_softmax(logits.mean(0))
    chex.assert_trees_all_close(ensemble.logit_averaged_log_probs(logits), expected, atol=1e-6)
    weights = jnp.asarray([1.0, 0.0, 1.0])
    chex.assert_trees_all_close(ensemble.logit_averaged_log_probs(logits, weights),
                                jax.nn.log_softmax((logits[0] + logits[2]) / 2), atol=1e-6)


def test_subset_eval_matches_member_eval(program):
    points = [Point("t", "ensemble", 3e-3, 0.1, 1, seed=k) for k in range(3)]
    states, _ = recipe.train_group(program, points, _windows(), 40, {}, BATCH, SEQ, 4, 0.1)
    masks = recipe.subset_masks(3)
    assert masks.shape == (7, 3)
    subsets = np.asarray(program.eval_subsets(states, _windows(16, 1), jnp.asarray(masks)))
    members = np.asarray(program.eval_members(states, _windows(16, 1)))
    np.testing.assert_allclose(subsets[:3], members, rtol=1e-5)    # singletons are the members


def test_fit_recovers_known_power_law():
    """Synthetic points from 2.0 / (N/1e5)^0.8 + 3.0 with 0.5% noise: E within 0.05, alpha within 0.15.
    Power: over 20 noise seeds the recovered E stays within 0.05 in every one (checked here)."""
    n = np.asarray([1e5, 3e5, 1e6, 3e6, 1e7])
    for seed in range(20):
        y = (2.0 / (n / 1e5) ** 0.8 + 3.0) * (1 + 0.005 * np.random.default_rng(seed).normal(size=n.size))
        law = fits.fit_power_law(n, y)
        assert abs(law.E - 3.0) < 0.05 and abs(law.alpha - 0.8) < 0.15 and abs(law.A - 2.0) < 0.15, law
    boot = fits.bootstrap_fit(n, [[v, v + 0.01, v - 0.01] for v in 2.0 / (n / 1e5) ** 0.8 + 3.0], num_boot=100)
    lo, hi = boot["E_interval"]
    assert lo <= boot["E"] + 1e-9 and boot["E"] <= hi + 1e-9 and hi - lo < 0.2
    assert fits.fit_power_law(n, 2.0 / (n / 1e5) ** 0.8 + 3.0).inverse(3.5) == pytest.approx(1e5 * 4 ** 1.25)
    with pytest.raises(ValueError, match="distinct"):
        fits.fit_power_law([1, 1, 2], [3, 2, 1])


def test_ensemble_k_fit_on_exact_curve():
    import itertools
    subsets = {s: 1.0 / len(s) ** 1.0 + 2.0 for k in range(1, 6) for s in itertools.combinations(range(5), k)}
    result = fits.ensemble_k_fit(subsets, 5, num_orders=20)
    assert abs(result["E"] - 2.0) < 1e-3 and result["E_interval"][1] - result["E_interval"][0] < 1e-3


def test_data_mixer_is_deterministic_and_mixes_as_asked():
    """Each step's batch is a pure function of (member data, step); real rows cover every real window once
    per real epoch; synthetic rows stay inside the member's slice of the pool."""
    data = recipe.MemberData(key=jax.random.key(3), real_per_batch=jnp.int32(6), num_real=jnp.int32(24),
                             synthetic_start=jnp.int32(30), synthetic_count=jnp.int32(10))
    draw = jax.jit(lambda d, s: recipe.batch_indices(d, s, batch_size=8, real_capacity=24, synthetic_capacity=16))
    steps = [np.asarray(draw(data, jnp.int32(s))) for s in range(8)]
    again = [np.asarray(draw(data, jnp.int32(s))) for s in range(8)]
    np.testing.assert_array_equal(np.stack(steps), np.stack(again))
    real = np.concatenate([b[:6] for b in steps])          # 48 rows = 2 real epochs
    assert sorted(real[:24]) == list(range(24)) and sorted(real[24:]) == list(range(24))
    assert not np.array_equal(real[:24], real[24:])        # reshuffled per epoch
    synthetic = np.concatenate([b[6:] for b in steps])
    assert synthetic.min() >= 30 and synthetic.max() < 40 and sorted(synthetic[:10]) == list(range(30, 40))
    other = draw(data._replace(key=jax.random.key(4)), jnp.int32(0))
    assert not np.array_equal(np.asarray(other), steps[0])


def test_document_sampling_is_deterministic():
    stream = np.asarray([5, 6, 0, 7, 0, 8, 9, 10, 0, 11, 0], np.uint16)   # eos = 0
    assert [d.tolist() for d in data_lib.split_documents(stream, 0)] == [[5, 6, 0], [7, 0], [8, 9, 10, 0], [11, 0]]
    a, docs = data_lib.sample_documents(stream, 0, 6, seed=1)
    b, _ = data_lib.sample_documents(stream, 0, 6, seed=1)
    np.testing.assert_array_equal(a, b)
    assert a.size == 6 and docs >= 2
    with pytest.raises(ValueError, match="fewer than"):
        data_lib.sample_documents(stream, 0, 100, seed=1)


def test_sweep_resumes_without_redoing_finished_points(tmp_path, monkeypatch):
    from configs.infinite_compute import sweep as sweep_config
    from papers.infinite_compute import sweep as sweep_lib

    tokens = tmp_path / "tokens"
    tokens.mkdir()
    rng = np.random.default_rng(0)
    arrays = {"train": rng.integers(1, VOCAB, 641).astype(np.uint16),
              "validation": rng.integers(1, VOCAB, 129).astype(np.uint16)}
    for name, array in arrays.items():
        np.save(tokens / f"{name}.npy", array)
    manifest = dict(settings=dict(train_tokens=641, eval_tokens=129, seed=0), vocab_size=VOCAB, eos_id=0,
                    counts={"train": {"tokens": 641}}, sha256={k: data_lib._sha256(v) for k, v in arrays.items()})
    (tokens / "manifest.json").write_text(__import__("json").dumps(manifest))
    config = sweep_config.get_config("smoke")
    config.data.dir, config.data.seq_len, config.data.batch_size = str(tokens), SEQ, BATCH
    config.sizes = {"t": SIZE}
    config.chunk_steps, config.eval_batch = 4, 8
    points = [Point("t", "standard", 3e-3, 0.1, e) for e in (1, 2, 3, 4)]
    trained = []
    original = recipe.train_group
    monkeypatch.setattr(recipe, "train_group", lambda program, group, *a, **k: (
        trained.extend(p.id for p in group), original(program, group, *a, **k))[1])
    sweep = sweep_lib.Sweep(config, str(tmp_path / "run"))
    sweep.run_points(points[:3])                       # "interrupted" after the first three points
    assert len(trained) == 3 and all(sweep.store.has(p.id) for p in points[:3])
    first = sweep.store.get(points[0].id)
    trained.clear()
    resumed = sweep_lib.Sweep(config, str(tmp_path / "run")).run_points(points)
    assert points[3].id in trained and not set(p.id for p in points[:3]) & set(trained)
    assert resumed[points[0].id] == first and set(resumed) == {p.id for p in points}
    # Stored params restore onto a fresh skeleton (orbax, per member).
    restored = resumed and sweep_lib.Sweep(config, str(tmp_path / "run")).member_states("t", points[:1])
    assert restored.params["embed"].get_value().shape == (1, VOCAB, SIZE["d_model"])


def test_distill_retention_is_the_papers_share_of_the_ensemble_gain():
    from papers.infinite_compute import analysis
    # The paper's 300M figures (single 3.57, ensemble 3.32, student 3.36) give 0.84.
    assert analysis.distill_retention(3.57, 3.36, 3.32) == pytest.approx(0.84)
    assert analysis.distill_retention(4.0, 4.0, 3.5) == 0.0 and analysis.distill_retention(4.0, 3.5, 3.5) == 1.0
    assert analysis.distill_retention(3.5, 3.4, 3.6) is None          # no ensemble gain: undefined
    assert analysis.distill_retention(4.0, float("inf"), 3.5) is None  # diverged student


def test_student_plan_keeps_real_epochs_and_sizes_pools_for_three_repeats():
    import ml_collections
    from papers.infinite_compute import sweep as sweep_lib

    d = ml_collections.ConfigDict(dict(epochs=16, weight_decay=0.1, keep_real_epochs=True, max_synthetic_repeats=3,
                                       synthetic_windows=100, students=[("ensemble", 0.75), ("ensemble", 0.5),
                                                                        ("self", 1.0)]))
    students, pools = sweep_lib.student_plan(d, "s2", 0.01, num_real=4096, batch_size=64)
    steps = [recipe.steps_for(p, 4096, 64) for p in students]
    # The paper's schedule: 16 real epochs each (16 x 4096 / 16 and / 32 real rows), synthetic on top; the
    # student without real rows keeps the base 16 x 4096 / 64 steps.
    assert steps == [4096, 2048, 1024]
    assert [p.epochs for p in students[:2]] == [16.0, 16.0]
    assert pools == {"ensemble": 4096 * 48 // 3, "self": -(-1024 * 64 // 3)}
    d.keep_real_epochs = False          # the earlier schedule: base steps, synthetic rows displace real epochs
    students, pools = sweep_lib.student_plan(d, "s2", 0.01, num_real=4096, batch_size=64)
    assert [recipe.steps_for(p, 4096, 64) for p in students] == [1024] * 3
    assert [p.epochs for p in students] == [4.0, 8.0, 0.0]
    assert pools["ensemble"] == max(100, -(-1024 * 48 // 3))


def test_sweep_stages_put_the_distillation_teacher_and_students_before_other_ensembles():
    from papers.infinite_compute import sweep as sweep_lib

    calls = []
    sweep = sweep_lib.Sweep.__new__(sweep_lib.Sweep)     # no data: the stage methods are recorded, not run
    sweep.config = __import__("ml_collections").ConfigDict(dict(distill=dict(size="s2"), regularized=dict(max_rounds=2)))
    sweep.sizes, sweep.skipped, sweep.flops_done, sweep.seconds_done = ["s1", "s2"], [], 0.0, 0.0
    sweep.store = recipe.PointStore.__new__(recipe.PointStore)
    sweep.store.get = lambda name: None
    sweep.standard = lambda: calls.append("standard")
    sweep.regularized = lambda rounds: calls.append(f"search{rounds}")
    sweep.ensembles = lambda sizes=None: calls.append(f"ensembles{sizes or ''}")
    sweep.distill = lambda: calls.append("distill")
    sweep.data_law = lambda: calls.append("data_law")
    summary = sweep.run(sweep_lib.STAGES)
    assert calls == ["standard", "search1", "ensembles['s2']", "distill", "ensembles", "data_law", "search2"]
    calls.clear()
    assert sweep.run(["distill", "standard"])["stages"] == ["standard", "distill"] and summary["skipped"] == []
    assert calls == ["standard", "ensembles['s2']", "distill"]
    with pytest.raises(ValueError, match="Unknown sweep stages"):
        sweep.run(["distil"])


def test_regularized_search_starts_at_the_next_smaller_sizes_best():
    import ml_collections
    from configs.infinite_compute import sweep as sweep_config
    from papers.infinite_compute import sweep as sweep_lib

    sweep = sweep_lib.Sweep.__new__(sweep_lib.Sweep)     # no data: run_points is recorded, not run
    sweep.config = sweep_config.get_config("smoke")
    sweep.config.regularized = ml_collections.ConfigDict(dict(start_weight_decay=0.8, max_rounds=1,
                                                              start_from_smaller=True))
    sweep.sizes = ["a", "b", "c"]
    stored = {("a", "regularized"): dict(learning_rate=1e-2, weight_decay=1.6, epochs=16),
              ("c", "standard"): dict(learning_rate=3e-3, epochs=4)}
    sweep.best = lambda size, name, **_: stored.get((size, name))
    centers = []
    sweep.run_points = lambda points: centers.append(points[0]) or {}
    sweep.regularized_round("c")           # b has no regularised point yet: a's best is the start
    assert (centers[-1].learning_rate, centers[-1].weight_decay, centers[-1].epochs) == (1e-2, 1.6, 16)
    sweep.regularized_round("a")           # the smallest size with a point of its own continues from it
    assert (centers[-1].learning_rate, centers[-1].weight_decay) == (1e-2, 1.6)
    sweep.config.regularized.start_from_smaller = False
    sweep.regularized_round("c")           # off: the standard recipe's lr, the fixed start wd, 2x its epochs
    assert (centers[-1].learning_rate, centers[-1].weight_decay, centers[-1].epochs) == (3e-3, 0.8, 8)
