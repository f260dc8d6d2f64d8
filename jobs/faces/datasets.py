"""Generated expression data sets (static images, dynamic clips, micro-expressions) from the face
renderer, and loaders of real data sets from a local directory.

Every generated set is deterministic per seed and labelled with what the renderer drew: the
emotion, and the action units (AU intensities) behind it. The emotion prototypes are the usual
EMFACS combinations (happiness 6+12, sadness 1+4+15, surprise 1+2+5+26, fear 1+2+4+5+20+26,
anger 4+5+7+23, disgust 9+15); each sample varies them (intensity, a dropped or a stray AU) the
way real displays vary.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from jobs.faces.render import AUS, Variation, render, sample_identity, sample_lighting, sample_pose

EMOTIONS: tuple[str, ...] = ("neutral", "happiness", "sadness", "surprise", "fear", "anger", "disgust")
"""The seven classes of DFEW and AffectNet-7."""
PROTOTYPES: dict[str, dict[str, float]] = {
    "neutral": {}, "happiness": {"AU6": 1, "AU12": 1}, "sadness": {"AU1": 1, "AU4": 1, "AU15": 1},
    "surprise": {"AU1": 1, "AU2": 1, "AU5": 1, "AU26": 1},
    "fear": {"AU1": 1, "AU2": 1, "AU4": 1, "AU5": 1, "AU20": 1, "AU26": 0.6},
    "anger": {"AU4": 1, "AU5": 0.5, "AU7": 1, "AU23": 1}, "disgust": {"AU9": 1, "AU15": 0.7},
}
MICRO_EMOTIONS: tuple[str, ...] = ("negative", "positive", "surprise")
"""The three classes of the composite micro-expression benchmark (MEGC: CASME II, SAMM, SMIC)."""
MICRO_PATTERNS: dict[str, list[dict[str, float]]] = {
    "positive": [{"AU12": 1}, {"AU6": 0.8, "AU12": 1}],
    "negative": [{"AU4": 1}, {"AU4": 1, "AU7": 0.8}, {"AU9": 1}, {"AU15": 1}, {"AU4": 0.8, "AU15": 1}, {"AU23": 1}],
    "surprise": [{"AU1": 1, "AU2": 1}, {"AU1": 1, "AU2": 1, "AU5": 0.8}, {"AU5": 1}],
}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


@dataclass
class ExpressionSet:
    """Images (N, H, W) or clips (N, T, H, W) in [0, 1], emotion labels (N,), AU intensities
    (N, len(AUS)) at the apex, and a group id (the person) per sample."""

    x: np.ndarray
    y: np.ndarray
    aus: np.ndarray
    groups: np.ndarray
    classes: tuple[str, ...]
    generated: bool = True


def sample_expressions(rng: np.random.Generator, labels: np.ndarray, intensity: tuple[float, float],
                       drop: float = 0.15, stray: float = 0.15) -> np.ndarray:
    """(N, len(AUS)) AU intensities: each label's prototype scaled by a random intensity, each of
    its AUs dropped with probability ``drop`` (never all), one stray AU added with ``stray``."""
    out = np.zeros((len(labels), len(AUS)))
    for i, label in enumerate(labels):
        proto = PROTOTYPES[EMOTIONS[label]]
        scale = rng.uniform(*intensity)
        names = list(proto)
        keep = [n for n in names if rng.random() > drop] or names
        for name in keep:
            out[i, AUS.index(name)] = proto[name] * scale * rng.uniform(0.8, 1.0)
        if rng.random() < stray:
            out[i, rng.integers(len(AUS))] += rng.uniform(0.1, 0.3)
    return np.clip(out, 0, 1)


def generate_static(n: int, seed: int, size: int = 32, intensity: tuple[float, float] = (0.55, 1.0),
                    variation: Variation = Variation(), label_noise: float = 0.0) -> ExpressionSet:
    """Posed still images at their apex (the AffectNet / RAF-DB role). ``label_noise`` relabels that
    share of images at random, as crowd annotation of in-the-wild photos does."""
    rng = np.random.default_rng(seed)
    y = rng.integers(len(EMOTIONS), size=n)
    aus = sample_expressions(rng, y, intensity)
    x = render(aus, sample_identity(rng, n, variation.identity), sample_pose(rng, n, variation.pose),
               sample_lighting(rng, n, variation.lighting), size, variation.noise, rng)
    flip = rng.random(n) < label_noise
    y = np.where(flip, rng.integers(len(EMOTIONS), size=n), y)
    return ExpressionSet(x, y, aus, np.arange(n), EMOTIONS)


def _envelope(rng: np.random.Generator, frames: int, min_len: int, max_len: int) -> np.ndarray:
    """Onset-apex-offset intensity over ``frames`` frames: a rise, a hold at 1, a fall, placed at
    random; (frames,) in [0, 1]."""
    length = int(rng.integers(min_len, max_len + 1))
    start = int(rng.integers(0, frames - length + 1))
    t = np.arange(frames) - start
    rise = max(1, length // 3)
    env = np.clip(np.minimum((t + 1) / rise, (length - t) / rise), 0, 1)
    return np.where((t >= 0) & (t < length), env, 0.0)


def generate_clips(n: int, seed: int, frames: int = 8, size: int = 32, intensity: tuple[float, float] = (0.35, 0.9),
                   variation: Variation = Variation(), talking: float = 0.35, motion: float = 0.04) -> ExpressionSet:
    """Short videos (the DFEW role): the expression rises and fades over a random stretch of the
    clip while the head drifts (``motion``) and the mouth moves as in speech (``talking``, AU26 and
    AU20 noise) -- so single frames are ambiguous and the temporal course carries the label."""
    rng = np.random.default_rng(seed)
    y = rng.integers(len(EMOTIONS), size=n)
    apex = sample_expressions(rng, y, intensity)
    ident, pose, light = (sample_identity(rng, n, variation.identity), sample_pose(rng, n, variation.pose),
                          sample_lighting(rng, n, variation.lighting))
    out = np.empty((n, frames, size, size), dtype=np.float32)
    drift = rng.normal(0, motion, (n, 2))
    envs = np.stack([_envelope(rng, frames, max(2, frames // 3), frames) for _ in range(n)])
    speech = rng.uniform(0, talking, (n, frames)) * (rng.random((n, 1)) < 0.6)
    for f in range(frames):
        aus = apex * envs[:, f, None]
        aus[:, AUS.index("AU26")] = np.maximum(aus[:, AUS.index("AU26")], speech[:, f])
        aus[:, AUS.index("AU20")] = np.maximum(aus[:, AUS.index("AU20")], 0.5 * speech[:, f])
        pose_f = {**pose, "dx": pose["dx"] + drift[:, 0] * f / frames, "dy": pose["dy"] + drift[:, 1] * f / frames}
        out[:, f] = render(aus, ident, pose_f, light, size, variation.noise, rng)
    return ExpressionSet(out, y, apex, np.arange(n), EMOTIONS)


def generate_micro(n: int, seed: int, subjects: int = 16, frames: int = 9, size: int = 64,
                   intensity: tuple[float, float] = (0.12, 0.3), variation: Variation = Variation(noise=0.015)
                   ) -> tuple[ExpressionSet, np.ndarray]:
    """Micro-expressions (the CASME II role): subtle (low intensity), brief (2-4 frames) AU
    movements on a still face, ``subjects`` people with several samples each. Returns the set
    (x: (N, frames, H, W), groups: subject) and the apex frame index of each clip (onset is 0)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(len(MICRO_EMOTIONS), size=n)
    groups = rng.integers(subjects, size=n)
    people = sample_identity(rng, subjects, variation.identity)
    ident = {k: v[groups] for k, v in people.items()}
    pose = sample_pose(rng, n, 0.5 * variation.pose)
    light = sample_lighting(rng, n, variation.lighting)
    apex_aus = np.zeros((n, len(AUS)))
    for i, label in enumerate(y):
        patterns = MICRO_PATTERNS[MICRO_EMOTIONS[label]]
        scale = rng.uniform(*intensity)
        for name, value in patterns[rng.integers(len(patterns))].items():
            apex_aus[i, AUS.index(name)] = value * scale
    out = np.empty((n, frames, size, size), dtype=np.float32)
    apex_at = np.zeros(n, dtype=np.int64)
    envs = np.zeros((n, frames))
    for i in range(n):  # onset at frame 0 (neutral), a brief movement somewhere after it
        length = int(rng.integers(3, 6))
        start = int(rng.integers(1, frames - length + 1))
        t = np.arange(frames) - start
        envs[i] = np.where((t >= 0) & (t < length), 1 - np.abs(t - (length - 1) / 2) / ((length + 1) / 2), 0)
        apex_at[i] = int(np.argmax(envs[i]))
        envs[i] /= envs[i].max()
    jitter = rng.normal(0, 0.004, (n, frames, 2))
    for f in range(frames):
        pose_f = {**pose, "dx": pose["dx"] + jitter[:, f, 0], "dy": pose["dy"] + jitter[:, f, 1]}
        out[:, f] = render(apex_aus * envs[:, f, None], ident, pose_f, light, size, variation.noise, rng)
    return ExpressionSet(out, y, apex_aus, groups, MICRO_EMOTIONS), apex_at


