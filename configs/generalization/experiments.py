"""Wilson (2025) Fig. 1 experiments on offline data: E1 polynomial, E2 GP on corrupted labels, E3 random-feature
double descent, E4 CNN width double descent with Hessian effective dimension, E6 compressed size vs width.
`smoke`: CPU sizes on sklearn digits, seconds."""

import ml_collections

from core.config import parse_arg
from papers.generalization import data


def get_config(arg=None):
    args = parse_arg(arg, smoke=False)
    smoke = args.smoke
    config = ml_collections.ConfigDict()
    config.poly = dict(degree=150, n=30, n_test=500, gammas=[1.0, 1.1, 1.5], lam=1e-4, seeds=[0, 1, 2, 3, 4],
                       low_degree=5)
    config.gp = dict(data=data.data_config("digits" if smoke else "mnist", train_size=400 if smoke else 5000,
                                           test_size=300 if smoke else 2000),
                     corruptions=[0.0, 0.5, 1.0] if smoke else [0.0, 0.2, 0.4, 0.6, 0.8, 1.0], noise=1e-3,
                     seeds=[0] if smoke else [0, 1, 2])
    config.random_features = dict(n=100 if smoke else 200, n_test=500 if smoke else 2000, input_dim=20, noise=0.3,
                                  ratios=[0.25, 0.5, 1.0, 2.0, 4.0] if smoke
                                  else [0.1, 0.25, 0.5, 0.75, 0.9, 1.0, 1.1, 1.25, 1.5, 2.0, 3.0, 5.0, 10.0],
                                  seeds=[0, 1] if smoke else [0, 1, 2, 3, 4], z=1e-3)
    config.double_descent = dict(
        data=data.data_config("digits" if smoke else "mnist", train_size=0 if smoke else 4000,
                              test_size=0 if smoke else 5000, label_noise=0.2),
        widths=[1, 4] if smoke else [1, 2, 4, 6, 8, 12, 16, 32], steps=100 if smoke else 4000,
        batch_size=128, learning_rate=1e-3, seed=0, hessian_points=256 if smoke else 2000,
        lanczos_iters=10 if smoke else 40, z=1.0)
    config.width_compression = dict(widths=[2, 8] if smoke else [8, 16, 32, 64], dim=250 if smoke else 2000,
                                    levels=7 if smoke else 5)
    return config
