"""LeWM on reacher (paper App. D hyperparameters; a JAX two-link arm, core/envs/reacher.py). `smoke`: tiny model
at 56 px, CPU, < 1 min.

Unlike tworoom/pusht, actions are standardised before the action encoder (model.action_standardization, the
official code's per-column z-score from the training data's statistics).
"""

from configs.lewm import base
from core.config import parse_arg


def get_config(arg=None):
    args = parse_arg(arg, smoke=False)
    config = base.lewm_config("reacher", args.smoke)
    config.model.action_standardization = True
    config.data.action_stats_batches = 8      # batches 0..7 of the training stream fit the statistics
    return config
