"""Shared shape of every LM config: model, data, train, optim, mesh, sample sections."""

import ml_collections

from configs.data import corpus as corpus_configs
from core import sharding, train

# (d_model, n_layers, n_heads, n_kv_heads, head_dim, mlp_dim) per size; vocab comes from the tokenizer.
SIZES = {
    "smoke": (64, 2, 4, 2, 16, 192),
    "draft": (384, 6, 6, 2, 64, 1024),        # ~22M with a 32k vocab (tied)
    "target": (1024, 24, 16, 8, 64, 2816),    # ~313M
    "1b": (2048, 20, 16, 8, 128, 5632),       # ~1.01B
}


def lm_config(size: str, smoke: bool) -> ml_collections.ConfigDict:
    d_model, n_layers, n_heads, n_kv_heads, head_dim, mlp_dim = SIZES["smoke" if smoke else size]
    config = ml_collections.ConfigDict()
    config.model = dict(
        vocab_size=2048 if smoke else 32768, d_model=d_model, n_layers=n_layers, n_heads=n_heads,
        n_kv_heads=n_kv_heads, head_dim=head_dim, mlp_dim=mlp_dim, max_seq_len=128 if smoke else 2048,
        rope_theta=10000.0, norm_eps=1e-5, tie_embeddings=True, attention_impl="xla")
    config.corpus = corpus_configs.get_config("smoke" if smoke else "default")
    config.data = dict(
        corpus_dir="data/corpus_smoke" if smoke else "data/corpus",
        seq_len=64 if smoke else 1024, batch_size=16 if smoke else 64)
    steps = 40 if smoke else 20000
    config.train = train.train_config(
        num_steps=steps, log_every=10 if smoke else 100, eval_every=20 if smoke else 1000,
        checkpoint_every=20 if smoke else 2000, compute_dtype="bfloat16")
    config.optim = train.optim_config(
        learning_rate=3e-3 if smoke else 3e-4, warmup_steps=5 if smoke else 500, total_steps=steps,
        weight_decay=0.1)
    # Positions per chunk of the fused output-projection + cross-entropy (core.lm.make_next_token_loss);
    # 0 = whole-sequence logits (f32 [B, T, V] held for the backward). chunk_gradient: "recompute" (the
    # backward recomputes each chunk's logits) or "forward" (gradients formed in the forward pass).
    config.loss = dict(chunk_length=0, chunk_gradient="forward")
    config.mesh = sharding.mesh_config(data=-1, fsdp=1, tensor=1)
    config.eval = dict(num_batches=2 if smoke else 20)
    config.sample = dict(prompt="def ", max_new_tokens=24 if smoke else 64, temperature=0.8, seed=0)
    return config
