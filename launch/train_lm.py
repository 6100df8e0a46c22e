"""Train an LM of any configured size on the offline corpus, sharded over all devices, resumable.

    python -m launch.train_lm --config configs/lm/smoke.py --workdir runs/lm_smoke
    python -m launch.train_lm --config configs/lm/target.py --workdir runs/target --config.train.num_steps=5000
"""

from launch import common as launch


def main(config, workdir):
    from core import lm
    lm.train_lm(config, workdir)


if __name__ == "__main__":
    launch.run(main)
