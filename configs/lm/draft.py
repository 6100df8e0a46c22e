"""The draft LM. `smoke` shrinks it to a CPU run under a minute."""

from configs.lm import base
from core.config import parse_arg


def get_config(arg=None):
    args = parse_arg(arg, smoke=False)
    return base.lm_config("draft", args.smoke)
