"""image_folder: a directory of class sub-folders of PNG/JPEG images, read with Pillow.

    root/cat/001.jpg, root/cat/002.png, root/dog/xyz.jpeg, ...

Classes are the sub-folder names, sorted; label k is the k-th. Files whose names end in .png,
.jpg or .jpeg (any case) are read; hidden files, other files and sub-folders are skipped. If root
instead holds ``train`` and ``test`` (or ``val``) folders, each laid out as above, those are the
splits.

Only PNG and JPEG are decoded, recognised by their content whatever the name: a TIFF, a BMP or
an EPS named .png is refused naming the format it is, and no other format's reader (Pillow's
EPS plugin, which runs Ghostscript, among them) ever opens the file. Only regular files are
read: a FIFO, a socket or a device named like an image (or a directory given to ``read_image``)
is refused, never waited on.

Every image is converted to RGB (3 channels) by default, or to grayscale with mode="L" (1
channel); one mode for all, so a folder mixing grayscale and colour images still stacks. A
16-bit grayscale PNG is scaled to 8 bits (v * 255 / 65535, rounded), not clipped. Then it is
resized with Pillow's bilinear filter, which smooths when shrinking (photographs are usually
much larger than the network's input): an int image_size scales the shorter side to it and
crops the centred square; a (height, width) pair resizes to exactly that. However extreme the
image's aspect ratio, only the crop is resampled, so memory after decoding follows the output's
size (see ``_sized``). Decoding is the one per-image loop; the pixels go straight into one
preallocated uint8 array.

Every class folder of the training split needs at least one image. An image Pillow cannot
decode, or one larger than Pillow's decompression-bomb limit (``Image.MAX_IMAGE_PIXELS``, whose
warning is taken as the refusal it announces), raises ``DatasetError`` naming the file.
"""

from __future__ import annotations

import math
import numbers
import os
import stat
import struct
import warnings
from pathlib import Path

import numpy as np

from tinynet.data.dataset import DataSplits, TensorDataset, seeded_split
from tinynet.data.formats import DatasetError, memory_named, to_unit_float
from tinynet.data.transforms import center_offsets, resized_shape

EXTENSIONS = (".png", ".jpg", ".jpeg")
FORMATS = ("PNG", "JPEG")  # what Pillow may decode, chosen by content, whatever the name
MODES = {"RGB": 3, "L": 1}
SIXTEEN_BIT_GRAY = ("I;16", "I;16B", "I;16L", "I;16N", "I")
EXACT_ASPECT = 16  # see _sized
_FILE_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)
INSTALL_HINT = "pip install 'tinynet[train]'"


def image_folder(
    root,
    image_size,
    mode: str = "RGB",
    test_fraction: float = 0.2,
    seed: int = 0,
) -> DataSplits:
    """The images under ``root`` as float32 (N, C, H, W) in [0, 1] with int64 labels.

    image_size:    int (shorter side, then the centred square) or (height, width)
    mode:          "RGB" (3 channels) or "L" (grayscale, 1 channel)
    test_fraction, seed: without train/test folders, all images are permuted by
                   ``np.random.default_rng(seed)`` and the last ``round(N * test_fraction)``
                   are the test set, as ``digits`` does
    """
    Image = _pillow("image_folder")
    if not Path(root).expanduser().is_dir():
        raise NotADirectoryError(f"image_folder: root {Path(root).expanduser()} is not a directory")
    if mode not in MODES:
        raise ValueError(f"image_folder: mode must be one of {sorted(MODES)}; got {mode!r}")
    size = _target_size(image_size)
    classes, train, test = list_image_folder(root)
    train = _read_split(*train, size, mode, Image)
    if test is not None:
        test = _read_split(*test, size, mode, Image)
        return DataSplits(TensorDataset(*train), TensorDataset(*test), classes)
    return seeded_split(*train, classes, seed, test_fraction, "image_folder")


