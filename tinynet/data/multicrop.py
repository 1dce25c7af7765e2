"""Multi-crop evaluation: many views of each test image, their softmax outputs averaged.

GoogLeNet's paper (Szegedy et al., 2014, section 7) resizes each test image to four scales
(shorter side 256, 288, 320, 352), takes the left, centre and right square of each (top,
centre and bottom for a portrait image), from each square the four corner crops and the centre
crop of 224 x 224 plus the square itself resized to 224, and the mirror image of each:
4 x 3 x 6 x 2 = 144 crops, whose softmax outputs it averages. ``paper_crops`` builds exactly
those; ``ten_crop`` is the common lighter scheme. Both work at any size, e.g. 28-pixel crops of
32-pixel images with scales (32, 36, 40, 44).

Usage: ``crops = ten_crop(images, 28)`` has shape (K, N, C, 28, 28); run the model on each
``crops[k]`` (or on ``crops.reshape(-1, C, 28, 28)``), stack the logits to (K, N, classes), and
``average_softmax(logits)`` gives (N, classes) probabilities.
"""

from __future__ import annotations

import numbers

import numpy as np

from tinynet.data.transforms import center_crop, check_batch, check_crop, crop, resize

PAPER_SCALES = (256, 288, 320, 352)


def five_crop(batch: np.ndarray, size) -> np.ndarray:
    """The four corner crops and the centre crop of ``size`` (int or (h, w)) of every image:
    shape (5, N, C, h, w), in the order top-left, top-right, bottom-left, bottom-right, centre
    (torchvision's five_crop order)."""
    batch, crop_h, crop_w = check_crop(batch, size, "five_crop")
    bottom, right = batch.shape[2] - crop_h, batch.shape[3] - crop_w
    corners = [(0, 0), (0, right), (bottom, 0), (bottom, right)]
    crops = [crop(batch, top, left, crop_h, crop_w) for top, left in corners]
    crops.append(center_crop(batch, (crop_h, crop_w)))
    return np.stack(crops)


def with_mirrors(crops: np.ndarray) -> np.ndarray:
    """``crops`` (K, N, C, h, w) followed by the mirror image of each: (2K, N, C, h, w), where
    entry K + k is entry k flipped left to right."""
    return np.concatenate([crops, crops[..., ::-1]])


def ten_crop(batch: np.ndarray, size) -> np.ndarray:
    """``five_crop`` and the mirror image of each of those five crops: (10, N, C, h, w).

    Entries 5..9 are entries 0..4 flipped left to right. (torchvision's ten_crop instead crops
    the flipped image, so its entry 5, the top-left of the mirror, is the mirror of our top-right
    crop: the same ten crops in another order.)
    """
    return with_mirrors(five_crop(batch, size))


def paper_crops(batch: np.ndarray, crop: int = 224, scales=PAPER_SCALES) -> np.ndarray:
    """The paper's 144 crops of every image: shape (len(scales) * 36, N, C, crop, crop).

    For each scale s (in order): resize so the shorter side is s (bilinear, see
    ``transforms.resize``); take the three s x s squares along the longer side (left, centre,
    right, or top, centre, bottom; a square image gives the same square three times); from
    each square take the ``five_crop`` of ``crop`` and the square resized to ``crop``. That is
    18 crops a scale, in the order (scale, square, [tl, tr, bl, br, centre, whole]); the
    mirror images of all of them follow, in the same order.

    Memory: the result holds 144 * N * C * crop**2 floats (87 MB per RGB image at crop 224);
    evaluate a few images at a time.
    """
    batch = check_batch(batch, "paper_crops")
    if not isinstance(crop, numbers.Integral) or isinstance(crop, bool) or crop < 1:
        raise ValueError(f"paper_crops: crop must be an int >= 1; got {crop!r}")
    scales = tuple(scales)
    if not scales or any(
        not isinstance(s, numbers.Integral) or isinstance(s, bool) or s < 1 for s in scales
    ):
        raise ValueError(f"paper_crops: scales must be ints >= 1; got {scales!r}")
    too_small = [s for s in scales if s < crop]
    if too_small:
        raise ValueError(
            f"paper_crops: crop={crop} is larger than the images scaled to a shorter side of "
            f"{too_small[0]}; every scale in {scales} must be >= crop"
        )
    crops = []
    for scale in scales:
        scaled = resize(batch, int(scale))
        for square in _three_squares(scaled):
            crops.append(five_crop(square, crop))
            crops.append(resize(square, (crop, crop))[None])
    return with_mirrors(np.concatenate(crops))


def _three_squares(batch: np.ndarray) -> list[np.ndarray]:
    """The first, centred and last side x side squares along the longer axis."""
    height, width = batch.shape[2:]
    side = min(height, width)
    centre = int(round((max(height, width) - side) / 2.0))
    starts = (0, centre, max(height, width) - side)
    if height <= width:
        return [crop(batch, 0, start, side, side) for start in starts]
    return [crop(batch, start, 0, side, side) for start in starts]


def average_softmax(logits_per_crop) -> np.ndarray:
    """The softmax over the last axis of (K, N, classes) logits, averaged over the K crops:
    (N, classes) probabilities (the paper averaged the crops' softmax outputs, not logits)."""
    logits = np.asarray(getattr(logits_per_crop, "data", logits_per_crop))
    if logits.ndim != 3:
        raise ValueError(
            f"average_softmax: logits_per_crop must be 3-D (crops, N, classes); got shape "
            f"{logits.shape}"
        )
    if logits.dtype.kind != "f":
        logits = logits.astype(np.float64)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return (exp / exp.sum(axis=-1, keepdims=True)).mean(axis=0)
