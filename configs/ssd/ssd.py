"""SSD benchmark (python -m benchmarks.ssd): the decode benchmark's pair (configs/ssd/decode.py, `quick` sizes:
12-layer target, 2-layer draft, so c = t_draft / t_target is not negligible) and the SSD settings measured on
two GPUs (target on GPU 0, draft on GPU 1). `smoke`: the tiny CPU pair on 2 fake devices, seconds.
"""

from configs.ssd import decode
from core.config import parse_arg


def get_config(arg=None):
    args = parse_arg(arg, smoke=False)
    config = decode.get_config("smoke" if args.smoke else "quick")
    smoke = args.smoke
    config.ssd = dict(
        num_draft=2 if smoke else 4,                   # K
        fan_out=1 if smoke else 2,                     # uniform F per depth for the headline
        fan_out_sweep=(1, 2) if smoke else (1, 2, 3, 4),
        geometric_budget=4 if smoke else 10,           # sum F_k of Theorem 12's vector
        saguaro_sweep=(0.5,) if smoke else (1.0, 0.7, 0.4, 0.2),
        chain_ks=(2,) if smoke else (3, 4),            # chain SD baselines (the best is the SD figure)
        batches=(1, 2) if smoke else (1, 2, 4, 8, 16, 32),
        max_new_tokens=16 if smoke else 128,
        prompt_len=16 if smoke else 64,
        num_prompts=4 if smoke else 32,
        batch1_prompts=2 if smoke else 6,
        repeats=1,
        piece_rounds=4 if smoke else 16,               # rounds timed piece by piece (idle times)
        budget_s=3600 if smoke else 300,               # decoding phases start only before this (training excluded)
    )
    return config
