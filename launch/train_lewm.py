"""Train LeWorldModel on on-device generated clips.

    python -m launch.train_lewm --config configs/lewm/tworoom.py:smoke --workdir runs/lewm_smoke
"""

from launch import common as launch


def main(config, workdir):
    from papers.lewm.train import train_lewm
    train_lewm(config, workdir)


if __name__ == "__main__":
    launch.run(main)