# -- real data sets from a local directory ------------------------------------------------------


def _read_gray(path: Path, size: int) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("L").resize((size, size), Image.BILINEAR), dtype=np.float32) / 255.0


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


S4D_LAYOUT = """<dir>/static/{train,test}/<emotion>/<image>.png|jpg        (e.g. AffectNet, RAF-DB aligned faces)
<dir>/dynamic/{train,test}/<emotion>/<clip>/<frame>.png|jpg  (e.g. DFEW, frames in name order)
<emotion> is one of: """ + ", ".join(EMOTIONS)


def load_expression_dir(root: str | Path, kind: str, split: str, size: int, frames: int = 8) -> ExpressionSet:
    """A real static (``kind="static"``) or dynamic (``"dynamic"``) split laid out as ``S4D_LAYOUT``;
    clips are resampled to ``frames`` frames uniformly. Raises with the expected layout when the
    directory does not match it."""
    base = Path(root) / kind / split
    if not base.is_dir():
        raise FileNotFoundError(f"{base} is missing; an expression data directory is laid out as\n{S4D_LAYOUT}")
    unknown = sorted(p.name for p in base.iterdir() if p.is_dir() and p.name not in EMOTIONS)
    if unknown:
        raise ValueError(f"{base}: unknown emotion folder(s) {unknown}; expected\n{S4D_LAYOUT}")
    xs, ys = [], []
    for label, emotion in enumerate(EMOTIONS):
        folder = base / emotion
        if not folder.is_dir():
            continue
        if kind == "static":
            for path in _images(folder):
                xs.append(_read_gray(path, size))
                ys.append(label)
            continue
        for clip in sorted(p for p in folder.iterdir() if p.is_dir()):
            paths = _images(clip)
            if not paths:
                raise ValueError(f"{clip}: a clip folder without frames; expected\n{S4D_LAYOUT}")
            pick = np.linspace(0, len(paths) - 1, frames).round().astype(int)
            xs.append(np.stack([_read_gray(paths[i], size) for i in pick]))
            ys.append(label)
    if not xs:
        raise ValueError(f"{base}: no {kind} samples found; expected\n{S4D_LAYOUT}")
    n = len(ys)
    return ExpressionSet(np.stack(xs), np.array(ys), np.zeros((n, len(AUS))), np.arange(n), EMOTIONS, generated=False)


