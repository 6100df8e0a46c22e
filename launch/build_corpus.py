"""Build the offline corpus (TFDS array_record documents, BPE tokenizer, packed token streams, manifest).

    python -m launch.build_corpus --config configs/data/corpus.py:smoke --out data/corpus_smoke
    python -m launch.build_corpus --config configs/data/corpus.py --out data/corpus --measure
"""

import json
import time

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", "configs/data/corpus.py", "Corpus config path.py[:arg].")
_OUT = flags.DEFINE_string("out", None, "Output directory (written atomically).", required=True)
_MEASURE = flags.DEFINE_bool("measure", False, "Also measure input-pipeline tokens/s (packed vs on the fly).")
_REPLACE = flags.DEFINE_bool("replace", False, "Rebuild --out even if it holds a corpus built from another config "
                             "(without it, a mismatch is refused and nothing is deleted).")


def main(argv):
    del argv
    from core import errors
    from core.data import corpus, lm_pipeline
    start = time.perf_counter()
    try:
        manifest = corpus.build_corpus(_CONFIG.value, _OUT.value, replace=_REPLACE.value)
    except errors.UserError as e:          # one line, as every launch script reports a user's mistake
        raise SystemExit(f"error: {e}") from None
    report = {k: manifest[k] for k in ("splits", "vocab_size", "content_sha256", "build_seconds")}
    report["sources"] = {k: manifest["sources"].get(k) for k in ("packages", "missing_packages", "bytes_by_source")}
    report["seconds_this_call"] = round(time.perf_counter() - start, 1)
    if _MEASURE.value:
        seq_len = 1024 if manifest["splits"]["train"]["tokens"] > 1_000_000 else 128
        report["pipeline"] = dict(seq_len=seq_len, batch_size=32, **lm_pipeline.measure_tokens_per_second(
            _OUT.value, "train", seq_len=seq_len, batch_size=32))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    app.run(main)
