"""Fused AdaLN-zero block (kernels_pallas.adaln_block): the jnp reference equals core.nn.adaln.AdaLNZeroBlock's
inference forward, and the Pallas kernel in interpret mode equals the reference (both layouts, causal or not, a
width and a token count that need padding, a batch that is not a multiple of the tile)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from core.nn.adaln import AdaLNZeroBlock
from kernels_pallas.adaln_block import kernel, ops, reference


def _block(layout, width=48, heads=2, head_dim=16, mlp=128, seed=0):
    block = AdaLNZeroBlock(width, heads, head_dim, mlp, 0.0, nnx.Rngs(seed), layout=layout)
    # non-trivial norms and biases (the module initialises them to 1 and 0, which would hide a swapped pair)
    leaves, treedef = jax.tree.flatten(nnx.state(block))
    keys = jax.random.split(jax.random.key(seed + 1), len(leaves))
    noisy = [leaf + 0.1 * jax.random.normal(k, leaf.shape, leaf.dtype) for k, leaf in zip(keys, leaves)]
    nnx.update(block, jax.tree.unflatten(treedef, noisy))
    return block


def _inputs(batch, tokens, width, dtype=jnp.float32):
    kx, km = jax.random.split(jax.random.key(7))
    return (jax.random.normal(kx, (batch, tokens, width), dtype),
            0.5 * jax.random.normal(km, (batch, tokens, 6 * width), dtype))


@pytest.mark.parametrize("layout", ["dit", "official"])
@pytest.mark.parametrize("causal", [True, False])
def test_reference_equals_the_module_and_the_kernel_equals_the_reference(layout, causal):
    block = _block(layout)
    x, modulation = _inputs(batch=5, tokens=3, width=48)
    params = reference.block_params(block)
    module = block(x, None, causal=causal, modulation=modulation)
    ref = reference.adaln_block(x, modulation, params, heads=2, head_dim=16, causal=causal, layout=layout)
    np.testing.assert_allclose(ref, module, rtol=1e-5, atol=1e-5)
    got = kernel.adaln_block(x, modulation, params, heads=2, head_dim=16, causal=causal, layout=layout,
                             samples_per_tile=4, interpret=True)
    assert got.shape == x.shape and got.dtype == x.dtype
    np.testing.assert_allclose(got, ref, rtol=2e-5, atol=2e-5)


def test_a_stack_of_blocks_with_prepared_weights_equals_the_blocks_one_by_one():
    blocks = [_block("dit", seed=s) for s in (0, 1)]
    params = [reference.block_params(b) for b in blocks]
    x, modulation = _inputs(batch=21, tokens=3, width=48)
    modulations = [modulation, 0.7 * modulation[..., ::-1]]
    want = ops.adaln_blocks(x, modulations, params, heads=2, head_dim=16, backend="reference")
    prepared = [kernel.prepare_params(p) for p in params]
    assert prepared[0]["qkv_kernel"].shape == (64, 96) and kernel.prepare_params(prepared[0]) is prepared[0]
    got = kernel.adaln_blocks(x, modulations, prepared, heads=2, head_dim=16, samples_per_tile=4, interpret=True)
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5)
    assert float(jnp.max(jnp.abs(want - x))) > 0.1          # the blocks did something
    with pytest.raises(ValueError, match="one modulation per block"):
        kernel.adaln_blocks(x, modulations[:1], params, heads=2, head_dim=16, interpret=True)


def test_bf16_kernel_is_close_to_the_f32_reference_and_bad_shapes_are_refused():
    block = _block("dit", width=64, heads=4, head_dim=16, mlp=128)
    x, modulation = _inputs(batch=9, tokens=3, width=64)
    params = reference.block_params(block)
    want = reference.adaln_block(x, modulation, params, heads=4, head_dim=16)
    bf16 = lambda t: jax.tree.map(lambda a: a.astype(jnp.bfloat16), t)
    got = ops.adaln_block(bf16(x), bf16(modulation), bf16(params), heads=4, head_dim=16)
    assert got.dtype == jnp.bfloat16
    err = float(jnp.max(jnp.abs(got.astype(jnp.float32) - want)))
    assert err < 0.1 * float(jnp.max(jnp.abs(want))), err
    with pytest.raises(ValueError, match="modulation"):
        ops.adaln_block(x, modulation[..., :-1], params, heads=4, head_dim=16)
    with pytest.raises(ValueError, match="backend"):
        ops.adaln_block(x, modulation, params, heads=4, head_dim=16, backend="cuda")


def test_lewm_rollout_with_the_fused_predictor_equals_the_module_path():
    """LeWMConfig(predictor_kernel="pallas") changes only how inference runs the predictor blocks."""
    from papers.lewm.model import LeWM, LeWMConfig, prepare_fused_predictor, with_predictor_kernel
    config = LeWMConfig.smoke()
    model = LeWM(config, rngs=nnx.Rngs(0))
    # the AdaLN-zero modulations start at zero (every block the identity): perturb every predictor weight
    state = nnx.state(model.predictor)
    leaves, treedef = jax.tree.flatten(state)
    keys = jax.random.split(jax.random.key(3), len(leaves))
    nnx.update(model.predictor, jax.tree.unflatten(treedef, [l + 0.05 * jax.random.normal(k, l.shape, l.dtype)
                                                             for k, l in zip(keys, leaves)]))
    model.eval()
    fused = with_predictor_kernel(model, "pallas")
    assert fused.config.predictor_kernel == "pallas" and fused.pred_proj.norm.use_running_average
    ks = jax.random.split(jax.random.key(4), 3)
    z_hist = jax.random.normal(ks[0], (5, config.history, config.embed_dim))
    past = jax.random.normal(ks[1], (5, config.history - 1, config.action_block_dim))
    plan = jax.random.normal(ks[2], (5, 3, config.action_block_dim))
    want, got = model.rollout(z_hist, past, plan), fused.rollout(z_hist, past, plan)
    assert float(jnp.max(jnp.abs(want - got))) < 1e-4 * max(1.0, float(jnp.max(jnp.abs(want))))
    # the planner's path: weights padded once (prepare_fused_predictor), inside jit
    graphdef, state = nnx.split(fused)
    prepared = jax.jit(lambda s: prepare_fused_predictor(nnx.merge(graphdef, s)).rollout(z_hist, past, plan))(state)
    np.testing.assert_allclose(prepared, got, rtol=1e-6, atol=1e-6)
    assert prepare_fused_predictor(model) is model and not hasattr(model, "fused_predictor_weights")
    assert float(jnp.max(jnp.abs(want - model.rollout(z_hist * 0, past, plan)))) > 1e-3   # not a constant map
    with pytest.raises(ValueError, match="predictor_kernel"):
        LeWMConfig.smoke(predictor_kernel="triton")


def test_kernel_lowers_to_triton_for_an_h200_without_a_gpu(monkeypatch):
    """The Triton lowering (what rejects unsupported primitives, e.g. erf, or block shapes) runs on CPU when
    told the GPU's compute capability; PTX compilation still needs the device. Skipped if jax moves the hook."""
    import functools
    import types
    try:
        from jax._src.pallas.triton import pallas_call_registration as registration
        registration.gpu_info_lib.get_gpu_info
    except (ImportError, AttributeError):
        pytest.skip("jax's Pallas Triton GPU-info hook moved")
    monkeypatch.setattr(registration.gpu_info_lib, "get_gpu_info",
                        lambda *a, **k: types.SimpleNamespace(compute_capability=90))
    block = AdaLNZeroBlock(192, 16, 64, 2048, 0.0, nnx.Rngs(0))      # LeWM's predictor block
    params = jax.tree.map(lambda a: a.astype(jnp.bfloat16), reference.block_params(block))
    x, modulation = (jnp.zeros((300, 3, w), jnp.bfloat16) for w in (192, 6 * 192))
    fused = functools.partial(kernel.adaln_block, heads=16, head_dim=64, interpret=False)
    lowered = jax.jit(fused).trace(x, modulation, params).lower(lowering_platforms=("cuda",))
    assert "xla.gpu.triton" in lowered.as_text()
