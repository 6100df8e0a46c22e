"""Every shipped config parses, with and without `smoke`, and bad arguments fail with one clear error."""

import glob
import json
import os

import pytest

from core import config as config_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_FILES = sorted(
    path for path in glob.glob(os.path.join(ROOT, "configs", "**", "*.py"), recursive=True)
    if "def get_config" in open(path, encoding="utf-8").read())


def test_there_are_configs_to_check():
    assert len(CONFIG_FILES) >= 4


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda p: os.path.relpath(p, ROOT))
@pytest.mark.parametrize("arg", ["", ":smoke"])
def test_config_parses_and_serialises(path, arg):
    config = config_lib.load_config(path + arg)
    json.loads(config.to_json_best_effort())
    if arg == ":smoke":
        assert config_lib.load_config(path).to_dict() != config.to_dict() or "smoke" in path


def test_unknown_config_argument_is_one_clear_error():
    with pytest.raises(ValueError, match="Unknown config argument 'smok'"):
        config_lib.parse_arg("smok=True", smoke=False)
    with pytest.raises(ValueError, match="must be True or False"):
        config_lib.parse_arg("smoke=3", smoke=False)


def test_overrides_refuse_unknown_keys_and_wrong_types():
    config = config_lib.load_config(os.path.join(ROOT, "configs", "lm", "smoke.py"))
    changed = config_lib.apply_overrides(config, {"train.num_steps": "7"})
    assert changed.train.num_steps == 7
    with pytest.raises(ValueError, match="Unknown config key 'train.num_stepz'"):
        config_lib.apply_overrides(config, {"train.num_stepz": "7"})
    with pytest.raises(ValueError, match="not a valid int"):
        config_lib.apply_overrides(config, {"train.num_steps": "seven"})


def test_missing_config_file_is_one_clear_error():
    with pytest.raises(FileNotFoundError, match="does not exist"):
        config_lib.load_config("configs/nope.py:smoke")
