"""The whole D-MPC pipeline end to end on the smoke config (toy env, CPU), through the stages the GPU benchmark
runs as separate commands: PPO expert (stopped by its budget, then resumed from its file) -> snapshots scored
-> TFDS datasets -> models -> five planners + novel rewards -> (from the saved model alone) defect fine-tune."""

import json
import math
import os

import numpy as np
import pytest

from configs.dmpc import locomotion
from papers.dmpc import data as data_lib
from papers.dmpc import demo, experts, pipeline


def test_smoke_pipeline_in_stages_end_to_end(tmp_path):
    config = locomotion.get_config("smoke")
    # a transition target above what the configured 24 episodes of <= 40 steps can give: the counts must rise
    config.data.medium_transitions = 1500
    config.seeds = 2            # two training seeds per dataset (one vmapped program), each scored on its own episodes
    env = pipeline.envs_lib.make(config.env)
    keep = tmp_path / "keep"
    expert_file, model_file = str(keep / "expert.pkl"), str(keep / "model.npz")

    # experts stage: a zero budget stops PPO at its first snapshot (the file is written before the stop) ...
    stopped = experts.train_expert(env, config.ppo, config.seed, log=lambda s: None, path=expert_file, budget_s=0.0)
    assert not stopped.finished and [s for s, _ in stopped.snapshots] == [0] and os.path.exists(expert_file)
    # ... and the next command resumes from that file and runs to num_timesteps
    run = experts.train_expert(env, config.ppo, config.seed, log=lambda s: None, path=expert_file)
    steps = [s for s, _ in run.snapshots]
    assert run.finished and steps[0] == 0 and steps == sorted(set(steps)) and steps[-1] >= config.ppo.num_timesteps
    assert len(steps) == config.ppo.num_evals

    # evaluate stage: no PPO here (train_if_missing=False), everything from the snapshot file
    gif = str(tmp_path / "episode.gif")
    evaluators_before = len(pipeline.planning._EVALUATORS)
    result = pipeline.run_env(config.env, config, str(tmp_path / "work"), log=lambda s: None, stages=("evaluate",),
                              expert_file=expert_file, model_file=model_file, train_if_missing=False,
                              planner_report=True, gif_path=gif)
    assert set(result["datasets"]) == {"medium", "medium_replay"} and "broken_ankle" not in result
    # two datasets x two seeds, novel rewards included, through one compiled evaluation program
    assert len(pipeline.planning._EVALUATORS) - evaluators_before == 1
    # the planner report rides on the ankle dataset's model: ms per control step for the batch, and the GIF
    assert result["plan_ms_per_step"] > 0 and result["plan_batch_episodes"] == config.eval.num_episodes
    timing = result["variants_ms_per_step"]     # batched variants vs one call each, measured side by side
    assert timing["variants"] == ["dmpc", "dmpc_softmax", "dmpc_zero"] and timing["batched"] > 0 and timing["one_call_each"] > 0
    assert result["gif"] == gif and os.path.getsize(gif) > 0
    for row in result["datasets"].values():
        assert row["seeds"] == 2 and len(row["head_selection_other_seeds"]) == 1
        assert row["model_prediction"] == config.model.prediction == "x0"
        ranking = row["candidate_ranking"]
        assert ranking["states"] == config.ranking_states and ranking["oracle"]["spearman"] > 0.99
        assert all(-1 <= ranking[m]["spearman"] <= 1 for m in ("diffusion", "onestep"))
        for method in config.methods:
            assert math.isfinite(row[method]["normalized_own"]["mean"])
            per_seed = [p["normalized_own"]["mean"] for p in row[method]["per_seed"]]
            assert len(per_seed) == 2 and np.isclose(row[method]["normalized_own"]["mean"], np.mean(per_seed))
        assert set(row["novel_rewards"]) >= {"dmpc", "dmpc_backward", "dmpc_jump"}
    returns = [s["eval_return"] for s in result["ppo"]["snapshots"]]
    assert len(returns) == len(steps) and result["ppo"]["expert_snapshot"] == int(np.argmax(returns))
    assert result["ppo"]["medium_snapshot"] <= result["ppo"]["expert_snapshot"]
    for kind in ("medium", "medium_replay"):
        manifest = data_lib.read_manifest(os.path.join(tmp_path, "work", "data", f"toy_{kind}"))
        assert manifest["env"] == "toy" and manifest["counts"]["episodes"] >= config.data.medium_episodes
        assert manifest["reference_returns"]["expert"] > manifest["reference_returns"]["random"]
        assert manifest["files"] == result["datasets"][kind]["dataset_sha256"]
        assert manifest["collection"]["medium_transitions"] == 1500
    medium = data_lib.read_manifest(os.path.join(tmp_path, "work", "data", "toy_medium"))
    assert medium["collection"]["medium_episodes"] > config.data.medium_episodes
    assert medium["counts"]["steps"] >= 0.8 * 1500        # episodes from the scoring rollout's mean length
    assert os.path.getsize(model_file) > 0

    # ankle stage, as a later command would run it: the saved model and the evaluate stage's JSON only
    previous = json.loads(json.dumps(result))
    ankle = pipeline.run_env(config.env, config, str(tmp_path / "work"), log=lambda s: None, stages=("ankle",),
                             expert_file=expert_file, model_file=model_file, previous=previous)
    assert ankle["datasets"] == previous["datasets"]
    assert data_lib.read_manifest(os.path.join(tmp_path, "work", "data_broken_ankle", "toy_play"))["gear_scale"] == 0.25
    rows = demo.table_rows(ankle, config)
    assert any(n.startswith("medium:") for n, _ in rows) and any(n.startswith("medium_replay:") for n, _ in rows)
    assert any("before -> after" in n for n, _ in rows)
    for _, value in rows:
        assert all(math.isfinite(float(v)) for v in value.replace("->", "/").split("/"))


