"""Build the offline corpus (TFDS array_record documents, BPE tokenizer, packed token streams, manifest).

    python -m launch.build_corpus --config configs/data/corpus.py:smoke --out data/corpus_smoke
    python -m launch.build_corpus --config configs/data/corpus.py --out data/corpus
"""

import json

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", "configs/data/corpus.py", "Corpus config path.py[:arg].")
_OUT = flags.DEFINE_string("out", None, "Output directory (written atomically).", required=True)


def main(argv):
    del argv
    from core.data import corpus
    manifest = corpus.build_corpus(_CONFIG.value, _OUT.value)
    print(json.dumps({k: manifest[k] for k in ("splits", "vocab_size", "content_sha256", "build_seconds")},
                     indent=2))


if __name__ == "__main__":
    app.run(main)
