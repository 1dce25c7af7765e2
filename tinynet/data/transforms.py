"""Transforms of whole NCHW float batches, in NumPy.

Each transform is a small class called as ``transform(batch, rng=None) -> batch``:

    batch  a float (N, C, H, W) ndarray; it is never modified in place
    rng    an ``np.random.Generator`` for the random ones (the DataLoader passes each batch its
           own, derived from the loader's seed); None draws from tinynet's default generator.
           The deterministic transforms accept it and ignore it.

Random transforms draw per image and stay vectorised: RandomCrop gathers every image's window
with one fancy-index, RandomHorizontalFlip reverses the chosen images in one assignment.

The functions below the classes (``resize``, ``crop``, ``center_crop``, ``hflip``) are the
same operations without the class wrapper; the multi-crop evaluation helpers build on them.
"""

from __future__ import annotations

import numbers

import numpy as np

from tinynet.ops._args import pair
from tinynet.rng import default_generator


# ------------------------------------------------------------------ functional
def check_batch(batch, op: str) -> np.ndarray:
    """``batch`` as an ndarray, or an error naming ``op`` unless it is a 4-D float array."""
    batch = np.asarray(getattr(batch, "data", batch))
    if batch.ndim != 4:
        raise ValueError(f"{op}: batch must be 4-D (N, C, H, W); got shape {batch.shape}")
    if batch.dtype.kind != "f":
        raise TypeError(f"{op}: batch must be a float array; got dtype {batch.dtype}")
    return batch


def resized_shape(height: int, width: int, size) -> tuple[int, int]:
    """The (height, width) that ``Resize(size)`` gives an image of ``height`` x ``width``.

    size (h, w): exactly that. size int: the shorter side becomes ``size`` and the longer one
    ``int(size * longer / shorter)`` (truncated, as torchvision computes it), keeping the
    aspect ratio.
    """
    if isinstance(size, numbers.Integral):
        side = pair(size, "size", "resize", 1)[0]
        if height <= width:
            return side, int(side * width / height)
        return int(side * height / width), side
    return pair(size, "size", "resize", 1)