def test_unknown_env_and_missing_snapshots_are_refused(tmp_path):
    with pytest.raises(ValueError, match="Unknown env"):
        locomotion.get_config("env=ant")
    with pytest.raises(ValueError, match="Unknown locomotion env"):
        pipeline.envs_lib.make("ant")
    config = locomotion.get_config("smoke")
    with pytest.raises(FileNotFoundError, match="run the experts stage first"):
        pipeline.run_env(config.env, config, str(tmp_path), stages=("evaluate",), train_if_missing=False)
    with pytest.raises(ValueError, match="Unknown stages"):
        pipeline.run_env(config.env, config, str(tmp_path), stages=("plan",))


def test_lite_config_is_the_demo_cut():
    full, lite = locomotion.get_config("smoke"), locomotion.get_config("smoke,lite=True")
    assert demo.lite(full).to_dict() == lite.to_dict()
    assert set(lite.methods) < set(full.methods) and set(lite.datasets) < set(full.datasets)


def test_benchmark_stages_follow_the_carried_files(tmp_path, tmp_path_factory):
    from benchmarks import dmpc as bench
    keep = str(tmp_path)
    assert bench.next_stage("hopper", keep) == "experts"
    os.makedirs(tmp_path / "hopper")
    (tmp_path / "hopper" / "expert.pkl").write_bytes(b"x")
    assert bench.next_stage("hopper", keep) == "evaluate"
    for env_name in ("hopper", "walker2d"):
        os.makedirs(tmp_path / env_name, exist_ok=True)
        (tmp_path / env_name / "expert.pkl").write_bytes(b"x")
        (tmp_path / f"{env_name}.json").write_text(json.dumps({"datasets": {"medium": {}, "medium_replay": {}}}))
    assert bench.next_stage("hopper", keep) is None and bench.next_stage("walker2d", keep) == "ankle"
    # auto: at most one task per GPU, explicit stages always run, envs with nothing left drop out
    assert bench.parse_tasks("halfcheetah,hopper,walker2d", "auto", keep, max_auto=1) == [("halfcheetah", "experts")]
    assert bench.parse_tasks("hopper:evaluate/medium,walker2d", "auto", keep, max_auto=2) == [
        ("hopper", "evaluate/medium"), ("walker2d", "ankle")]
    with pytest.raises(ValueError, match="Unknown stage"):
        bench.parse_tasks("hopper:train", "auto", keep, max_auto=1)
    with pytest.raises(ValueError, match="Unknown env"):
        bench.parse_tasks("ant:experts", "auto", keep, max_auto=1)
    # the parent merges JSONs that only the experts stage has written so far (no "env" key yet)
    merged = bench.summarize({"hopper": {"mjx_vs_cpu_step": {"qpos": 1e-7}}})
    assert merged["mjx_vs_cpu_step"] == {"hopper": {"qpos": 1e-7}} and merged["normalized_mean"] is None
    # rows of older runs (one seed, v-prediction, neither recorded) beside new ones: each row says which it is
    row = lambda score, **extra: {**{m: {"normalized_own": {"mean": score}} for m in ("dmpc", "mbop", "bc")}, **extra}
    mixed = bench.summarize({"hopper": {"datasets": {"medium": row(60.0),
                                                     "medium_replay": row(80.0, seeds=3, model_prediction="x0")}}})
    assert mixed["normalized_mean"] == 70.0
    assert mixed["seeds_per_dataset"] == {"hopper-medium": 1, "hopper-medium_replay": 3}
    assert mixed["prediction_per_dataset"] == {"hopper-medium": "v", "hopper-medium_replay": "x0"}
    # export: <keep> as two tars (small files; models) plus the results, flat; the tars restore <keep>
    import argparse
    import tarfile
    (tmp_path / "walker2d" / "model.npz").write_bytes(b"model")
    results = tmp_path_factory.mktemp("results") / "dmpc.json"
    results.write_text("{}")
    out = tmp_path_factory.mktemp("export")
    bench.export(argparse.Namespace(export=str(out), keep=keep), [str(results), str(out / "missing.gif")])
    assert sorted(os.listdir(out)) == sorted([f"{os.path.basename(keep)}.tar", f"{os.path.basename(keep)}_models.tar",
                                              "dmpc.json"])
    restored = tmp_path_factory.mktemp("restored")
    for name in os.listdir(out):
        if name.endswith(".tar"):
            with tarfile.open(out / name) as tar:
                tar.extractall(restored, filter="data")
    copy = restored / os.path.basename(keep)
    assert (copy / "walker2d" / "model.npz").read_bytes() == b"model"
    assert json.loads((copy / "hopper.json").read_text()) == {"datasets": {"medium": {}, "medium_replay": {}}}


