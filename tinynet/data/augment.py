"""Per-image augmentation of decoded images (PIL images), as the streaming loader's workers apply
it: each image gets its own generator, so the result does not depend on which worker made it.

Three recipes (``tinynet train --augment``), each giving a uint8 (C, size, size) array:

    paper      GoogLeNet's (Szegedy et al., 2014, section 6): a random-resized crop of the full
               decoded image (``random_resized_crop_box``), resized to size x size with an
               interpolation drawn uniformly from ``INTERPOLATIONS``, mirrored with probability
               1/2, then the photometric distortions of ``PHOTOMETRIC`` in a random order
               (``color_jitter``)
    crop-flip  the in-memory path's: the shorter side scaled to ``size`` and the centred square
               cut, then a random ``size`` window of it padded by ``max(1, size // 8)`` black
               pixels, mirrored with probability 1/2
    crop       the same without mirroring (images whose mirror image is another thing: digits,
               letters; what the in-memory digits get)
    none       evaluation's: the shorter side scaled to ``size``, the centred square

Each step is the operation torchvision's transforms v1 define for PIL images, computed the same
way (Pillow's ``crop``/``resize``, ``ImageEnhance`` for brightness, contrast and saturation, the
hue shift in HSV), so for the same crop box and factors the pixels are torchvision's
(tests/test_augment.py compares them). The random draws are NumPy's, from the image's generator.
"""

from __future__ import annotations

import math

import numpy as np

AUGMENTATIONS = ("paper", "crop-flip", "crop", "none")
AREA, ASPECT = (0.08, 1.0), (3 / 4, 4 / 3)  # the paper's crop: 8%-100% of the area
# The paper's "photometric distortions" follow Howard (2013), without numbers; these are the
# ranges torchvision's ImageNet recipes give ColorJitter: factors in [1 - 0.4, 1 + 0.4], hue
# shift in [-0.1, 0.1] of the hue circle.
PHOTOMETRIC = {"brightness": 0.4, "contrast": 0.4, "saturation": 0.4, "hue": 0.1}
# The paper's "bilinear, area, nearest neighbor and cubic, with equal probability", as Pillow's
# filters (BOX is area averaging).
INTERPOLATIONS = ("BILINEAR", "BOX", "NEAREST", "BICUBIC")


def random_resized_crop_box(rng, height: int, width: int, area=AREA, aspect=ASPECT):
    """(top, left, h, w) of a random crop of a ``height`` x ``width`` image, by torchvision's
    ``RandomResizedCrop.get_params`` rule: up to 10 tries of an area fraction uniform in
    ``area`` and an aspect ratio (w / h) log-uniform in ``aspect``, ``w = round(sqrt(A * r))``,
    ``h = round(sqrt(A / r))``, kept if it fits, placed uniformly; after 10 misses, the largest
    centred crop whose aspect ratio is clamped into ``aspect`` (the whole image if it is within)."""
    full = height * width
    log_low, log_high = math.log(aspect[0]), math.log(aspect[1])
    for _ in range(10):
        target = full * rng.uniform(area[0], area[1])
        ratio = math.exp(rng.uniform(log_low, log_high))
        w = int(round(math.sqrt(target * ratio)))
        h = int(round(math.sqrt(target / ratio)))
        if 0 < w <= width and 0 < h <= height:
            return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
    in_ratio = width / height
    if in_ratio < min(aspect):
        w, h = width, int(round(width / min(aspect)))
    elif in_ratio > max(aspect):
        h, w = height, int(round(height * max(aspect)))
    else:
        h, w = height, width
    return (height - h) // 2, (width - w) // 2, h, w


def resized_crop(image, box, size: int, interpolation: str):
    """The ``box`` (top, left, h, w) of a PIL image resized to ``size`` x ``size`` with Pillow's
    ``interpolation`` filter (torchvision's ``F.resized_crop`` on a PIL image)."""
    from PIL import Image

    top, left, h, w = box
    window = image.crop((left, top, left + w, top + h))
    return window.resize((size, size), getattr(Image.Resampling, interpolation))


def adjust_brightness(image, factor: float):
    """``factor * x``, clipped to [0, 255]: a blend with black (``ImageEnhance.Brightness``)."""
    from PIL import ImageEnhance

    return ImageEnhance.Brightness(image).enhance(factor)


