"""Sample-Score-Rank picks the best of a known set of proposals; the planners' objectives rank correctly."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from core.planning.ssr import sample_score_rank, softmax_weighted
from papers.dmpc import diagnostics, planning


def test_ssr_returns_the_highest_scoring_candidate_of_a_known_set():
    candidates = {"actions": jnp.arange(24.0).reshape(6, 2, 2), "tag": jnp.arange(6)}
    scores = jnp.array([0.3, -1.0, 2.5, 2.4, 0.0, -3.0])
    best, info = jax.jit(lambda k: sample_score_rank(lambda key, n: candidates, lambda c: scores, k, 6))(
        jax.random.key(0))
    assert int(best["tag"]) == 2 and int(info["best_index"]) == 2
    np.testing.assert_array_equal(best["actions"], candidates["actions"][2])


def test_ssr_vmaps_over_episodes_and_uses_the_score_function():
    # each episode wants actions near its own target; candidates are a fixed grid
    grid = jnp.linspace(-1, 1, 21)[:, None]
    targets = jnp.array([-0.7, 0.1, 0.9])
    plan = jax.vmap(lambda target, key: sample_score_rank(
        lambda k, n: grid, lambda c: -jnp.abs(c[:, 0] - target), key, 21)[0])
    chosen = plan(targets, jax.random.split(jax.random.key(0), 3))
    np.testing.assert_allclose(chosen[:, 0], targets, atol=1e-6)


def test_ssr_refuses_zero_samples():
    with pytest.raises(ValueError, match="num_samples"):
        sample_score_rank(lambda k, n: jnp.zeros((n, 1)), lambda c: c[:, 0], jax.random.key(0), 0)


def test_softmax_weighted_tends_to_argmax_at_low_temperature_and_mean_at_high():
    x = jnp.array([[0.0], [1.0], [4.0]])
    scores = jnp.array([0.0, 1.0, 3.0])
    np.testing.assert_allclose(softmax_weighted(x, scores, 1e-3), [4.0], atol=1e-4)
    np.testing.assert_allclose(softmax_weighted(x, scores, 1e6), [5.0 / 3.0], atol=1e-4)


def test_reward_objective_prefers_the_sequence_with_the_higher_novel_reward():
    reward = lambda obs, a: -obs[..., 0]                     # "run backwards" on a 1-D velocity observation
    objective = planning.reward_objective(reward, discount=0.9)
    states = jnp.array([[[1.0], [1.0]], [[-1.0], [-2.0]], [[0.0], [0.0]]])
    scores = objective(None, jnp.zeros(1), states, jnp.zeros((3, 2, 1)))
    np.testing.assert_allclose(scores, [-1.9, 1.0 + 1.8, 0.0], rtol=1e-6)
    assert int(jnp.argmax(scores)) == 1


def test_reward_objective_ends_at_a_predicted_fall_with_the_terminal_penalty():
    # obs = (height, reward); healthy while height > 0. Candidate 0 falls after its first action and then
    # "earns" 10 per step; candidate 1 stays up and earns 1 per step.
    reward = lambda obs, a: obs[..., 1]
    healthy = lambda obs: (obs[..., 0] > 0).astype(jnp.float32)
    states = jnp.array([[[1.0, 0.0], [-1.0, 10.0], [-1.0, 10.0]],
                        [[1.0, 1.0], [1.0, 1.0], [1.0, 1.0]]])
    actions = jnp.zeros((2, 3, 1))
    blind = planning.reward_objective(reward, discount=0.5)(None, jnp.zeros(2), states, actions)
    np.testing.assert_allclose(blind, [0.0 + 5.0 + 2.5, 1.0 + 0.5 + 0.25], rtol=1e-6)
    aware = planning.reward_objective(reward, 0.5, healthy_fn=healthy, terminal_penalty=-100.0)
    scores = aware(None, jnp.zeros(2), states, actions)
    # candidate 0: step 0 (healthy) 0, step 1 is the fall: 10 - 100 at weight 0.5, nothing after
    np.testing.assert_allclose(scores, [0.5 * (10.0 - 100.0), 1.75], rtol=1e-6)
    assert int(jnp.argmax(blind)) == 0 and int(jnp.argmax(scores)) == 1


def _small_model():
    from flax import nnx
    from papers.dmpc import models
    dims = models.ModelDims(obs_dim=3, action_dim=2, history=2, horizon=4, hidden=16, depth=1, time_embed=8,
                            prediction="v")
    return models.DMPCModels(dims, nnx.Rngs(0))


def _plan_cfg(**overrides):
    import ml_collections
    return ml_collections.ConfigDict({**dict(num_samples=6, proposal_steps=3, dynamics_steps=3, clip_x0=True,
                                             softmax_temperature=0.1), **overrides})


def test_shared_dynamics_noise_gives_equal_actions_equal_futures_and_independent_noise_does_not():
    from core import diffusion
    model, schedule = _small_model(), diffusion.cosine_schedule(100)
    history = jax.random.normal(jax.random.key(1), (2, 3))
    chunk = jax.random.uniform(jax.random.key(2), (1, 4, 2), minval=-1, maxval=1)
    actions = jnp.concatenate([chunk, chunk, -chunk])                        # candidates 0 and 1 identical
    shared = planning.diffusion_states(model, history, actions, jax.random.key(3), _plan_cfg(), schedule, True)
    independent = planning.diffusion_states(model, history, actions, jax.random.key(3), _plan_cfg(), schedule)
    np.testing.assert_array_equal(shared[0], shared[1])
    assert float(jnp.abs(shared[0] - shared[2]).max()) > 1e-4              # other actions, other future
    assert float(jnp.abs(independent[0] - independent[1]).max()) > 1e-4    # the noise alone moves the future


def test_dmpc_softmax_tends_to_dmpc_argmax_at_low_temperature():
    from core import diffusion
    model, schedule = _small_model(), diffusion.cosine_schedule(100)
    history = jax.random.normal(jax.random.key(1), (2, 3))
    objective = lambda m, obs, states, actions: 50.0 * actions[:, 0, 0]     # spread far beyond value_std * T
    key = jax.random.key(4)
    argmax = planning.dmpc_act(model, history, key, _plan_cfg(), objective, schedule)
    sharp = planning.dmpc_softmax_act(model, history, key, _plan_cfg(softmax_temperature=1e-4), objective, schedule)
    np.testing.assert_allclose(sharp, argmax, atol=1e-5)
    flat = planning.dmpc_softmax_act(model, history, key, _plan_cfg(softmax_temperature=1e6), objective, schedule)
    proposals = planning.diffusion_actions(model, history, jax.random.split(key)[0], 6, _plan_cfg(), schedule)
    np.testing.assert_allclose(flat, proposals[:, 0].mean(0), atol=1e-5)


def test_value_ensemble_scores_its_mean_or_lower_bound_and_lcb_planner_reduces_to_softmax_without_pessimism():
    from flax import nnx
    from core import diffusion
    from papers.dmpc import models
    dims = models.ModelDims(obs_dim=3, action_dim=2, history=2, horizon=4, hidden=16, depth=1, time_embed=8,
                            prediction="v", ensemble=3)
    model, schedule = models.DMPCModels(dims, nnx.Rngs(0)), diffusion.cosine_schedule(100)
    obs, future = jax.random.normal(jax.random.key(1), (5, 3)), jax.random.normal(jax.random.key(2), (5, 4, 3))
    actions = jax.random.uniform(jax.random.key(3), (5, 4, 2), minval=-1, maxval=1)
    members = model.member_values(obs, future, actions)
    assert members.shape == (3, 5) and float(members.std(0).min()) > 0          # independently initialised
    np.testing.assert_allclose(model.values(obs, future, actions), members.mean(0), rtol=1e-6)
    np.testing.assert_allclose(model.values(obs, future, actions, pessimism=2.0),
                               members.mean(0) - 2.0 * members.std(0), rtol=1e-5, atol=1e-6)
    # the online bootstrap reweights each member's samples; held-out evaluation does not
    errors = jax.random.uniform(jax.random.key(4), (3, 64, 2))
    np.testing.assert_allclose(models._member_mse(errors, jax.random.key(5), False), errors.mean(), rtol=1e-6)
    assert abs(float(models._member_mse(errors, jax.random.key(5), True) - errors.mean())) > 1e-4
    history = jax.random.normal(jax.random.key(6), (2, 3))
    lcb = planning.dmpc_lcb_act(model, history, jax.random.key(7), _plan_cfg(value_pessimism=0.0), None, schedule)
    soft = planning.dmpc_softmax_act(model, history, jax.random.key(7), _plan_cfg(), planning.learned_objective,
                                     schedule)
    np.testing.assert_allclose(lcb, soft, rtol=1e-5, atol=1e-6)
    pessimistic = planning.dmpc_lcb_act(model, history, jax.random.key(7), _plan_cfg(value_pessimism=3.0), None,
                                        schedule)
    assert pessimistic.shape == (2,) and bool(jnp.all(jnp.isfinite(pessimistic)))


def test_batched_dmpc_variants_act_like_each_variant_alone():
    """make_variants_policy (the four learned-objective D-MPC variants as one vmapped batch) gives each
    variant's episodes the actions its own policy gives them, with the same keys; and evaluate() lays the
    grouped episodes out so every policy's returns equal the ungrouped evaluation's."""
    from flax import nnx
    from core import diffusion
    from papers.dmpc import envs, models
    dims = models.ModelDims(obs_dim=3, action_dim=2, history=2, horizon=4, hidden=16, depth=1, time_embed=8,
                            prediction="v", ensemble=3)
    model, schedule = models.DMPCModels(dims, nnx.Rngs(0)), diffusion.cosine_schedule(100)
    cfg = _plan_cfg(value_pessimism=1.5)
    graphdef, state = nnx.split(model)
    variants = ("dmpc", "dmpc_crn", "dmpc_lcb", "dmpc_softmax", "dmpc_zero")
    E = 3
    histories = jax.random.normal(jax.random.key(1), (len(variants) * E, 2, 3))
    keys = jax.random.split(jax.random.key(2), len(variants))
    grouped = jax.jit(planning.make_variants_policy(graphdef, variants, cfg, schedule))(state, histories, keys)
    for j, v in enumerate(variants):
        alone = jax.jit(planning.make_policy(graphdef, v, cfg, schedule))(state, histories[j * E:(j + 1) * E], keys[j])
        np.testing.assert_allclose(grouped[j * E:(j + 1) * E], alone, rtol=1e-5, atol=1e-6, err_msg=v)
    # the variants really differ (argmax vs softmax vs lower bound), so the switches are not ignored
    assert float(jnp.abs(grouped[:E] - grouped[3 * E:4 * E]).max()) > 1e-3
    # zero-noise futures are the same whatever the key (the central prediction), unlike a draw's
    actions = jax.random.uniform(jax.random.key(3), (5, 4, 2), minval=-1, maxval=1)
    futures = [planning.diffusion_states(model, histories[0], actions, jax.random.key(k), cfg, schedule,
                                         zero_noise=zero) for zero in (True, False) for k in (7, 8)]
    np.testing.assert_allclose(futures[0], futures[1], rtol=1e-6)
    assert float(jnp.abs(futures[2] - futures[3]).max()) > 1e-3
    with pytest.raises(ValueError, match="Not learned-objective D-MPC variants"):
        planning.make_variants_policy(graphdef, ("dmpc", "mbop"), cfg, schedule)

    env = envs.make("toy")
    dims = models.ModelDims(obs_dim=env.observation_size, action_dim=env.action_size, history=2, horizon=4,
                            hidden=16, depth=1, time_embed=8, prediction="v", ensemble=2)
    model = models.DMPCModels(dims, nnx.Rngs(3))
    graphdef, state = nnx.split(model)
    solo = {v: planning.make_policy(graphdef, v, cfg, schedule) for v in variants + ("bc",)}
    group = planning.make_variants_policy(graphdef, variants, cfg, schedule)
    states = {v: state for v in solo}
    args = (jax.random.key(5), 4, 12)
    separate = planning.evaluate(env, solo, states, *args, history=2)
    together = planning.evaluate(env, {**{v: group for v in variants}, "bc": solo["bc"]}, states, *args, history=2)
    for v in solo:
        np.testing.assert_allclose(together[v]["return"], separate[v]["return"], rtol=1e-4, atol=1e-4, err_msg=v)
        np.testing.assert_allclose(together[v]["visited_histories"], separate[v]["visited_histories"], rtol=1e-4,
                                   atol=1e-4, err_msg=v)
    # the recorded histories are the ones each policy acted on: the reset observation repeated first, the last
    # entry of step t's history is step t-1's next observation, and only alive steps are picked for ranking
    visited, alive = separate["bc"]["visited_histories"], separate["bc"]["visited_alive"]
    assert visited.shape == (12, 4, 2, env.observation_size) and alive.shape == (12, 4)
    resets = jax.vmap(env.reset)(jax.random.split(jax.random.split(args[0])[0], 4)).obs
    np.testing.assert_allclose(visited[0], np.repeat(np.asarray(resets)[:, None], 2, 1), rtol=1e-6)
    np.testing.assert_array_equal(visited[1:, :, 0], visited[:-1, :, 1])
    alive = alive.copy()
    alive[5:, 1] = False
    picked = diagnostics.visited_states({"visited_histories": visited, "visited_alive": alive}, 100)["history"]
    np.testing.assert_array_equal(picked, visited[alive])
    assert len(diagnostics.visited_states({"visited_histories": visited, "visited_alive": alive}, 8)["history"]) == 8
    with pytest.raises(ValueError, match="no alive step"):
        diagnostics.visited_states({"visited_histories": visited, "visited_alive": np.zeros_like(alive)}, 8)
    with pytest.raises(ValueError, match="registered under each of its members"):
        planning.evaluate(env, {"dmpc": group, "bc": solo["bc"]}, states, *args, history=2)


def test_seed_models_evaluate_in_one_program_each_on_its_own_episodes():
    """planning.seeds_policy: seed s's block of a (grouped or single) policy's episodes gets the actions the
    policy gives with seed s's model and keys folded with s; evaluation.evaluate_seed_models splits the returns
    per seed so a key-free planner (BC) scores exactly as separate evaluations of each model on those episodes."""
    from flax import nnx
    from configs.dmpc import locomotion
    from core import diffusion
    from papers.dmpc import envs, evaluation, models, pipeline
    dims = models.ModelDims(obs_dim=3, action_dim=2, history=2, horizon=4, hidden=16, depth=1, time_embed=8,
                            prediction="v", ensemble=2)
    seeds = [models.DMPCModels(dims, nnx.Rngs(i)) for i in range(2)]
    schedule, cfg = diffusion.cosine_schedule(100), _plan_cfg(value_pessimism=1.0)
    graphdef, _ = nnx.split(seeds[0])
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *(nnx.split(m)[1] for m in seeds))
    variants, E, S = ("dmpc", "dmpc_softmax"), 3, 2
    for policy, k in ((planning.make_variants_policy(graphdef, variants, cfg, schedule), 2),
                      (planning.make_policy(graphdef, "dmpc", cfg, schedule), 1)):
        histories = jax.random.normal(jax.random.key(1), (k * S * E, 2, 3))
        keys = jax.random.split(jax.random.key(2), k) if k > 1 else jax.random.key(2)
        wrapped = planning.seeds_policy(policy, S)
        assert getattr(wrapped, "members", None) == getattr(policy, "members", None)
        together = jax.jit(wrapped)(stacked, histories, keys)
        for s in range(S):
            rows = np.concatenate([np.arange(j * S * E + s * E, j * S * E + (s + 1) * E) for j in range(k)])
            seed_keys = (jax.vmap(lambda kk: jax.random.fold_in(kk, s))(keys) if k > 1
                         else jax.random.fold_in(keys, s))
            alone = jax.jit(policy)(nnx.split(seeds[s])[1], histories[rows], seed_keys)
            np.testing.assert_allclose(together[rows], alone, rtol=1e-5, atol=1e-6)

    config = locomotion.get_config("smoke")
    env = envs.make("toy")
    dims = pipeline.model_dims(env, config)
    seeds = [models.DMPCModels(dims, nnx.Rngs(i)) for i in range(2)]
    spec_for = lambda m: {"bc": ("bc", m, planning.learned_objective), "dmpc": ("dmpc", m, planning.learned_objective),
                          "dmpc_softmax": ("dmpc_softmax", m, planning.learned_objective)}
    key = jax.random.key(4)
    per_seed = evaluation.evaluate_seed_models(env, spec_for, seeds, key, config)
    n = config.eval.num_episodes
    for s, model in enumerate(seeds):
        policy = planning.make_policy(nnx.split(model)[0], "bc", config.plan, diffusion.cosine_schedule(100))
        alone = planning.evaluate(env, {"bc": policy}, {"bc": nnx.split(model)[1]}, key, 2 * n,
                                  config.eval.max_steps, history=config.model.history)
        np.testing.assert_allclose(per_seed[s]["bc"]["return"], alone["bc"]["return"][s * n:(s + 1) * n], rtol=1e-5)
        assert per_seed[s]["dmpc"]["return"].shape == (n,)
    assert not np.allclose(per_seed[0]["bc"]["return"], per_seed[1]["bc"]["return"])


def test_simulated_chunks_replay_the_env_from_the_observed_state_and_stop_at_the_fall():
    from papers.dmpc import envs
    env = envs.make("toy")
    state = env.reset(jax.random.key(0))
    for _ in range(5):
        state = env.step(state, jnp.array([1.0, 0.2]))
    actions = jnp.stack([jnp.tile(jnp.array([[0.5, 0.0]]), (4, 1)), jnp.tile(jnp.array([[-0.3, 0.4]]), (4, 1))])
    states, rewards, alive = diagnostics.simulate_chunks(env, state.obs, actions)
    replay, replay_rewards = state, []
    for action in actions[0]:                 # the env itself, from the real state (its x position is not observed)
        replay = env.step(replay, action)
        replay_rewards.append(float(replay.reward))
    np.testing.assert_allclose(states[0, -1], replay.obs, atol=1e-6)
    np.testing.assert_allclose(rewards[0], replay_rewards, atol=1e-6)
    assert np.asarray(alive).tolist() == [[1.0] * 4] * 2
    # from y = 0.9 moving up, pushing up: y passes 1 (the episode's end) within the chunk; the step that falls
    # still counts, none after it
    edge = jnp.array([0.9, 0.0, 1.0])
    states, rewards, alive = diagnostics.simulate_chunks(env, edge, jnp.tile(jnp.array([[0.0, 1.0]]), (1, 6, 1)))
    fallen = np.abs(np.asarray(states[0, :, 0])) >= 1.0
    first = int(np.argmax(fallen))
    assert fallen.any() and 0 < first < 5
    assert np.asarray(alive[0]).tolist() == [1.0] * (first + 1) + [0.0] * (5 - first)


def test_candidate_ranking_oracle_ranks_perfectly_and_bounds_every_argmax_pick():
    from core import diffusion
    from papers.dmpc import envs
    model, schedule = _small_model(), diffusion.cosine_schedule(100)       # obs 3 / actions 2: the toy env's
    histories = 0.3 * jax.random.normal(jax.random.key(5), (3, 2, 3))
    ranking = diagnostics.candidate_ranking(envs.make("toy"), model, {"history": histories}, jax.random.key(6),
                                         _plan_cfg(num_samples=8), schedule, num_states=3)
    assert ranking["states"] == 3 and ranking["candidates"] == 8
    assert ranking["oracle"]["spearman"] == pytest.approx(1.0)
    for name in ("diffusion", "onestep"):
        assert -1.0 <= ranking[name]["spearman"] <= 1.0
        assert ranking[name]["argmax_gain_sd"] <= ranking["oracle"]["argmax_gain_sd"] + 1e-9
    assert np.isfinite(ranking["mean_reward"]) and np.isfinite(ranking["diffusion"]["argmax_reward"])
