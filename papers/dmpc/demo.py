"""D-MPC smoke pipeline for launch/demo.py: the experiment on the config's env (the toy env in smoke) from
nothing, cut to the config's `lite` datasets and planners and without the defect fine-tune (the pipeline test
runs the rest), so the demo compiles less."""

from __future__ import annotations

import ml_collections

from papers.dmpc import pipeline


def lite(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The config with only its `lite` datasets and methods (get_config("smoke,lite=True") gives the same)."""
    config = ml_collections.ConfigDict(config.to_dict())
    config.datasets, config.methods = tuple(config.lite.datasets), tuple(config.lite.methods)
    return config


def table_rows(result: dict, config: ml_collections.ConfigDict) -> list[tuple[str, str]]:
    shown = [m for m in ("dmpc", "mbop", "bc") if m in config.methods]
    rows = [("reference returns random / expert", "{random:.1f} / {expert:.1f}".format(**result["reference_returns"]))]
    for kind, row in result["datasets"].items():
        rows.append((f"{kind}: normalised {' / '.join(m.upper() if m != 'dmpc' else 'D-MPC' for m in shown)} "
                     f"(own refs, {config.eval.num_episodes} ep)",
                     " / ".join(f"{row[m]['normalized_own']['mean']:.1f}" for m in shown)))
    if "broken_ankle" in result:
        ankle = result["broken_ankle"]
        rows.append((f"defect x{ankle['gear_scale']}: D-MPC before -> after dynamics fine-tune",
                     f"{ankle['before']['normalized_own']['mean']:.1f} -> {ankle['after']['normalized_own']['mean']:.1f}"))
    return rows


def smoke_pipeline(config: ml_collections.ConfigDict, workdir: str) -> list[tuple[str, str]]:
    config = lite(config)
    return table_rows(pipeline.run_env(config.env, config, workdir, log=lambda s: None, stages=("evaluate",)), config)
