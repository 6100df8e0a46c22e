"""The target LM. `smoke` shrinks it to a CPU run under a minute."""

from configs.lm import base
from core.config import parse_arg


def get_config(arg=None):
    args = parse_arg(arg, smoke=False)
    config = base.lm_config("target", args.smoke)
    # Chunked cross-entropy: the 32k-vocab f32 logits of a whole batch (4.3 GB at 32 x 1024) are never held.
    config.loss.chunk_length = 16 if args.smoke else 256
    return config
