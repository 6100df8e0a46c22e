"""LeWM on reacher (paper App. D hyperparameters; a JAX two-link arm, core/envs/reacher.py). `smoke`: tiny model
at 56 px, CPU, < 1 min.

Unlike tworoom/pusht, actions are standardised before the action encoder (model.action_standardization, the
official code's per-column z-score from the training data's statistics).

The data follow the official Reacher code (stable-worldmodel): uniform random actions (collect_reacher.py's
RandomPolicy; the evaluation draws its episodes from that random-policy dataset) and no target drawn (swm's
reacher renders the target transparent by default, render_target=0). Drawn, the target would jump to a new place
whenever the arm reached it, an event the model cannot predict from the actions and the task never asks for.
"""

from configs.lewm import base
from core.config import parse_arg


def get_config(arg=None):
    args = parse_arg(arg, smoke=False)
    config = base.lewm_config("reacher", args.smoke)
    config.env.params = dict(render_goal=False)
    config.data.policy = "random"
    config.model.action_standardization = True
    config.data.action_stats_batches = 8      # batches 0..7 of the training stream fit the statistics
    return config
