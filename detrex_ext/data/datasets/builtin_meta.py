"""Category tables of the built-in datasets and the metadata built from them.

Contiguous class ids are derived here and only here (``contiguous_id_map``): dataset category
ids sorted ascending get 0..K-1, the convention of detectron2, Mask2Former and Mask DINO.
"""

from __future__ import annotations

import colorsys
from typing import Any, Iterable

# fmt: off
# COCO 2017 (id, name); things are the 80 instance categories, stuff the 53 panoptic-only ones
COCO_THING_CATEGORIES: list[tuple[int, str]] = [
    (1, "person"), (2, "bicycle"), (3, "car"), (4, "motorcycle"), (5, "airplane"), (6, "bus"),
    (7, "train"), (8, "truck"), (9, "boat"), (10, "traffic light"), (11, "fire hydrant"),
    (13, "stop sign"), (14, "parking meter"), (15, "bench"), (16, "bird"), (17, "cat"),
    (18, "dog"), (19, "horse"), (20, "sheep"), (21, "cow"), (22, "elephant"), (23, "bear"),
    (24, "zebra"), (25, "giraffe"), (27, "backpack"), (28, "umbrella"), (31, "handbag"),
    (32, "tie"), (33, "suitcase"), (34, "frisbee"), (35, "skis"), (36, "snowboard"),
    (37, "sports ball"), (38, "kite"), (39, "baseball bat"), (40, "baseball glove"),
    (41, "skateboard"), (42, "surfboard"), (43, "tennis racket"), (44, "bottle"),
    (46, "wine glass"), (47, "cup"), (48, "fork"), (49, "knife"), (50, "spoon"), (51, "bowl"),
    (52, "banana"), (53, "apple"), (54, "sandwich"), (55, "orange"), (56, "broccoli"),
    (57, "carrot"), (58, "hot dog"), (59, "pizza"), (60, "donut"), (61, "cake"), (62, "chair"),
    (63, "couch"), (64, "potted plant"), (65, "bed"), (67, "dining table"), (70, "toilet"),
    (72, "tv"), (73, "laptop"), (74, "mouse"), (75, "remote"), (76, "keyboard"),
    (77, "cell phone"), (78, "microwave"), (79, "oven"), (80, "toaster"), (81, "sink"),
    (82, "refrigerator"), (84, "book"), (85, "clock"), (86, "vase"), (87, "scissors"),
    (88, "teddy bear"), (89, "hair drier"), (90, "toothbrush"),
]
COCO_STUFF_CATEGORIES: list[tuple[int, str]] = [
    (92, "banner"), (93, "blanket"), (95, "bridge"), (100, "cardboard"), (107, "counter"),
    (109, "curtain"), (112, "door-stuff"), (118, "floor-wood"), (119, "flower"), (122, "fruit"),
    (125, "gravel"), (128, "house"), (130, "light"), (133, "mirror-stuff"), (138, "net"),
    (141, "pillow"), (144, "platform"), (145, "playingfield"), (147, "railroad"), (148, "river"),
    (149, "road"), (151, "roof"), (154, "sand"), (155, "sea"), (156, "shelf"), (159, "snow"),
    (161, "stairs"), (166, "tent"), (168, "towel"), (171, "wall-brick"), (175, "wall-stone"),
    (176, "wall-tile"), (177, "wall-wood"), (178, "water-other"), (180, "window-blind"),
    (181, "window-other"), (184, "tree-merged"), (185, "fence-merged"), (186, "ceiling-merged"),
    (187, "sky-other-merged"), (188, "cabinet-merged"), (189, "table-merged"),
    (190, "floor-other-merged"), (191, "pavement-merged"), (192, "mountain-merged"),
    (193, "grass-merged"), (194, "dirt-merged"), (195, "paper-merged"),
    (196, "food-other-merged"), (197, "building-other-merged"), (198, "rock-merged"),
    (199, "wall-other-merged"), (200, "rug-merged"),
]

# ADE20K SceneParsing-150, in label order (label value i = class i after the -1 shift)
ADE20K_150_CLASSES: list[str] = [
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass",
    "cabinet", "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain",
    "chair", "car", "water", "painting", "sofa", "shelf", "house", "sea", "mirror", "rug",
    "field", "armchair", "seat", "fence", "desk", "rock", "wardrobe", "lamp", "bathtub",
    "railing", "cushion", "base", "box", "column", "signboard", "chest of drawers", "counter",
    "sand", "sink", "skyscraper", "fireplace", "refrigerator", "grandstand", "path", "stairs",
    "runway", "case", "pool table", "pillow", "screen door", "stairway", "river", "bridge",
    "bookcase", "blind", "coffee table", "toilet", "flower", "book", "hill", "bench",
    "countertop", "stove", "palm", "kitchen island", "computer", "swivel chair", "boat", "bar",
    "arcade machine", "hovel", "bus", "towel", "light", "truck", "tower", "chandelier", "awning",
    "streetlight", "booth", "television receiver", "airplane", "dirt track", "apparel", "pole",
    "land", "bannister", "escalator", "ottoman", "bottle", "buffet", "poster", "stage", "van",
    "ship", "fountain", "conveyer belt", "canopy", "washer", "plaything", "swimming pool",
    "stool", "barrel", "basket", "waterfall", "tent", "bag", "minibike", "cradle", "oven", "ball",
    "food", "step", "tank", "trade name", "microwave", "pot", "animal", "bicycle", "lake",
    "dishwasher", "screen", "blanket", "sculpture", "hood", "sconce", "vase", "traffic light",
    "tray", "ashcan", "fan", "pier", "crt screen", "plate", "monitor", "bulletin board", "shower",
    "radiator", "glass", "clock", "flag",
]

