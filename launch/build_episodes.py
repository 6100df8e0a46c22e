"""Build a LeWM expert-episode dataset (TFDS array_record + manifest) from a registered pixel environment.

    python -m launch.build_episodes --env tworoom --num_episodes 10000 --data_dir data/episodes
"""

from absl import app, flags

from core import envs

_ENV = flags.DEFINE_enum("env", "tworoom", sorted(envs.ENVS), "Registered environment.")
_NUM_EPISODES = flags.DEFINE_integer("num_episodes", 10_000, "Episodes to generate.")
_MAX_STEPS = flags.DEFINE_integer("max_steps", 100, "Steps per episode at most (episodes stop at success).")
_SEED = flags.DEFINE_integer("seed", 0, "Episode i uses fold_in(key(seed), i).")
_RESOLUTION = flags.DEFINE_integer("resolution", 224, "Stored frame size in pixels.")
_FRAME_FORMAT = flags.DEFINE_enum("frame_format", "png", ["png", "raw"], "How frames are stored.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data directory.", required=True)


def main(argv):
    del argv
    from papers.lewm import dataset

    name = (f"{_ENV.value}_n{_NUM_EPISODES.value}_t{_MAX_STEPS.value}_r{_RESOLUTION.value}_"
            f"{_FRAME_FORMAT.value}_s{_SEED.value}")
    config = dataset.EpisodesConfig(name=name, env=_ENV.value, num_episodes=_NUM_EPISODES.value,
                                    max_steps=_MAX_STEPS.value, seed=_SEED.value, resolution=_RESOLUTION.value,
                                    frame_format=_FRAME_FORMAT.value)
    print(dataset.build(config, _DATA_DIR.value))


if __name__ == "__main__":
    app.run(main)