def test_committed_keep_tar_restores_keep_only_when_absent(tmp_path):
    import argparse
    import tarfile
    from benchmarks import dmpc as bench
    keep = tmp_path / "src" / "dmpc_keep"
    os.makedirs(keep / "hopper")
    (keep / "hopper" / "expert.pkl").write_bytes(b"snapshots")
    (keep / "hopper.json").write_text('{"datasets": {"medium": {}}}')
    out = tmp_path / "out"
    bench.export(argparse.Namespace(export=str(out), keep=str(keep)), [])
    target = tmp_path / "fresh" / "dmpc_keep"
    os.makedirs(target.parent)
    assert bench.restore_keep(str(target), str(out / "dmpc_keep.tar"))
    assert (target / "hopper" / "expert.pkl").read_bytes() == b"snapshots"
    assert bench.next_stage("hopper", str(target)) == "evaluate"
    # an existing <keep> wins: nothing is overwritten
    (target / "hopper.json").write_text("{}")
    assert not bench.restore_keep(str(target), str(out / "dmpc_keep.tar"))
    assert (target / "hopper.json").read_text() == "{}"
    # a tar of another folder is refused with one clear error, and leaves no half-made <keep>
    other = tmp_path / "other.tar"
    with tarfile.open(other, "w") as tar:
        tar.add(keep / "hopper.json", arcname="elsewhere/hopper.json")
    with pytest.raises(ValueError, match="not an export of a folder named"):
        bench.restore_keep(str(tmp_path / "fresh2" / "dmpc_keep"), str(other))
    assert not os.path.exists(tmp_path / "fresh2" / "dmpc_keep")
    # the committed tar (the last GPU session's experts) is an export of dmpc_keep
    with tarfile.open(bench.KEEP_TAR) as tar:
        assert all(n.startswith("dmpc_keep/") for n in tar.getnames())


