"""Class-name lists shared by the VOC, COCO and reference-file sources (index = label id), and the label vector."""

from __future__ import annotations

from typing import Iterable

import numpy as np

# PASCAL VOC's 20 classes in the standard (alphabetical) order, as the reference's target dictionary.
VOC_CLASSES: list[str] = [
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
]

# MS COCO's 80 object categories in ascending category-id order (ids 1..90 with 11 unused ids removed),
# which is the order the reference's label mapper produces.
COCO_CLASSES: list[str] = [
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard",
    "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
]

assert len(VOC_CLASSES) == 20 and len(COCO_CLASSES) == 80


def multi_hot(class_ids: Iterable[int], num_classes: int) -> np.ndarray:
    """uint8 [K] label vector with a 1 at every given class id (one-hot for a single id)."""
    labels = np.zeros(num_classes, dtype=np.uint8)
    labels[list(class_ids)] = 1
    return labels
