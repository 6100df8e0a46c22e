"""JAX-native pixel environments rendered on device (TwoRoom, Push-T, Reacher) for LeWM-style world models.

Everything here is a pure function of arrays, so it jits, vmaps over environments and scans over time.

Environment contract (``TwoRoom`` in ``core.envs.two_room``, ``PushT`` in ``core.envs.push_t``, ``Reacher`` in
``core.envs.reacher``, a two-link arm whose goal is a joint configuration)
-------------------------------------------------------------------------------------------------
An environment is a frozen, hashable dataclass of *static* parameters (sizes, speeds, thresholds), so it can
be closed over or passed as a static argument to ``jax.jit``. Its methods are pure:

    env.action_dim                         -> int (2 for every env); actions live in [-1, 1]^action_dim
    env.image_size                         -> int (224)
    env.reset(key)                         -> State   randomised start, including a randomised task goal
    env.step(state, action[A])             -> State   one control step (actions are clipped to [-1, 1])
    env.render(state)                      -> uint8[image_size, image_size, 3]
    env.is_success(state, goal_state)      -> bool[]  the paper's success test between two states
    env.expert_action(state, goal_state, key) -> f32[A]  scripted behaviour policy (noisy, as for data
                                               collection); goal_state=None means "the task goal stored in
                                               state" (state.goal_* fields)
    env.perturb_colour(state, key)         -> State   new random colour of the agent (TwoRoom) / block (Push-T) /
                                               arm (Reacher);
                                               physics untouched, the rendering changes
    PushT.biased_random_action(state, key) -> f32[2]  VoE behaviour: random, biased toward the block
    env.teleport(state, key)               -> State   agent (TwoRoom) / agent and block (Push-T) / arm at rest
                                               (Reacher) moved to a random valid pose; colours untouched
    env.proprio(state)                     -> f32[P]  swm's proprio: agent position (TwoRoom, P=2); agent
                                               position and velocity (Push-T, P=4); joints and joint
                                               velocities (Reacher, P=4)
    env.probe_targets(state)               -> dict[str, f32[...]]  quantities for linear probes
                                               (agent_pos, and for Push-T block_pos, block_angle;
                                               Reacher: joints, fingertip)
    env.goal_state(state)                  -> State   the state whose rendering is the goal image (agent / block
                                               placed at the task goal)
    env.resample_goal(state, key)          -> State   a fresh task goal (long rollouts keep moving)
    env.state_vector(state)                -> f32[S]  flat low-dimensional state stored in datasets (TwoRoom:
                                               agent, goal; Push-T: swm's 7-D agent, block, angle, velocity;
                                               Reacher: joints, joint velocities)
    env.goal_vector(state)                 -> f32[G]  the task goal (TwoRoom: goal xy; Push-T: agent xy, block xy,
                                               block angle; Reacher: the goal joint configuration)
    env.from_vectors(state_vector, goal_vector=None) -> State  rebuild a state (e.g. from a dataset row)
    env.with_goal_vector(state, goal_vector) -> State  the same state(s) with another task goal (the goal ghost
                                               Push-T draws, the target ball Reacher draws); broadcasts over leading axes
    PushT.block_errors(state, goal_state)  -> (position px, |angle| rad) of the block

``State`` is a ``flax.struct.dataclass`` pytree of f32 arrays (no Python scalars), so batches of states are
just states with a leading axis: ``jax.vmap(env.reset)(keys)``, ``jax.vmap(env.render)(states)``.
Colours are in the state (f32 RGB in [0, 1]) so rendering reflects ``perturb_colour``. The state also keeps
``last_action`` (used by the expert's action-repeat noise) and the task goal.

Pixel coordinates: x to the right, y downward, origin at the image's top-left corner, in units of the
environment's world (TwoRoom: 224-px image pixels; Push-T: pymunk's 512-px world, drawn scaled to 224;
Reacher: a 0.6 m world, the arm's root at its centre).

Rollouts (module ``core.envs.rollout``)
---------------------------------------
    rollout(env, policy_fn, key, num_steps, initial_state=None, render=False)
        -> Trajectory(states[T+1], actions[T], frames[T+1, H, W, 3] uint8 or None)
        ``policy_fn(state, key) -> action``; one ``lax.scan``; vmap it over keys for many envs.
        ``expert_policy(env)`` and ``random_policy(env)`` build policy_fns.
LeWM's clips, episode bank and violation-of-expectation rollouts are built on these in papers/lewm/data.py.

Registry: ``ENVS`` maps one spelling of each name to its class; ``make_env(name, **params)`` builds one.
"""

from core.envs import render, rollout
from core.envs.push_t import PushT, PushTState
from core.envs.reacher import Reacher, ReacherState
from core.envs.two_room import TwoRoom, TwoRoomState

ENVS = {"tworoom": TwoRoom, "pusht": PushT, "reacher": Reacher}


def make_env(name: str, **params):
    """The environment registered as `name` (see ENVS), built with its static `params`."""
    if name not in ENVS:
        raise ValueError(f"Unknown environment {name!r}; registered: {', '.join(sorted(ENVS))}.")
    return ENVS[name](**params)


__all__ = ["ENVS", "PushT", "PushTState", "Reacher", "ReacherState", "TwoRoom", "TwoRoomState", "make_env", "render", "rollout"]
