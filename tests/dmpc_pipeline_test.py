"""The whole D-MPC pipeline end to end on the smoke config (toy env, CPU): PPO expert -> TFDS datasets ->
models -> five planners -> novel rewards -> defect fine-tune, through papers.dmpc.demo.smoke_pipeline."""

import json
import math
import os

from configs.dmpc import locomotion
from papers.dmpc import data as data_lib
from papers.dmpc import demo, pipeline


def test_smoke_pipeline_end_to_end(tmp_path):
    config = locomotion.get_config("smoke")
    rows = demo.smoke_pipeline(config, str(tmp_path))
    names = [name for name, _ in rows]
    assert any(n.startswith("medium:") for n in names) and any(n.startswith("medium_replay:") for n in names)
    assert any("before -> after" in n for n in names)
    for _, value in rows:
        assert all(math.isfinite(float(v)) for v in value.replace("->", "/").split("/"))
    # the datasets were written with manifests and read back; the fine-tune data too
    for kind in ("medium", "medium_replay"):
        manifest = data_lib.read_manifest(os.path.join(tmp_path, "data", f"toy_{kind}"))
        assert manifest["env"] == "toy" and manifest["counts"]["episodes"] >= config.data.medium_episodes
        assert manifest["reference_returns"]["expert"] > manifest["reference_returns"]["random"]
    assert data_lib.read_manifest(os.path.join(tmp_path, "data_broken_ankle", "toy_play"))["gear_scale"] == 0.25
    json.dumps(rows)


def test_unknown_env_is_refused():
    import pytest
    with pytest.raises(ValueError, match="Unknown env"):
        locomotion.get_config("env=ant")
    with pytest.raises(ValueError, match="Unknown locomotion env"):
        pipeline.envs_lib.make("ant")
