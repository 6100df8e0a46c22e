"""GPU benchmark: frames/s of the JAX-native environments rendering 224 x 224 RGB frames on device.

    python -m benchmarks.render            # GPU: writes benchmarks/results/render.json
    python -m benchmarks.render --smoke    # CPU: tiny sizes, render_smoke.json

Three measurements per environment, each one jitted program timed after a warm-up run:
  rollout      - a ``lax.scan`` over T steps of vmapped (expert action -> physics step -> render) over N envs,
                 frames stacked as the scan's output [T, N, 224, 224, 3] uint8 (what data generation does);
  render_only  - vmapped rendering of N x T given states (the rasterizer alone);
  clips        - ``sample_clips`` for a LeWM batch (128 clips x 4 frames at frameskip 5, expert rollouts of
                 max_offset + 20 steps each), the on-the-fly training-data path;
  clip_stream  - ``next_clips`` for the same batch (20 expert steps per clip, env states carried);
                 Push-T also with its 10 physics substeps unrolled (``unroll_substeps=True``).
The roofline is the uint8 output alone streamed to HBM (frames/s = bandwidth / frame bytes), against both the
bandwidth measured at the start (benchmarks.common.measure_device) and the device's spec.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from benchmarks import common
from core import metrics
from core.envs import rollout as rollout_lib
from core.envs.push_t import PushT
from core.envs.two_room import TwoRoom
from papers.lewm import data as lewm_data

FRAME_BYTES = 224 * 224 * 3


def rollout_program(env, num_envs: int, num_steps: int):
    policy = rollout_lib.expert_policy(env)

    @jax.jit
    def run(key):
        states = jax.vmap(env.reset)(jax.random.split(key, num_envs))

        def body(states, t):
            keys = jax.random.split(jax.random.fold_in(key, t), num_envs)
            actions = jax.vmap(policy)(states, keys)
            states = jax.vmap(env.step)(states, actions)
            return states, jax.vmap(env.render)(states)

        _, frames = jax.lax.scan(body, states, jnp.arange(num_steps))
        return frames
    return run


def render_program(env, num_envs: int, num_steps: int):
    @jax.jit
    def states_for(key):
        keys = jax.random.split(key, num_envs * num_steps).reshape(num_steps, num_envs)
        return jax.vmap(jax.vmap(env.reset))(keys)

    return jax.jit(jax.vmap(jax.vmap(env.render))), states_for


def full_resolution_buffers(fn, *args) -> int:
    """Kernels in the compiled program's entry that write a full-resolution buffer: trailing dims [224, 224]
    (a per-shape plane), [224, 3] (pixels) or [224, 672] (the byte layout). 1 means the whole frame is one
    fused loop writing only the uint8 output."""
    text = fn.lower(*args).compile().as_text()
    entry = text[text.index("ENTRY"):]
    count = 0
    for line in entry.splitlines():
        if "fusion(" not in line or "=" not in line:
            continue
        shape = line.split("=", 1)[1].strip().split("{")[0].split(" ")[0]
        dims = [int(d) for d in shape[shape.index("[") + 1:shape.index("]")].split(",") if d] if "[" in shape else []
        if len(dims) >= 3 and dims[-2:] in ([224, 224], [224, 3], [224, 672]):
            count += 1
            print("   full-resolution kernel:", line.strip()[:100], "...",
                  line[line.find("op_name="):][:80] if "op_name=" in line else "", flush=True)
    return count


def row(name, env_name, total_frames, seconds, device, **extra):
    frames_per_s = total_frames / seconds
    share = common.against_device(frames_per_s * FRAME_BYTES, device, "bytes")
    result = dict(env=env_name, mode=name, frames=total_frames, seconds=seconds, frames_per_s=frames_per_s,
                  output_GB_per_s=frames_per_s * FRAME_BYTES / 1e9, share_of_roofline=share, **extra)
    print(f"{env_name:8s} {name:12s} {extra} {frames_per_s:12.0f} frames/s  {result['output_GB_per_s']:7.1f} GB/s"
          f"  {100 * share['vs_measured']:5.1f}% of the measured bandwidth", flush=True)
    return result


def main(argv=None):
    args = common.arg_parser(__doc__).parse_args(argv)
    device = common.measure_device(args.smoke)
    common.print_device(device)
    key = jax.random.key(0)
    envs = {"two_room": TwoRoom(), "push_t": PushT()}
    smoke = args.smoke
    num_steps, sizes, batch = (4, (8,), 8) if smoke else (16, (4096,), 128)
    rows = []
    for env_name, env in envs.items():
        for num_envs in sizes:
            run = rollout_program(env, num_envs, num_steps)
            seconds = common.seconds_per_call(run, key, repeats=3, reduce="best")
            rows.append(row("rollout", env_name, num_envs * num_steps, seconds, device, num_envs=num_envs, steps=num_steps))
            render_fn, states_for = render_program(env, num_envs, num_steps)
            states = jax.block_until_ready(states_for(key))
            seconds = common.seconds_per_call(render_fn, states, repeats=3, reduce="best")
            rows.append(row("render_only", env_name, num_envs * num_steps, seconds, device, num_envs=num_envs,
                            steps=num_steps, full_resolution_kernels=full_resolution_buffers(render_fn, states)))
            del states
        variants = {env_name: env}
        if env_name == "push_t" and not smoke:      # the unrolled substeps take minutes to compile on CPU
            variants["push_t_unrolled"] = dataclasses.replace(env, unroll_substeps=True)
        for variant_name, variant in variants.items():
            clips = jax.jit(lambda k, env=variant: lewm_data.sample_clips(env, k, batch).frames)
            seconds = common.seconds_per_call(clips, key, repeats=3, reduce="best")
            rows.append(row("clips", variant_name, batch * 4, seconds, device, batch=batch, num_frames=4, frameskip=5,
                            max_offset=80, clips_per_s=batch / seconds))
            stream = lewm_data.init_clip_stream(variant, key, batch)
            advance = jax.jit(lambda s, k, env=variant: lewm_data.next_clips(env, s, k)[1].frames)
            seconds = common.seconds_per_call(advance, stream, key, repeats=3, reduce="best")
            rows.append(row("clip_stream", variant_name, batch * 4, seconds, device, batch=batch, num_frames=4,
                            frameskip=5, clips_per_s=batch / seconds))

    best = {name: max(r["frames_per_s"] for r in rows if r["env"] == name and r["mode"] == "rollout")
            for name in envs}
    out = common.run_info(
        "render", args, device=device,
        config=dict(image_size=224, channels=3, dtype="uint8", steps_per_scan=num_steps,
                    two_room=repr(envs["two_room"]), push_t=repr(envs["push_t"])),
        frames_per_s=best, rows=rows)
    path = common.result_path(args, "render")
    metrics.write_json(path, out)
    print("wrote", path)


if __name__ == "__main__":
    main()
