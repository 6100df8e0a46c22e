"""Shared shape of the LeWM configs (paper App. D): model, env, data, loss, train, optim, mesh."""

import dataclasses

import ml_collections

from core import sharding, train
from papers.lewm.model import LeWMConfig


def lewm_config(env: str, smoke: bool, image_size: int = 0) -> ml_collections.ConfigDict:
    """`image_size` (0: the paper's 224, smoke 56): the encoder's input and the env's rendering, a multiple of
    the 14-px patch. Smaller images trade the paper's resolution for steps/s (the ViT's cost grows with the
    token count: 257 tokens at 224 px, 65 at 112)."""
    config = ml_collections.ConfigDict()
    model = LeWMConfig.smoke() if smoke else LeWMConfig()
    if image_size:
        if image_size % model.patch_size:
            raise ValueError(f"image_size={image_size} must be a multiple of the {model.patch_size}-px patch.")
        model = dataclasses.replace(model, image_size=int(image_size))
    config.model = dataclasses.asdict(model)
    # Push-T: the expert's |action| capped at 0.25 gives DINO-WM's human data's action spread (std 0.2 per axis in
    # units of 100 px) and agent speed; uncapped (1.0) it moves ~3x faster (papers/lewm/README.md)
    config.env = dict(name=env, params=dict(expert_max_action=0.25) if env == "pusht" else {})
    if image_size and env != "tworoom":      # TwoRoom's world is in image pixels: the model resizes its frames
        config.env.params.image_size = int(image_size)
    # Push-T's contact solver makes fresh rollouts the bulk of a train step, so it trains on a simulated bank
    config.data = dict(batch_size=8 if smoke else 128, max_offset=20 if smoke else 80,
                       bank_episodes=(64 if smoke else 16384) if env == "pusht" else 0)
    config.loss = dict(sigreg_weight=0.09, num_slices=64 if smoke else 1024)
    steps = 10 if smoke else 20000
    config.train = train.train_config(num_steps=steps, log_every=5 if smoke else 100, eval_every=10**9,
                                      checkpoint_every=10 if smoke else 2000, compute_dtype="bfloat16",
                                      data_seed=3072)
    config.optim = train.optim_config(learning_rate=5e-5 if not smoke else 1e-3, weight_decay=1e-3,
                                      warmup_steps=max(1, steps // 100), total_steps=steps, grad_clip=1.0,
                                      b1=0.9, b2=0.999)
    config.mesh = sharding.mesh_config(data=-1)
    config.eval = dict(num_episodes=4 if smoke else 50, budget=50, goal_offset=25, horizon=5,
                       cem_samples=16 if smoke else 300, cem_elites=4 if smoke else 30,
                       cem_iters=2 if smoke else 30, seed=42,
                       compute_dtype="bfloat16",
                       # every frame of an episode shows the start's goal ghost (False: the old protocol, whose
                       # goal frame showed the ghost the demo drew after reaching its own goal)
                       fixed_goal_ghost=True)
    return config
