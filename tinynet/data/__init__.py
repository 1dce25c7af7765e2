"""tinynet.data: datasets, a seeded resumable DataLoader, and batch transforms in NumPy.

    from tinynet.data import DataLoader, load_dataset, transforms as T

    train, test, classes = load_dataset("digits")            # no network, no files
    augment = T.Compose([T.RandomCrop(32, padding=2), T.RandomHorizontalFlip()])
    loader = DataLoader(train, batch_size=64, shuffle=True, seed=0, transform=augment)
    for images, labels in loader:                           # float32 NCHW, int64
        ...
    checkpoint["loader"] = loader.state_dict()              # resume with load_state_dict

Modules: dataset (Dataset, TensorDataset, DataSplits), loader (DataLoader), transforms,
multicrop (ten_crop, paper_crops, average_softmax), datasets (digits, mnist, fashion_mnist,
cifar10, load_dataset), folder (image_folder), formats (IDX and CIFAR readers), download; the
streaming path for folders of photographs: image_files (ImageFiles), augment (the paper's
per-image augmentation), streaming (StreamingLoader), workers (the worker processes),
image_cache (--cache).
"""

from tinynet.data import transforms
from tinynet.data.dataset import Dataset, DataSplits, TensorDataset, seeded_split
from tinynet.data.datasets import (
    cifar10,
    default_data_dir,
    digits,
    fashion_mnist,
    load_dataset,
    mnist,
)
from tinynet.data.download import DownloadError
from tinynet.data.folder import image_folder, read_image
from tinynet.data.formats import DatasetError
from tinynet.data.image_files import ImageFiles, image_files
from tinynet.data.loader import DataLoader
from tinynet.data.multicrop import average_softmax, five_crop, paper_crops, ten_crop
from tinynet.data.streaming import StreamingLoader
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
    "DatasetError",
    "DownloadError",
    "ImageFiles",
    "Normalize",
    "RandomCrop",
    "RandomHorizontalFlip",
    "Resize",
    "StreamingLoader",
    "TensorDataset",
    "average_softmax",
    "cifar10",
    "default_data_dir",
    "digits",
    "fashion_mnist",
    "five_crop",
    "image_files",
    "image_folder",
    "read_image",
    "load_dataset",
    "mnist",
    "paper_crops",
    "seeded_split",
    "ten_crop",
    "transforms",
]
