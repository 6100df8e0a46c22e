"""Pre-training under infinite compute, at small scale: the whole fixed-token sweep (papers/infinite_compute).

Default (one H200, ~7 min): D = 2^20 tokens of the offline Python corpus re-tokenized with a 4k BPE, five
Llama sizes from 0.11M to 5.4M non-embedding parameters (9.5 down to 0.19 tokens per parameter), sequences of
256, batch 64, five members per vmapped program. `smoke`: three tiny sizes on the smoke corpus, CPU, < 1 min.
"""

import ml_collections

from core import train
from core.config import parse_arg
from core.data.corpus import corpus_config

# name: (d_model, n_layers, n_heads, head_dim, mlp_dim); non-embedding params in the comments.
SIZES = {
    "s1": (48, 4, 2, 24, 128),       # 0.11M
    "s2": (96, 4, 3, 32, 256),       # 0.44M
    "s3": (160, 5, 5, 32, 432),      # 1.55M
    "s4": (224, 6, 7, 32, 608),      # 3.66M
    "s5": (256, 7, 8, 32, 688),      # 5.54M
}
SMOKE_SIZES = {"s1": (16, 1, 2, 8, 32), "s2": (32, 1, 2, 16, 64), "s3": (48, 2, 3, 16, 96)}


def get_config(arg=None):
    args = parse_arg(arg, smoke=False, budget_seconds=420.0)
    smoke = args.smoke
    c = ml_collections.ConfigDict()
    if smoke:
        c.corpus = corpus_config(packages=["absl", "ml_collections"], include_stdlib=True, max_bytes=3_000_000,
                                 max_file_bytes=200_000, validation_percent=5, vocab_size=512)
    else:
        c.corpus = corpus_config(vocab_size=4096)
    c.data = dict(corpus_dir="data/corpus_smoke_v512" if smoke else "data/corpus_v4k",
                  dir="data/infinite_compute_smoke" if smoke else "data/infinite_compute",
                  train_tokens=8192 if smoke else 2 ** 20, eval_tokens=4097 if smoke else 1024 * 256 + 1,
                  seed=0, seq_len=32 if smoke else 256, batch_size=8 if smoke else 64)
    sizes = SMOKE_SIZES if smoke else SIZES
    c.sizes = {name: dict(d_model=d, n_layers=n, n_heads=h, head_dim=hd, mlp_dim=m)
               for name, (d, n, h, hd, m) in sizes.items()}
    c.members = 3 if smoke else 5               # points per vmapped program (= ensemble size K)
    c.chunk_steps = 8 if smoke else 64          # train steps per dispatch (one lax.scan)
    c.eval_batch = 16 if smoke else 64
    c.assumed_flops_per_s = 1e10 if smoke else 1.5e14   # until the first groups measure it
    c.budget_seconds = args.budget_seconds
    c.train = train.train_config(compute_dtype="float32" if smoke else "bfloat16")
    # Paper: AdamW, cosine to 0, 1% warmup, clip 1.0. lr / wd / steps are per member (recipe.MemberSchedule).
    c.optim = train.optim_config(end_learning_rate_fraction=0.0, warmup_fraction=0.01)
    c.grid = dict(learning_rates=[1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2],
                  weight_decays=[0.0, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4],
                  epochs=[1, 2, 4, 8, 16, 32, 64])
    c.standard = dict(weight_decay=0.1, learning_rates=[3e-3] if smoke else [3e-3, 1e-2],
                      epochs=[1, 2, 4] if smoke else [1, 2, 4, 8, 16])
    # start_from_smaller: a size's search starts at the next smaller size's best (papers/infinite_compute/sweep.py)
    c.regularized = dict(start_weight_decay=0.8, max_rounds=1 if smoke else 2, start_from_smaller=True)
    c.ensemble = dict(epoch_factor=2, weight_decay_factor=0.5, report_size="s2")
    # keep_real_epochs: the paper's schedule (real data keeps its 16 epochs, synthetic rows on top); the
    # session-15 H200 figure (retention 0.19) used the earlier one, where synthetic rows displaced real epochs.
    c.distill = dict(size="s2", epochs=2 if smoke else 16, weight_decay=0.1, temperature=1.0,
                     keep_real_epochs=True, max_synthetic_repeats=3,
                     synthetic_windows=48 if smoke else 16384, generate_batch=16 if smoke else 1024,
                     students=[("ensemble", 0.75), ("self", 0.5), ("self", 1.0)] if smoke else
                     [("ensemble", 0.75), ("ensemble", 0.9), ("ensemble", 0.5), ("self", 0.5), ("self", 1.0)])
    # Item 6 (benchmarks/infinite_compute.py --stages draft): the student, re-tokenised into the SSD pair's
    # vocabulary, as the draft of configs/ssd/decode.py's target ("quick": 12-layer target, 2-layer draft, ~2
    # GPU-min) against the pair's plain distilled draft. Steps 0 = the SSD config's; smoke: a few steps each.
    c.draft = dict(ssd_variant="quick", pool="ensemble", synthetic_fraction=0.75, target_steps=6 if smoke else 0,
                   draft_steps=6 if smoke else 0, corpus_dir="", num_draft=0, prompts=2 if smoke else 8,
                   max_new_tokens=8 if smoke else 0, dtype="float32" if smoke else "bfloat16")
    c.data_law = dict(fractions=[0.25, 0.5] if smoke else [0.125, 0.25, 0.5], epoch_factors=[1] if smoke else [0.5, 1, 2])
    return c
