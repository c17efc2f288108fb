"""Scene planning of the synthetic benchmark: categories, shape geometry, object paths and the
hide / cross / pass scenarios of each video (see :mod:`cmasktrack.data.synthetic`)."""

from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

import numpy as np

__all__ = ["CATEGORIES", "SQUARE_HALF", "TRIANGLE_INRADIUS", "STAR_INNER", "RING_INNER"]

#: Category names in category-id order (id = index + 1).
CATEGORIES: Tuple[str, ...] = ("disc", "square", "triangle", "star", "ring")

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
