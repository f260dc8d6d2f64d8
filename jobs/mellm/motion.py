"""MELLM's motion-enhanced input: dense optical flow between the onset and apex frames (OpenCV
Farneback), drawn as an interpretable colour map -- flow direction as hue, magnitude scaled to
brightness -- and fused with the grayscale onset frame, so a viewer (or a vision-language model)
sees both where on the face something moved and which way."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class FlowParams:
    """cv2.calcOpticalFlowFarneback's arguments (OpenCV's tutorial values) and the colour map's."""

    pyr_scale: float = 0.5
    levels: int = 3
    winsize: int = 15
    iterations: int = 3
    poly_n: int = 5
    poly_sigma: float = 1.2
    fusion_alpha: float = 0.5
    """Weight of the flow colours in the fused map; the onset frame gets 1 - alpha."""


def _u8(img: np.ndarray) -> np.ndarray:
    return np.clip(np.asarray(img) * 255.0, 0, 255).astype(np.uint8)


def optical_flow(onset: np.ndarray, apex: np.ndarray, p: FlowParams = FlowParams()) -> np.ndarray:
    """(H, W, 2) Farneback flow from onset to apex; images (H, W) in [0, 1]."""
    import cv2

    return cv2.calcOpticalFlowFarneback(_u8(onset), _u8(apex), None, p.pyr_scale, p.levels, p.winsize,
                                        p.iterations, p.poly_n, p.poly_sigma, 0)


def flow_colour_map(flow: np.ndarray) -> np.ndarray:
    """(H, W, 3) RGB in [0, 1]: hue = direction, saturation full, value = magnitude normalised to
    the image's largest motion (OpenCV's standard flow visualisation)."""
    import cv2

    mag, ang = cv2.cartToPolar(flow[..., 0], flow[..., 1])
    hsv = np.zeros(flow.shape[:2] + (3,), np.uint8)
    hsv[..., 0] = (ang * 180 / np.pi / 2).astype(np.uint8)
    hsv[..., 1] = 255
    hsv[..., 2] = cv2.normalize(mag, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB).astype(np.float32) / 255.0


def motion_enhanced_map(onset: np.ndarray, apex: np.ndarray, p: FlowParams = FlowParams()) -> np.ndarray:
    """The fused map: (1 - alpha) * onset (gray, as RGB) + alpha * flow colours; (H, W, 3) in [0, 1]."""
    colours = flow_colour_map(optical_flow(onset, apex, p))
    gray = np.repeat(np.asarray(onset, np.float32)[..., None], 3, axis=-1)
    return (1 - p.fusion_alpha) * gray + p.fusion_alpha * colours


INPUTS = ("apex", "flow", "fused")


def model_inputs(onset: np.ndarray, apex: np.ndarray, kind: str, p: FlowParams = FlowParams()) -> np.ndarray:
    """(N, 3, H, W) float32 network inputs of one kind: ``apex`` (the apex frame as gray RGB),
    ``flow`` (the colour map alone) or ``fused`` (the motion-enhanced map)."""
    if kind not in INPUTS:
        raise ValueError(f"unknown input {kind!r}: one of {INPUTS}")
    out = []
    for o, a in zip(onset, apex):
        if kind == "apex":
            out.append(np.repeat(a[..., None], 3, axis=-1))
        elif kind == "flow":
            out.append(flow_colour_map(optical_flow(o, a, p)))
        else:
            out.append(motion_enhanced_map(o, a, p))
    return np.stack(out).transpose(0, 3, 1, 2).astype(np.float32)
