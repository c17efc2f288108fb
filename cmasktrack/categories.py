"""Category names of the benchmarks whose official checkpoints cmasktrack loads.

The order is the category id order of the annotation files (id = index + 1); index 0 of the
models' class logits is the background.
"""

from typing import Sequence, Tuple

#: OVIS (Occluded Video Instance Segmentation), 25 categories, as in the official annotations.
OVIS_CATEGORIES: Tuple[str, ...] = (
    "Person", "Bird", "Cat", "Dog", "Horse", "Sheep", "Cow", "Elephant", "Bear", "Zebra",
    "Giraffe", "Poultry", "Giant_panda", "Lizard", "Parrot", "Monkey", "Rabbit", "Tiger", "Fish",
    "Turtle", "Bicycle", "Motorcycle", "Airplane", "Boat", "Vehical",
)

#: YouTube-VIS 2019, 40 categories.
YTVIS2019_CATEGORIES: Tuple[str, ...] = (
    "person", "giant_panda", "lizard", "parrot", "skateboard", "sedan", "ape", "dog", "snake",
    "monkey", "hand", "rabbit", "duck", "cat", "cow", "fish", "train", "horse", "turtle", "bear",
    "motorbike", "giraffe", "leopard", "fox", "deer", "owl", "surfboard", "airplane", "truck",
    "zebra", "tiger", "elephant", "snowboard", "boat", "shark", "mouse", "frog", "eagle",
    "earless_seal", "tennis_racket",
)

assert len(OVIS_CATEGORIES) == 25 and len(YTVIS2019_CATEGORIES) == 40


def category_name(names: Sequence[str], category_id: int) -> str:
    """The name of a 1-based category id in ``names`` (background excluded), or ``str(id)`` when
    ``names`` has none for it."""
    return names[category_id - 1] if 1 <= category_id <= len(names) else str(category_id)
