"""HF Llama interop: exact round trip, clear errors, and logits equal to transformers' LlamaForCausalLM."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from core.interop import hf_llama
from core.nn import transformer as tfm

CONFIG = tfm.TransformerConfig(vocab_size=96, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=8,
                               mlp_dim=64, max_seq_len=64, tie_embeddings=False)


@pytest.mark.parametrize("tied", [False, True])
def test_export_import_round_trip_is_exact(tmp_path, tied):
    config = tfm.TransformerConfig(**{**CONFIG.__dict__, "tie_embeddings": tied})
    model = tfm.Transformer(config, rngs=nnx.Rngs(0))
    hf_llama.export(model, str(tmp_path / "hf"))
    assert sorted(os.listdir(tmp_path)) == ["hf"]          # no temp dir left behind
    back = hf_llama.load(str(tmp_path / "hf"))
    for a, b in zip(jax.tree.leaves(nnx.state(model, nnx.Param)), jax.tree.leaves(nnx.state(back, nnx.Param))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    tokens = jnp.arange(10)[None] % config.vocab_size
    np.testing.assert_array_equal(model(tokens), back(tokens))


def test_wrong_shapes_and_missing_files_are_clear_errors(tmp_path):
    hf_llama.export(tfm.Transformer(CONFIG, rngs=nnx.Rngs(0)), str(tmp_path / "hf"))
    config_path = tmp_path / "hf" / "config.json"
    hf = json.loads(config_path.read_text())
    hf["intermediate_size"] = 80
    config_path.write_text(json.dumps(hf))
    with pytest.raises(ValueError, match="do not match"):
        hf_llama.load(str(tmp_path / "hf"))
    with pytest.raises(FileNotFoundError, match="config.json and model.safetensors"):
        hf_llama.load(str(tmp_path / "nothing"))


def test_logits_match_transformers_llama(tmp_path):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    model = tfm.Transformer(CONFIG, rngs=nnx.Rngs(0))
    hf_llama.export(model, str(tmp_path / "hf"))
    hf_model = transformers.LlamaForCausalLM.from_pretrained(str(tmp_path / "hf"), torch_dtype=torch.float32)
    tokens = np.random.default_rng(0).integers(0, CONFIG.vocab_size, (2, 24))
    with torch.no_grad():
        want = hf_model(torch.tensor(tokens)).logits.numpy()
    got = np.asarray(model(jnp.asarray(tokens)))
    print("max |logit difference| vs transformers:", np.abs(got - want).max())
    np.testing.assert_allclose(got, want, atol=2e-4, rtol=2e-4)


def test_hf_peer_times_compiled_assisted_and_uncompiled(tmp_path):
    """benchmarks.hf_peer on tiny exports: every setting timed, batched assisted generation recorded as an
    error (transformers refuses it), identity with our greedy tokens computed. Needs torch + transformers."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from benchmarks import hf_peer

    hf_llama.export(tfm.Transformer(CONFIG, rngs=nnx.Rngs(0)), str(tmp_path / "t"))
    hf_llama.export(tfm.Transformer(tfm.TransformerConfig(**{**CONFIG.__dict__, "n_layers": 1}),
                                    rngs=nnx.Rngs(1)), str(tmp_path / "d"))
    prompts = np.random.default_rng(0).integers(1, CONFIG.vocab_size, (2, 6))
    result = hf_peer.measure(str(tmp_path / "t"), str(tmp_path / "d"), prompts, 4, batches=(1, 2),
                             ours_greedy=np.zeros((2, 4), np.int64), device="cpu")
    assert result["compiled"]["1"]["tokens_per_s"] > 0 and result["compiled"]["2"]["tokens_per_s"] > 0
    assert result["assisted"]["1"]["tokens_per_s"] > 0 and "error" in result["assisted"]["2"]
    assert 0.0 <= result["compiled"]["1"]["identical_to_ours"] <= 1.0
    assert result["extra_uncompiled"]["1"]["tokens_per_s"] > 0
