"""Fused decode GEMV (kernels_pallas.fused_gemv): both Pallas kernels (column slabs, and split over K) in
interpret mode equal the jnp reference (norm + GEMV, + SwiGLU, + residual, plain), and decode_step with
decode_kernel="pallas" / "pallas_splitk" / "xla_two_rows" equals the XLA path."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from core.nn import transformer as tfm
from core.nn.decode import decode_step, inference_params
from kernels_pallas.fused_gemv import kernel, reference, splitk


def _operands(dtype, batch, d=64, n=96, m=64):
    ks = jax.random.split(jax.random.key(0), 5)
    return dict(x=jax.random.normal(ks[0], (batch, d), dtype),
                scale=(1 + 0.1 * jax.random.normal(ks[1], (d,))).astype(dtype),
                w=(jax.random.normal(ks[2], (d, n)) / 8).astype(dtype),
                w_gate_up=(jax.random.normal(ks[3], (d, 2 * m)) / 8).astype(dtype),
                residual=jax.random.normal(ks[4], (batch, n), dtype))


@pytest.mark.parametrize("dtype,batch,tol", [(jnp.float32, 3, 1e-5), (jnp.bfloat16, 1, 0.0)])
def test_kernel_matches_reference(dtype, batch, tol):
    o = _operands(dtype, batch)
    cases = {"norm": ((o["x"], o["w"], o["scale"], None), {}),
             "norm_swiglu": ((o["x"], o["w_gate_up"], o["scale"], None), dict(swiglu=True)),
             "residual": ((o["x"], o["w"], None, o["residual"]), {})}
    if dtype == jnp.float32:
        cases["plain"] = ((o["x"], o["w"], None, None), {})
    for name, (args, kw) in cases.items():
        got = kernel.fused_gemv(*args, **kw, block_k=32, interpret=True)
        want = reference.fused_gemv(*args, **kw)
        assert got.shape == want.shape and got.dtype == want.dtype, name
        # bf16: the same roundings in the same places, and d = 64 sums exactly in f32 here -> equal bits.
        np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(want, np.float32), atol=tol, rtol=tol,
                                   err_msg=name)


def test_bad_shapes_are_one_clear_error():
    o = _operands(jnp.float32, 1)
    with pytest.raises(ValueError, match="block_k"):
        kernel.fused_gemv(o["x"], o["w"][:, :90], block_n=32, interpret=True)
    with pytest.raises(ValueError, match="decode_kernel"):
        tfm.TransformerConfig(vocab_size=8, d_model=8, n_layers=1, n_heads=1, n_kv_heads=1, head_dim=8, mlp_dim=8,
                              decode_kernel="cuda")


@pytest.mark.parametrize("dtype,batch,tol", [(jnp.float32, 1, 1e-5), (jnp.float32, 3, 1e-5), (jnp.bfloat16, 1, 0.0)])
@pytest.mark.parametrize("split", [1, 4])
def test_splitk_kernel_matches_reference(dtype, batch, tol, split):
    """Batch 1 takes the broadcast-multiply path, batch 3 the padded tensor-core dot; each split writes its own
    partial sums and the epilogue adds them, so every split count must give the reference."""
    o = _operands(dtype, batch)
    cases = {"norm": ((o["x"], o["w"], o["scale"], None), {}),
             "norm_swiglu": ((o["x"], o["w_gate_up"], o["scale"], None), dict(swiglu=True)),
             "norm_swiglu_separate_up": ((o["x"], o["w_gate_up"][:, :64], o["scale"], None),
                                         dict(swiglu=True, up=o["w_gate_up"][:, 64:])),
             "residual": ((o["x"], o["w"], None, o["residual"]), {}),
             "plain": ((o["x"], o["w"], None, None), {})}
    for name, (args, kw) in cases.items():
        got = splitk.fused_gemv_splitk(*args, **kw, block_n=32, block_k=16, split=split, interpret=True)
        want = reference.fused_gemv(*args, **kw)
        assert got.shape == want.shape and got.dtype == want.dtype, name
        # bf16 batch 1: d = 64 products of bf16 values sum exactly in f32 whatever the order -> equal bits.
        np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(want, np.float32), atol=tol, rtol=tol,
                                   err_msg=f"{name} split={split}")


def test_splitk_default_split_fills_the_gpu_and_bad_shapes_are_one_clear_error():
    assert splitk.default_split(2048, 4096, 128, 64) == 8         # 32 column blocks x 8 = 256 programs
    assert splitk.default_split(5632, 2048, 128, 64) == 16        # the 1.2B down projection: K slabs of 352
    assert splitk.default_split(64, 32, 32, 64) == 1              # a K too short to split
    o = _operands(jnp.float32, 1)
    with pytest.raises(ValueError, match="split"):
        splitk.fused_gemv_splitk(o["x"], o["w"], split=3, interpret=True)
    with pytest.raises(ValueError, match="up matrix"):
        splitk.fused_gemv_splitk(o["x"], o["w"], up=o["w"], interpret=True)


@pytest.mark.parametrize("decode_kernel,batch", [("pallas", 2), ("pallas_splitk", 2), ("xla_two_rows", 1),
                                                  ("xla_two_rows", 2)])
def test_decode_step_pallas_equals_xla(decode_kernel, batch):
    config = tfm.TransformerConfig(vocab_size=64, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=16,
                                   mlp_dim=128, max_seq_len=64, tie_embeddings=False, cache_attention="reference")
    params = inference_params(tfm.Transformer(config, rngs=nnx.Rngs(0)), jnp.float32)
    fused = dataclasses.replace(config, decode_kernel=decode_kernel)

    def run(cfg):
        @jax.jit
        def steps(params, cache, token):
            def body(carry, _):
                cache, token = carry
                logits, cache = decode_step(params, cfg, token, cache)
                return (cache, jnp.argmax(logits, -1).astype(jnp.int32)), logits
            return jax.lax.scan(body, (cache, token), None, length=3)[1]
        cache = tfm.rollback(tfm.init_cache(cfg, batch, 64, jnp.float32), jnp.array([5, 9][:batch], jnp.int32))
        return steps(params, cache, jnp.array([3, 7][:batch], jnp.int32))

    with jax.default_matmul_precision("highest"):
        want, got = run(config), run(fused)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-4, rtol=1e-4)
    np.testing.assert_array_equal(np.argmax(got, -1), np.argmax(want, -1))
