"""A procedural face renderer (numpy, no network) with action-unit-like controls.

Why: expression corpora (AffectNet, DFEW, CASME II) cannot be redistributed, yet the expression
jobs need faces whose expression is known exactly. Each face is drawn from soft shapes on a pixel
grid -- head ellipse, brows, eyes with lids, nose, cheeks, lips -- whose geometry follows a
vector of FACS action-unit intensities in [0, 1] (``AUS``). Identity (face shape, feature
spacing, resting brow and mouth), head pose (roll, scale, shift) and lighting (directional
shading, gain, gamma, sensor noise) vary independently of the expression, so a classifier has to
read the deformation, not the person.

This is a cartoon, not a photograph: textures, hair, occlusions, real skin folds and 3D pose are
absent, so numbers on it measure mechanisms, not accuracy on real faces.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

AUS: tuple[str, ...] = ("AU1", "AU2", "AU4", "AU5", "AU6", "AU7", "AU9", "AU12", "AU15", "AU20", "AU23", "AU26")
"""Inner/outer brow raiser, brow lowerer, upper lid raiser, cheek raiser, lid tightener, nose
wrinkler, lip corner puller, lip corner depressor, lip stretcher, lip tightener, jaw drop."""

AU_NAMES: dict[str, str] = {
    "AU1": "inner brow raiser", "AU2": "outer brow raiser", "AU4": "brow lowerer", "AU5": "upper lid raiser",
    "AU6": "cheek raiser", "AU7": "lid tightener", "AU9": "nose wrinkler", "AU12": "lip corner puller",
    "AU15": "lip corner depressor", "AU20": "lip stretcher", "AU23": "lip tightener", "AU26": "jaw drop",
}

IDENTITY_FIELDS = ("face_w", "face_h", "eye_dx", "eye_y", "eye_size", "brow_gap", "brow_thick", "mouth_y",
                   "mouth_w", "rest_smile", "skin", "feature_dark")
POSE_FIELDS = ("roll", "scale", "dx", "dy")
LIGHT_FIELDS = ("light_x", "light_y", "gain", "gamma", "bg")


@dataclass(frozen=True)
class Variation:
    """How much nuisance variation to draw (0 turns a factor off)."""

    identity: float = 1.0
    pose: float = 1.0
    lighting: float = 1.0
    noise: float = 0.03
    """Sensor noise standard deviation (image values are in [0, 1])."""


def sample_identity(rng: np.random.Generator, n: int, amount: float = 1.0) -> dict[str, np.ndarray]:
    """Per-person shape and tone, drawn once and kept over a clip."""
    def u(lo: float, hi: float) -> np.ndarray:
        mid = (lo + hi) / 2
        return mid + (rng.uniform(lo, hi, n) - mid) * amount

    return {"face_w": u(0.62, 0.78), "face_h": u(0.80, 0.95), "eye_dx": u(0.24, 0.32), "eye_y": u(-0.25, -0.15),
            "eye_size": u(0.85, 1.2), "brow_gap": u(0.14, 0.2), "brow_thick": u(0.028, 0.045),
            "mouth_y": u(0.38, 0.48), "mouth_w": u(0.2, 0.27), "rest_smile": u(-0.025, 0.025),
            "skin": u(0.55, 0.85), "feature_dark": u(0.12, 0.3)}


def sample_pose(rng: np.random.Generator, n: int, amount: float = 1.0) -> dict[str, np.ndarray]:
    return {"roll": rng.uniform(-0.25, 0.25, n) * amount, "scale": 1 + rng.uniform(-0.1, 0.1, n) * amount,
            "dx": rng.uniform(-0.08, 0.08, n) * amount, "dy": rng.uniform(-0.08, 0.08, n) * amount}


def sample_lighting(rng: np.random.Generator, n: int, amount: float = 1.0) -> dict[str, np.ndarray]:
    return {"light_x": rng.uniform(-0.35, 0.35, n) * amount, "light_y": rng.uniform(-0.25, 0.25, n) * amount,
            "gain": 1 + rng.uniform(-0.2, 0.2, n) * amount, "gamma": 1 + rng.uniform(-0.3, 0.3, n) * amount,
            "bg": 0.35 + rng.uniform(-0.2, 0.2, n) * amount}


def _sig(x: np.ndarray, soft: float) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x / soft, -40, 40)))


def _stroke(x: np.ndarray, y: np.ndarray, x0: np.ndarray, x1: np.ndarray, y0: np.ndarray, y1: np.ndarray,
            arch: np.ndarray, thick: np.ndarray, soft: float) -> np.ndarray:
    """A soft curved line from (x0, y0) to (x1, y1), bowed up by ``arch`` in its middle."""
    lo, hi = np.minimum(x0, x1), np.maximum(x0, x1)
    t = np.clip((x - x0) / (x1 - x0 + 1e-6), 0, 1)
    yc = y0 + (y1 - y0) * t - arch * 4 * t * (1 - t)
    inside = _sig(x - lo, soft) * _sig(hi - x, soft)
    return _sig(thick - np.abs(y - yc), soft) * inside


def render(aus: np.ndarray, identity: dict[str, np.ndarray], pose: dict[str, np.ndarray],
           light: dict[str, np.ndarray], size: int = 48, noise: float = 0.03,
           rng: np.random.Generator | None = None) -> np.ndarray:
    """Images (N, size, size) float32 in [0, 1] of N faces: ``aus`` (N, len(AUS)) intensities,
    and per-face identity/pose/lighting arrays of length N (see the ``sample_*`` functions)."""
    aus = np.asarray(aus, dtype=np.float64)
    n = aus.shape[0]
    a = {name: aus[:, i, None, None] for i, name in enumerate(AUS)}
    p = {k: np.asarray(v, dtype=np.float64).reshape(n, 1, 1) for k, v in {**identity, **pose, **light}.items()}
    soft = 1.2 / size
    g = (np.arange(size) + 0.5) / size * 2 - 1
    gy, gx = np.meshgrid(g, g, indexing="ij")
    # pixel -> face coordinates: undo shift, scale and roll (y grows downward)
    u, v = gx[None] - p["dx"], gy[None] - p["dy"]
    c, s = np.cos(p["roll"]), np.sin(p["roll"])
    x, y = (c * u + s * v) / p["scale"], (-s * u + c * v) / p["scale"]

    head = _sig(1 - np.sqrt((x / p["face_w"]) ** 2 + ((y - 0.03 * a["AU26"]) / p["face_h"]) ** 2), 1.5 * soft)
    shade = 1 + p["light_x"] * x + p["light_y"] * y
    img = p["bg"] * (1 + 0.5 * p["light_x"] * gx[None]) * (1 - head) + p["skin"] * shade * head
    dark = p["feature_dark"]

    def paint(mask: np.ndarray, value: np.ndarray | float) -> None:
        nonlocal img
        img = img * (1 - mask) + value * mask

    # cheeks (AU6 lifts and brightens them), nose wrinkles (AU9)
    for side in (-1, 1):
        cheek = np.exp(-(((x - side * (p["eye_dx"] + 0.02)) / 0.13) ** 2 + ((y - p["eye_y"] - 0.2 + 0.06 * a["AU6"]) / 0.08) ** 2))
        img = img + 0.12 * a["AU6"] * cheek * head
    nose_y = (p["eye_y"] + p["mouth_y"]) / 2
    paint(_stroke(x, y, -0.025 + 0 * x, 0.025 + 0 * x, nose_y + 0.1, nose_y + 0.1, 0 * x, 0.012 + 0 * x, soft) * 0.6,
          dark + 0.2)
    for k in range(3):
        wy = p["eye_y"] + 0.08 + 0.035 * k
        paint(_stroke(x, y, -0.07 + 0 * x, 0.07 + 0 * x, wy, wy, -0.015 + 0 * x, 0.006 + 0 * x, soft) * a["AU9"], dark + 0.15)

    # eyes: the upper lid rises with AU5, the lids close with AU7 and the cheek push of AU6
    open_ = np.clip(1 + 0.9 * a["AU5"] - 0.55 * a["AU7"] - 0.4 * a["AU6"] - 0.15 * a["AU9"], 0.15, None)
    rx, ry = 0.11 * p["eye_size"], 0.055 * p["eye_size"] * open_
    for side in (-1, 1):
        ex = side * p["eye_dx"] - side * 0.01 * a["AU4"]
        eye = _sig(1 - np.sqrt(((x - ex) / rx) ** 2 + ((y - p["eye_y"]) / ry) ** 2), 2 * soft / rx.mean())
        paint(eye, 0.92 + 0 * x)
        iris = _sig(1 - np.sqrt(((x - ex) / (0.5 * rx)) ** 2 + ((y - p["eye_y"]) / (0.5 * rx)) ** 2), soft * 8) * eye
        paint(iris, dark)
        # brows: inner end up with AU1, outer end up with AU2, both down and inward with AU4
        inner_x = side * (0.06 + 0.02 * p["eye_size"] - 0.035 * a["AU4"])
        outer_x = side * (p["eye_dx"] + 0.14)
        base = p["eye_y"] - p["brow_gap"]
        inner_y = base - 0.12 * a["AU1"] + 0.09 * a["AU4"] - 0.03 * a["AU2"]
        outer_y = base - 0.12 * a["AU2"] + 0.02 * a["AU4"]
        paint(_stroke(x, y, inner_x, outer_x, inner_y, outer_y, 0.02 + 0.04 * a["AU2"] + 0 * x,
                      p["brow_thick"] * (1 + 0.3 * a["AU4"]), soft), dark)

    # mouth: corners up (AU12) or down (AU15), wider (AU20, AU12), narrower (AU23), open (AU26)
    half_w = p["mouth_w"] * (1 + 0.3 * a["AU20"] + 0.18 * a["AU12"] - 0.25 * a["AU23"])
    lift = p["rest_smile"] + 0.11 * a["AU12"] - 0.1 * a["AU15"] - 0.02 * a["AU20"]
    ym = p["mouth_y"] + 0.05 * a["AU26"] - 0.02 * a["AU9"]
    t = np.clip(x / half_w, -1, 1)
    line = ym - lift * t**2
    gap = (0.008 + 0.09 * a["AU26"]) * (1 - t**2)
    inside = _sig(half_w - np.abs(x), soft)
    lip = (0.024 + 0.006 * a["AU20"]) * (1 - 0.5 * a["AU23"])
    upper = _sig(lip - np.abs(y - (line - gap - lip * 0.6)), soft) * inside
    lower = _sig(1.3 * lip - np.abs(y - (line + gap + lip * 0.8)), soft) * inside
    hole = _sig(gap - np.abs(y - line), soft) * inside
    paint(np.clip(upper + lower, 0, 1), 0.55 * p["skin"] + 0.05)
    paint(hole, dark * 0.5)

    img = np.clip(img * p["gain"], 1e-4, 1) ** p["gamma"]
    if noise > 0:
        rng = rng or np.random.default_rng(0)
        img = img + rng.normal(0, noise, img.shape)
    return np.clip(img, 0, 1).astype(np.float32)


def au_vector(intensities: dict[str, float]) -> np.ndarray:
    """(len(AUS),) from {"AU12": 0.8, ...}; unknown names raise."""
    out = np.zeros(len(AUS), dtype=np.float64)
    for name, value in intensities.items():
        if name not in AUS:
            raise ValueError(f"unknown action unit {name!r}; the renderer knows {', '.join(AUS)}")
        out[AUS.index(name)] = value
    return out
