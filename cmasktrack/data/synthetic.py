"""A synthetic occlusion benchmark in the OVIS / YouTube-VIS json format.

``generate(out_dir, num_videos, seed)`` (or ``python -m cmasktrack.data.synthetic --out DIR
--videos N --seed S``) writes::

    DIR/annotations.json              OVIS-format ground truth (file_names relative to DIR/frames)
    DIR/frames/<video>/00000.png ...  lossless RGB frames
    DIR/scenes.json                   the scene description every frame was rendered from

The videos show textured shapes of five categories on textured backgrounds. Every category has
its own shape *and* its own texture family and hue range, so a small CNN can learn it:

=========  ========================================  ==========================  ==========
category   shape (local units, circumradius ~1)      texture                     hue family
=========  ========================================  ==========================  ==========
disc       u² + v² ≤ 1                               concentric bands            red/orange
square     |u| ≤ 0.75 and |v| ≤ 0.75                 checkerboard                blue
triangle   equilateral, circumradius 1, inradius 0.5 parallel stripes            green
star       5 points, outer radius 1, inner 0.45      polka dots                  yellow
ring       0.55² ≤ u² + v² ≤ 1 (a hole: see-through) radial spokes               magenta
=========  ========================================  ==========================  ==========

Objects move on smooth paths (velocity + a sinusoidal wobble, bouncing off a box slightly larger
than the frame, so they partly leave it), rotate and scale slightly, and are drawn far to near by
a per-object depth, so nearer objects occlude farther ones. Each video is built to be hard on
purpose:

* one large occluder, and for each *hider* a smaller object that travels behind an occluder and
  is **completely hidden for several frames, then reappears** (planned from the occluder's
  inscribed radius; the labels below are measured, not planned);
* objects of the **same category crossing** each other at different depths;
* objects that pass through and **leave the frame** (absent from then on) or bounce half out.

Ground truth is exact: a pixel belongs to the nearest object covering it, masks are the visible
parts, ids are stable for the whole video.

Geometry, for anyone re-rendering ``scenes.json``: pixel (row i, column j) is the point
(x, y) = (j, i). For an object with centre (cx, cy), radius r and angle θ in a frame, the local
coordinates are u = ((x−cx)·cosθ + (y−cy)·sinθ)/r and v = (−(x−cx)·sinθ + (y−cy)·cosθ)/r and the
pixel is covered when (u, v) is in the category's shape (table above; the triangle's vertices are
at angles 90°, 210°, 330° and the star's alternate outer/inner vertices at 90° + 36°·k in the
(u, v) plane, boundaries included). Objects are drawn in decreasing ``depth``.

Annotations follow OVIS: one entry per object that is visible in at least one frame, with
per-frame ``segmentations`` (compressed RLE, counts as str), ``bboxes`` ([x, y, w, h] of the
visible mask, ints), ``areas`` (visible pixel count) and ``occlusion``; all four are ``null`` in
a frame where the object is absent. "Absent" means no visible pixel: either fully hidden by
nearer objects or entirely outside the frame (both are absent in OVIS too). Annotations also carry
``"height"``, ``"width"``, ``"length": 1`` (as the official YouTube-VIS/OVIS files do) and one
non-standard key that readers ignore: ``"visibility"`` per frame, ``"visible"``, ``"hidden"``
(inside the frame but covered) or ``"outside"`` (out of the frame).

Occlusion labels, from the fraction f of the object's *amodal in-frame* area covered by nearer
objects (the part cut off by the frame border is truncation, not occlusion):
f ≤ 0.05 → ``no_occlusion``, 0.05 < f ≤ 0.5 → ``slight_occlusion``, f > 0.5 →
``severe_occlusion`` (OVIS annotates the same three levels by eye; the small tolerance makes
a few touching pixels count as "no occlusion").

Determinism: the only randomness is ``numpy.random.Generator`` streams derived from ``seed``
(video k uses ``SeedSequence(seed).spawn(...)[k]``, so a video does not depend on how many were
asked for); the same seed and options give byte-identical json and pixel-identical frames.

The dataset statistics (``occlusion_statistics``) are computed as OVIS computes them; see that
function for a comparison with the published OVIS numbers.
"""

from __future__ import annotations

import argparse
import colorsys
import json
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

__all__ = [
    "CATEGORIES",
    "OCCLUSION_SCORES",
    "NO_OCCLUSION_MAX",
    "SLIGHT_OCCLUSION_MAX",
    "OVIS_REFERENCE",
    "occlusion_label",
    "generate",
    "occlusion_statistics",
    "format_statistics",
    "main",
]

#: Category names in category-id order (id = index + 1).
CATEGORIES: Tuple[str, ...] = ("disc", "square", "triangle", "star", "ring")

#: Per-frame occlusion level → score, as in the official OVIS evaluator (oviseval.py).
OCCLUSION_SCORES: Dict[str, float] = {
    "no_occlusion": 0.0,
    "slight_occlusion": 0.25,
    "severe_occlusion": 0.75,
}
#: Largest occluded fraction still labelled ``no_occlusion``.
NO_OCCLUSION_MAX = 0.05
#: Largest occluded fraction still labelled ``slight_occlusion``; above is ``severe_occlusion``.
SLIGHT_OCCLUSION_MAX = 0.5

