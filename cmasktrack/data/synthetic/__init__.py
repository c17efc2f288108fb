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

Modules: :mod:`.scenes` plans a video (categories, shapes, paths, scenarios), :mod:`.render`
draws a frame and labels its occlusion, :mod:`.dataset` writes the dataset (:func:`generate`),
:mod:`.statistics` measures it, :mod:`.cli` is the command line.
"""

from ..ytvis import OCCLUSION_LABELS
from .cli import main
from .dataset import generate
from .render import NO_OCCLUSION_MAX, SLIGHT_OCCLUSION_MAX, occlusion_label
from .scenes import CATEGORIES
from .statistics import OVIS_REFERENCE, format_statistics, occlusion_statistics

#: Per-frame occlusion level -> score of the official OVIS evaluator: the same dict as
#: :data:`cmasktrack.data.ytvis.OCCLUSION_LABELS` (one source of truth).
OCCLUSION_SCORES = OCCLUSION_LABELS

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
