"""Batch transforms and multi-crop evaluation: shapes, crop offsets, flips, Normalize's
inverse, Resize against a hand computation and PyTorch, and crop positions checked by hand."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tinynet.data import transforms as T
from tinynet.data.multicrop import average_softmax, five_crop, paper_crops, ten_crop

from compare import assert_close, to_torch
from strategies import seeds, uniform

batch_shapes = st.tuples(st.integers(1, 4), st.integers(1, 3), st.integers(1, 9), st.integers(1, 9))


def positions(height, width, n=1, channels=1):
    """Images whose pixel (y, x) holds 100 * y + x (plus 10000 * channel)."""
    y, x = np.mgrid[:height, :width]
    image = (100 * y + x).astype(np.float32)
    channel = 10000 * np.arange(channels, dtype=np.float32)[:, None, None]
    return np.broadcast_to(image + channel, (n, channels, height, width)).copy()


# ----------------------------------------------------------------- RandomCrop
@given(batch_shapes, st.integers(0, 3), st.data(), seeds)
def test_random_crop_takes_each_image_window_at_its_own_offset(shape, padding, data, seed):
    n, c, h, w = shape
    size = (data.draw(st.integers(1, h + 2 * padding)), data.draw(st.integers(1, w + 2 * padding)))
    crop = T.RandomCrop(size, padding=padding, fill=-1.0)
    batch = uniform(seed, shape, dtype=np.float32)
    top, left = crop.offsets(shape, np.random.default_rng(seed))
    out = crop(batch, np.random.default_rng(seed))
    assert out.shape == (n, c, *size) and out.dtype == np.float32
    assert np.all((0 <= top) & (top <= h + 2 * padding - size[0]))
    assert np.all((0 <= left) & (left <= w + 2 * padding - size[1]))
    padded = np.pad(batch, ((0, 0), (0, 0), (padding,) * 2, (padding,) * 2), constant_values=-1)
    for i in range(n):  # the slow, obvious way
        expected = padded[i, :, top[i] : top[i] + size[0], left[i] : left[i] + size[1]]
        np.testing.assert_array_equal(out[i], expected)


def test_random_crop_offsets_vary_between_images():
    crop = T.RandomCrop(4, padding=4)
    top, left = crop.offsets((64, 1, 8, 8), np.random.default_rng(0))
    assert len(set(top.tolist())) > 3 and len(set(left.tolist())) > 3


def test_random_crop_errors():
    with pytest.raises(ValueError, match=r"size 9x9 is larger than the 4x4 images padded by 2"):
        T.RandomCrop(9, padding=2)(np.zeros((1, 1, 4, 4), np.float32))
    with pytest.raises(ValueError, match="padding must be an int >= 0"):
        T.RandomCrop(3, padding=-1)
    with pytest.raises(ValueError, match="batch must be 4-D"):
        T.RandomCrop(3)(np.zeros((4, 4), np.float32))
    with pytest.raises(TypeError, match="must be a float array"):
        T.RandomCrop(3)(np.zeros((1, 1, 4, 4), np.uint8))


# ----------------------------------------------------------------- flips
@given(batch_shapes, seeds)
def test_flipping_twice_is_the_identity(shape, seed):
    batch = uniform(seed, shape, dtype=np.float32)
    np.testing.assert_array_equal(T.hflip(T.hflip(batch)), batch)
    flip = T.RandomHorizontalFlip(0.5)
    once = flip(batch, np.random.default_rng(seed))
    np.testing.assert_array_equal(flip(once, np.random.default_rng(seed)), batch)
    for image, result in zip(batch, once):  # each image either kept or mirrored
        assert np.array_equal(result, image) or np.array_equal(result, image[..., ::-1])
    np.testing.assert_array_equal(T.RandomHorizontalFlip(1.0)(batch), batch[..., ::-1])
    np.testing.assert_array_equal(T.RandomHorizontalFlip(0.0)(batch), batch)


def test_random_flip_leaves_the_input_alone_and_flips_about_p():
    batch = positions(3, 4, n=2000)
    out = T.RandomHorizontalFlip(0.3)(batch, np.random.default_rng(1))
    assert np.array_equal(batch, positions(3, 4, n=2000))
    flipped = out[:, 0, 0, 0] == 3
    assert 0.25 < flipped.mean() < 0.35
    with pytest.raises(ValueError, match=r"p must be a number in \[0, 1\]; got 2"):
        T.RandomHorizontalFlip(2)


# ----------------------------------------------------------------- Normalize
@given(batch_shapes, seeds)
def test_normalize_inverse_restores_the_batch(shape, seed):
    rng = np.random.default_rng(seed)
    mean, std = rng.uniform(-1, 1, shape[1]), rng.uniform(0.1, 2, shape[1])
    batch = uniform(seed, shape, dtype=np.float32)
    normalize = T.Normalize(mean, std)
    out = normalize(batch)
    assert out.dtype == np.float32
    expected = (batch - mean[:, None, None]) / std[:, None, None]
    assert_close(out, expected.astype(np.float32))
    assert_close(normalize.inverse(out), batch)


def test_normalize_accepts_one_value_for_all_channels_and_checks_counts():
    batch = np.ones((2, 3, 2, 2), np.float32)
    np.testing.assert_allclose(T.Normalize(0.5, 0.25)(batch), 2.0)
    with pytest.raises(ValueError, match="mean has 2 values but the batch has 3 channels"):
        T.Normalize([0.1, 0.2], [1.0, 1.0])(batch)
    with pytest.raises(ValueError, match="std must be > 0"):
        T.Normalize(0.0, [1.0, 0.0])


# ----------------------------------------------------------------- Resize
def test_resize_by_hand():
    # Doubling [0, 1]: source positions -0.25 (clamped to 0), 0.25, 0.75, 1.25 (upper clamped).
    row = np.array([[[[0.0, 1.0]]]], np.float32)
    np.testing.assert_allclose(T.resize(row, (1, 4))[0, 0, 0], [0.0, 0.25, 0.75, 1.0])
    # Halving 0..3: output pixel i samples at 2i + 0.5, the mean of the pair.
    np.testing.assert_allclose(
        T.resize(np.arange(4.0).reshape(1, 1, 1, 4), (1, 2))[0, 0, 0], [0.5, 2.5]
    )
    same = positions(3, 5)
    np.testing.assert_array_equal(T.Resize((3, 5))(same), same)


def test_resize_int_sets_the_shorter_side():
    assert T.resized_shape(30, 40, 24) == (24, 32)
    assert T.resized_shape(41, 30, 15) == (int(15 * 41 / 30), 15)
    assert T.Resize(6)(np.zeros((1, 2, 4, 8), np.float32)).shape == (1, 2, 6, 12)
    with pytest.raises(ValueError, match="size must be >= 1"):
        T.Resize(0)


@given(batch_shapes, st.integers(1, 20), st.integers(1, 20), seeds)
def test_resize_matches_torch_interpolate(torch, shape, out_h, out_w, seed):
    batch = uniform(seed, shape, dtype=np.float32)
    expected = torch.nn.functional.interpolate(
        to_torch(torch, batch), size=(out_h, out_w), mode="bilinear", align_corners=False
    )
    out = T.resize(batch, (out_h, out_w))
    assert out.dtype == np.float32
    assert_close(out, expected.numpy())


def test_resize_matches_torch_on_digit_sizes(torch):
    batch = uniform(0, (5, 1, 8, 8), low=0, high=1, dtype=np.float32)
    for size in [(32, 32), (28, 28), (224, 224), (5, 3)]:
        expected = torch.nn.functional.interpolate(
            to_torch(torch, batch), size=size, mode="bilinear", align_corners=False
        )
        assert_close(T.resize(batch, size), expected.numpy())


# ----------------------------------------------------------------- CenterCrop, Compose
def test_center_crop_rounds_like_torchvision():
    image = positions(5, 6)
    out = T.CenterCrop((2, 3))(image)
    # top = round((5 - 2) / 2) = round(1.5) = 2; left = round(1.5) = 2 (half to even).
    np.testing.assert_array_equal(out[0, 0], [[202, 203, 204], [302, 303, 304]])
    assert T.center_offsets(6, 6, 3, 3) == (2, 2)  # round(1.5) = 2
    assert T.center_offsets(7, 7, 2, 2) == (2, 2)  # round(2.5) = 2
    with pytest.raises(ValueError, match="size 6x6 is larger than the 5x6 images"):
        T.CenterCrop(6)(image)


def test_compose_applies_in_order_with_one_generator():
    seen = []

    def record(name):
        def transform(batch, rng):
            seen.append((name, rng))
            return batch * 2 if name == "double" else batch + 1

        return transform

    rng = np.random.default_rng(0)
    out = T.Compose([record("double"), record("add")])(np.ones((1, 1, 1, 1), np.float32), rng)
    assert out.item() == 3.0
    assert [name for name, _ in seen] == ["double", "add"] and all(r is rng for _, r in seen)
    with pytest.raises(TypeError, match=r"transforms\[1\] must be callable"):
        T.Compose([record("add"), 3])


# ----------------------------------------------------------------- multi-crop
def test_ten_crop_positions_by_hand():
    batch = positions(6, 7, n=2, channels=2)
    crops = ten_crop(batch, 4)
    assert crops.shape == (10, 2, 2, 4, 4)
    # Top-left pixel of tl, tr, bl, br, centre: top = round(2 / 2) = 1, left = round(3 / 2) = 2.
    assert crops[:5, 0, 0, 0, 0].tolist() == [0, 3, 200, 203, 102]
    np.testing.assert_array_equal(crops[4], batch[:, :, 1:5, 2:6])
    np.testing.assert_array_equal(crops[5:], crops[:5][..., ::-1])
    np.testing.assert_array_equal(crops[:, :, 1], crops[:, :, 0] + 10000)
    bottom_right = five_crop(batch, (2, 3))[3, 0, 0]  # top = 6 - 2, left = 7 - 3
    np.testing.assert_array_equal(bottom_right, [[404, 405, 406], [504, 505, 506]])


def test_paper_crops_positions_by_hand_on_a_landscape_image():
    # 32x40 at scale 32 stays 32x40: squares start at x = 0, 4, 8.
    batch = positions(32, 40, n=1)
    crops = paper_crops(batch, crop=28, scales=(32,))
    assert crops.shape == (36, 1, 1, 28, 28)
    corners = [0, 4, 400, 404]  # tl, tr, bl, br of a 32-square: offsets 0 and 4
    for square, start in enumerate([0, 4, 8]):
        first = crops[square * 6 : square * 6 + 6, 0, 0, 0, 0]
        assert first[:4].tolist() == [c + start for c in corners]
        assert first[4] == 202 + start  # centre crop at (2, 2)
        whole = T.resize(batch[:, :, :, start : start + 32], (28, 28))
        np.testing.assert_array_equal(crops[square * 6 + 5], whole)
    np.testing.assert_array_equal(crops[18:], crops[:18][..., ::-1])


def test_paper_crops_portrait_squares_run_top_to_bottom():
    crops = paper_crops(positions(40, 32), crop=32, scales=(32,))
    # crop == square: all five crops are the square itself; squares start at y = 0, 4, 8.
    assert crops[[0, 6, 12], 0, 0, 0, 0].tolist() == [0, 400, 800]


def test_paper_crops_count_and_scaling():
    batch = uniform(1, (2, 3, 32, 40), dtype=np.float32)
    crops = paper_crops(batch, crop=28, scales=(32, 36, 40, 44))
    assert crops.shape == (144, 2, 3, 28, 28) and crops.dtype == np.float32
    # At scale 36 the image becomes 36x45; its centre square's centre crop:
    scaled = T.resize(batch, 36)
    assert scaled.shape[2:] == (36, 45)
    np.testing.assert_array_equal(crops[18 + 6 + 4], scaled[:, :, 4:32, 4 + 4 : 4 + 32])


def test_paper_crops_validate_arguments():
    batch = np.zeros((1, 3, 32, 32), np.float32)
    with pytest.raises(ValueError, match=r"crop=28 is larger than .* shorter side of 24"):
        paper_crops(batch, crop=28, scales=(32, 24))
    with pytest.raises(ValueError, match="scales must be ints >= 1"):
        paper_crops(batch, crop=28, scales=())
    with pytest.raises(ValueError, match="crop must be an int >= 1"):
        paper_crops(batch, crop=0)
    with pytest.raises(ValueError, match="size 8x8 is larger than the 4x4 images"):
        ten_crop(np.zeros((1, 1, 4, 4), np.float32), 8)


def test_average_softmax_averages_probabilities_not_logits():
    logits = np.array([[[0.0, 0.0]], [[1000.0, 0.0]]])  # (2 crops, 1 image, 2 classes)
    np.testing.assert_allclose(average_softmax(logits), [[0.75, 0.25]])
    probabilities = average_softmax(uniform(3, (10, 4, 5)))
    assert probabilities.shape == (4, 5)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0)
    with pytest.raises(ValueError, match=r"must be 3-D \(crops, N, classes\)"):
        average_softmax(np.zeros((4, 5)))