# Shape geometry in local units (see the module docstring).
SQUARE_HALF = 0.75
TRIANGLE_INRADIUS = 0.5
STAR_INNER = 0.45
RING_INNER = 0.55
_CIRCUMRADIUS = {"disc": 1.0, "square": SQUARE_HALF * math.sqrt(2.0), "triangle": 1.0,
                 "star": 1.0, "ring": 1.0}
# Radius of a disc that fits inside the shape (used to plan full hides; the ring's hole shows
# what is behind it, so it never hides anything completely).
_INRADIUS = {"disc": 1.0, "square": SQUARE_HALF, "triangle": TRIANGLE_INRADIUS, "star": 0.36,
             "ring": 0.0}
# (hue centre, hue half-width) per category, hue in [0, 1).
_HUES = {"disc": (0.03, 0.045), "square": (0.60, 0.05), "triangle": (0.33, 0.05),
         "star": (0.15, 0.035), "ring": (0.84, 0.05)}
_WINDOW = 1.07  # half-size of the square window that contains every shape, in radii

# Star polygon vertices (counter-clockwise in the (u, v) plane), closed.
_STAR_ANGLES = np.pi / 2 + np.arange(11) * (np.pi / 5)
_STAR_RADII = np.where(np.arange(11) % 2 == 0, 1.0, STAR_INNER)
_STAR_X = _STAR_RADII * np.cos(_STAR_ANGLES)
_STAR_Y = _STAR_RADII * np.sin(_STAR_ANGLES)
# Triangle edge normals (the edges face away from the vertices at 90°, 210°, 330°).
_TRI_NORMALS = np.deg2rad(np.array([-90.0, 30.0, 150.0]))

#: Published OVIS numbers that ``format_statistics`` prints next to ours. Sources:
#: videos/instances/per-video/per-frame counts: the OVIS project page (songbai.site/ovis);
#: mBOR: the OVIS paper (Qi et al., arXiv:2102.01558, dataset comparison table; YouTube-VIS
#: 0.06). The mBOR value was quoted from the paper by the author of this module and could not be
#: re-checked against a stored copy of the table.
OVIS_REFERENCE: Dict[str, float] = {
    "videos": 901,
    "instances": 5223,
    "objects_per_video": 5.80,
    "visible_objects_per_frame": 4.72,
    "mBOR": 0.22,
}

IntRange = Union[int, Tuple[int, int]]
PathLike = Union[str, os.PathLike]


def occlusion_label(occluded_fraction: float) -> str:
    """Return the OVIS occlusion level of a frame from the occluded fraction of the amodal area."""
    if not 0.0 <= occluded_fraction <= 1.0:
        raise ValueError(f"occluded_fraction must be in [0, 1], got {occluded_fraction}")
    if occluded_fraction <= NO_OCCLUSION_MAX:
        return "no_occlusion"
    if occluded_fraction <= SLIGHT_OCCLUSION_MAX:
        return "slight_occlusion"
    return "severe_occlusion"


# --------------------------------------------------------------------------------------------
# scene planning


@dataclass
class _Object:
    category: str
    category_id: int
    depth: float
    scenario: str
    cx: np.ndarray
    cy: np.ndarray
    radius: np.ndarray
    angle: np.ndarray
    color_a: np.ndarray
    color_b: np.ndarray
    frequency: float
    phase: float
    phase2: float
    shade: float
    annotation_id: Optional[int] = None


@dataclass
class _Video:
    name: str
    background_kind: str
    background: np.ndarray  # (H, W, 3) float32, 0..255
    objects: List[_Object] = field(default_factory=list)


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0.0), 1.0), min(max(v, 0.0), 1.0)),
                    dtype=np.float32) * 255.0


def _smooth_noise(rng: np.random.Generator, height: int, width: int, cells_y: int,
                  cells_x: int) -> np.ndarray:
    """Bilinear interpolation of a (cells_y+1, cells_x+1) uniform grid to (height, width)."""
    grid = rng.random((cells_y + 1, cells_x + 1))
    ys = np.linspace(0.0, cells_y, height)
    xs = np.linspace(0.0, cells_x, width)
    y0 = np.minimum(ys.astype(np.int64), cells_y - 1)
    x0 = np.minimum(xs.astype(np.int64), cells_x - 1)
    fy = (ys - y0)[:, None]
    fx = (xs - x0)[None, :]
    g00 = grid[y0][:, x0]
    g01 = grid[y0][:, x0 + 1]
    g10 = grid[y0 + 1][:, x0]
    g11 = grid[y0 + 1][:, x0 + 1]
    return (g00 * (1 - fy) * (1 - fx) + g01 * (1 - fy) * fx + g10 * fy * (1 - fx)
            + g11 * fy * fx)