# Cityscapes 19 evaluation classes, in trainId order
CITYSCAPES_CLASSES: list[str] = [
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
    "motorcycle", "bicycle",
]
# fmt: on


def contiguous_id_map(dataset_ids: Iterable[int]) -> dict[int, int]:
    """The one mapping from dataset category ids to contiguous ids: sorted ids -> 0..K-1."""
    return {dataset_id: i for i, dataset_id in enumerate(sorted(set(dataset_ids)))}


def palette(num_colors: int, seed: int = 0) -> list[list[int]]:
    """``num_colors`` distinct, saturated RGB colours (deterministic; golden-ratio hues)."""
    colors = []
    for i in range(num_colors):
        hue = (seed * 0.137 + i * 0.618033988749895) % 1.0
        saturation = 0.55 + 0.35 * ((i * 7) % 3) / 2
        value = 0.95 - 0.25 * ((i * 5) % 4) / 3
        r, g, b = colorsys.hsv_to_rgb(hue, saturation, value)
        colors.append([round(r * 255), round(g * 255), round(b * 255)])
    return colors


def coco_instance_metadata() -> dict[str, Any]:
    """Metadata of the 80-class COCO instance datasets (``coco_2017_train`` / ``_val``)."""
    ids = [cid for cid, _ in COCO_THING_CATEGORIES]
    return {
        "thing_classes": [name for _, name in COCO_THING_CATEGORIES],
        "thing_colors": palette(len(ids)),
        "thing_dataset_id_to_contiguous_id": contiguous_id_map(ids),
    }


def panoptic_metadata(categories: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Panoptic metadata in Mask2Former/Mask DINO's layout from ``{id, name, isthing}`` dicts.

    Contiguous ids: things first (sorted by id), then stuff (sorted by id); for COCO this is
    plain id order. ``thing_classes`` are the things (contiguous 0..T-1); ``stuff_classes``
    lists all categories, so semantic labels and panoptic classes share one contiguous space
    (``stuff_dataset_id_to_contiguous_id`` maps every id, things included).
    """
    categories = list(categories)
    things = sorted((c for c in categories if c.get("isthing", 0)), key=lambda c: c["id"])
    stuff = sorted((c for c in categories if not c.get("isthing", 0)), key=lambda c: c["id"])
    ordered = things + stuff
    colors = [c.get("color") for c in ordered]
    if any(color is None for color in colors):
        colors = palette(len(ordered))
    all_map = {c["id"]: i for i, c in enumerate(ordered)}
    return {
        "thing_classes": [c["name"] for c in things],
        "thing_colors": [list(colors[all_map[c["id"]]]) for c in things],
        "stuff_classes": [c["name"] for c in ordered],
        "stuff_colors": [list(color) for color in colors],
        "thing_dataset_id_to_contiguous_id": {c["id"]: all_map[c["id"]] for c in things},
        "stuff_dataset_id_to_contiguous_id": all_map,
        "label_divisor": 1000,
        "ignore_label": 255,
    }


def coco_panoptic_metadata() -> dict[str, Any]:
    """Metadata of COCO panoptic (80 things, 133 classes in all), as ``panoptic_metadata``."""
    categories = [{"id": i, "name": n, "isthing": 1} for i, n in COCO_THING_CATEGORIES]
    categories += [{"id": i, "name": n, "isthing": 0} for i, n in COCO_STUFF_CATEGORIES]
    return panoptic_metadata(categories)


def ade20k_semantic_metadata() -> dict[str, Any]:
    """Metadata of ADE20K-150 semantic segmentation (labels 0..149, 255 ignored)."""
    return {
        "stuff_classes": list(ADE20K_150_CLASSES),
        "stuff_colors": palette(len(ADE20K_150_CLASSES)),
        "stuff_dataset_id_to_contiguous_id": {i: i for i in range(len(ADE20K_150_CLASSES))},
        "ignore_label": 255,
    }


def cityscapes_semantic_metadata() -> dict[str, Any]:
    """Metadata of Cityscapes semantic segmentation on train ids (0..18, 255 ignored)."""
    return {
        "stuff_classes": list(CITYSCAPES_CLASSES),
        "stuff_colors": palette(len(CITYSCAPES_CLASSES)),
        "stuff_dataset_id_to_contiguous_id": {i: i for i in range(len(CITYSCAPES_CLASSES))},
        "ignore_label": 255,
    }
