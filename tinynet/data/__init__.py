"""tinynet.data: batch transforms in NumPy and multi-crop evaluation."""

from tinynet.data import transforms
from tinynet.data.multicrop import average_softmax, five_crop, paper_crops, ten_crop
from tinynet.data.transforms import (
    CenterCrop,
    Compose,
    Normalize,
    RandomCrop,
    RandomHorizontalFlip,
    Resize,
)

__all__ = [
    "CenterCrop",
    "Compose",
    "Normalize",
    "RandomCrop",
    "RandomHorizontalFlip",
    "Resize",
    "average_softmax",
    "five_crop",
    "paper_crops",
    "ten_crop",
    "transforms",
]