def _background(rng: np.random.Generator, width: int, height: int) -> Tuple[str, np.ndarray]:
    unit = min(width, height) / 192.0
    kind = str(rng.choice(["noise", "stripes", "gradient", "tiles"]))
    hue = rng.random()
    color_a = _hsv(hue, rng.uniform(0.05, 0.45), rng.uniform(0.35, 0.85))
    color_b = _hsv(hue + rng.uniform(-0.3, 0.3), rng.uniform(0.05, 0.45), rng.uniform(0.2, 0.8))
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    if kind == "noise":
        weight = _smooth_noise(rng, height, width, int(rng.integers(2, 6)), int(rng.integers(3, 9)))
        weight = 0.7 * weight + 0.3 * _smooth_noise(rng, height, width, int(rng.integers(10, 20)),
                                                   int(rng.integers(16, 32)))
    elif kind == "stripes":
        direction = rng.uniform(0, np.pi)
        period = rng.uniform(10, 36) * unit
        proj = xs * np.cos(direction) + ys * np.sin(direction)
        weight = 0.5 + 0.5 * np.sin(2 * np.pi * proj / period + rng.uniform(0, 2 * np.pi))
    elif kind == "gradient":
        direction = rng.uniform(0, 2 * np.pi)
        proj = xs * np.cos(direction) + ys * np.sin(direction)
        weight = (proj - proj.min()) / max(proj.max() - proj.min(), 1e-9)
    else:  # tiles: a low-contrast rotated checkerboard
        direction = rng.uniform(0, np.pi / 2)
        cell = rng.uniform(12, 36) * unit
        a = (xs * np.cos(direction) + ys * np.sin(direction)) / cell
        b = (-xs * np.sin(direction) + ys * np.cos(direction)) / cell
        weight = 0.35 + 0.3 * ((np.floor(a) + np.floor(b)) % 2)
    # low-frequency brightness variation on every background
    light = 0.85 + 0.3 * _smooth_noise(rng, height, width, 2, 3)
    weight = weight[..., None]
    image = color_a[None, None, :] * (1 - weight) + color_b[None, None, :] * weight
    image = image * light[..., None]
    return kind, np.clip(image, 0, 255).astype(np.float32)