MICRO_LAYOUT = """<dir>/samples.csv with the columns subject,onset,apex,emotion,aus
  onset, apex: image paths relative to <dir> (e.g. CASME II's onset and apex frames)
  emotion: one of """ + ", ".join(MICRO_EMOTIONS) + """
  aus: action units joined by '+', e.g. 4+7 or AU4+AU7 (units the renderer lacks are ignored)"""


def load_micro_dir(root: str | Path, size: int) -> tuple[np.ndarray, np.ndarray, ExpressionSet]:
    """Real micro-expressions laid out as ``MICRO_LAYOUT``: (onset (N, H, W), apex (N, H, W), set)
    with the set's ``x`` the apex frames and ``aus`` binary. Raises with the layout on a mismatch."""
    table = Path(root) / "samples.csv"
    if not table.is_file():
        raise FileNotFoundError(f"{table} is missing; a micro-expression directory is laid out as\n{MICRO_LAYOUT}")
    onsets, apexes, ys, aus, groups = [], [], [], [], []
    with open(table, newline="") as fh:
        rows = list(csv.DictReader(fh))
    need = {"subject", "onset", "apex", "emotion", "aus"}
    if not rows or not need <= set(rows[0]):
        raise ValueError(f"{table}: needs the columns {sorted(need)} and at least one row; expected\n{MICRO_LAYOUT}")
    subjects: dict[str, int] = {}
    for i, row in enumerate(rows, start=2):
        if row["emotion"] not in MICRO_EMOTIONS:
            raise ValueError(f"{table} line {i}: emotion {row['emotion']!r} is not one of {list(MICRO_EMOTIONS)}")
        for key in ("onset", "apex"):
            if not (Path(root) / row[key]).is_file():
                raise FileNotFoundError(f"{table} line {i}: {key} image {row[key]!r} not found under {root}")
        onsets.append(_read_gray(Path(root) / row["onset"], size))
        apexes.append(_read_gray(Path(root) / row["apex"], size))
        ys.append(MICRO_EMOTIONS.index(row["emotion"]))
        vec = np.zeros(len(AUS))
        for token in filter(None, (t.strip() for t in row["aus"].replace(",", "+").split("+"))):
            name = token.upper() if token.upper().startswith("AU") else f"AU{token}"
            if name in AUS:
                vec[AUS.index(name)] = 1.0
        aus.append(vec)
        groups.append(subjects.setdefault(row["subject"], len(subjects)))
    apex = np.stack(apexes)
    return np.stack(onsets), apex, ExpressionSet(apex, np.array(ys), np.stack(aus), np.array(groups),
                                                 MICRO_EMOTIONS, generated=False)
