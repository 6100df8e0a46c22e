"""The diffusion proposal recovers a multimodal, state-conditioned action law (a Gaussian proposal cannot),
and every head's loss falls when trained by core.train on segments."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from configs.dmpc import locomotion
from core import diffusion
from core import train as train_lib
from papers.dmpc import diagnostics, models

# the GPU config's schedule, parameterisation and sampler: a 1000-step cosine schedule sampled with 32 DDIM steps,
# x0 clipped to the action bounds (planning.diffusion_actions); unclipped, this setting wrecked D-MPC's proposals
# on MJX
GPU_CONFIG = locomotion.get_config("env=hopper")
SCHEDULE = diffusion.cosine_schedule(GPU_CONFIG.model.diffusion_steps)


def toy_config(steps):
    return ml_collections.ConfigDict(dict(
        optim=train_lib.optim_config(name="adam", learning_rate=3e-3, warmup_steps=20, total_steps=steps,
                                     grad_clip=10.0, b2=0.999),
        train=train_lib.train_config(num_steps=steps, compute_dtype="float32"),
        mesh=dict(data=-1, fsdp=1, tensor=1)))


def action_law(rng, n):
    """state 0: a = ±0.6 with equal odds; state 1: a = 0.3 (noise 0.05 on both)."""
    state = rng.integers(0, 2, n)
    sign = np.where(rng.random(n) < 0.5, -1.0, 1.0)
    action = np.where(state == 0, 0.6 * sign, 0.3) + 0.05 * rng.normal(size=n)
    return state.astype(np.float32)[:, None], action.astype(np.float32)[:, None]


def test_diffusion_proposal_recovers_a_bimodal_action_law():
    dims = models.ModelDims(obs_dim=1, action_dim=1, hidden=64, depth=2, time_embed=16)
    denoiser = models.Denoiser(1, 1, dims, nnx.Rngs(0))
    prediction = GPU_CONFIG.model.prediction
    loss_fn = lambda model, batch, rng: (diffusion.denoising_loss(model, SCHEDULE, batch["a"], batch["s"], rng,
                                                                  prediction=prediction), {})
    steps = 800
    setup = train_lib.setup_training(toy_config(steps), denoiser, loss_fn)
    state = setup.state
    for step in range(steps):
        s, a = action_law(np.random.default_rng(step), 256)
        state, _ = setup.step_fn(state, {"s": s, "a": a})
    model = train_lib.merge_model(setup.graphdef, state)
    n = 2000   # binomial standard error of a fraction near 0.5: 0.011; the bounds are > 9 standard errors away
    for cond, check in ((0.0, "bimodal"), (1.0, "unimodal")):
        samples = np.asarray(diffusion.ddim_sample(model, SCHEDULE, (n, 1), jnp.full((n, 1), cond), jax.random.key(0),
                                                   num_steps=GPU_CONFIG.plan.proposal_steps, clip_x0=1.0,
                                                   prediction=prediction))[:, 0]
        if check == "bimodal":
            # both modes carry a fifth of the mass or more (800 steps do not balance them exactly)
            upper, lower = np.mean(np.abs(samples - 0.6) < 0.25), np.mean(np.abs(samples + 0.6) < 0.25)
            assert upper > 0.2 and lower > 0.2 and upper + lower > 0.9, (upper, lower)
            assert np.mean(np.abs(samples) < 0.3) < 0.08          # a Gaussian fit (mean 0, std 0.6) puts 38% here
        else:
            assert abs(np.median(samples) - 0.3) < 0.08 and np.mean(np.abs(samples - 0.3) < 0.2) > 0.9


def test_every_head_learns_on_segments():
    rng = np.random.default_rng(0)
    B, H, F, S, A = 64, 2, 3, 4, 2
    dims = models.ModelDims(obs_dim=S, action_dim=A, history=H, horizon=F, hidden=32, depth=1, time_embed=16,
                            ensemble=2)
    model = models.DMPCModels(dims, nnx.Rngs(0))
    W = rng.normal(size=(S + A, S)).astype(np.float32) * 0.3

    def batch(step):
        r = np.random.default_rng(step)
        history = r.normal(size=(B, H, S)).astype(np.float32)
        actions = np.tanh(history[:, -1, :A])[:, None].repeat(F, 1) + 0.01 * r.normal(size=(B, F, A)).astype(np.float32)
        states, s = [], history[:, -1]
        for k in range(F):
            s = s + np.concatenate([s, actions[:, k]], -1) @ W * 0.1
            states.append(s)
        future = np.stack(states, 1).astype(np.float32)
        return {"history": history, "actions": actions.astype(np.float32), "future": future,
                "value_target": future[:, -1, 0] * 3.0}
    setup = train_lib.setup_training(toy_config(300), model, models.make_loss_fn(SCHEDULE))
    state, first = setup.state, None
    for step in range(300):
        state, metrics = setup.step_fn(state, batch(step))
        first = first or {k: float(v) for k, v in metrics.items()}
    last = {k: float(v) for k, v in metrics.items()}
    for head in ("proposal", "dynamics", "value", "onestep", "gaussian", "bc"):
        assert last[head] < first[head] * 0.7, (head, first[head], last[head])
    # the fit diagnostics each dataset row records: the trained model's proposals and rollouts fit better than
    # the untrained one's; `marginal` is the data's own variance of the first action
    held = batch(10_000)
    plan = ml_collections.ConfigDict(dict(proposal_steps=8, dynamics_steps=4, clip_x0=False))
    fits = {}
    untrained = models.DMPCModels(dims, nnx.Rngs(0))     # the trained model's start (its buffers were donated)
    for name, candidate in (("untrained", untrained), ("trained", train_lib.merge_model(setup.graphdef, state))):
        fits[name] = (diagnostics.proposal_fit(candidate, held, jax.random.key(1), plan, SCHEDULE, samples=4),
                      diagnostics.dynamics_fit(candidate, held, jax.random.key(2), plan, SCHEDULE),
                      diagnostics.value_fit(candidate, held, jax.random.key(3), plan, SCHEDULE))
    np.testing.assert_allclose(fits["trained"][0]["marginal"], held["actions"][:, 0].var(0).mean(), rtol=1e-4)
    for key in ("diffusion_one_sample", "bc", "gaussian_mean"):
        assert fits["trained"][0][key] < fits["untrained"][0][key], (key, fits)
    for key in ("diffusion", "onestep"):
        assert fits["trained"][1][key] < fits["untrained"][1][key], (key, fits)
    # the value target is 3 x the last future's first coordinate: the trained J ranks segments by it given the
    # data's futures (the toy dynamics' 300 steps leave its predicted futures too rough to rank by)
    value_after, value_before = fits["trained"][2]["data_future"], fits["untrained"][2]["data_future"]
    assert value_after["mse_over_variance"] < 0.5 * value_before["mse_over_variance"], fits
    assert value_after["spearman"] > max(0.8, value_before["spearman"]), fits
    assert set(fits["trained"][2]["predicted_future"]) == {"mse_over_variance", "spearman"}
    # per-head early stopping keeps each head's best evaluation on held-out segments and loads it into a model
    selector = models.HeadSelector(held, SCHEDULE, jax.random.key(5))
    trained = train_lib.merge_model(setup.graphdef, state)
    for step, candidate in ((100, untrained), (300, trained), (400, models.DMPCModels(dims, nnx.Rngs(1)))):
        selector.eval_fn(candidate, step)
    fresh = models.DMPCModels(dims, nnx.Rngs(2))
    record = selector.apply(fresh)
    assert {h: r["best_step"] for h, r in record.items()} == {h: 300 for h in models.HEADS}, record
    assert all(r["last_step"] == 400 and r["best_loss"] < r["last_loss"] for r in record.values()), record
    for head in models.HEADS:
        jax.tree.map(np.testing.assert_array_equal, nnx.state(getattr(fresh, head)), nnx.state(getattr(trained, head)))


def test_saved_params_round_trip_and_refuse_another_shape(tmp_path):
    import pytest
    dims = models.ModelDims(obs_dim=3, action_dim=2, history=2, horizon=4, hidden=16, depth=1)
    model = models.DMPCModels(dims, nnx.Rngs(0))
    model.obs_mean[...] = model.obs_mean[...] + 1.5             # statistics travel with the weights
    path = str(tmp_path / "model.npz")
    models.save_params(model, path)
    back = models.load_params(models.DMPCModels(dims, nnx.Rngs(1)), path)
    for a, b in zip(jax.tree.leaves(nnx.state(model)), jax.tree.leaves(nnx.state(back))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    other = models.ModelDims(obs_dim=3, action_dim=2, history=2, horizon=4, hidden=8, depth=1)
    with pytest.raises(ValueError, match="another shape"):
        models.load_params(models.DMPCModels(other, nnx.Rngs(0)), path)
    with pytest.raises(FileNotFoundError, match="evaluate stage"):
        models.load_params(model, str(tmp_path / "missing.npz"))


def test_training_twice_in_one_workdir_trains_afresh_with_its_head_selection(tmp_path):
    """A final checkpoint left in the workdir by an earlier run (same or other data) is not restored in place
    of training: the second run trains its own steps and records its own head selection."""
    from papers.dmpc import envs, pipeline
    from papers.dmpc.segments import Segments
    config = locomotion.get_config("smoke")
    config.train.num_steps = config.optim.total_steps = 40
    env = envs.make("toy")
    episodes = lambda seed: _random_episodes(env, seed)
    make = lambda eps: Segments(eps, config.model.history, config.model.horizon)
    workdir = str(tmp_path / "train_medium")
    records = []
    for seed in (1, 2):
        _, selection = pipeline.train_models(env, make(episodes(seed)), config, workdir, held_out=make(episodes(9)))
        records.append(selection)
    assert set(records[1]) == set(models.HEADS), records[1]
    assert all(r["last_step"] == 40 for r in records[1].values()), records[1]


def test_seeds_train_as_one_program_and_seed_zero_is_the_single_run(tmp_path):
    """pipeline.train_seed_models: two training seeds in one vmapped program; seed 0 ends exactly where
    train_models' single run ends (parameters and head selection), seed 1 elsewhere, each with its own
    selection of every head."""
    from papers.dmpc import envs, pipeline
    from papers.dmpc.segments import Segments
    config = locomotion.get_config("smoke")
    config.train.num_steps = config.optim.total_steps = 40
    env = envs.make("toy")
    make = lambda eps: Segments(eps, config.model.history, config.model.horizon)
    segments, held = make(_random_episodes(env, 1)), make(_random_episodes(env, 9))
    single, single_selection = pipeline.train_models(env, segments, config, str(tmp_path / "one"), held_out=held)
    (seed0, selection0), (seed1, selection1) = pipeline.train_seed_models(env, segments, config,
                                                                          str(tmp_path / "two"), 2, held_out=held)
    close = lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    jax.tree.map(close, nnx.state(seed0, nnx.Param), nnx.state(single, nnx.Param))
    assert {h: r["best_step"] for h, r in selection0.items()} == {h: r["best_step"] for h, r in single_selection.items()}
    assert set(selection1) == set(models.HEADS)
    differs = jax.tree.leaves(jax.tree.map(lambda a, b: not np.allclose(a, b), nnx.state(seed1, nnx.Param),
                                           nnx.state(seed0, nnx.Param)))
    assert all(differs)


def test_seed_scores_are_means_over_seeds_with_the_seeds_standard_error():
    from papers.dmpc import evaluation
    reference = (0.0, 100.0)
    one = evaluation.seed_scores([np.array([10.0, 20.0, 30.0])], reference, "toy")
    assert one["normalized_own"] == {"mean": 20.0, "sem": 10.0 / np.sqrt(3)} and "per_seed" not in one
    three = evaluation.seed_scores([np.array([10.0, 30.0]), np.array([40.0, 40.0]), np.array([70.0, 70.0])],
                                   reference, "toy")
    assert three["seeds"] == 3 and three["episodes_per_seed"] == 2 and len(three["per_seed"]) == 3
    np.testing.assert_allclose(three["normalized_own"]["mean"], (20.0 + 40.0 + 70.0) / 3)
    np.testing.assert_allclose(three["normalized_own"]["sem"], np.std([20.0, 40.0, 70.0], ddof=1) / np.sqrt(3))


def test_training_killed_part_way_resumes_to_the_uninterrupted_result(tmp_path, monkeypatch, capsys):
    """With a fingerprint, a run killed after a checkpoint resumes there (head selection included) and ends
    where an uninterrupted run ends; another fingerprint in the same workdir trains afresh."""
    from papers.dmpc import envs, pipeline
    from papers.dmpc.segments import Segments
    config = locomotion.get_config("smoke")
    config.train.num_steps = config.optim.total_steps = 60      # checkpoints and evaluations every 20
    env = envs.make("toy")
    eps = _random_episodes(env, 1)
    segments = Segments(eps, config.model.history, config.model.horizon)
    held = Segments(eps.select(np.arange(4)), config.model.history, config.model.horizon)
    run = lambda workdir, fingerprint: pipeline.train_models(env, segments, config, str(tmp_path / workdir),
                                                             held_out=held, fingerprint=fingerprint)
    whole, whole_selection = run("whole", {"dataset": "a"})

    original = models.HeadSelector.eval_fn

    def killed_at_40(self, model, step):
        if step == 40:
            raise KeyboardInterrupt("killed")
        return original(self, model, step)
    monkeypatch.setattr(models.HeadSelector, "eval_fn", killed_at_40)
    try:
        run("killed", {"dataset": "a"})
    except KeyboardInterrupt:
        pass
    monkeypatch.setattr(models.HeadSelector, "eval_fn", original)
    capsys.readouterr()
    resumed, resumed_selection = run("killed", {"dataset": "a"})
    assert "resumed from" in capsys.readouterr().out
    assert resumed_selection == whole_selection
    chex_close = lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    jax.tree.map(chex_close, nnx.state(resumed, nnx.Param), nnx.state(whole, nnx.Param))
    # another dataset's fingerprint: the old run is cleared, nothing resumed
    run("killed", {"dataset": "b"})
    assert "resumed from" not in capsys.readouterr().out


def _random_episodes(env, seed: int, episodes: int = 12, steps: int = 30):
    """Full-length episodes of random observations / actions / rewards in `env`'s sizes (training inputs only)."""
    from papers.dmpc import data as data_lib
    r = np.random.default_rng(seed)
    N, T, S, A = episodes, steps, env.observation_size, env.action_size
    return data_lib.Episodes(
        observations=r.normal(size=(N, T + 1, S)).astype(np.float32),
        actions=r.uniform(-1, 1, (N, T, A)).astype(np.float32), rewards=r.normal(size=(N, T)).astype(np.float32),
        qpos=np.zeros((N, T + 1, 1), np.float32), qvel=np.zeros((N, T + 1, 1), np.float32),
        lengths=np.full(N, T), terminal=np.zeros(N, bool))


