"""Rendering one frame of a planned synthetic video: shapes, textures, depth order, the visible
masks and the per-frame occlusion label of every object."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Optional, Tuple

import numpy as np

from .scenes import RING_INNER, SQUARE_HALF, STAR_INNER, TRIANGLE_INRADIUS, _Object, _Video

__all__ = ["NO_OCCLUSION_MAX", "SLIGHT_OCCLUSION_MAX", "occlusion_label"]

#: Largest occluded fraction still labelled ``no_occlusion``.
NO_OCCLUSION_MAX = 0.05
#: Largest occluded fraction still labelled ``slight_occlusion``; above is ``severe_occlusion``.
SLIGHT_OCCLUSION_MAX = 0.5

_WINDOW = 1.07  # half-size of the square window that contains every shape, in radii

# Star polygon vertices (counter-clockwise in the (u, v) plane), closed.
_STAR_ANGLES = np.pi / 2 + np.arange(11) * (np.pi / 5)
_STAR_RADII = np.where(np.arange(11) % 2 == 0, 1.0, STAR_INNER)
_STAR_X = _STAR_RADII * np.cos(_STAR_ANGLES)
_STAR_Y = _STAR_RADII * np.sin(_STAR_ANGLES)
# Triangle edge normals (the edges face away from the vertices at 90°, 210°, 330°).
_TRI_NORMALS = np.deg2rad(np.array([-90.0, 30.0, 150.0]))


def occlusion_label(occluded_fraction: float) -> str:
    """Return the OVIS occlusion level of a frame from the occluded fraction of the amodal area."""
    if not 0.0 <= occluded_fraction <= 1.0:
        raise ValueError(f"occluded_fraction must be in [0, 1], got {occluded_fraction}")
    if occluded_fraction <= NO_OCCLUSION_MAX:
        return "no_occlusion"
    if occluded_fraction <= SLIGHT_OCCLUSION_MAX:
        return "slight_occlusion"
    return "severe_occlusion"



def _shape_mask(category: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    if category == "disc":
        return u * u + v * v <= 1.0
    if category == "ring":
        q = u * u + v * v
        return (q <= 1.0) & (q >= RING_INNER * RING_INNER)
    if category == "square":
        return (np.abs(u) <= SQUARE_HALF) & (np.abs(v) <= SQUARE_HALF)
    if category == "triangle":
        inside = np.ones(np.broadcast(u, v).shape, dtype=bool)
        for n in _TRI_NORMALS:
            inside &= u * math.cos(n) + v * math.sin(n) <= TRIANGLE_INRADIUS
        return inside
    if category == "star":
        # The star is star-shaped around the origin: in each 36° sector the boundary is one edge.
        phi = np.mod(np.arctan2(v, u) - np.pi / 2, 2 * np.pi)
        k = np.minimum((phi / (np.pi / 5)).astype(np.int64), 9)
        ax, ay = _STAR_X[k], _STAR_Y[k]
        bx, by = _STAR_X[k + 1], _STAR_Y[k + 1]
        return (bx - ax) * (v - ay) - (by - ay) * (u - ax) >= 0.0
    raise ValueError(f"unknown category {category!r}")


def _texture(obj: _Object, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Colour (h, w, 3) float32 of the object's texture at local coordinates (u, v)."""
    k, ph = obj.frequency, obj.phase
    if obj.category == "disc":  # concentric bands
        w = 0.5 + 0.5 * np.cos(2 * np.pi * k * np.sqrt(u * u + v * v) + ph)
    elif obj.category == "square":  # checkerboard
        w = np.mod(np.floor(u * k + obj.phase2) + np.floor(v * k + obj.phase2), 2.0)
    elif obj.category == "triangle":  # hard stripes
        w = (np.sin(2 * np.pi * k * u + ph) > 0).astype(np.float64)
    elif obj.category == "star":  # polka dots
        fu = np.mod(u * k + obj.phase2, 1.0) - 0.5
        fv = np.mod(v * k + obj.phase2, 1.0) - 0.5
        w = (fu * fu + fv * fv < 0.09).astype(np.float64)
    else:  # ring: radial spokes
        w = 0.5 + 0.5 * np.cos(k * np.arctan2(v, u) + ph)
    shade = 1.0 + obj.shade * np.clip(u - v, -1.5, 1.5)
    w = w[..., None]
    color = obj.color_a[None, None, :] * (1 - w) + obj.color_b[None, None, :] * w
    return (color * shade[..., None]).astype(np.float32)


@dataclass
class _FrameObject:
    visible: Optional[np.ndarray]  # (H, W) uint8 Fortran-order mask or None
    bbox: Optional[List[int]]
    area: int
    amodal_area: int
    visibility: str  # visible / hidden / outside
    occlusion: Optional[str]


def _render_frame(video: _Video, t: int, width: int, height: int, rng: np.random.Generator,
                  noise_std: float) -> Tuple[np.ndarray, List[_FrameObject]]:
    canvas = video.background.copy()
    owner = np.zeros((height, width), dtype=np.int16)
    xs = np.arange(width, dtype=np.float64)
    ys = np.arange(height, dtype=np.float64)
    windows: List[Optional[Tuple[int, int, int, int]]] = [None] * len(video.objects)
    amodal = [0] * len(video.objects)
    order = sorted(range(len(video.objects)), key=lambda i: -video.objects[i].depth)
    for i in order:
        obj = video.objects[i]
        cx, cy, r, th = obj.cx[t], obj.cy[t], obj.radius[t], obj.angle[t]
        half = _WINDOW * r
        x0, x1 = max(0, math.floor(cx - half)), min(width, math.ceil(cx + half) + 1)
        y0, y1 = max(0, math.floor(cy - half)), min(height, math.ceil(cy + half) + 1)
        if x0 >= x1 or y0 >= y1:
            continue
        dx = xs[x0:x1][None, :] - cx
        dy = ys[y0:y1][:, None] - cy
        c, s = math.cos(th), math.sin(th)
        u = (dx * c + dy * s) / r
        v = (-dx * s + dy * c) / r
        m = _shape_mask(obj.category, u, v)
        area = int(m.sum())
        if area == 0:
            continue
        amodal[i] = area
        windows[i] = (x0, x1, y0, y1)
        color = _texture(obj, u, v)
        canvas[y0:y1, x0:x1][m] = color[m]
        owner[y0:y1, x0:x1][m] = i + 1

    results: List[_FrameObject] = []
    for i in range(len(video.objects)):
        if amodal[i] == 0:
            results.append(_FrameObject(None, None, 0, 0, "outside", None))
            continue
        x0, x1, y0, y1 = windows[i]
        win = owner[y0:y1, x0:x1] == i + 1
        area = int(win.sum())
        if area == 0:
            results.append(_FrameObject(None, None, 0, amodal[i], "hidden", None))
            continue
        full = np.zeros((height, width), dtype=np.uint8, order="F")
        full[y0:y1, x0:x1] = win
        rows = np.flatnonzero(win.any(axis=1))
        cols = np.flatnonzero(win.any(axis=0))
        bbox = [int(x0 + cols[0]), int(y0 + rows[0]), int(cols[-1] - cols[0] + 1),
                int(rows[-1] - rows[0] + 1)]
        fraction = 1.0 - area / amodal[i]
        results.append(_FrameObject(full, bbox, area, amodal[i], "visible",
                                    occlusion_label(fraction)))

    if noise_std > 0:
        canvas += rng.standard_normal(canvas.shape, dtype=np.float32) * np.float32(noise_std)
    frame = np.clip(np.rint(canvas), 0, 255).astype(np.uint8)
    return frame, results
