"""Item 6 of P8: the ensemble-distilled student as an SSD draft across vocabularies (papers/infinite_compute/
draft.py and benchmarks/infinite_compute.py's draft stage): re-tokenisation round-trips text and is
deterministic, the real:synthetic batches are deterministic and mixed as asked, and a student trained through
core.train on the re-tokenised mixture drafts for a target of the other vocabulary with finite rates in [0, 1].
The full stage (pair training included) runs in `python -m benchmarks.infinite_compute --smoke --stages draft`."""

import glob
import os

import numpy as np
import pytest
from flax import nnx

from core import config as config_lib
from core import lm
from core.data import tokenizer as tokenizer_lib
from core.nn import transformer as tfm
from papers.infinite_compute import draft

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _texts():
    """Python source of this repository's papers (a few hundred KB at most): text for two small BPEs."""
    files = sorted(glob.glob(os.path.join(ROOT, "papers", "*", "*.py")))[:30]
    texts = [open(f, encoding="utf-8").read() for f in files]
    return [t for t in texts if t]      # empty documents are dropped by design (no EOS runs)


@pytest.fixture(scope="module")
def tokenizers():
    texts = _texts()
    # Two vocabularies trained on different halves, as the 4k sweep and the pair's corpus differ.
    return tokenizer_lib.train_tokenizer(texts[::2], 300), tokenizer_lib.train_tokenizer(texts[1::2], 700)


def _stream(tokenizer, texts):
    return draft.encode_documents(texts, tokenizer)


def test_retokenisation_round_trips_text_and_is_deterministic(tokenizers):
    source, target = tokenizers
    texts = _texts()[:6] + ["unicode: é ü 日本 — ok\n", "x = 1\n"]
    stream = _stream(source, texts)
    assert draft.documents_as_text(stream, source) == texts            # byte-level BPE: text survives
    out = draft.retokenize(stream, source, target)
    assert out.max() < target.get_vocab_size()
    assert draft.documents_as_text(out, target) == texts               # the same documents, the other vocab
    np.testing.assert_array_equal(out, draft.retokenize(stream, source, target))
    assert (out == tokenizer_lib.eos_id(target)).sum() == len(texts)   # one EOS per document
    # Windows as the sweep samples them ([EOS] + tokens, possibly cutting a multibyte character) still map
    # to one well-defined text, the same each time.
    windows = np.concatenate([[tokenizer_lib.eos_id(source)], stream[:50]])[None]
    again = draft.retokenize(draft.retokenize(windows, source, target), target, source)
    assert draft.documents_as_text(again, source) == draft.documents_as_text(windows, source)


def test_mixed_batches_are_deterministic_and_mix_as_asked():
    real = np.arange(10 * 5).reshape(10, 5).astype(np.int32)          # row i starts with 5 i
    synthetic = 1000 + np.arange(7 * 5).reshape(7, 5).astype(np.int32)
    batches = draft.make_mixed_batches(real, synthetic, 8, 0.75, seed=3)
    first = batches(4)["tokens"]
    np.testing.assert_array_equal(first, draft.make_mixed_batches(real, synthetic, 8, 0.75, seed=3)(4)["tokens"])
    assert (first[:2] < 1000).all() and (first[2:] >= 1000).all()       # 2 real rows, 6 synthetic
    # Five steps of 2 real rows = one pass over the 10 real windows, each once.
    seen = np.concatenate([batches(s)["tokens"][:2, 0] // 5 for s in range(5)])
    assert sorted(seen.tolist()) == list(range(10))
    assert not np.array_equal(batches(0)["tokens"], batches(1)["tokens"])
    with pytest.raises(ValueError):
        draft.make_mixed_batches(real, synthetic[:0], 8, 0.5, 0)


def test_student_drafts_for_a_target_of_the_other_vocabulary(tokenizers, tmp_path):
    from benchmarks import infinite_compute as bench

    source, target_tok = tokenizers
    texts = _texts()
    real = _stream(source, texts[:8])
    eos = tokenizer_lib.eos_id(source)
    synthetic = np.concatenate([np.full((6, 1), eos), real[:6 * 24].reshape(6, 24)], 1)   # [EOS] + tokens
    real_w, synth_w, counts = draft.mixture_windows(real, synthetic, source, target_tok, 16)
    assert counts["target_vocab"] == target_tok.get_vocab_size() and len(real_w) and len(synth_w)
    ssd = config_lib.load_config(os.path.join(ROOT, "configs/ssd/decode.py") + ":smoke")
    small = dict(d_model=32, n_heads=2, n_kv_heads=1, head_dim=16, mlp_dim=64, max_seq_len=64)
    ssd.model.update(small, n_layers=2)
    ssd.data.update(batch_size=8, seq_len=16)       # 8 fake devices (conftest)
    ssd.train.update(compute_dtype="float32", log_every=1)
    config = draft.student_config(ssd, dict(ssd.model.to_dict(), n_layers=1), dict(num_steps=2, warmup_steps=1))
    vocab = target_tok.get_vocab_size()
    student = draft.train_student(config, str(tmp_path / "student"), real_w, synth_w, 0.75, vocab)
    assert draft.read_summary(str(tmp_path / "student"))["steps"] == 2
    target = tfm.Transformer(lm.model_config(ssd, vocab), rngs=nnx.Rngs(params=0))
    plain = tfm.Transformer(lm.model_config(config, vocab), rngs=nnx.Rngs(params=1))
    target.eval(), plain.eval()
    prompts = real_w[:2, :8]
    rows = bench.measure_drafts(target, dict(plain=plain, student=student), prompts, num_draft=2,
                                max_new_tokens=6, repeats=1, dtype="float32")
    for name in ("plain", "student"):
        assert 0.0 <= rows[name]["acceptance"] <= 1.0
        assert np.isfinite(rows[name]["speedup"]) and rows[name]["speedup"] > 0
        assert 1.0 <= rows[name]["tokens_per_step"] <= 3.0
