"""LM input pipeline: packing in order, shuffling by the data seed, epochs, resume, process sharding, errors."""

import json
import os

import numpy as np
import pytest

from core.data import corpus, lm_pipeline, tokenizer as tokenizer_lib

SEQ, BATCH = 16, 4


def _write_stream(directory, split, tokens):
    """A split whose tokens are distinct, so each window is identified by its first token."""
    os.makedirs(directory, exist_ok=True)
    np.asarray(tokens, np.uint16).tofile(os.path.join(directory, f"tokens_{split}.bin"))
    with open(os.path.join(directory, f"tokens_{split}.bin.json"), "w") as f:
        json.dump({"dtype": "uint16", "num_tokens": len(tokens)}, f)
    return str(directory)


@pytest.fixture
def stream_dir(tmp_path):
    _write_stream(tmp_path, "validation", np.arange(1000))
    return _write_stream(tmp_path, "train", np.arange(3000))


def _starts(iterator, count=None):
    """First token of every row of the next `count` batches (all batches if None)."""
    starts = []
    for i, batch in enumerate(iterator):
        starts += [int(row[0]) for row in batch["tokens"]]
        if count is not None and i + 1 == count:
            break
    return starts


def test_validation_is_one_ordered_pass_of_packed_windows(stream_dir):
    batches = list(lm_pipeline.make_lm_iterator(stream_dir, "validation", SEQ, BATCH, seed=0))
    windows = (1000 - 1) // SEQ
    assert len(batches) == windows // BATCH
    rows = np.concatenate([b["tokens"] for b in batches])
    assert rows.shape == (windows // BATCH * BATCH, SEQ + 1) and rows.dtype == np.int32
    # Every token appears, in order: row i is tokens [i*SEQ, i*SEQ + SEQ]; consecutive rows share one token.
    flat = np.concatenate([rows[0]] + [row[1:] for row in rows[1:]])
    np.testing.assert_array_equal(flat, np.arange(len(flat)))


def test_train_shuffles_by_data_seed_and_reshuffles_each_epoch(stream_dir):
    windows = (3000 - 1) // SEQ
    per_epoch = windows // BATCH
    stream = lm_pipeline.make_lm_iterator(stream_dir, "train", SEQ, BATCH, seed=3)
    epoch_1, epoch_2 = _starts(stream, per_epoch), _starts(stream, per_epoch)
    assert len(set(epoch_1)) == len(epoch_1) == per_epoch * BATCH        # no window twice in an epoch
    assert set(epoch_1) <= set(range(0, windows * SEQ, SEQ))
    assert epoch_1 != sorted(epoch_1) and epoch_1 != epoch_2               # shuffled, and differently per epoch
    assert epoch_1 == _starts(lm_pipeline.make_lm_iterator(stream_dir, "train", SEQ, BATCH, seed=3), per_epoch)
    assert epoch_1 != _starts(lm_pipeline.make_lm_iterator(stream_dir, "train", SEQ, BATCH, seed=4), per_epoch)
    finite = lm_pipeline.make_lm_iterator(stream_dir, "train", SEQ, BATCH, seed=3, num_epochs=2)
    assert len(_starts(finite)) == 2 * per_epoch * BATCH


def test_resume_from_state_continues_the_stream_exactly(stream_dir):
    per_epoch = (3000 - 1) // SEQ // BATCH
    iterator = lm_pipeline.make_lm_iterator(stream_dir, "train", SEQ, BATCH, seed=7)
    _starts(iterator, per_epoch - 2)
    state = json.loads(json.dumps(iterator.get_state()))   # what a checkpoint stores
    rest = [next(iterator)["tokens"] for _ in range(5)]    # crosses the epoch boundary
    resumed = lm_pipeline.make_lm_iterator(stream_dir, "train", SEQ, BATCH, seed=7)
    resumed.set_state(state)
    for want in rest:
        np.testing.assert_array_equal(next(resumed)["tokens"], want)


@pytest.mark.parametrize("split", ["train", "validation"])
def test_processes_see_disjoint_equal_shares(stream_dir, split):
    shares = []
    for index in range(3):
        dataset = lm_pipeline.make_lm_dataset(stream_dir, split, SEQ, 2, seed=0, num_epochs=1,
                                              process_index=index, process_count=3)
        shares.append(_starts(dataset))
    assert len({len(s) for s in shares}) == 1 and len(shares[0]) >= 10   # same number of batches everywhere
    for a in range(3):
        for b in range(a + 1, 3):
            assert not set(shares[a]) & set(shares[b])


def test_packed_stream_is_the_documents_tokenized_on_the_fly(tmp_path):
    out = str(tmp_path / "c")
    corpus.build_corpus(corpus.corpus_config(packages=["absl"], include_stdlib=False, validation_percent=30,
                                             vocab_size=400), out)
    for split in ("train", "validation"):
        on_the_fly = np.concatenate(list(lm_pipeline.document_tokens(out, split)))
        packed = np.asarray(tokenizer_lib.open_token_stream(os.path.join(out, f"tokens_{split}.bin")))
        np.testing.assert_array_equal(on_the_fly, packed)
    first = next(lm_pipeline.make_lm_iterator(out, "validation", 32, 2, seed=0))["tokens"]
    np.testing.assert_array_equal(first[0], packed[:33])   # packed = the validation stream
    rates = lm_pipeline.measure_tokens_per_second(out, "train", seq_len=32, batch_size=2, seconds=0.2)
    assert rates["packed_tokens_per_s"] > 0 and rates["on_the_fly_tokens_per_s"] > 0


def test_bad_inputs_give_one_clear_error(stream_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="rebuild the corpus"):
        lm_pipeline.make_lm_iterator(str(tmp_path / "missing"), "train", SEQ, BATCH, 0)
    with pytest.raises(ValueError, match="fewer than one batch"):
        lm_pipeline.make_lm_iterator(stream_dir, "validation", 512, 4, seed=0)
    with pytest.raises(ValueError, match="must be positive"):
        lm_pipeline.make_lm_iterator(stream_dir, "train", 0, BATCH, seed=0)
    built = str(tmp_path / "built")
    corpus.build_corpus(corpus.corpus_config(packages=["absl"], include_stdlib=False, validation_percent=30,
                                             vocab_size=300), built)
    with pytest.raises(ValueError, match="has no split 'prose'"):
        lm_pipeline.make_lm_iterator(built, "prose", SEQ, BATCH, seed=0)