def adjust_contrast(image, factor: float):
    """``factor * x + (1 - factor) * m``, m the mean of the image's grayscale (ITU-R 601-2
    luma, rounded), clipped: a blend with a flat gray (``ImageEnhance.Contrast``)."""
    from PIL import ImageEnhance

    return ImageEnhance.Contrast(image).enhance(factor)


def adjust_saturation(image, factor: float):
    """``factor * x + (1 - factor) * gray(x)`` per pixel, gray the ITU-R 601-2 luma, clipped: a
    blend with the image's grayscale (``ImageEnhance.Color``)."""
    from PIL import ImageEnhance

    return ImageEnhance.Color(image).enhance(factor)


def adjust_hue(image, shift: float):
    """The hue turned by ``shift`` of a full circle (in [-0.5, 0.5]): in Pillow's 8-bit HSV,
    ``H + int(shift * 255)`` modulo 256, S and V kept; a grayscale image is returned as it is
    (torchvision's ``adjust_hue`` for PIL images)."""
    from PIL import Image

    if image.mode == "L":
        return image
    hue, saturation, value = image.convert("HSV").split()
    turned = np.asarray(hue, dtype=np.uint8) + np.array(int(shift * 255)).astype(np.uint8)
    hue = Image.fromarray(turned.astype(np.uint8), "L")
    return Image.merge("HSV", (hue, saturation, value)).convert(image.mode)


ADJUSTMENTS = {
    "brightness": adjust_brightness,
    "contrast": adjust_contrast,
    "saturation": adjust_saturation,
    "hue": adjust_hue,
}


def jitter_factors(rng, strength=PHOTOMETRIC) -> list[tuple[str, float]]:
    """The photometric distortions of one image, in the order they apply (a random permutation,
    as torchvision's ColorJitter draws it): factors uniform in [1 - s, 1 + s], the hue shift
    uniform in [-s, s]."""
    order = rng.permutation(len(ADJUSTMENTS))
    names = list(ADJUSTMENTS)
    factors = {
        name: rng.uniform(-s, s) if name == "hue" else rng.uniform(max(0.0, 1 - s), 1 + s)
        for name, s in strength.items()
    }
    return [(names[k], float(factors[names[k]])) for k in order]


def color_jitter(image, distortions):
    """``image`` with each (name, factor) of ``distortions`` applied in turn."""
    for name, factor in distortions:
        image = ADJUSTMENTS[name](image, factor)
    return image


def paper(image, size: int, rng):
    """GoogLeNet's training augmentation of one PIL image (the module docstring's ``paper``)."""
    from PIL import Image

    box = random_resized_crop_box(rng, image.height, image.width)
    interpolation = INTERPOLATIONS[int(rng.integers(len(INTERPOLATIONS)))]
    out = resized_crop(image, box, size, interpolation)
    if rng.random() < 0.5:
        out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return channels_first(color_jitter(out, jitter_factors(rng)))


def crop_flip(square: np.ndarray, rng, mirror: bool = True) -> np.ndarray:
    """The in-memory path's augmentation of one (C, S, S) uint8 image: a random S x S window of
    it padded by ``max(1, S // 8)`` zeros on each side, mirrored with probability 1/2 (if
    ``mirror``; the coin is drawn either way)."""
    side = square.shape[1]
    pad = max(1, side // 8)
    top, left = (int(v) for v in rng.integers(0, 2 * pad + 1, size=2))
    padded = np.pad(square, ((0, 0), (pad, pad), (pad, pad)))
    out = padded[:, top : top + side, left : left + side]
    return out[:, :, ::-1] if rng.random() < 0.5 and mirror else out


def from_square(square: np.ndarray, augment: str, rng) -> np.ndarray:
    """The ``crop-flip``, ``crop`` or ``none`` recipe applied to an image's centred square."""
    if augment == "none":
        return square
    return crop_flip(square, rng, mirror=augment == "crop-flip")


def channels_first(image) -> np.ndarray:
    """A PIL image as uint8 (C, H, W)."""
    pixels = np.asarray(image, dtype=np.uint8)
    return pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)
