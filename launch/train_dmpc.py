"""D-MPC from nothing for one env: PPO expert, D4RL-style datasets, models, planners, scores (results.json).

    python -m launch.train_dmpc --config configs/dmpc/locomotion.py:smoke --workdir runs/dmpc_smoke
    python -m launch.train_dmpc --config configs/dmpc/locomotion.py:env=walker2d --workdir runs/dmpc_walker2d
"""

from launch import common as launch


def main(config, workdir):
    import os

    from core import metrics
    from papers.dmpc import pipeline

    result = pipeline.run_env(config.env, config, workdir,
                              checkpoint_fn=lambda r: metrics.write_json(os.path.join(workdir, "results.json"), r))
    metrics.write_json(os.path.join(workdir, "results.json"), result)


if __name__ == "__main__":
    launch.run(main)
