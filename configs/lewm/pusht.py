"""LeWM on pusht (paper App. D hyperparameters). `smoke`: tiny model at 56 px, CPU, < 1 min."""

from configs.lewm import base
from core.config import parse_arg


def get_config(arg=None):
    args = parse_arg(arg, smoke=False, image_size=0)
    return base.lewm_config("pusht", args.smoke, args.image_size)