def test_workers_run_one_at_a_time_per_gpu_and_the_deadline_cuts_the_rest():
    import subprocess
    import sys
    import time
    from benchmarks import dmpc as bench
    tasks = [("halfcheetah", "evaluate/medium"), ("hopper", "evaluate/medium"), ("walker2d", "experts")]
    assert bench.gpu_queues(tasks, 2) == [[tasks[0], tasks[2]], [tasks[1]]]
    started = {}

    def launch(seconds):
        def start(gpu, env_name, stage):
            started[env_name] = (gpu, time.time())
            return subprocess.Popen([sys.executable, "-c", f"import time; time.sleep({seconds})"])
        return start

    # one GPU, sequential: each worker starts after the previous one ended
    exits = []
    outcome = bench.run_workers(bench.gpu_queues(tasks, 1), 1, 60, launch(0.3), on_exit=lambda: exits.append(1),
                                poll_s=0.05)
    assert outcome == {f"{e}:{s}": "done" for e, s in tasks} and len(exits) == 3
    times = [started[e][1] for e, _ in tasks]
    assert times[1] - times[0] >= 0.3 and times[2] - times[1] >= 0.3
    # the deadline kills the running worker and leaves the queued ones unstarted
    started.clear()
    outcome = bench.run_workers(bench.gpu_queues(tasks, 1), 1, 0.5, launch(30), poll_s=0.05)
    assert outcome == {"halfcheetah:evaluate/medium": "killed", "hopper:evaluate/medium": "not started",
                       "walker2d:experts": "not started"} and list(started) == ["halfcheetah"]
    # concurrent (per_gpu = queue length): all start at once
    started.clear()
    bench.run_workers(bench.gpu_queues(tasks, 1), 3, 60, launch(0.2), poll_s=0.05)
    assert max(t for _, t in started.values()) - min(t for _, t in started.values()) < 0.2


def test_train_steps_flag_reaches_the_stage_config(tmp_path, monkeypatch):
    from benchmarks import dmpc as bench
    seen = {}

    def fake_run_env(env_name, config, workdir, **kwargs):
        seen["steps"] = (config.train.num_steps, config.optim.total_steps)
        return {"datasets": {}}
    monkeypatch.setattr(pipeline, "run_env", fake_run_env)
    keep = str(tmp_path / "keep")
    os.makedirs(keep)
    bench.run_stage("toy", "evaluate", True, str(tmp_path / "work"), keep, None, None, train_steps=7)
    saved = json.loads((tmp_path / "keep" / "toy.json").read_text())
    assert seen["steps"] == (7, 7) and saved["config"]["train"]["num_steps"] == 7
    bench.run_stage("toy", "evaluate", True, str(tmp_path / "work"), keep, None, None)
    default = locomotion.get_config("smoke").train.num_steps
    assert seen["steps"] == (default, default) != (7, 7)


def test_evaluating_one_dataset_stores_both_so_the_other_is_not_rebuilt(tmp_path, monkeypatch):
    config = locomotion.get_config("smoke")
    env = pipeline.envs_lib.make(config.env)
    workdir = str(tmp_path / "work")
    config.datasets = ("medium",)
    first = pipeline.make_datasets(env, config, workdir, log=lambda s: None)
    assert set(first["paths"]) == {"medium"}
    # the next command asks for the other kind: built already, so no snapshot scoring and no rollouts
    def refuse(*args, **kwargs):
        raise AssertionError("rebuilt a dataset that was on disk")
    monkeypatch.setattr(experts, "evaluate_snapshots", refuse)
    monkeypatch.setattr(experts, "collect_from_snapshots", refuse)
    config.datasets = ("medium_replay",)
    second = pipeline.make_datasets(env, config, workdir, log=lambda s: None)
    assert set(second["paths"]) == {"medium_replay"} and second["reference"] == first["reference"]
    manifest = data_lib.read_manifest(second["paths"]["medium_replay"])
    assert manifest["behaviour_snapshots"] == list(range(first["medium_snapshot"] + 1))