def list_image_folder(root) -> tuple[tuple[str, ...], tuple, tuple | None]:
    """(classes, (root, files, labels) of the training split, the same of the test split or
    None without train/test folders): the listing ``image_folder`` reads, every rule of the
    module docstring checked, no image opened."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise NotADirectoryError(f"image_folder: root {root} is not a directory")
    test_dir = next((root / n for n in ("test", "val") if (root / n).is_dir()), None)
    if (root / "train").is_dir() and test_dir is not None:
        classes = _class_folders(root / "train")
        train = (root / "train", *_list_split(root / "train", classes, every_class=True))
        test = (test_dir, *_list_split(test_dir, classes, every_class=False))
        return classes, train, test
    classes = _class_folders(root)
    return classes, (root, *_list_split(root, classes, every_class=True)), None


def read_image(path, image_size, mode: str = "RGB") -> np.ndarray:
    """One image file as float32 (C, H, W) in [0, 1], decoded and resized exactly as
    ``image_folder`` does (e.g. to classify it with a network trained on such folders)."""
    if mode not in MODES:
        raise ValueError(f"read_image: mode must be one of {sorted(MODES)}; got {mode!r}")
    pixels = _decode(Path(path), _target_size(image_size), mode, _pillow("read_image"))
    pixels = pixels.reshape(pixels.shape[0], pixels.shape[1], -1)
    return to_unit_float(pixels.transpose(2, 0, 1))


def _pillow(caller: str):
    try:
        from PIL import Image
    except ImportError as error:
        raise ImportError(
            f"{caller} reads images with Pillow, which is not installed: {INSTALL_HINT}"
        ) from error
    return Image


def _target_size(image_size):
    if isinstance(image_size, numbers.Integral) and not isinstance(image_size, bool):
        if image_size < 1:
            raise ValueError(f"image_folder: image_size must be >= 1; got {image_size}")
        return int(image_size)
    if (
        isinstance(image_size, (tuple, list))
        and len(image_size) == 2
        and all(isinstance(s, numbers.Integral) and s >= 1 for s in image_size)
    ):
        return tuple(int(s) for s in image_size)
    raise ValueError(
        f"image_folder: image_size must be an int or a (height, width) pair of ints >= 1; got "
        f"{image_size!r}"
    )


def _class_folders(root: Path) -> tuple[str, ...]:
    classes = tuple(sorted(p.name for p in root.iterdir() if p.is_dir() and p.name[0] != "."))
    if not classes:
        raise DatasetError(f"image_folder: {root} has no class sub-folders")
    return classes


def _list_split(root: Path, classes, every_class: bool) -> tuple[list[Path], np.ndarray]:
    """The image files of ``root``'s class folders and their int64 labels; ``every_class``:
    each must hold one (a training split does; a test split may lack a class, or hold an empty
    folder for it)."""
    files, labels = [], []
    for label, name in enumerate(classes):
        folder = root / name
        found = sorted(
            p
            for p in (folder.iterdir() if folder.is_dir() else ())
            if not p.is_dir() and p.name[0] != "." and p.suffix.lower() in EXTENSIONS
        )
        if every_class and not found:
            raise DatasetError(
                f"image_folder: class folder {folder} holds no {'/'.join(EXTENSIONS)} images; "
                f"every class needs at least one to train on"
            )
        files += found
        labels += [label] * len(found)
    if not files:
        raise DatasetError(
            f"image_folder: no {'/'.join(EXTENSIONS)} files in the class folders of {root}"
        )
    extra = sorted(
        p.name for p in root.iterdir() if p.is_dir() and p.name[0] != "." and p.name not in classes
    )
    if extra:
        raise DatasetError(
            f"image_folder: {root} has class folders {extra} that the training split lacks"
        )
    return files, np.asarray(labels, dtype=np.int64)


def _read_split(root: Path, files, labels, size, mode, Image) -> tuple[np.ndarray, np.ndarray]:
    """The images ``files`` of the split in ``root``, decoded as float32 (N, C, H, W)."""
    height, width = (size, size) if isinstance(size, int) else size
    with memory_named(root):
        pixels = np.empty((len(files), height, width, MODES[mode]), dtype=np.uint8)
        for i, path in enumerate(files):
            pixels[i] = _decode(path, size, mode, Image).reshape(height, width, -1)
        return to_unit_float(pixels.transpose(0, 3, 1, 2)), labels


def _decode(path: Path, size, mode, Image) -> np.ndarray:
    """One image, converted to ``mode`` and brought to ``size``, as uint8 (H, W[, C])."""
    return decoded(path, Image, lambda image: _sized(image, size, mode, Image))


def full_image(path, mode: str, Image):
    """The image in ``path`` at its full resolution, converted to ``mode``: a loaded PIL image
    (what the training augmentation of ``tinynet.data.augment`` crops from)."""
    return decoded(Path(path), Image, lambda image: _eight_bit(image, Image).convert(mode))


def decoded(path: Path, Image, read):
    """``read(image)`` of the PNG or JPEG in ``path``, opened as the module docstring says; any
    failure to decode is a ``DatasetError`` naming the file."""
    with _open_regular(path) as file:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)  # refuse, not warn
                with Image.open(file, formats=FORMATS) as image:
                    return read(image)
        except Image.UnidentifiedImageError as error:
            reason = _identify(file, Image)
            raise DatasetError(f"{path}: cannot decode this image ({reason})") from error
        except (
            OSError,
            ValueError,
            SyntaxError,
            EOFError,
            struct.error,
            MemoryError,
            Image.DecompressionBombError,
            Image.DecompressionBombWarning,
        ) as error:  # what Pillow raises on a broken, hostile or oversized file
            reason = str(error) or type(error).__name__
            raise DatasetError(f"{path}: cannot decode this image ({reason})") from error


def _open_regular(path: Path):
    """``path`` open for binary reading, or ``DatasetError`` unless it is a regular file: reading
    a FIFO waits for a writer forever, a device may never end. The path is checked before it
    is opened (opening a device can itself act, e.g. rewind a tape) and the open file again
    after (the path may have been replaced in between); O_NONBLOCK keeps a FIFO from blocking
    the open."""
    try:
        kind = os.stat(path).st_mode
        if stat.S_ISREG(kind):
            descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
            kind = os.fstat(descriptor).st_mode
            if stat.S_ISREG(kind):
                return os.fdopen(descriptor, "rb")
            os.close(descriptor)
    except OSError as error:
        raise DatasetError(f"{path}: cannot read this image ({error.strerror})") from error
    found = next((name for test, name in _FILE_KINDS if test(kind)), "not a regular file")
    raise DatasetError(f"{path}: is {found}, not an image file; give a regular PNG or JPEG file")


def _identify(file, Image) -> str:
    """Why ``Image.open(file, formats=FORMATS)`` found no image: the format whose header
    ``file`` starts with, by Pillow's header checks alone (no other format's reader ever
    opens the file, so an EPS never reaches Ghostscript)."""
    file.seek(0)
    prefix = file.read(16)  # what Image.open looks at
    if not prefix:
        return "an empty file"
    Image.init()  # registers every format's header check
    for name in Image.ID:
        accepts = Image.OPEN[name][1]
        try:
            claimed = accepts is not None and accepts(prefix)
        except (IndexError, TypeError, ValueError, struct.error):  # a prefix too short for it
            claimed = False
        if claimed:
            if name in FORMATS:
                return f"cannot identify image file: a {name} signature, then no valid header"
            return f"its content is {name}; only PNG and JPEG are read"
    return "cannot identify image file: neither PNG nor JPEG, nor any format Pillow knows"


def _sized(image, size, mode, Image) -> np.ndarray:
    """``image`` converted to ``mode`` and brought to ``size`` as the module docstring says,
    as uint8 (H, W[, C]).

    An int ``size`` scales the shorter side to it, then crops the centred square: exactly as
    torchvision's ``Resize(size)`` and ``CenterCrop(size)`` do to a PIL image, as long as the
    scaled image's longer side is at most ``EXACT_ASPECT`` times ``size`` (every photograph).
    Past that, scaling first would cost memory in proportion to the aspect ratio (a 1 x 500,000
    image's shorter side at 224 means 112 million pixels), so only the crop's box in source
    pixels is resampled, straight to the output (Pillow's ``resize(box=...)``): the same
    geometry, each pixel within one level (of 255) of the scaled-then-cropped one (Pillow takes
    the box in single precision, and the 8-bit rows of its first pass round differently).
    """
    if not isinstance(size, int):
        return _resampled(image, mode, (size[1], size[0]), None, Image)
    scaled_h, scaled_w = resized_shape(image.height, image.width, size)
    top, left = center_offsets(scaled_h, scaled_w, size, size)
    if max(scaled_h, scaled_w) <= EXACT_ASPECT * size:
        scaled = _resampled(image, mode, (scaled_w, scaled_h), None, Image)
        return scaled[top : top + size, left : left + size]
    y_scale, x_scale = image.height / scaled_h, image.width / scaled_w
    box = (left * x_scale, top * y_scale, (left + size) * x_scale, (top + size) * y_scale)
    return _resampled(image, mode, (size, size), box, Image)


def _scaled(image, side: int, mode, Image) -> np.ndarray:
    """``image`` converted to ``mode`` with its shorter side scaled to ``side`` and its aspect
    ratio kept (``resized_shape``), uint8 (H, W[, C]): a scale of the multi-crop evaluation."""
    height, width = resized_shape(image.height, image.width, side)
    return _resampled(image, mode, (width, height), None, Image)


def _resampled(image, mode, out_size, box, Image) -> np.ndarray:
    """``image`` (its ``box`` in source pixels; None: all of it) converted to ``mode`` and
    resized to ``out_size`` (width, height) with Pillow's bilinear filter, as uint8. With a box,
    only the pixels the filter reads around it are converted."""
    if box is not None:
        window = _filter_window(box, out_size, image.size)
        image = image.crop(window)
        box = (box[0] - window[0], box[1] - window[1], box[2] - window[0], box[3] - window[1])
    image = _eight_bit(image, Image).convert(mode)
    return np.asarray(image.resize(out_size, Image.Resampling.BILINEAR, box=box), np.uint8)


def _filter_window(box, out_size, image_size) -> tuple[int, int, int, int]:
    """The integer window of pixels that Pillow's bilinear filter reads to resample ``box`` to
    ``out_size``: the box widened on each side by the filter's reach (the span of one output
    pixel in source pixels, at least one) plus one pixel, kept within the image."""
    window = []
    for low, high, out, full in zip(box[:2], box[2:], out_size, image_size):
        reach = math.ceil(max((high - low) / out, 1.0)) + 1
        window.append((max(math.floor(low) - reach, 0), min(math.ceil(high) + reach, full)))
    (left, right), (top, bottom) = window
    return left, top, right, bottom


def _eight_bit(image, Image):
    """A 16-bit grayscale image (Pillow's mode I;16, or I before Pillow 10) scaled to 8 bits,
    ``round(v * 255 / 65535)``, where Pillow's ``convert`` would clip every value above 255 to
    white. Other modes pass as they are: Pillow already reads 16-bit RGB, RGBA and gray+alpha
    PNGs as 8 bits (the high byte of each value, within one level of the scaled value)."""
    if image.mode not in SIXTEEN_BIT_GRAY:
        return image
    scaled = (np.arange(65536, dtype=np.uint32) * 255 + 32767) // 65535
    return Image.fromarray(scaled.astype(np.uint8)[np.asarray(image)])
