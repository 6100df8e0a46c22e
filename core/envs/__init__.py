"""JAX-native pixel environments rendered on device (TwoRoom, Push-T) for LeWM-style world models.

Everything here is a pure function of arrays, so it jits, vmaps over environments and scans over time.

Environment contract (``TwoRoom`` in ``core.envs.two_room``, ``PushT`` in ``core.envs.push_t``)
-------------------------------------------------------------------------------------------------
An environment is a frozen, hashable dataclass of *static* parameters (sizes, speeds, thresholds), so it can
be closed over or passed as a static argument to ``jax.jit``. Its methods are pure:

    env.action_dim                         -> int (2 for both envs); actions live in [-1, 1]^action_dim
    env.image_size                         -> int (224)
    env.reset(key)                         -> State   randomised start, including a randomised task goal
    env.step(state, action[A])             -> State   one control step (actions are clipped to [-1, 1])
    env.render(state)                      -> uint8[image_size, image_size, 3]
    env.is_success(state, goal_state)      -> bool[]  the paper's success test between two states
    env.expert_action(state, goal_state, key) -> f32[A]  scripted behaviour policy (noisy, as for data
                                               collection); goal_state=None means "the task goal stored in
                                               state" (state.goal_* fields)
    env.perturb_colour(state, key)         -> State   new random colour of the agent (TwoRoom) / block (Push-T);
                                               physics untouched, the rendering changes
    PushT.biased_random_action(state, key) -> f32[2]  VoE behaviour: random, biased toward the block
    env.teleport(state, key)               -> State   agent (TwoRoom) / agent and block (Push-T) moved to a
                                               random valid pose; colours untouched
    env.proprio(state)                     -> f32[P]  swm's proprio: agent position (TwoRoom, P=2); agent
                                               position and velocity (Push-T, P=4)
    env.probe_targets(state)               -> dict[str, f32[...]]  quantities for linear probes
                                               (agent_pos, and for Push-T block_pos, block_angle)
    env.goal_state(state)                  -> State   the state whose rendering is the goal image (agent / block
                                               placed at the task goal)
    env.resample_goal(state, key)          -> State   a fresh task goal (long rollouts keep moving)
    env.state_vector(state)                -> f32[S]  flat low-dimensional state stored in datasets (TwoRoom:
                                               agent, goal; Push-T: swm's 7-D agent, block, angle, velocity)
    env.goal_vector(state)                 -> f32[G]  the task goal (TwoRoom: goal xy; Push-T: agent xy, block xy,
                                               block angle)
    env.from_vectors(state_vector, goal_vector=None) -> State  rebuild a state (e.g. from a dataset row)
    PushT.block_errors(state, goal_state)  -> (position px, |angle| rad) of the block

``State`` is a ``flax.struct.dataclass`` pytree of f32 arrays (no Python scalars), so batches of states are
just states with a leading axis: ``jax.vmap(env.reset)(keys)``, ``jax.vmap(env.render)(states)``.
Colours are in the state (f32 RGB in [0, 1]) so rendering reflects ``perturb_colour``. The state also keeps
``last_action`` (used by the expert's action-repeat noise) and the task goal.

Pixel coordinates: x to the right, y downward, origin at the image's top-left corner, in units of the
environment's world (TwoRoom: 224-px image pixels; Push-T: pymunk's 512-px world, drawn scaled to 224).

Rollouts and training data (module ``core.envs.rollout``)
---------------------------------------------------------
    rollout(env, policy_fn, key, num_steps, initial_state=None, render=False)
        -> Trajectory(states[T+1], actions[T], frames[T+1, H, W, 3] uint8 or None)
        ``policy_fn(state, key) -> action``; one ``lax.scan``; vmap it over keys for many envs.
        ``expert_policy(env)`` and ``random_policy(env)`` build policy_fns.
    sample_clips(env, key, batch_size, num_frames=4, frameskip=5, max_offset=80, policy_fn=None)
        -> Clips(frames uint8[B, num_frames, H, W, 3], actions f32[B, num_frames, frameskip * A],
                 states State[B, num_frames])
        Jittable: random starts, expert rollouts (goals resampled on success), clip start uniform in
        [0, max_offset], rendered on device. ``actions[:, t]`` is the block of
        ``frameskip`` actions executed after ``frames[:, t]`` (the LeWM layout: 4 frames at frameskip 5 with
        4 action blocks of 5 x A; the last block leads past the clip, as in the paper's data loader).
    init_clip_stream(env, key, num_envs) -> states;  next_clips(env, states, key) -> (states, Clips)
        The cheaper stream: each call advances every env by 20 steps and returns that stretch as its clip
        (20 steps per clip instead of max_offset + 20); carry the states between training steps.
    voe_rollouts(env, policy_fn, key, num_steps, perturb_step) -> Trajectory with a leading axis of 3
        (VOE_VARIANTS = none, colour, teleport): one rollout continued three ways from perturb_step with the
        same policy noise, for the violation-of-expectation experiment (frames[v, perturb_step] is the first
        perturbed observation).

Datasets on disk (``core.envs.dataset``): a TFDS ``GeneratorBasedBuilder`` (ARRAY_RECORD) of expert episodes
(frames as PNG or raw uint8 at a configurable resolution, actions, state vectors, proprio; episodes stop at
the first success) plus ``manifest.json`` (generator version, config, seed, counts, sha256 of every data file);
the same seed on the same backend gives the same bytes. No TensorFlow needed.
    path = dataset.build(dataset.EpisodesConfig(name=..., env="two_room", num_episodes=..., seed=...), data_dir)
    source = dataset.load(path)      # source[i] -> dict(frames, actions, states, proprio, goal, episode_id, success)
    dataset.clip(source[i], start, num_frames=4, frameskip=5) -> dict(frames, actions[4, 5 * A])

Rendering primitives (``core.envs.render``): anti-aliased signed-distance rasterizer (circle, oriented box,
union of boxes, Gaussian dot), coverage = clip(0.5 - sdf / pixel, 0, 1), painter's order compositing.

Measured (benchmarks/results/render.json, one H100; and CPU rollouts of 1000 episodes, seed 0)
----------------------------------------------------------------------------------------------
- Frames/s at 224^2, 4096 envs x 16 steps in one jitted scan (expert + physics + render): TwoRoom 1.72M,
  Push-T 0.78M; rendering alone 3.4M / 1.3M (one fused kernel per frame batch; compute-bound at 18% / 7%
  of the 19M frames/s output-write roofline). LeWM batches of 128 clips: ``sample_clips`` 54k clips/s
  (TwoRoom) / 3.6k (Push-T; latency-bound, 100 sequential steps per clip), the stream ``next_clips``
  146k / 16.9k clips/s (18.8k with ``PushT(unroll_substeps=True)``), i.e. 7.6 ms per Push-T batch.
- TwoRoom expert (noise 2.0, repeat 0.05, speed 5): reaches the target in 46% of episodes within 100 steps
  (mean length capped at 100: 90; the paper's data: 92), 99.9% within 300; noiseless: 100%, median 33 steps.
- Push-T expert (noise 0.1): block within 20 px and pi/9 of a random goal pose in 99.8% of episodes within
  100 steps; swm's full success test (agent parked too) 64.7% / 94.0% / 99.2% within 100 / 200 / 300 steps.
  Our quasi-static frictionless physics is not pymunk's; these rates do not transfer to swm's PushT.
"""

from core.envs import render, rollout  # noqa: E402  (modules: `from core.envs import rollout` is the module)
from core.envs.push_t import PushT, PushTState  # noqa: E402
from core.envs.two_room import TwoRoom, TwoRoomState  # noqa: E402

__all__ = ["PushT", "PushTState", "TwoRoom", "TwoRoomState", "render", "rollout"]
