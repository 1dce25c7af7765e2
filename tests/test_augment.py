"""The paper's augmentation (tinynet.data.augment) against torchvision's transforms v1 on PIL
images: the same crop box and factors give the same pixels, and the crop box follows
RandomResizedCrop's rule, fallback included."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tinynet.data import augment as A

from upstream import upstream_torchvision

Image = pytest.importorskip("PIL.Image", reason="the augmentation works on Pillow images")


def photo(height=37, width=53, seed=0, mode="RGB"):
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    pixels[:, : width // 2, 0] //= 3  # some structure: the halves differ in colour
    image = Image.fromarray(pixels)
    return image.convert(mode)


@pytest.fixture(scope="module")
def F():
    """torchvision's transforms v1 functional API (the oracle; the test skips without it)."""
    upstream_torchvision()
    from torchvision.transforms import functional

    return functional


def same(ours, theirs):
    np.testing.assert_array_equal(np.asarray(ours), np.asarray(theirs))


@pytest.mark.parametrize("interpolation", A.INTERPOLATIONS)
@pytest.mark.parametrize("box", [(3, 5, 20, 30), (0, 0, 37, 53), (10, 40, 5, 13)])
def test_resized_crop_is_torchvisions(F, box, interpolation):
    from torchvision.transforms import InterpolationMode

    image = photo()
    mode = {"BILINEAR": "BILINEAR", "BOX": "BOX", "NEAREST": "NEAREST", "BICUBIC": "BICUBIC"}
    theirs = F.resized_crop(image, *box, [24, 24], getattr(InterpolationMode, mode[interpolation]))
    same(A.resized_crop(image, box, 24, interpolation), theirs)


@pytest.mark.parametrize("mode", ["RGB", "L"])
@pytest.mark.parametrize(
    "name, factor",
    [("brightness", 0.6), ("brightness", 1.37), ("contrast", 0.61), ("contrast", 1.4),
     ("saturation", 0.0), ("saturation", 1.33), ("hue", -0.1), ("hue", 0.073), ("hue", 0.5)],
)  # fmt: skip
def test_each_photometric_distortion_is_torchvisions(F, name, factor, mode):
    image = photo(mode=mode)
    theirs = getattr(F, f"adjust_{name}")(image, factor)
    same(A.ADJUSTMENTS[name](image, factor), theirs)


def test_a_chain_of_distortions_is_torchvisions_in_that_order(F):
    image = photo(seed=3)
    distortions = A.jitter_factors(np.random.default_rng(4))
    assert sorted(n for n, _ in distortions) == sorted(A.PHOTOMETRIC)
    theirs = image
    for name, factor in distortions:
        theirs = getattr(F, f"adjust_{name}")(theirs, factor)
    same(A.color_jitter(image, distortions), theirs)


def torchvision_fallback(height, width, ratio=A.ASPECT):
    """torchvision's RandomResizedCrop.get_params when no try fits (scale > 1 never does)."""
    from torchvision.transforms import RandomResizedCrop

    return RandomResizedCrop.get_params(Image.new("L", (width, height)), [2.0, 3.0], list(ratio))


@pytest.mark.parametrize("height, width", [(30, 30), (10, 100), (100, 10), (37, 53), (1, 7)])
def test_the_crop_falls_back_as_torchvisions_does(height, width):
    upstream_torchvision()
    rng = np.random.default_rng(0)
    ours = A.random_resized_crop_box(rng, height, width, area=(2.0, 3.0))
    assert ours == tuple(torchvision_fallback(height, width))


@given(
    height=st.integers(1, 400),
    width=st.integers(1, 400),
    seed=st.integers(0, 2**32 - 1),
)
def test_every_crop_fits_and_keeps_the_papers_area_and_aspect(height, width, seed):
    top, left, h, w = A.random_resized_crop_box(np.random.default_rng(seed), height, width)
    assert 0 <= top and top + h <= height and 0 <= left and left + w <= width and h > 0 < w
    # Drawn or fallen back on, the aspect ratio is within 3/4..4/3 up to the rounding of w and h
    # to whole pixels (the fallback clamps the image's own ratio into that range).
    slack = 0.5 / h + 0.5 / w
    assert math.log(3 / 4) - slack <= math.log(w / h) <= math.log(4 / 3) + slack, (h, w)
    if 3 / 4 <= width / height <= 4 / 3:  # a drawn crop, or the whole image
        area = h * w / (height * width)
        assert 0.08 - 2 * slack <= area <= 1.0


def test_the_paper_recipe_is_seeded_and_covers_its_choices():
    image = photo(120, 160, seed=1)
    first = A.paper(image, 32, np.random.default_rng(9))
    np.testing.assert_array_equal(first, A.paper(image, 32, np.random.default_rng(9)))
    assert first.shape == (3, 32, 32) and first.dtype == np.uint8
    outs = {A.paper(image, 32, np.random.default_rng(s)).tobytes() for s in range(20)}
    assert len(outs) == 20
    gray = A.paper(image.convert("L"), 32, np.random.default_rng(9))
    assert gray.shape == (1, 32, 32)


def test_crop_flip_pads_with_black_and_mirrors():
    square = np.arange(2 * 8 * 8, dtype=np.uint8).reshape(2, 8, 8) + 1
    seen = set()
    for seed in range(200):
        out = A.crop_flip(square, np.random.default_rng(seed))
        assert out.shape == square.shape
        rows = [r for r in range(-1, 2)]
        found = False
        for top in rows:
            for left in rows:
                padded = np.pad(square, ((0, 0), (1, 1), (1, 1)))
                window = padded[:, 1 + top : 9 + top, 1 + left : 9 + left]
                for flipped in (False, True):
                    if np.array_equal(out, window[:, :, ::-1] if flipped else window):
                        found = True
                        seen.add((top, left, flipped))
        assert found
    assert len(seen) == 18  # every offset of the 1-pixel padding, mirrored or not


def test_crop_is_crop_flip_without_the_mirror():
    square = np.arange(3 * 8 * 8, dtype=np.uint8).reshape(3, 8, 8)
    for seed in range(40):
        cropped = A.from_square(square, "crop", np.random.default_rng(seed))
        flipped = A.from_square(square, "crop-flip", np.random.default_rng(seed))
        assert np.array_equal(cropped, flipped) or np.array_equal(cropped, flipped[:, :, ::-1])
        padded = np.pad(square, ((0, 0), (1, 1), (1, 1)))
        assert any(
            np.array_equal(cropped, padded[:, top : top + 8, left : left + 8])
            for top in range(3)
            for left in range(3)
        )
    assert A.from_square(square, "none", None) is square
