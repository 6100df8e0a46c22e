"""The main job: every implemented paper's smoke pipeline end to end on CPU, then one results table.

    bash launch/run.sh demo            # or: python -m launch.demo --workdir runs/demo
"""

from __future__ import annotations

import importlib
import os
import sys
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")

from absl import app, flags

_WORKDIR = flags.DEFINE_string("workdir", "runs/demo", "Each run writes corpora, checkpoints and figures into a new "
                                "timestamped directory below this one.")
_ONLY = flags.DEFINE_list("only", [], "Run only these pipelines (names from the table).")

# (name, module with `smoke_pipeline(config, workdir) -> list[(metric, value)]`, config module, its argument).
# The foundation LM comes first; the configs are imported here, at the top layer, and handed down.
PIPELINES = (
    ("foundation LM", __name__, "configs.lm.smoke", None),
    ("SSD speculative decoding", "papers.ssd.demo", "configs.ssd.decode", "smoke"),
    ("LeWorldModel", "papers.lewm.demo", "configs.lewm.tworoom", "smoke"),
    ("Pre-training under infinite compute", "papers.infinite_compute.demo", "configs.infinite_compute.sweep", "smoke"),
    ("Generalization bounds", "papers.generalization.demo", "configs.generalization.compression", "smoke"),
    ("D-MPC", "papers.dmpc.demo", "configs.dmpc.locomotion", "smoke"),
)


def smoke_pipeline(config, workdir: str) -> list[tuple[str, str]]:
    """Foundation: build the smoke corpus + tokenizer, train the smoke LM, sample from it."""
    from core import config as config_lib
    from core import lm

    config = config_lib.apply_overrides(config, {"data.corpus_dir": os.path.join(workdir, "corpus"),
                                                 "train.num_steps": 200, "optim.total_steps": 200,
                                                 "train.eval_every": 100})
    result = lm.train_lm(config, os.path.join(workdir, "lm"))
    train_rows = [r for r in result.history if "loss" in r]
    evals = [r for r in result.history if "eval/perplexity" in r]
    return [("train loss first -> last", f"{train_rows[0]['loss']:.3f} -> {train_rows[-1]['loss']:.3f}"),
            ("validation perplexity", f"{evals[-1]['eval/perplexity']:.1f}")]


def main(argv):
    del argv
    from absl import logging
    logging.set_verbosity(logging.WARNING)   # progress lines and the table only
    from core.checkpoint import fresh_run_dir

    run_dir = fresh_run_dir(_WORKDIR.value)
    print(f"demo run directory: {run_dir}", flush=True)
    rows = []
    for name, module_name, config_module, config_arg in PIPELINES:
        if _ONLY.value and name not in _ONLY.value:
            continue
        module = importlib.import_module(module_name) if module_name != __name__ else sys.modules[__name__]
        config = importlib.import_module(config_module).get_config(config_arg)
        start = time.perf_counter()
        results = module.smoke_pipeline(config, os.path.join(run_dir, name.split()[0].lower()))
        seconds = time.perf_counter() - start
        for metric, value in results:
            rows.append((name, metric, value, f"{seconds:.0f}s"))
    widths = [max(len(str(r[i])) for r in rows + [("pipeline", "metric", "value", "time")]) for i in range(4)]
    line = lambda r: " | ".join(str(c).ljust(w) for c, w in zip(r, widths))
    print("\n" + line(("pipeline", "metric", "value", "time")))
    print("-+-".join("-" * w for w in widths))
    for row in rows:
        print(line(row))


if __name__ == "__main__":
    app.run(main)
