"""What people look at: a GIF of planned episodes (start | rollout | goal) and result JSON."""

from __future__ import annotations

import numpy as np
from PIL import Image

from core import fileio


def write_gif(results: dict, path: str, num_episodes: int = 4, ms_per_frame: int = 250) -> None:
    """Each GIF frame shows the episodes side by side; per episode: the current frame above the goal."""

    frames, goals = np.asarray(results["frames"]), np.asarray(results["goal_frame"])
    count = min(num_episodes, frames.shape[0])
    pictures = []
    for t in range(frames.shape[1]):
        columns = [np.concatenate([frames[e, t], goals[e]], 0) for e in range(count)]
        pictures.append(Image.fromarray(np.concatenate(columns, 1).astype(np.uint8)))
    with fileio.atomic_path(path) as tmp:
        pictures[0].save(tmp, save_all=True, append_images=pictures[1:], duration=ms_per_frame, loop=0)
