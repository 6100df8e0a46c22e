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
    env.teleport(state, key)               -> State   agent (TwoRoom) / agent and block (Push-T) moved to a
                                               random valid pose; colours untouched
    env.proprio(state)                     -> f32[P]  agent position (probe target, "proprio")
    env.probe_targets(state)               -> dict[str, f32[...]]  quantities for linear probes
                                               (agent_pos, and for Push-T block_pos, block_angle)
    env.goal_state(state)                  -> State   the state whose rendering is the goal image (agent / block
                                               placed at the task goal)

``State`` is a ``flax.struct.dataclass`` pytree of f32 arrays (no Python scalars), so batches of states are
just states with a leading axis: ``jax.vmap(env.reset)(keys)``, ``jax.vmap(env.render)(states)``.
Colours are in the state (f32 RGB in [0, 1]) so rendering reflects ``perturb_colour``. The state also keeps
``last_action`` (used by the expert's action-repeat noise) and the task goal.

Pixel coordinates: x to the right, y downward, origin at the image's top-left corner, in units of the
environment's world (TwoRoom: 224-px image pixels; Push-T: pymunk's 512-px world, drawn scaled to 224).

Rollouts and training data (``core.envs.rollout``)
--------------------------------------------------
    rollout(env, policy_fn, key, num_steps, initial_state=None, render=False)
        -> Trajectory(states[T+1], actions[T], frames[T+1, H, W, 3] uint8 or None)
        ``policy_fn(state, key) -> action``; one ``lax.scan``; vmap it over keys for many envs.
        ``expert_policy(env)`` and ``random_policy(env)`` build policy_fns.
    sample_clips(env, key, batch_size, num_frames=4, frameskip=5, policy='expert', warmup_steps=...)
        -> Clips(frames uint8[B, num_frames, H, W, 3], actions f32[B, num_frames, frameskip * A],
                 states State[B, num_frames])
        Jittable: random starts, expert rollouts, rendered on device. ``actions[:, t]`` is the block of
        ``frameskip`` actions executed after ``frames[:, t]`` (the LeWM layout: 4 frames at frameskip 5 with
        4 action blocks of 5 x A; the last block leads past the clip, as in the paper's data loader).

Datasets on disk (``core.envs.dataset``): a TFDS ``GeneratorBasedBuilder`` (ARRAY_RECORD) of expert episodes
(frames as PNG at a configurable resolution, actions, proprio/state vectors) plus ``manifest.json``
(generator version, seed, counts, sha256 of every file); the same seed gives the same bytes. Read back with
``tfds.data_source`` + grain (no TensorFlow needed).

Rendering primitives (``core.envs.render``): anti-aliased signed-distance rasterizer (circle, oriented box,
union of boxes, Gaussian dot), coverage = clip(0.5 - sdf / pixel, 0, 1), painter's order compositing.
"""
