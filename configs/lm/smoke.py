"""The smallest LM: a CPU run under a minute (also `get_config("smoke")` of every LM config)."""

from configs.lm import base
from core.config import parse_arg


def get_config(arg=None):
    parse_arg(arg, smoke=True)
    return base.lm_config("smoke", True)
