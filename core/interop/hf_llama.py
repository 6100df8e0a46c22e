"""HF interop: export core.nn.transformer models as Llama-format `model.safetensors` + `config.json`, and
import them back. Our RoPE uses HF's rotate_half layout, so q/k weights need no permutation. Written to a
temp dir and renamed; imports check every tensor's shape and fail with one clear error."""

from __future__ import annotations

import json
import os
import shutil
from typing import Callable

import numpy as np

from core.nn import transformer as tfm

# (HF suffix, our attribute path in a Block, to-HF transform given the config, from-HF transform)
_LAYER_TENSORS: tuple[tuple[str, str, Callable, Callable], ...] = (
    ("self_attn.q_proj.weight", "attention.wq", lambda w, c: w.reshape(c.d_model, -1).T,
     lambda w, c: w.T.reshape(c.d_model, c.n_heads, c.head_dim)),
    ("self_attn.k_proj.weight", "attention.wk", lambda w, c: w.reshape(c.d_model, -1).T,
     lambda w, c: w.T.reshape(c.d_model, c.n_kv_heads, c.head_dim)),
    ("self_attn.v_proj.weight", "attention.wv", lambda w, c: w.reshape(c.d_model, -1).T,
     lambda w, c: w.T.reshape(c.d_model, c.n_kv_heads, c.head_dim)),
    ("self_attn.o_proj.weight", "attention.wo", lambda w, c: w.reshape(-1, c.d_model).T,
     lambda w, c: w.T.reshape(c.n_heads, c.head_dim, c.d_model)),
    ("mlp.gate_proj.weight", "mlp.w_gate", lambda w, c: w.T, lambda w, c: w.T),
    ("mlp.up_proj.weight", "mlp.w_up", lambda w, c: w.T, lambda w, c: w.T),
    ("mlp.down_proj.weight", "mlp.w_down", lambda w, c: w.T, lambda w, c: w.T),
    ("input_layernorm.weight", "attention_norm.scale", lambda w, c: w, lambda w, c: w),
    ("post_attention_layernorm.weight", "mlp_norm.scale", lambda w, c: w, lambda w, c: w),
)


def _get(module, path: str):
    for name in path.split("."):
        module = getattr(module, name)
    return module


def hf_config(cfg: tfm.TransformerConfig) -> dict:
    return dict(architectures=["LlamaForCausalLM"], model_type="llama", vocab_size=cfg.vocab_size,
                hidden_size=cfg.d_model, intermediate_size=cfg.mlp_dim, num_hidden_layers=cfg.n_layers,
                num_attention_heads=cfg.n_heads, num_key_value_heads=cfg.n_kv_heads, head_dim=cfg.head_dim,
                max_position_embeddings=cfg.max_seq_len, rms_norm_eps=cfg.norm_eps, rope_theta=cfg.rope_theta,
                tie_word_embeddings=cfg.tie_embeddings, hidden_act="silu", torch_dtype="float32",
                attention_bias=False, mlp_bias=False)


def to_tensors(model: tfm.Transformer) -> dict[str, np.ndarray]:
    cfg = model.config
    value = lambda v: np.asarray(v[...], np.float32)
    tensors = {"model.embed_tokens.weight": value(model.embed), "model.norm.weight": value(model.final_norm.scale)}
    if not cfg.tie_embeddings:
        tensors["lm_head.weight"] = value(model.lm_head).T
    for i, layer in enumerate(model.layers):
        for hf_name, path, to_hf, _ in _LAYER_TENSORS:
            tensors[f"model.layers.{i}.{hf_name}"] = to_hf(value(_get(layer, path)), cfg)
    return {k: np.ascontiguousarray(v) for k, v in tensors.items()}


def export(model: tfm.Transformer, out_dir: str) -> str:
    """Writes out_dir/{model.safetensors, config.json} atomically; returns out_dir."""
    import safetensors.numpy

    tmp = f"{out_dir}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    try:
        safetensors.numpy.save_file(to_tensors(model), os.path.join(tmp, "model.safetensors"))
        with open(os.path.join(tmp, "config.json"), "w", encoding="utf-8") as f:
            json.dump(hf_config(model.config), f, indent=2)
        shutil.rmtree(out_dir, ignore_errors=True)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def config_from_hf(hf: dict) -> tfm.TransformerConfig:
    return tfm.TransformerConfig(
        vocab_size=hf["vocab_size"], d_model=hf["hidden_size"], n_layers=hf["num_hidden_layers"],
        n_heads=hf["num_attention_heads"], n_kv_heads=hf.get("num_key_value_heads", hf["num_attention_heads"]),
        head_dim=hf.get("head_dim") or hf["hidden_size"] // hf["num_attention_heads"], mlp_dim=hf["intermediate_size"],
        max_seq_len=hf.get("max_position_embeddings", 2048), rope_theta=hf.get("rope_theta", 10000.0),
        norm_eps=hf.get("rms_norm_eps", 1e-5), tie_embeddings=hf.get("tie_word_embeddings", False))


def load(path: str) -> tfm.Transformer:
    """A Transformer with the weights of a Llama-format directory (config.json + model.safetensors)."""
    import safetensors.numpy
    from flax import nnx

    config_path, weights_path = os.path.join(path, "config.json"), os.path.join(path, "model.safetensors")
    if not (os.path.exists(config_path) and os.path.exists(weights_path)):
        raise FileNotFoundError(f"{path} needs config.json and model.safetensors (a Llama-format export).")
    with open(config_path, encoding="utf-8") as f:
        cfg = config_from_hf(json.load(f))
    tensors = safetensors.numpy.load_file(weights_path)
    model = tfm.Transformer(cfg, rngs=nnx.Rngs(0))
    expected = to_tensors(model)
    missing = sorted(set(expected) - set(tensors))
    if missing:
        raise ValueError(f"{weights_path} lacks {len(missing)} tensors, e.g. {missing[0]}; it is not a Llama "
                         "checkpoint of this config.")
    for name, want in expected.items():
        if tensors[name].shape != want.shape:
            raise ValueError(f"{weights_path}: {name} has shape {tensors[name].shape}, but config.json implies "
                             f"{want.shape}; the weights and config do not match.")
    model.embed[...] = tensors["model.embed_tokens.weight"]
    model.final_norm.scale[...] = tensors["model.norm.weight"]
    if not cfg.tie_embeddings:
        model.lm_head[...] = tensors["lm_head.weight"].T
    for i, layer in enumerate(model.layers):
        for hf_name, path_, _, from_hf in _LAYER_TENSORS:
            _get(layer, path_)[...] = from_hf(tensors[f"model.layers.{i}.{hf_name}"], cfg)
    return model
