"""LeWM on reacher (paper App. D hyperparameters; a JAX two-link arm, core/envs/reacher.py). `smoke`: tiny model
at 56 px, CPU, < 1 min.

Unlike tworoom/pusht, actions are standardised before the action encoder (model.action_standardization, the
official code's per-column z-score from the training data's statistics).

The data follow the official Reacher code (stable-worldmodel): uniform random actions (collect_reacher.py's
RandomPolicy; the evaluation draws its episodes from that random-policy dataset) and no target drawn (swm's
reacher renders the target transparent by default, render_target=0). Drawn, the target would jump to a new place
whenever the arm reached it, an event the model cannot predict from the actions and the task never asks for.
A joint speed of 0.1 rad/step at full action gives dm_control's arm's reach (~2 rad in 25 steps from rest) and,
under random actions, its 25-step joint distances (the evaluation's start -> goal; papers/lewm/README.md).
"""

from configs.lewm import base
from core.config import parse_arg


def get_config(arg=None):
    args = parse_arg(arg, smoke=False, image_size=0)
    config = base.lewm_config("reacher", args.smoke, args.image_size)
    config.env.params.update(render_goal=False, max_speed=0.1)
    config.data.policy = "random"
    config.model.action_standardization = True
    config.data.action_stats_batches = 8      # batches 0..7 of the training stream fit the statistics
    return config