def _source_index(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each output position: the two input positions it blends and the weight of the second,
    with half-pixel centres (align_corners=False): source = (i + 0.5) * in/out - 0.5, clamped
    at 0 below; the upper neighbour is clamped at the last pixel."""
    scale = in_size / out_size
    source = np.maximum((np.arange(out_size) + 0.5) * scale - 0.5, 0.0)
    lower = np.minimum(source.astype(np.int64), in_size - 1)
    upper = np.minimum(lower + 1, in_size - 1)
    return lower, upper, source - lower


def resize(batch: np.ndarray, size) -> np.ndarray:
    """Bilinear resize of an (N, C, H, W) batch to ``resized_shape(H, W, size)``.

    The convention is ``torch.nn.functional.interpolate(mode="bilinear",
    align_corners=False, antialias=False)`` (what torchvision's Resize does to tensors with
    antialias=False): pixel centres at half-integers, no smoothing when shrinking. Upsampling
    is also what PIL's BILINEAR computes; when shrinking, PIL averages over a wider window
    (antialiasing) and this does not. Separable: rows, then columns, each a gather of the two
    neighbours and one blend.
    """
    batch = check_batch(batch, "resize")
    height, width = batch.shape[2:]
    out_h, out_w = resized_shape(height, width, size)
    dtype = batch.dtype
    if (out_h, out_w) != (height, width):
        top, bottom, fy = _source_index(height, out_h)
        fy = fy.astype(dtype)[:, None]
        rows = batch[:, :, top, :]
        batch = rows + (batch[:, :, bottom, :] - rows) * fy
        left, right, fx = _source_index(width, out_w)
        columns = batch[..., left]
        batch = columns + (batch[..., right] - columns) * fx.astype(dtype)
    return np.ascontiguousarray(batch, dtype=dtype)


def crop(batch: np.ndarray, top: int, left: int, height: int, width: int) -> np.ndarray:
    """The window ``[top : top + height, left : left + width]`` of every image (a view)."""
    batch = check_batch(batch, "crop")
    full_h, full_w = batch.shape[2:]
    if not (0 <= top and top + height <= full_h and 0 <= left and left + width <= full_w):
        raise ValueError(
            f"crop: the window top={top}, left={left}, {height}x{width} does not fit in a "
            f"{full_h}x{full_w} image"
        )
    return batch[:, :, top : top + height, left : left + width]


def center_offsets(height: int, width: int, crop_h: int, crop_w: int) -> tuple[int, int]:
    """(top, left) of a centred crop, rounded as torchvision rounds it:
    ``int(round((H - h) / 2))``, with Python's round-half-to-even."""
    return int(round((height - crop_h) / 2.0)), int(round((width - crop_w) / 2.0))


def check_crop(batch, size, op: str) -> tuple[np.ndarray, int, int]:
    """(batch, crop height, crop width), or an error naming ``op`` unless ``size`` (int or
    (h, w)) fits in the batch's images."""
    batch = check_batch(batch, op)
    crop_h, crop_w = pair(size, "size", op, 1)
    height, width = batch.shape[2:]
    if crop_h > height or crop_w > width:
        raise ValueError(f"{op}: size {crop_h}x{crop_w} is larger than the {height}x{width} images")
    return batch, crop_h, crop_w


def center_crop(batch: np.ndarray, size) -> np.ndarray:
    """The centred ``size`` (int or (h, w)) window of every image; larger than the image is an
    error (torchvision would pad)."""
    batch, crop_h, crop_w = check_crop(batch, size, "center_crop")
    top, left = center_offsets(*batch.shape[2:], crop_h, crop_w)
    return batch[:, :, top : top + crop_h, left : left + crop_w]


def hflip(batch: np.ndarray) -> np.ndarray:
    """Every image mirrored left to right (a view)."""
    return check_batch(batch, "hflip")[..., ::-1]


# --------------------------------------------------------------------- classes
class Compose:
    """Apply ``transforms`` in order, passing each the same generator."""

    def __init__(self, transforms):
        transforms = list(transforms)
        for position, transform in enumerate(transforms):
            if not callable(transform):
                raise TypeError(
                    f"Compose: transforms[{position}] must be callable as "
                    f"transform(batch, rng); got {type(transform).__name__}"
                )
        self.transforms = transforms

    def __call__(self, batch: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        rng = rng if rng is not None else default_generator()
        for transform in self.transforms:
            batch = transform(batch, rng)
        return batch

    def __repr__(self) -> str:
        inner = "".join(f"\n    {t!r}," for t in self.transforms)
        return f"Compose([{inner}\n])"


class Normalize:
    """``(batch - mean) / std`` per channel; mean and std are numbers or one value a channel.

    ``inverse(batch)`` undoes it (``batch * std + mean``), e.g. to show normalised images.
    """

    def __init__(self, mean, std):
        self.mean = np.atleast_1d(np.asarray(mean, dtype=np.float64))
        self.std = np.atleast_1d(np.asarray(std, dtype=np.float64))
        for name, value in (("mean", self.mean), ("std", self.std)):
            if value.ndim != 1 or not np.all(np.isfinite(value)):
                raise ValueError(f"Normalize: {name} must be finite numbers; got {value!r}")
        if np.any(self.std <= 0):
            raise ValueError(f"Normalize: std must be > 0; got {self.std.tolist()}")

    def _per_channel(self, batch: np.ndarray, op: str) -> tuple[np.ndarray, np.ndarray]:
        channels = batch.shape[1]
        values = []
        for name, value in (("mean", self.mean), ("std", self.std)):
            if len(value) not in (1, channels):
                raise ValueError(
                    f"{op}: {name} has {len(value)} values but the batch has {channels} "
                    f"channels; give one value or one a channel"
                )
            values.append(value.astype(batch.dtype)[:, None, None])
        return values[0], values[1]

    def __call__(self, batch: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        batch = check_batch(batch, "Normalize")
        mean, std = self._per_channel(batch, "Normalize")
        return (batch - mean) / std

    def inverse(self, batch: np.ndarray) -> np.ndarray:
        """Undo the normalisation: ``batch * std + mean``."""
        batch = check_batch(batch, "Normalize.inverse")
        mean, std = self._per_channel(batch, "Normalize.inverse")
        return batch * std + mean

    def __repr__(self) -> str:
        return f"Normalize(mean={self.mean.tolist()}, std={self.std.tolist()})"


class RandomCrop:
    """A ``size`` (int or (h, w)) window at a random place in each image, after padding every
    side with ``padding`` pixels of ``fill`` (torchvision's RandomCrop with constant padding).

    Each image gets its own offsets, drawn uniformly over every window that fits; the windows
    are gathered with one fancy-index into a sliding-window view, no loop over images.
    """

    def __init__(self, size, padding: int = 0, fill: float = 0.0):
        self.size = pair(size, "size", "RandomCrop", 1)
        if not isinstance(padding, numbers.Integral) or padding < 0:
            raise ValueError(f"RandomCrop: padding must be an int >= 0; got {padding!r}")
        self.padding = int(padding)
        self.fill = float(fill)

    def offsets(self, batch_shape, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Each image's (top, left) in the padded image: two int64 arrays of length N."""
        n, _, height, width = batch_shape
        crop_h, crop_w = self.size
        room_h = height + 2 * self.padding - crop_h
        room_w = width + 2 * self.padding - crop_w
        if room_h < 0 or room_w < 0:
            raise ValueError(
                f"RandomCrop: size {crop_h}x{crop_w} is larger than the {height}x{width} images "
                f"padded by {self.padding}"
            )
        return rng.integers(0, room_h + 1, size=n), rng.integers(0, room_w + 1, size=n)

    def __call__(self, batch: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        batch = check_batch(batch, "RandomCrop")
        rng = rng if rng is not None else default_generator()
        top, left = self.offsets(batch.shape, rng)
        p = self.padding
        if p:
            batch = np.pad(batch, ((0, 0), (0, 0), (p, p), (p, p)), constant_values=self.fill)
        windows = np.lib.stride_tricks.sliding_window_view(batch, self.size, axis=(2, 3))
        # windows[n, c, y, x] is the window at (y, x): (N, C, rooms_h, rooms_w, h, w). The three
        # index arrays broadcast to N and, split by the channel slice, lead: (N, C, h, w).
        return windows[np.arange(len(batch)), :, top, left]

    def __repr__(self) -> str:
        return f"RandomCrop(size={self.size}, padding={self.padding}, fill={self.fill})"


class RandomHorizontalFlip:
    """Mirror each image left to right with probability ``p``, independently."""

    def __init__(self, p: float = 0.5):
        if not isinstance(p, numbers.Real) or not 0.0 <= p <= 1.0:
            raise ValueError(f"RandomHorizontalFlip: p must be a number in [0, 1]; got {p!r}")
        self.p = float(p)

    def __call__(self, batch: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        batch = check_batch(batch, "RandomHorizontalFlip")
        rng = rng if rng is not None else default_generator()
        flip = rng.random(len(batch)) < self.p
        out = batch.copy()
        out[flip] = batch[flip][..., ::-1]
        return out

    def __repr__(self) -> str:
        return f"RandomHorizontalFlip(p={self.p})"


class Resize:
    """Bilinear resize (see ``resize``): size (h, w) exactly, or an int for the shorter side."""

    def __init__(self, size):
        if isinstance(size, numbers.Integral):
            pair(size, "size", "Resize", 1)
        else:
            size = pair(size, "size", "Resize", 1)
        self.size = size

    def __call__(self, batch: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        return resize(batch, self.size)

    def __repr__(self) -> str:
        return f"Resize(size={self.size})"


class CenterCrop:
    """The centred ``size`` (int or (h, w)) window of every image (see ``center_crop``)."""

    def __init__(self, size):
        self.size = pair(size, "size", "CenterCrop", 1)

    def __call__(self, batch: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        return center_crop(batch, self.size)

    def __repr__(self) -> str:
        return f"CenterCrop(size={self.size})"
