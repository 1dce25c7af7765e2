"""tinynet.data: a seeded resumable DataLoader, and batch transforms in NumPy.

    from tinynet.data import DataLoader, TensorDataset, transforms as T

    augment = T.Compose([T.RandomCrop(32, padding=2), T.RandomHorizontalFlip()])
    loader = DataLoader(train, batch_size=64, shuffle=True, seed=0, transform=augment)
    for images, labels in loader:                           # float32 NCHW, int64
        ...
    checkpoint["loader"] = loader.state_dict()              # resume with load_state_dict
"""

from tinynet.data import transforms
from tinynet.data.dataset import Dataset, DataSplits, TensorDataset, seeded_split
from tinynet.data.loader import DataLoader
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
    "DataLoader",
    "DataSplits",
    "Dataset",
    "Normalize",
    "RandomCrop",
    "RandomHorizontalFlip",
    "Resize",
    "TensorDataset",
    "average_softmax",
    "five_crop",
    "paper_crops",
    "seeded_split",
    "ten_crop",
    "transforms",
]
