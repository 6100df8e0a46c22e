"""An episode as a GIF without OpenGL: MuJoCo CPU kinematics for each qpos, capsules drawn as thick lines in
the x-z plane with matplotlib (the toy env is drawn as a dot)."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from core import fileio


def _frames_mujoco(env_name: str, qpos: np.ndarray):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import mujoco

    from papers.dmpc import envs

    model = envs.load_mj_model(env_name)
    data = mujoco.MjData(model)
    frames = []
    for q in qpos:
        data.qpos[:] = q
        mujoco.mj_kinematics(model, data)
        fig, ax = plt.subplots(figsize=(4, 2.4), dpi=60)
        x0 = data.qpos[0]
        for g in range(model.ngeom):
            if model.geom_type[g] != mujoco.mjtGeom.mjGEOM_CAPSULE:
                continue
            axis = data.geom_xmat[g].reshape(3, 3)[:, 2] * model.geom_size[g, 1]
            a, b = data.geom_xpos[g] - axis, data.geom_xpos[g] + axis
            ax.plot([a[0], b[0]], [a[2], b[2]], lw=6, solid_capstyle="round", color="tab:blue")
        ax.axhline(0.0, color="k", lw=1)
        ax.set_xlim(x0 - 2, x0 + 2)
        ax.set_ylim(-0.1, 2.0)
        ax.set_aspect("equal")
        ax.set_title(f"{env_name}  x = {x0:.2f} m", fontsize=8)
        ax.axis("off")
        frames.append(_to_image(fig, plt))
    return frames


def _frames_toy(qpos: np.ndarray):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    frames = []
    for q in qpos:
        fig, ax = plt.subplots(figsize=(4, 2.4), dpi=60)
        ax.plot(qpos[:, 0], qpos[:, 1], color="0.8")
        ax.plot([q[0]], [q[1]], "o", color="tab:blue")
        ax.axhline(1.0, color="r", lw=1)
        ax.axhline(-1.0, color="r", lw=1)
        ax.set_xlim(qpos[:, 0].min() - 0.5, qpos[:, 0].max() + 0.5)
        ax.set_ylim(-1.2, 1.2)
        frames.append(_to_image(fig, plt))
    return frames


def _to_image(fig, plt) -> Image.Image:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    buffer.seek(0)
    return Image.open(buffer).convert("P")


def episode_gif(env_name: str, qpos: np.ndarray, path: str, stride: int = 3) -> str:
    """Writes every `stride`-th state of the episode as a GIF at `path` (temp file, then rename)."""
    qpos = np.asarray(qpos)[::stride]
    frames = _frames_toy(qpos) if env_name == "toy" else _frames_mujoco(env_name, qpos)
    with fileio.atomic_path(path) as tmp:
        frames[0].save(tmp, save_all=True, append_images=frames[1:], duration=60, loop=0)
    return path