def _fold(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """Reflect values into [low, high] (a bouncing path)."""
    span = high - low
    if span <= 0:
        return np.full_like(values, (low + high) / 2)
    m = np.mod(values - low, 2 * span)
    return low + np.where(m <= span, m, 2 * span - m)


def _wobble(rng: np.random.Generator, t: np.ndarray, amplitude: float) -> np.ndarray:
    a = rng.uniform(0, amplitude)
    omega = rng.uniform(0.12, 0.45)
    return a * np.sin(omega * t + rng.uniform(0, 2 * np.pi))


def _new_object(rng: np.random.Generator, category: str, categories: Sequence[str], t: np.ndarray,
                r0: float, depth: float, scenario: str, cx: np.ndarray, cy: np.ndarray) -> _Object:
    n = len(t)
    amp = rng.uniform(0.0, 0.1)
    radius = r0 * (1 + amp * np.sin(rng.uniform(0.05, 0.3) * t + rng.uniform(0, 2 * np.pi)))
    angle = rng.uniform(0, 2 * np.pi) + rng.uniform(-0.06, 0.06) * t
    hue_c, hue_w = _HUES[category]
    hue = hue_c + rng.uniform(-hue_w, hue_w)
    color_a = _hsv(hue, rng.uniform(0.6, 0.95), rng.uniform(0.6, 0.98))
    color_b = _hsv(hue + rng.uniform(-0.03, 0.03), rng.uniform(0.25, 0.7), rng.uniform(0.15, 0.5))
    if rng.random() < 0.5:
        color_a, color_b = color_b, color_a
    frequency = {"disc": rng.uniform(2.0, 4.0), "square": float(rng.integers(2, 5)),
                 "triangle": rng.uniform(2.0, 4.0), "star": rng.uniform(3.0, 5.0),
                 "ring": float(rng.integers(6, 13))}[category]
    assert cx.shape == (n,) and cy.shape == (n,)
    return _Object(category=category, category_id=categories.index(category) + 1,
                   depth=float(depth), scenario=scenario, cx=cx.astype(np.float64),
                   cy=cy.astype(np.float64),
                   radius=radius.astype(np.float64), angle=angle.astype(np.float64),
                   color_a=color_a, color_b=color_b, frequency=float(frequency),
                   phase=float(rng.uniform(0, 2 * np.pi)), phase2=float(rng.uniform(0, 1)),
                   shade=float(rng.uniform(0.05, 0.2)))


def _mover_path(rng: np.random.Generator, t: np.ndarray, width: int, height: int, r0: float,
                speed: Tuple[float, float], unit: float,
                bounce: bool) -> Tuple[np.ndarray, np.ndarray]:
    direction = rng.uniform(0, 2 * np.pi)
    v = rng.uniform(*speed) * unit
    vx, vy = v * np.cos(direction), v * np.sin(direction)
    if bounce:
        x0 = rng.uniform(0.1, 0.9) * width
        y0 = rng.uniform(0.1, 0.9) * height
        x = x0 + vx * t + _wobble(rng, t, 5 * unit)
        y = y0 + vy * t + _wobble(rng, t, 5 * unit)
        out = rng.uniform(0.2, 0.6) * r0  # how far past the border the centre may go
        return _fold(x, -out, width - 1 + out), _fold(y, -out, height - 1 + out)
    # pass-through: inside the frame at a random time, then it may leave (or enter) the frame
    t_mid = rng.uniform(0, t[-1])
    xm, ym = rng.uniform(0.15, 0.85) * width, rng.uniform(0.15, 0.85) * height
    x = xm + vx * (t - t_mid) + _wobble(rng, t, 4 * unit)
    y = ym + vy * (t - t_mid) + _wobble(rng, t, 4 * unit)
    return x, y


def _pick_category(rng: np.random.Generator, categories: Sequence[str],
                   objects: Sequence[_Object]) -> str:
    """A category, favouring those with fewer objects in the video so far (balances classes)."""
    counts = np.array([sum(o.category == c for o in objects) for c in categories], dtype=np.float64)
    weights = 1.0 / (1.0 + 2.0 * counts)
    return str(categories[int(rng.choice(len(categories), p=weights / weights.sum()))])


def _plan_video(rng: np.random.Generator, name: str, num_frames: int, width: int, height: int,
                categories: Sequence[str], num_objects: int) -> _Video:
    unit = min(width, height) / 192.0
    t = np.arange(num_frames, dtype=np.float64)
    kind, background = _background(rng, width, height)
    video = _Video(name=name, background_kind=kind, background=background)
    solid = [c for c in categories if _INRADIUS[c] > 0]

    # 1) a large, slow, fairly near occluder
    cat = str(rng.choice(solid)) if solid else str(rng.choice(list(categories)))
    r0 = rng.uniform(0.2, 0.28) * min(width, height)
    cx, cy = _mover_path(rng, t, width, height, r0, (0.8, 2.5), unit, bounce=True)
    video.objects.append(_new_object(rng, cat, categories, t, r0, rng.uniform(0.1, 0.4),
                                     "occluder", cx, cy))

    scenarios: List[str] = []
    if num_objects >= 2:
        scenarios.append("hide")
    if num_objects >= 3:
        scenarios.append("cross")
    while len(scenarios) < num_objects - 1:
        scenarios.append(str(rng.choice(["free", "pass", "hide", "cross", "cross"])))

    for scenario in scenarios:
        if scenario == "hide":
            # candidates: objects that can cover a reasonable hider completely
            cands = [o for o in video.objects if _INRADIUS[o.category] > 0]
            sizes = [o.radius.min() * _INRADIUS[o.category] for o in cands]
            if not cands or max(sizes) < 10 * unit:
                scenario = "free"
            else:
                anchor = cands[int(np.argmax(sizes))]
                cat = _pick_category(rng, categories, video.objects)
                inner = max(sizes)
                fit = rng.uniform(0.35, 0.6)  # hider circumradius as a fraction of `inner`
                r_h = fit * inner / _CIRCUMRADIUS[cat] / 1.1  # /1.1: the hider's own scaling
                hidden = rng.uniform(3.0, min(8.0, max(3.0, num_frames / 2)))
                v_rel = 2 * (inner - 1.1 * r_h * _CIRCUMRADIUS[cat]) / hidden
                direction = rng.uniform(0, 2 * np.pi)
                t_c = rng.uniform(0.3, 0.7) * (num_frames - 1)
                ox = v_rel * np.cos(direction) * (t - t_c)
                oy = v_rel * np.sin(direction) * (t - t_c)
                depth = anchor.depth + rng.uniform(0.05, 0.5)
                video.objects.append(_new_object(rng, cat, categories, t, r_h, depth, "hide",
                                                 anchor.cx + ox, anchor.cy + oy))
                continue
        if scenario == "cross":
            # cross an existing object of a category that is still rare in the video
            counts = np.array([sum(o.category == a.category for o in video.objects)
                               for a in video.objects], dtype=np.float64)
            weights = 1.0 / counts**2
            anchor = video.objects[int(rng.choice(len(video.objects), p=weights / weights.sum()))]
            cat = anchor.category
            r_c = float(np.median(anchor.radius)) * rng.uniform(0.6, 1.2)
            r_c = min(r_c, 0.2 * min(width, height))
            v_rel = rng.uniform(3.0, 8.0) * unit
            direction = rng.uniform(0, 2 * np.pi)
            t_c = rng.uniform(0.25, 0.75) * (num_frames - 1)
            side = rng.uniform(-0.4, 0.4) * r_c
            ox = v_rel * np.cos(direction) * (t - t_c) - np.sin(direction) * side
            oy = v_rel * np.sin(direction) * (t - t_c) + np.cos(direction) * side
            depth = anchor.depth + rng.choice([-1.0, 1.0]) * rng.uniform(0.05, 0.3)
            video.objects.append(_new_object(rng, cat, categories, t, r_c, depth, "cross",
                                             anchor.cx + ox, anchor.cy + oy))
            continue
        cat = _pick_category(rng, categories, video.objects)
        r0 = rng.uniform(0.07, 0.17) * min(width, height)
        bounce = scenario == "free"
        speed = (1.5, 5.0) if bounce else (3.0, 8.0)
        cx, cy = _mover_path(rng, t, width, height, r0, speed, unit, bounce=bounce)
        video.objects.append(_new_object(rng, cat, categories, t, r0, rng.uniform(0.0, 1.0),
                                         scenario, cx, cy))
    return video


# --------------------------------------------------------------------------------------------
# rendering


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


# --------------------------------------------------------------------------------------------
# public API


def _as_range(value: IntRange, name: str, minimum: int) -> Tuple[int, int]:
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        lo = hi = int(value)
    else:
        try:
            lo, hi = (int(x) for x in value)  # type: ignore[union-attr]
        except (TypeError, ValueError):
            raise ValueError(f"{name} must be an int or a (min, max) pair, got {value!r}") from None
    if lo < minimum or hi < lo:
        raise ValueError(f"{name} must satisfy {minimum} <= min <= max, got ({lo}, {hi})")
    return lo, hi


def generate(out_dir: PathLike, num_videos: int, seed: int, *,
             num_frames: IntRange = (12, 24), size: Tuple[int, int] = (320, 192),
             categories: Sequence[str] = CATEGORIES, objects_per_video: IntRange = (4, 8),
             noise_std: float = 2.0, overwrite: bool = False, progress: bool = False) -> Path:
    """Generate a synthetic occlusion dataset and return the path of its annotations.json.

    Args:
        out_dir: output directory; receives annotations.json, scenes.json and frames/.
        num_videos: number of videos (≥ 1).
        seed: non-negative integer seed; the output is a pure function of the arguments.
        num_frames: frames per video, an int or an inclusive (min, max) range (min ≥ 2).
        size: frame (width, height) in pixels, each ≥ 32.
        categories: subset of ``CATEGORIES`` (order defines the category ids, 1-based).
        objects_per_video: objects per video, int or inclusive (min, max) range (1…32). Objects
            that never become visible are dropped from the annotations, so a video may have fewer.
        noise_std: standard deviation of the per-pixel Gaussian sensor noise (0–255 scale).
        overwrite: replace an existing dataset in ``out_dir`` (its frames/ directory,
            annotations.json and scenes.json); without it an existing annotations.json is an error.
        progress: print one line per video to stderr.

    Returns:
        ``Path(out_dir) / "annotations.json"``.
    """
    if (isinstance(num_videos, bool) or not isinstance(num_videos, (int, np.integer))
            or num_videos < 1):
        raise ValueError(f"num_videos must be a positive int, got {num_videos!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    frames_lo, frames_hi = _as_range(num_frames, "num_frames", 2)
    objs_lo, objs_hi = _as_range(objects_per_video, "objects_per_video", 1)
    if objs_hi > 32:
        raise ValueError(f"objects_per_video must be at most 32, got {objs_hi}")
    try:
        width, height = (int(x) for x in size)
    except (TypeError, ValueError):
        raise ValueError(f"size must be a (width, height) pair, got {size!r}") from None
    if width < 32 or height < 32:
        raise ValueError(f"size must be at least 32x32, got {width}x{height}")
    categories = tuple(categories)
    unknown = [c for c in categories if c not in CATEGORIES]
    if not categories or unknown or len(set(categories)) != len(categories):
        raise ValueError(f"categories must be distinct names from {CATEGORIES}, got {categories!r}")
    if not noise_std >= 0:
        raise ValueError(f"noise_std must be >= 0, got {noise_std!r}")

    out = Path(out_dir)
    ann_path = out / "annotations.json"
    frames_root = out / "frames"
    if ann_path.exists() or frames_root.exists():
        if not overwrite:
            raise FileExistsError(f"{out} already holds a dataset (annotations.json or frames/); "
                                  "pass overwrite=True (--overwrite) to replace it")
        if frames_root.exists():
            shutil.rmtree(frames_root)
        for stale in (ann_path, out / "scenes.json"):
            if stale.exists():
                stale.unlink()
    frames_root.mkdir(parents=True, exist_ok=True)

    children = np.random.SeedSequence(int(seed)).spawn(int(num_videos))
    videos_json: List[dict] = []
    annotations: List[dict] = []
    scenes: List[dict] = []
    for k, child in enumerate(children):
        rng = np.random.default_rng(child)
        length = int(rng.integers(frames_lo, frames_hi + 1))
        n_obj = int(rng.integers(objs_lo, objs_hi + 1))
        name = f"synth_{k:05d}"
        video = _plan_video(rng, name, length, width, height, categories, n_obj)
        video_dir = frames_root / name
        video_dir.mkdir()
        per_object: List[List[_FrameObject]] = [[] for _ in video.objects]
        file_names = []
        for t in range(length):
            frame, objs = _render_frame(video, t, width, height, rng, noise_std)
            file_name = f"{name}/{t:05d}.png"
            Image.fromarray(frame).save(frames_root / file_name, format="PNG", compress_level=1)
            file_names.append(file_name)
            for i, fo in enumerate(objs):
                per_object[i].append(fo)
        video_id = k + 1
        videos_json.append({"id": video_id, "name": name, "width": width, "height": height,
                            "length": length, "file_names": file_names})
        for obj, frames in zip(video.objects, per_object):
            if all(fo.visible is None for fo in frames):
                continue
            obj.annotation_id = len(annotations) + 1
            segmentations, bboxes, areas, occlusion = [], [], [], []
            for fo in frames:
                if fo.visible is None:
                    segmentations.append(None)
                    bboxes.append(None)
                    areas.append(None)
                    occlusion.append(None)
                    continue
                rle = mask_utils.encode(fo.visible)
                segmentations.append({"size": [int(rle["size"][0]), int(rle["size"][1])],
                                      "counts": rle["counts"].decode("utf-8")})
                bboxes.append(fo.bbox)
                areas.append(fo.area)
                occlusion.append(fo.occlusion)
            annotations.append({
                "id": obj.annotation_id, "video_id": video_id, "category_id": obj.category_id,
                "iscrowd": 0, "height": height, "width": width, "length": 1,
                "segmentations": segmentations, "bboxes": bboxes, "areas": areas,
                "occlusion": occlusion, "visibility": [fo.visibility for fo in frames],
            })
        scenes.append({
            "video_id": video_id, "name": name, "background": video.background_kind,
            "objects": [{
                "annotation_id": o.annotation_id, "category_id": o.category_id,
                "category": o.category, "scenario": o.scenario, "depth": o.depth,
                "cx": o.cx.tolist(), "cy": o.cy.tolist(), "radius": o.radius.tolist(),
                "angle": o.angle.tolist(),
            } for o in video.objects],
        })
        if progress:
            print(f"[synthetic] {name}: {length} frames, {len(video.objects)} objects",
                  file=sys.stderr)

    dataset = {
        "info": {"description": "cmasktrack synthetic occlusion benchmark",
                 "version": "1.0", "seed": int(seed), "num_videos": int(num_videos),
                 "num_frames": [frames_lo, frames_hi], "size": [width, height],
                 "objects_per_video": [objs_lo, objs_hi], "noise_std": float(noise_std),
                 "occlusion_thresholds": {"no_occlusion": NO_OCCLUSION_MAX,
                                          "slight_occlusion": SLIGHT_OCCLUSION_MAX}},
        "licenses": [],
        "videos": videos_json,
        "categories": [{"id": i + 1, "name": c, "supercategory": "shape"}
                       for i, c in enumerate(categories)],
        "annotations": annotations,
    }
    with open(ann_path, "w", encoding="utf-8") as f:
        json.dump(dataset, f)
    with open(out / "scenes.json", "w", encoding="utf-8") as f:
        json.dump({"geometry": {"square_half": SQUARE_HALF, "triangle_inradius": TRIANGLE_INRADIUS,
                                "star_inner": STAR_INNER, "ring_inner": RING_INNER},
                   "videos": scenes}, f)
    return ann_path


# --------------------------------------------------------------------------------------------
# statistics


def _runs(flags: Sequence[bool]) -> List[Tuple[int, int]]:
    """(start, end) of the maximal runs of False strictly between two True values."""
    present = [i for i, f in enumerate(flags) if f]
    if not present:
        return []
    runs = []
    start = None
    for i in range(present[0], present[-1] + 1):
        if not flags[i] and start is None:
            start = i
        elif flags[i] and start is not None:
            runs.append((start, i))
            start = None
    return runs


def occlusion_statistics(annotations: Union[PathLike, Mapping]) -> Dict[str, object]:
    """Occlusion statistics of an OVIS-format dataset (a path to its json, or the loaded dict).

    Computed as OVIS computes them, so they can be set beside the published numbers:

    * ``occlusion_level``: fraction of objects in the light [0, 0.25], medium (0.25, 0.5] and
      heavy (0.5, 1] groups of the per-object occlusion score used by the official OVIS evaluator
      (qjy981010/cocoapi, oviseval.py): per-frame levels scored no 0 / slight 0.25 / severe 0.75
      over the frames where the object is present, sorted, and the mean of the highest half
      (ceil(n/2)) taken. (The evaluator's own groups are closed intervals [0, .25], [.25, .5],
      [.5, 1], so objects exactly on 0.25 or 0.5 count in two AP groups;
      ``evaluator_groups`` gives those overlapping fractions.) ``occlusion_level_mean`` bins the
      plain mean over present frames the same way.
    * ``mBOR``: mean over frames (with at least one object) of the bounding-box occlusion rate of
      the OVIS paper, |pixels in ≥ 2 boxes| / |pixels in ≥ 1 box|.
    * ``frame_levels``: distribution of per-frame labels over present object-frames.
    * objects per video, visible objects per frame, disappear→reappear events (a run of absent
      frames between two present ones; split by the ``visibility`` key when the file has it),
      frames in which some object is fully hidden (needs ``visibility``), and same-category pairs
      whose boxes overlap in some frame.

    Published OVIS numbers (``OVIS_REFERENCE``): 901 videos, 5,223 instances, 5.80 instances per
    video, 4.72 objects per frame (songbai.site/ovis); mBOR 0.22 vs 0.06 for YouTube-VIS
    (arXiv:2102.01558). The light/medium/heavy split of OVIS objects is not published in a
    source we could check; use the AP_so/AP_mo/AP_ho of a model instead.

    ``generate(out, 50, 0)`` with the defaults measures (OVIS in brackets): 6.08 objects per
    video (5.80), 4.84 visible objects per frame (4.72), mBOR 0.245 (0.22); objects light /
    medium / heavy 40.5 % / 16.1 % / 43.4 %; 102 disappear→reappear events, all by occlusion,
    in 32.9 % of the objects; a fully hidden object in 62.9 % of the frames.
    """
    if isinstance(annotations, Mapping):
        data = annotations
    else:
        with open(annotations, "r", encoding="utf-8") as f:
            data = json.load(f)
    for key in ("videos", "annotations", "categories"):
        if key not in data:
            raise ValueError(f"not an OVIS/YouTube-VIS annotation file: missing {key!r}")
    videos = {v["id"]: v for v in data["videos"]}
    by_video: Dict[int, List[dict]] = {vid: [] for vid in videos}
    for ann in data["annotations"]:
        if ann["video_id"] not in videos:
            raise ValueError(f"annotation {ann.get('id')} refers to unknown video "
                             f"{ann['video_id']}")
        by_video[ann["video_id"]].append(ann)

    def bins(scores: List[float]) -> Dict[str, float]:
        n = max(len(scores), 1)
        return {"light": sum(s <= 0.25 for s in scores) / n,
                "medium": sum(0.25 < s <= 0.5 for s in scores) / n,
                "heavy": sum(s > 0.5 for s in scores) / n}

    top_half_scores: List[float] = []
    mean_scores: List[float] = []
    level_counts = {k: 0 for k in OCCLUSION_SCORES}
    reappear = {"total": 0, "hidden": 0, "outside": 0, "mixed": 0}
    gap_lengths: List[int] = []
    objects_with_reappearance = 0
    has_visibility = all("visibility" in a for a in data["annotations"])
    bors: List[float] = []
    visible_per_frame: List[int] = []
    frames_total = 0
    frames_hidden = 0
    same_cat_pairs = 0
    same_cat_frames = 0

    for vid, video in videos.items():
        anns = by_video[vid]
        height, width, length = int(video["height"]), int(video["width"]), int(video["length"])
        frames_total += length
        for ann in anns:
            levels = [o for o in ann.get("occlusion", []) if o is not None]
            for o in levels:
                if o not in OCCLUSION_SCORES:
                    raise ValueError(f"annotation {ann['id']}: unknown occlusion level {o!r}")
                level_counts[o] += 1
            if levels:
                s = sorted(OCCLUSION_SCORES[o] for o in levels)
                top = s[-math.ceil(len(s) / 2):]
                top_half_scores.append(sum(top) / len(top))
                mean_scores.append(sum(s) / len(s))
            present = [seg is not None for seg in ann["segmentations"]]
            runs = _runs(present)
            if runs:
                objects_with_reappearance += 1
            for a, b in runs:
                reappear["total"] += 1
                gap_lengths.append(b - a)
                if has_visibility:
                    reasons = set(ann["visibility"][a:b])
                    key = reasons.pop() if len(reasons) == 1 else "mixed"
                    reappear[key if key in ("hidden", "outside") else "mixed"] += 1
        for t in range(length):
            boxes = []
            cats = []
            for ann in anns:
                box = ann["bboxes"][t] if t < len(ann["bboxes"]) else None
                if box is not None:
                    boxes.append([int(round(x)) for x in box])
                    cats.append(ann["category_id"])
            visible_per_frame.append(len(boxes))
            if has_visibility and any(ann["visibility"][t] == "hidden" for ann in anns):
                frames_hidden += 1
            if not boxes:
                continue
            cover = np.zeros((height, width), dtype=np.int16)
            for x, y, w, h in boxes:
                cover[max(y, 0):y + h, max(x, 0):x + w] += 1
            union = int((cover >= 1).sum())
            bors.append(int((cover >= 2).sum()) / union if union else 0.0)
            overlap_here = False
            for i in range(len(boxes)):
                for j in range(i + 1, len(boxes)):
                    if cats[i] != cats[j]:
                        continue
                    (xi, yi, wi, hi), (xj, yj, wj, hj) = boxes[i], boxes[j]
                    if min(xi + wi, xj + wj) > max(xi, xj) and min(yi + hi, yj + hj) > max(yi, yj):
                        overlap_here = True
            same_cat_frames += overlap_here
        # pairs of same-category objects whose boxes overlap in at least one frame
        for i in range(len(anns)):
            for j in range(i + 1, len(anns)):
                if anns[i]["category_id"] != anns[j]["category_id"]:
                    continue
                for bi, bj in zip(anns[i]["bboxes"], anns[j]["bboxes"]):
                    if bi is None or bj is None:
                        continue
                    if (min(bi[0] + bi[2], bj[0] + bj[2]) > max(bi[0], bj[0])
                            and min(bi[1] + bi[3], bj[1] + bj[3]) > max(bi[1], bj[1])):
                        same_cat_pairs += 1
                        break

    n_objects = len(data["annotations"])
    n_levels = max(sum(level_counts.values()), 1)
    stats: Dict[str, object] = {
        "videos": len(videos),
        "frames": frames_total,
        "objects": n_objects,
        "objects_per_video": n_objects / max(len(videos), 1),
        "visible_objects_per_frame": (float(np.mean(visible_per_frame))
                                      if visible_per_frame else 0.0),
        "occlusion_level": bins(top_half_scores),
        "occlusion_level_mean": bins(mean_scores),
        "evaluator_groups": {
            "light": sum(s <= 0.25 for s in top_half_scores) / max(len(top_half_scores), 1),
            "medium": sum(0.25 <= s <= 0.5 for s in top_half_scores) / max(len(top_half_scores), 1),
            "heavy": sum(s >= 0.5 for s in top_half_scores) / max(len(top_half_scores), 1),
        },
        "mean_occlusion_score": float(np.mean(top_half_scores)) if top_half_scores else 0.0,
        "frame_levels": {k: v / n_levels for k, v in level_counts.items()},
        "mBOR": float(np.mean(bors)) if bors else 0.0,
        "reappear_events": reappear if has_visibility else {"total": reappear["total"]},
        "objects_with_reappearance": objects_with_reappearance / max(n_objects, 1),
        "mean_gap_frames": float(np.mean(gap_lengths)) if gap_lengths else 0.0,
        "frames_with_fully_hidden_object": (frames_hidden / max(frames_total, 1)
                                            if has_visibility else None),
        "same_category_overlapping_pairs": same_cat_pairs,
        "frames_with_same_category_overlap": same_cat_frames / max(frames_total, 1),
    }
    return stats


def format_statistics(stats: Mapping[str, object]) -> str:
    """Render ``occlusion_statistics`` output as a markdown table beside the OVIS reference."""
    def pct(x: object) -> str:
        return "n/a" if x is None else f"{100 * float(x):.1f}%"

    lv = stats["occlusion_level"]
    lm = stats["occlusion_level_mean"]
    fl = stats["frame_levels"]
    re = stats["reappear_events"]
    rows = [
        ("videos", f"{stats['videos']}", f"{OVIS_REFERENCE['videos']:.0f}"),
        ("objects (instances)", f"{stats['objects']}", f"{OVIS_REFERENCE['instances']:.0f}"),
        ("objects per video", f"{stats['objects_per_video']:.2f}",
         f"{OVIS_REFERENCE['objects_per_video']:.2f}"),
        ("visible objects per frame", f"{stats['visible_objects_per_frame']:.2f}",
         f"{OVIS_REFERENCE['visible_objects_per_frame']:.2f}"),
        ("mBOR", f"{stats['mBOR']:.3f}", f"{OVIS_REFERENCE['mBOR']:.2f} (YouTube-VIS 0.06)"),
        ("objects light / medium / heavy (evaluator score)",
         f"{pct(lv['light'])} / {pct(lv['medium'])} / {pct(lv['heavy'])}", "not published"),
        ("objects light / medium / heavy (plain mean)",
         f"{pct(lm['light'])} / {pct(lm['medium'])} / {pct(lm['heavy'])}", "—"),
        ("object-frames no / slight / severe",
         f"{pct(fl['no_occlusion'])} / {pct(fl['slight_occlusion'])} / "
         f"{pct(fl['severe_occlusion'])}",
         "—"),
        ("disappear→reappear events (all / by occlusion)",
         f"{re['total']} / {re.get('hidden', 'n/a')}", "—"),
        ("objects that disappear and reappear", pct(stats["objects_with_reappearance"]), "—"),
        ("frames with a fully hidden object", pct(stats["frames_with_fully_hidden_object"]), "—"),
        ("same-category pairs whose boxes overlap", f"{stats['same_category_overlapping_pairs']}",
         "—"),
    ]
    lines = ["| statistic | this dataset | OVIS |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# command line


def _parse_range(text: str) -> IntRange:
    text = text.strip()
    try:
        if "-" in text:
            lo, hi = text.split("-", 1)
            return int(lo), int(hi)
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N or MIN-MAX, got {text!r}") from None


def _parse_size(text: str) -> Tuple[int, int]:
    try:
        w, h = text.lower().split("x")
        return int(w), int(h)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, got {text!r}") from None


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command line: generate a dataset and print its occlusion statistics."""
    parser = argparse.ArgumentParser(
        prog="python -m cmasktrack.data.synthetic",
        description="Generate the cmasktrack synthetic occlusion benchmark (OVIS format).")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--videos", type=int, required=True, help="number of videos")
    parser.add_argument("--seed", type=int, required=True, help="random seed (>= 0)")
    parser.add_argument("--frames", type=_parse_range, default=(12, 24),
                        help="frames per video: N or MIN-MAX (default 12-24)")
    parser.add_argument("--size", type=_parse_size, default=(320, 192),
                        help="frame size WIDTHxHEIGHT (default 320x192)")
    parser.add_argument("--objects", type=_parse_range, default=(4, 8),
                        help="objects per video: N or MIN-MAX (default 4-8)")
    parser.add_argument("--categories", default=",".join(CATEGORIES),
                        help=f"comma-separated subset of {','.join(CATEGORIES)}")
    parser.add_argument("--noise", type=float, default=2.0, help="sensor noise std (0-255 scale)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing dataset")
    parser.add_argument("--quiet", action="store_true", help="do not print statistics")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        path = generate(args.out, args.videos, args.seed, num_frames=args.frames, size=args.size,
                        categories=[c.strip() for c in args.categories.split(",") if c.strip()],
                        objects_per_video=args.objects, noise_std=args.noise,
                        overwrite=args.overwrite)
    except (ValueError, FileExistsError) as exc:
        parser.error(str(exc))
    elapsed = time.perf_counter() - start
    print(f"wrote {path} ({args.videos} videos in {elapsed:.1f} s)")
    if not args.quiet:
        print(format_statistics(occlusion_statistics(path)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
