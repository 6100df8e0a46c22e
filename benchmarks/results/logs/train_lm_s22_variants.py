"""Session 22 (P8): target-config train-step time under variants, one variant per process (XLA flags are read at
start). `python benchmarks/results/logs/train_lm_s22_variants.py VARIANT [BATCH [ATTENTION]]` prints one JSON line.
  base    the committed transformer
  fused   q|k|v and gate|up each as ONE matmul in the training forward (weights concatenated per step, so the
          parameters and checkpoints are unchanged): one GEMM instead of three / two, and no adds of the
          input gradients in the backward
Run with XLA_FLAGS set outside for the flag variants."""
import json
import os
import sys

import jax
import jax.numpy as jnp

from benchmarks import common, train_lm
from core.nn import transformer as tfm


def fused_attention_call(self, x, positions):
    cfg = self.config
    h, kv = cfg.n_heads, cfg.n_kv_heads
    w = jnp.concatenate([self.wq[...], self.wk[...], self.wv[...]], axis=1)            # [d, h + 2kv, hd]
    qkv = jnp.einsum("btd,dnh->btnh", x, w)
    q, k, v = qkv[:, :, :h], qkv[:, :, h:h + kv], qkv[:, :, h + kv:]
    q, k = tfm.rope(q, positions, cfg.rope_theta), tfm.rope(k, positions, cfg.rope_theta)
    impl = None if cfg.attention_impl == "xla" or q.dtype == jnp.float32 else cfg.attention_impl
    out = jax.nn.dot_product_attention(q, k, v, is_causal=True, implementation=impl)
    return jnp.einsum("btnh,nhd->btd", out, self.wo[...])


def fused_mlp_call(self, x):
    m = self.w_gate.shape[1]
    gate_up = x @ jnp.concatenate([self.w_gate[...], self.w_up[...]], axis=1)
    return (jax.nn.silu(gate_up[..., :m]) * gate_up[..., m:]) @ self.w_down[...]


def main():
    variant = sys.argv[1]
    batch = int(sys.argv[2]) if len(sys.argv) > 2 else 32
    attention = sys.argv[3] if len(sys.argv) > 3 else "cudnn"     # benchmarks.train_lm's default
    if variant.startswith("fused"):
        tfm.Attention.__call__ = fused_attention_call
        tfm.MLP.__call__ = fused_mlp_call
    from core import config as config_lib
    device = common.measure_device()
    target = config_lib.apply_overrides(common.load_config("lm/target", ""), {"data.batch_size": batch,
                                                                                   "model.attention_impl": attention})
    r = train_lm.measure_throughput(target, 10, device)
    print("RESULT", json.dumps(dict(variant=variant, batch=batch, attention=attention, xla_flags=os.environ.get("XLA_FLAGS", ""),
                                    step_s=r["step_s"], compile_s=r["compile_s"], tokens_per_s=r["tokens_per_s"],
                                    mfu=r["mfu"])), flush=True)


if __name__ == "__main__":
    main()
