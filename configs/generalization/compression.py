"""Compression bounds (Lotfi et al. 2022) with a data-independent prior. `dataset=mnist|fashion_mnist|digits`.

The grid searched over (d, L) is charged log2(grid size) bits; `smoke`: sklearn digits, CPU, seconds.
"""

import ml_collections

from core.config import parse_arg
from papers.generalization import compress, data


def get_config(arg=None):
    args = parse_arg(arg, smoke=False, dataset="mnist")
    smoke = args.smoke
    dataset = "digits" if smoke else args.dataset
    config = ml_collections.ConfigDict()
    config.data = data.data_config(dataset)
    config.model = dict(kind="cnn", width=8 if smoke else 16, init_seed=0, hidden=[])
    config.compress = dict(projection="dense", projection_seed=1, dim=250 if smoke else 2000,
                           levels=7 if smoke else 5, steps=150 if smoke else 4000, batch_size=128 if smoke else 512,
                           learning_rate=0.05, qat_steps=50 if smoke else 1000, qat_learning_rate=0.005, seed=0)
    # Every (d, L) pair the benchmark tries is one hypothesis family of the union bound.
    config.grid = dict(dims=[250] if smoke else [1000, 2000, 3000], levels=[7] if smoke else [3, 5, 7])
    config.bound = dict(delta=0.05, search_bits=compress.search_bits(len(config.grid.dims) * len(config.grid.levels)))
    # Random labels: the same CNN trained on all its parameters (identity projection) on a subset.
    config.random_labels = dict(train_size=300 if smoke else 2000, steps=300 if smoke else 4000,
                                learning_rate=0.003, qat_steps=50 if smoke else 500, levels=7 if smoke else 11)
    return config
