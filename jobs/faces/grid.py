"""A PNG grid of generated faces: one column per emotion (several identities, poses, lightings),
and one generated clip per row below, so a reader sees what the expression jobs learn from."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from jobs.faces.datasets import EMOTIONS, PROTOTYPES, generate_clips
from jobs.faces.render import au_vector, render, sample_identity, sample_lighting, sample_pose


def face_grid(path: Path, seed: int = 0, size: int = 64, people: int = 3, clips: int = 2, frames: int = 8) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(seed)
    cols = max(len(EMOTIONS), frames)
    fig, ax = plt.subplots(people + clips, cols, figsize=(1.4 * cols, 1.5 * (people + clips)))
    for a in ax.ravel():
        a.axis("off")
    for j, emotion in enumerate(EMOTIONS):
        aus = np.stack([au_vector(PROTOTYPES[emotion])] * people)
        faces = render(aus, sample_identity(rng, people), sample_pose(rng, people), sample_lighting(rng, people),
                       size, 0.02, rng)
        for i in range(people):
            ax[i, j].imshow(faces[i], cmap="gray", vmin=0, vmax=1)
        ax[0, j].set_title(emotion, fontsize=9)
    videos = generate_clips(clips, seed + 1, frames, size)
    for i in range(clips):
        for f in range(frames):
            ax[people + i, f].imshow(videos.x[i, f], cmap="gray", vmin=0, vmax=1)
        ax[people + i, 0].set_title(f"clip: {EMOTIONS[videos.y[i]]}", fontsize=8, loc="left")
    fig.suptitle("generated faces (procedural renderer, not real people)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=70)
    plt.close(fig)
    return path
