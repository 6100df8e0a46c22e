"""D-MPC smoke pipeline for launch/demo.py: the whole experiment on the config's env (the toy env in smoke)."""

from __future__ import annotations

import ml_collections

from papers.dmpc import pipeline


def smoke_pipeline(config: ml_collections.ConfigDict, workdir: str) -> list[tuple[str, str]]:
    result = pipeline.run_env(config.env, config, workdir, log=lambda s: None)
    rows = [("reference returns random / expert", "{random:.1f} / {expert:.1f}".format(**result["reference_returns"]))]
    for kind, row in result["datasets"].items():
        rows.append((f"{kind}: normalised D-MPC / MBOP / BC (own refs, {config.eval.num_episodes} ep)",
                     " / ".join(f"{row[m]['normalized_own']['mean']:.1f}" for m in ("dmpc", "mbop", "bc"))))
    if "broken_ankle" in result:
        ankle = result["broken_ankle"]
        rows.append((f"defect x{ankle['gear_scale']}: D-MPC before -> after dynamics fine-tune",
                     f"{ankle['before']['normalized_own']['mean']:.1f} -> {ankle['after']['normalized_own']['mean']:.1f}"))
    return rows