def test_step_denoiser_is_causal_over_the_chunk_and_unknown_archs_are_refused():
    """Step k's output may depend on actions 0..k and on noisy states 1..k+1, never on later ones."""
    import pytest
    S, A, H, F = 3, 2, 2, 4
    dims = models.ModelDims(obs_dim=S, action_dim=A, history=H, horizon=F, hidden=16, depth=1, time_embed=8,
                            dynamics_arch="dit")
    model = models.DMPCModels(dims, nnx.Rngs(0))
    denoiser = model.dynamics
    assert isinstance(denoiser, models.StepDenoiser)
    # AdaLN-zero blocks start as the identity; random weights make every path live
    state = nnx.state(denoiser)
    leaves, treedef = jax.tree.flatten(state)
    keys = jax.random.split(jax.random.key(1), len(leaves))
    nnx.update(denoiser, jax.tree.unflatten(treedef, [a + 0.1 * jax.random.normal(k, a.shape)
                                                       for a, k in zip(leaves, keys)]))
    x = jax.random.normal(jax.random.key(2), (5, F * S))
    cond = jax.random.normal(jax.random.key(3), (5, H * S + F * A))
    t = jnp.arange(5) * 100
    base = denoiser(x, t, cond).reshape(5, F, S)
    for k in range(F):
        moved_action = cond.at[:, H * S + k * A].add(1.0)
        moved_state = x.at[:, k * S].add(1.0)
        for changed in (denoiser(x, t, moved_action), denoiser(moved_state, t, cond)):
            diff = jnp.abs(changed.reshape(5, F, S) - base).max(axis=(0, 2))
            np.testing.assert_array_equal(diff[:k], 0.0)
            assert float(diff[k]) > 0
    with pytest.raises(ValueError, match="dynamics_arch"):
        models.DMPCModels(models.ModelDims(obs_dim=S, action_dim=A, dynamics_arch="transformer"), nnx.Rngs(0))
