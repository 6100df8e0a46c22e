"""The Hugging Face transformers peer of benchmarks/decode.py, on weights exported with core.interop.hf_llama.

Imports only numpy, torch and transformers (no JAX), so the peer can be checked on its own:

    python -m benchmarks.hf_peer TARGET_DIR DRAFT_DIR     # prints the figures for random prompts (any device)

Settings, each timed after full-length warm-up calls of the same shapes (so torch.compile and CUDA-graph
capture are never inside a timed call):
  * `compiled`: greedy `generate(..., cache_implementation="static")`, which transformers compiles with
    torch.compile by default (its fastest built-in setting); batch 1 and 8.
  * `assisted`: `generate(..., assistant_model=draft)` (transformers' speculative decoding with our
    exported draft), its default dynamic cache; batch 1 (transformers rejects batched assisted generation;
    other batches are attempted and the error is recorded).
  * `uncompiled` (a labelled extra, not the peer): the static cache with `disable_compile=True`.
"""

from __future__ import annotations

import sys
import time

import numpy as np


def available() -> str | None:
    """None when torch and transformers import, else the reason (one line) the peer is skipped."""
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as e:
        return f"HF peer skipped: {e.name} is not installed (pip install torch transformers to measure it)"
    return None


def load(path: str, device: str):
    import torch
    import transformers

    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    return transformers.LlamaForCausalLM.from_pretrained(path, dtype=dtype).to(device).eval()


def _synchronize(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def time_generate(model, prompts: np.ndarray, batch: int, max_new_tokens: int, device: str, warmup: int = 2,
                  **kwargs) -> dict:
    """tokens/s of greedy generate over `prompts` [n, L] in batches of `batch` (equal-length prompts, no
    padding), after `warmup` untimed full-length calls on the first batch; returns the outputs too."""
    import torch

    sets = [prompts[i:i + batch] for i in range(0, len(prompts) - batch + 1, batch)]
    if not sets:
        raise ValueError(f"Need at least {batch} prompts for batch {batch}, got {len(prompts)}.")
    run = lambda ids: model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                                     min_new_tokens=max_new_tokens, do_sample=False, pad_token_id=0, **kwargs)
    with torch.inference_mode():
        start = time.perf_counter()
        for _ in range(warmup):
            run(torch.tensor(sets[0], device=device))
        _synchronize(device)
        warmup_s = time.perf_counter() - start
        outputs, wall, tokens = [], 0.0, 0
        for prompt in sets:
            ids = torch.tensor(prompt, device=device)
            _synchronize(device)
            start = time.perf_counter()
            out = run(ids)
            _synchronize(device)
            wall += time.perf_counter() - start
            outputs.append(out[:, ids.shape[1]:].cpu().numpy())
            tokens += outputs[-1].size
    return dict(tokens_per_s=tokens / wall, batch=batch, calls=len(sets), warmup_s=warmup_s,
                outputs=np.concatenate(outputs))


def measure(target_dir: str, draft_dir: str, prompts: np.ndarray, max_new_tokens: int,
            batches=(1, 8), ours_greedy: np.ndarray | None = None, uncompiled: bool = True,
            device: str | None = None, slow_prompts: int = 4, on_update=None) -> dict:
    """Figures of every setting (module docstring) by batch; `ours_greedy` [n, >= max_new_tokens], our greedy
    AR tokens for the same prompts, gives the fraction of sequences identical to transformers' greedy. The
    slow settings (assisted, uncompiled) at batch 1 use only the first `slow_prompts` prompts. `on_update(result)`
    is called after every setting (so a run cut short keeps what it measured); batch 1 goes first."""
    import torch
    import transformers

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    target, draft = load(target_dir, device), load(draft_dir, device)
    result = dict(transformers=transformers.__version__, torch=torch.__version__, device=device,
                  dtype=str(next(target.parameters()).dtype), max_new_tokens=max_new_tokens, compiled={},
                  assisted={}, extra_uncompiled={})

    def record(section: str, batch: int, fn) -> None:
        try:
            row = fn()
        except Exception as e:  # a setting transformers refuses (e.g. batched assisted) is a finding, not a crash
            result[section][str(batch)] = dict(error=f"{type(e).__name__}: {str(e).splitlines()[0][:300]}")
            return
        outputs = row.pop("outputs")
        if ours_greedy is not None:
            ours = ours_greedy[:len(outputs), :max_new_tokens]
            row["identical_to_ours"] = float((outputs == ours).all(-1).mean())
        result[section][str(batch)] = row
        if on_update is not None:
            on_update(result)
        print(f"hf {section:16s} b={batch}: {row['tokens_per_s']:9.1f} tok/s (warm-up {row['warmup_s']:.0f}s)",
              flush=True)

    few = lambda batch: prompts[:max(batch, slow_prompts)]
    for batch in batches:
        record("compiled", batch, lambda: time_generate(target, prompts, batch, max_new_tokens, device,
                                                        cache_implementation="static"))
        # Whether transformers actually compiled (it compiles on CUDA only unless told otherwise).
        result["compiled"].setdefault(str(batch), {})["torch_compile_active"] = hasattr(target, "_compiled_call")
        record("assisted", batch, lambda: time_generate(target, few(batch), batch, max_new_tokens, device, warmup=1,
                                                        assistant_model=draft))
    if uncompiled:
        record("extra_uncompiled", 1, lambda: time_generate(target, few(1), 1, max_new_tokens, device, warmup=1,
                                                           cache_implementation="static", disable_compile=True))
    return result


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        raise SystemExit("usage: python -m benchmarks.hf_peer TARGET_DIR DRAFT_DIR (Llama-format exports)")
    reason = available()
    if reason:
        raise SystemExit(reason)
    import json

    vocab = json.load(open(f"{argv[0]}/config.json"))["vocab_size"]
    prompts = np.random.default_rng(0).integers(1, vocab, (4, 8))
    print(json.dumps(measure(argv[0], argv[1], prompts, 8, batches=(1, 2)), indent=1))


if __name__ == "__main__":
    main()
