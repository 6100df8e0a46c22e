"""Decode benchmark (benchmarks/decode.py): a target/draft pair trained on the offline corpus, then AR, chain SD
and tree SD measured over held-out prompts. `smoke` shrinks everything to a CPU run under a minute.

Shapes: batch-1 decode of small models is bound by per-layer launch overhead, not bytes, so the draft/target
latency ratio c is roughly the ratio of layer counts. The draft is therefore shallow (2 layers) and the target
deep, which gives c ~ 0.1; both share the corpus tokenizer.
"""

from configs.lm import base
from core.config import parse_arg


def get_config(arg=None):
    args = parse_arg(arg, smoke=False, quick=False)
    smoke = args.smoke
    config = base.lm_config("target", smoke)
    target, draft = config.model, dict(config.model.to_dict())
    if not smoke:
        # ~180M: 24 layers (latency), narrower than configs/lm/target.py so it trains in a few GPU-minutes.
        target.update(d_model=768, n_layers=24, n_heads=12, n_kv_heads=4, head_dim=64, mlp_dim=2048,
                      max_seq_len=1024)
        draft.update(d_model=512, n_layers=2, n_heads=8, n_kv_heads=2, head_dim=64, mlp_dim=1536,
                     max_seq_len=1024)
    else:
        draft.update(n_layers=1)
    config.draft_model = draft
    # The corpus: the default package list minus torch/transformers (huge on the GPU image, absent here), so
    # the CPU and GPU machines build the same ~18M-token corpus; smoke = a few MB with a 2k vocab.
    config.corpus = dict(
        packages=["absl", "ml_collections"] if smoke else
        ["numpy", "scipy", "jax", "flax", "optax", "chex", "orbax", "absl", "ml_collections", "etils",
         "tensorflow_datasets", "grain", "brax", "mujoco", "matplotlib"],
        include_stdlib=True, max_bytes=3_000_000 if smoke else 0, max_file_bytes=200_000 if smoke else 1_000_000,
        validation_percent=5 if smoke else 2, vocab_size=2048 if smoke else 32768)
    config.data.corpus_dir = "/tmp/ssd_corpus_smoke" if smoke else "/tmp/ssd_corpus"
    config.data.seq_len = 64 if smoke else 512
    config.data.batch_size = 16 if smoke else 64
    config.train.update(num_steps=30 if smoke else 1000, log_every=10 if smoke else 100,
                        eval_every=30 if smoke else 100000, checkpoint_every=100000, async_checkpoint=False)
    config.optim.update(learning_rate=3e-3 if smoke else 1.5e-3, warmup_steps=5 if smoke else 100,
                        total_steps=config.train.num_steps, weight_decay=0.1)
    # Draft: distilled from the target (KL to the target's next-token distribution plus hard labels).
    config.draft_train = dict(num_steps=20 if smoke else 600, learning_rate=3e-3 if smoke else 2e-3,
                              warmup_steps=5 if smoke else 50, hard_weight=0.5)
    config.decode = dict(
        max_new_tokens=16 if smoke else 128,
        prompt_len=16 if smoke else 64,
        num_prompts=4 if smoke else 32,
        batch1_prompts=2 if smoke else 8,     # batch-1 figures average over this many prompts
        ks=(1, 2) if smoke else (3, 5, 7),
        tree_branching=(2, 1) if smoke else (3, 2, 1, 1, 1),
        batches=(1, 2) if smoke else (1, 8, 32),
        temperatures=(0.0, 1.0),
        repeats=1 if smoke else 2,
    )
    if args.quick and not smoke:
        # ~2 GPU-minutes end to end: a 12-layer target, a 2-layer draft, one K, batch 1 only, no HF peer.
        target.update(d_model=512, n_layers=12, n_heads=8, n_kv_heads=4, head_dim=64, mlp_dim=1408)
        config.draft_model.update(d_model=512, n_layers=2, n_heads=8, n_kv_heads=4, head_dim=64, mlp_dim=1408)
        config.data.update(seq_len=256, batch_size=32)
        config.train.num_steps = config.optim.total_steps = 400
        config.draft_train.num_steps = 250
        config.decode.update(ks=(4,), batches=(1,), batch1_prompts=4, repeats=1, num_prompts=4)
    # transformers on the same exported weights (benchmarks/hf_peer.py); skipped with a message without torch.
    config.hf = dict(enabled=not args.quick, max_new_tokens=16 if smoke else 128, num_prompts=2 if smoke else 4,
                     batches=(1, 2) if smoke else (1, 8))
    return config
