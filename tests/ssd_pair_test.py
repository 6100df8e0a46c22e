"""papers.ssd.pair: the draft config derives from the target's (corpus, data, schedule) and refuses a second
corpus; training itself runs in the SSD demo (launch/demo.py) and benchmarks.decode --smoke."""

import pytest

from core import config as config_lib
from papers.ssd import pair


def _target():
    return config_lib.load_config("configs/ssd/decode.py:smoke")


def test_draft_config_overrides_the_model_and_keeps_the_corpus():
    target = _target()
    before = target.to_dict()
    draft = pair.draft_config(target, {"n_layers": 1, "d_model": 32}, num_steps=7, learning_rate=1e-3)
    assert draft.model.n_layers == 1 and draft.model.d_model == 32
    assert draft.model.n_heads == target.model.n_heads                     # untouched fields stay the target's
    assert draft.data.corpus_dir == target.data.corpus_dir and draft.corpus == target.corpus
    assert draft.train.num_steps == draft.optim.total_steps == 7 and draft.optim.learning_rate == 1e-3
    assert draft.optim.warmup_steps == target.optim.warmup_steps
    assert draft.train.seed == target.train.seed + 1 and draft.train.data_seed == target.train.data_seed + 1
    assert draft.distill.hard_weight == 0.5
    assert target.to_dict() == before                                       # the target config is not mutated


def test_train_pair_refuses_two_corpora(tmp_path):
    target = _target()
    draft = pair.draft_config(target, {"n_layers": 1})
    draft.data.corpus_dir = str(tmp_path / "other")
    with pytest.raises(ValueError, match="one corpus"):
        pair.train_pair(target, draft, str(tmp_path))
    assert pair.read_summary(str(tmp_path)) == {}
