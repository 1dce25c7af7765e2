"""Hostile and unusual image files (issue 23): each built here and read as a user reads it,
through ``tinynet predict``, ``load_dataset("image_folder", ...)`` and ``read_image``.

Refusals are one line naming the file, exit code 1 from the command, nothing written; only PNG
and JPEG are decoded, chosen by content (no other format's reader ever opens the file); an
extreme aspect ratio costs memory by the output's size (checked in a fresh process under
``RLIMIT_AS``, ``bounded.run_bounded``); 16-bit values are scaled to 8 bits, not clipped; and
nothing that is not a regular file is waited on (a FIFO, under a deadline that fails the test
instead of hanging the suite).
"""

import io
import os
import signal
import socket
from contextlib import contextmanager

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from tinynet.cli import EXIT_ERROR, main
from tinynet.data import DatasetError, load_dataset, read_image
from tinynet.data.transforms import resized_shape

from bounded import run_bounded
from datafiles import png_bytes, png_image, snapshot
from upstream import upstream_torchvision

Image = pytest.importorskip("PIL.Image", reason="image_folder and predict read images with Pillow")

INPUT = 16  # the side of the checkpoint's images
OTHER_FORMATS = ["TIFF", "BMP", "GIF", "EPS", "PPM", "ICO"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A one-batch run of a width-0.125 small GoogLeNet on a two-class folder of 16-pixel
    images: its checkpoint (the run folder is never changed by the tests)."""
    from tinynet.train import CHECKPOINT, TrainConfig, Trainer

    data = tmp_path_factory.mktemp("folder")
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        (data / name).mkdir()
        for i in range(4):
            Image.fromarray(rng.integers(0, 256, (20, 20, 3), np.uint8)).save(
                data / name / f"{i}.png"
            )
    run = tmp_path_factory.mktemp("run")
    config = TrainConfig(width=0.125, batch_size=4, max_batches=1, epochs=1, dataset="image_folder",
                         data_dir=str(data), image_size=INPUT, out_dir=str(run))  # fmt: skip
    Trainer(config, log=lambda line: None).fit()
    return run / CHECKPOINT


def predict(capsys, checkpoint, image):
    """``tinynet predict CHECKPOINT IMAGE`` in this process: (exit code, stdout, stderr)."""
    code = main(["predict", str(checkpoint), str(image)])
    out, err = capsys.readouterr()
    return code, out, err


def refused_everywhere(capsys, checkpoint, folder, image, expected: str) -> None:
    """``image`` (in class folder ``folder``/dog beside a good cat image) is refused with the
    line ``expected`` by ``read_image``, by an image folder, and by ``tinynet predict`` (one line
    on stderr, exit 1), and neither the folder nor the run is changed."""
    before = snapshot(folder), snapshot(checkpoint.parent)
    with pytest.raises(DatasetError) as error:
        read_image(image, 8)
    assert str(error.value) == expected
    with pytest.raises(DatasetError) as error:
        load_dataset("image_folder", folder, image_size=8)
    assert str(error.value) == expected
    code, out, err = predict(capsys, checkpoint, image)
    assert (code, out, err) == (EXIT_ERROR, "", f"tinynet predict: error: {expected}\n")
    assert (snapshot(folder), snapshot(checkpoint.parent)) == before


def class_folders(root, bad_name: str):
    """``root``/cat/ok.png (a good image) and the path ``root``/dog/``bad_name``."""
    (root / "cat").mkdir()
    Image.new("RGB", (6, 6), (1, 2, 3)).save(root / "cat" / "ok.png")
    (root / "dog").mkdir()
    return root / "dog" / bad_name


def saved(image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


# ================================================================= formats, by content
@pytest.mark.parametrize("fmt", OTHER_FORMATS)
def test_formats_other_than_png_and_jpeg_are_refused_by_content(tmp_path, capsys, checkpoint, fmt):
    bad = class_folders(tmp_path, "photo.png")
    bad.write_bytes(saved(Image.new("RGB", (8, 8), (200, 10, 10)), fmt))
    expected = f"{bad}: cannot decode this image (its content is {fmt}; only PNG and JPEG are read)"
    refused_everywhere(capsys, checkpoint, tmp_path, bad, expected)


def test_an_eps_never_reaches_the_eps_reader_or_ghostscript(tmp_path, capsys, checkpoint,
                                                            monkeypatch):  # fmt: skip
    from PIL import EpsImagePlugin

    calls = []
    real_open = EpsImagePlugin.EpsImageFile._open

    def recording_open(self):
        calls.append("EpsImageFile._open")
        return real_open(self)

    monkeypatch.setattr(EpsImagePlugin.EpsImageFile, "_open", recording_open)
    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", lambda *a, **k: calls.append("Ghostscript"))
    bad = class_folders(tmp_path, "logo.png")
    bad.write_bytes(saved(Image.new("RGB", (8, 8)), "EPS"))
    expected = f"{bad}: cannot decode this image (its content is EPS; only PNG and JPEG are read)"
    refused_everywhere(capsys, checkpoint, tmp_path, bad, expected)
    assert calls == []
    with Image.open(bad):  # what a reader that lets Pillow choose would do: the recorder works
        assert calls == ["EpsImageFile._open"]


def test_png_and_jpeg_are_read_whatever_their_names(tmp_path, capsys, checkpoint):
    png, jpeg = tmp_path / "really_a_png.jpg", tmp_path / "really_a_jpeg.png"
    png.write_bytes(saved(Image.new("RGB", (8, 8), (250, 0, 0)), "PNG"))
    jpeg.write_bytes(saved(Image.new("RGB", (8, 8), (0, 0, 250)), "JPEG"))
    np.testing.assert_array_equal(read_image(png, 4)[:, 0, 0] * 255, [250, 0, 0])
    np.testing.assert_allclose(read_image(jpeg, 4)[:, 0, 0] * 255, [0, 0, 250], atol=3)
    code, out, err = predict(capsys, checkpoint, jpeg)
    assert code == 0 and out.startswith(f"{jpeg}: "), err


# ================================================================= not a regular file
@contextmanager
def deadline(seconds: float):
    """Fail with TimeoutError if the block takes longer (a read that blocks is interrupted)."""

    def expire(signum, frame):
        raise TimeoutError(f"still blocked after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@pytest.mark.parametrize("kind", ["fifo", "socket", "device"])
def test_what_is_not_a_regular_file_is_refused_not_waited_on(tmp_path, capsys, checkpoint, kind):
    bad = class_folders(tmp_path, "cam.png")
    if kind == "fifo":
        os.mkfifo(bad)  # reading it would wait for a writer forever
        found = "a FIFO (named pipe)"
    elif kind == "socket":
        server = socket.socket(socket.AF_UNIX)
        server.bind(str(bad))
        found = "a socket"
    else:
        bad.symlink_to("/dev/zero")  # zeros without end
        found = "a character device"
    expected = f"{bad}: is {found}, not an image file; give a regular PNG or JPEG file"
    try:
        with deadline(10):
            refused_everywhere(capsys, checkpoint, tmp_path, bad, expected)
    finally:
        if kind == "socket":
            server.close()


def test_a_folder_or_missing_file_given_to_predict_is_named(tmp_path, capsys, checkpoint):
    code, _, err = predict(capsys, checkpoint, tmp_path)
    assert code == EXIT_ERROR
    assert err == (f"tinynet predict: error: {tmp_path}: is a directory, not an image file; give a "
                   f"regular PNG or JPEG file\n")  # fmt: skip
    code, _, err = predict(capsys, checkpoint, tmp_path / "gone.png")
    assert code == EXIT_ERROR
    assert err == (f"tinynet predict: error: {tmp_path / 'gone.png'}: cannot read this image "
                   f"(No such file or directory)\n")  # fmt: skip


def test_an_empty_file_and_a_decompression_bomb_are_refused_by_predict(
    tmp_path, capsys, checkpoint
):
    empty = class_folders(tmp_path, "empty.png")
    empty.write_bytes(b"")
    refused_everywhere(capsys, checkpoint, tmp_path, empty,
                       f"{empty}: cannot decode this image (an empty file)")  # fmt: skip
    empty.unlink()
    bomb = tmp_path / "dog" / "bomb.png"
    bomb.write_bytes(png_bytes(10_000, 10_000))  # past the warning: refused, not decoded
    code, _, err = predict(capsys, checkpoint, bomb)
    assert code == EXIT_ERROR
    assert err.startswith(f"tinynet predict: error: {bomb}: cannot decode this image (Image size "
                          f"(100000000 pixels) exceeds limit of ")  # fmt: skip
    assert err.count("\n") == 1


# ================================================================= extreme aspect ratios
def tall_png(height: int) -> bytes:
    """A whole 1-pixel-wide grayscale PNG of zeros, ``height`` rows (a 1 KB file for 500,000)."""
    return png_image(np.zeros((height, 1), np.uint8), color_type=0)


EXTREME = {
    "1x500000": (lambda: png_bytes(500_000, 1), 200),  # 563 bytes; once 2.5 GB at 32 pixels
    "500000x1": (lambda: tall_png(500_000), 200),
    # 80 MB of pixels, under Pillow's bomb limit; decoding keeps the 80 MB image and two 80 MB
    # rows (Pillow's PNG decoder), the rest follows the output: once an OverflowError
    "1x80000000": (lambda: png_bytes(80_000_000, 1), 300),
}


@pytest.mark.parametrize("shape", EXTREME)
def test_an_extreme_aspect_ratio_is_read_in_memory_bounded_by_the_output(tmp_path, checkpoint,
                                                                         shape):  # fmt: skip
    make, budget_mb = EXTREME[shape]
    image = class_folders(tmp_path, f"{shape}.png")
    image.write_bytes(make())
    before = snapshot(tmp_path), snapshot(checkpoint.parent)
    ok = tmp_path / "cat" / "ok.png"
    result = run_bounded(
        f"""
        print(read_image({str(image)!r}, 224).shape)
        data = load_dataset("image_folder", {str(tmp_path)!r}, image_size=224, test_fraction=0.5)
        print(data.train.arrays[0].shape, data.test.arrays[0].shape)
        print("exit", main(["predict", {str(checkpoint)!r}, {str(image)!r}]))
        """,
        budget_mb=budget_mb,
        imports=f"""
        from tinynet.cli import main
        from tinynet.data import load_dataset, read_image
        main(["predict", {str(checkpoint)!r}, {str(ok)!r}])  # compile, load, warm up
        """,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"{ok}: ")
    assert lines[1:3] == ["(3, 224, 224)", "(1, 3, 224, 224) (1, 3, 224, 224)"]
    assert lines[3].startswith(f"{image}: ") and lines[4] == "exit 0", result.stdout
    assert (snapshot(tmp_path), snapshot(checkpoint.parent)) == before


def torchvision_resize_and_crop(image, size):
    """What torchvision's ``Resize(size)`` and, for an int size, ``CenterCrop(size)`` make of
    a PIL image, as (H, W[, C]) uint8: the reference for ``read_image``'s pixels."""
    upstream_torchvision()
    from torchvision import transforms

    steps = [transforms.Resize(size, transforms.InterpolationMode.BILINEAR)]
    if isinstance(size, int):
        steps.append(transforms.CenterCrop(size))
    return np.asarray(transforms.Compose(steps)(image))


@given(
    height=st.integers(1, 60),
    width=st.integers(1, 60),
    size=st.one_of(st.integers(1, 40), st.tuples(st.integers(1, 40), st.integers(1, 40))),
    source=st.sampled_from(["L", "RGB", "RGBA", "LA", "P", "1"]),
    mode=st.sampled_from(["RGB", "L"]),
    seed=st.integers(0, 2**32 - 1),
)
@example(height=2, width=60, size=30, source="RGB", mode="RGB", seed=1)  # 30 x 900: past 16
@example(height=57, width=3, size=40, source="L", mode="L", seed=2)  # 760 x 40
@example(height=45, width=30, size=20, source="RGB", mode="RGB", seed=3)  # 30 x 20: exact
def test_pixels_are_torchvisions_resize_and_centre_crop(tmp_path_factory, height, width, size,
                                                        source, mode, seed):  # fmt: skip
    """Exactly torchvision's pixels while the scaled image's longer side is at most 16 times
    the output (every photograph); past that, only the crop is resampled, within one level."""
    rng = np.random.default_rng(seed)
    image = Image.fromarray(rng.integers(0, 256, (height, width, 3), np.uint8)).convert(source)
    path = tmp_path_factory.mktemp("pixels") / "image.png"
    image.save(path)
    ours = np.round(read_image(path, size, mode) * 255).astype(int).transpose(1, 2, 0)
    reference = torchvision_resize_and_crop(image.convert(mode), size).reshape(ours.shape)
    extreme = isinstance(size, int) and max(resized_shape(height, width, size)) > 16 * size
    assert np.abs(ours - reference).max() <= (1 if extreme else 0)


# ================================================================= bit depths and modes
SIXTEEN = np.array([[0, 1, 128, 257, 32767, 32768, 65534, 65535]])
SCALED = [0, 0, 0, 1, 127, 128, 255, 255]  # round(v * 255 / 65535), by hand


def read_pixels(tmp_path, content: bytes, mode: str) -> np.ndarray:
    """``content`` read at its own size (a (1, 8) image) as (H, W, C) levels 0..255, the same
    through ``read_image`` and an image folder (as its training and its test split)."""
    for split in ("train", "test"):
        path = tmp_path / mode / split / "only" / "image.png"
        path.parent.mkdir(parents=True)
        path.write_bytes(content)
    pixels = read_image(path, (1, 8), mode)
    folder = load_dataset("image_folder", tmp_path / mode, image_size=(1, 8), mode=mode)
    np.testing.assert_array_equal(folder.train.arrays[0][0], pixels)
    np.testing.assert_array_equal(folder.test.arrays[0][0], pixels)
    return np.round(pixels * 255).astype(int).transpose(1, 2, 0)


def test_sixteen_bit_grayscale_is_scaled_to_eight_bits_not_clipped(tmp_path):
    content = png_image(SIXTEEN, color_type=0, bit_depth=16)
    assert Image.open(io.BytesIO(content)).mode == "I;16"
    assert read_pixels(tmp_path, content, "L")[0, :, 0].tolist() == SCALED
    assert read_pixels(tmp_path, content, "RGB")[0].tolist() == [[v] * 3 for v in SCALED]


@pytest.mark.parametrize("color_type", [2, 6, 4], ids=["RGB", "RGBA", "gray+alpha"])
def test_sixteen_bit_colour_and_alpha_are_within_one_level_of_scaled(tmp_path, color_type):
    """Pillow reads these as 8 bits itself, keeping each value's high byte."""
    channels = {2: [SIXTEEN, SIXTEEN[:, ::-1], SIXTEEN], 6: [SIXTEEN] * 3 + [SIXTEEN * 0 + 65535],
                4: [SIXTEEN, SIXTEEN * 0 + 65535]}[color_type]  # fmt: skip
    content = png_image(np.stack(channels, axis=-1), color_type=color_type, bit_depth=16)
    pixels = read_pixels(tmp_path, content, "RGB")
    expected = np.array([SCALED, SCALED[::-1], SCALED] if color_type == 2 else [SCALED] * 3).T
    assert np.abs(pixels[0] - expected).max() <= 1


def test_low_bit_depths_palette_alpha_and_cmyk_give_their_colours(tmp_path):
    two_bit = png_image(np.array([[0, 1, 2, 3, 3, 2, 1, 0]]), color_type=0, bit_depth=2)
    assert read_pixels(tmp_path, two_bit, "L")[0, :, 0].tolist() == [0, 85, 170, 255, 255, 170,
                                                                      85, 0]  # fmt: skip
    one_bit = png_image(np.array([[0, 1, 1, 0, 1, 0, 0, 1]]), color_type=0, bit_depth=1)
    assert read_pixels(tmp_path / "1", one_bit, "L")[0, :, 0].tolist() == [0, 255, 255, 0, 255,
                                                                           0, 0, 255]  # fmt: skip
    palette = bytes([255, 0, 0, 0, 255, 0, 0, 0, 255])
    indexed = png_image(np.array([[0, 1, 2, 0, 1, 2, 0, 1]]), color_type=3, palette=palette)
    assert read_pixels(tmp_path, indexed, "RGB")[0, :3].tolist() == [[255, 0, 0], [0, 255, 0],
                                                                     [0, 0, 255]]  # fmt: skip
    gray_alpha = np.stack([np.full((1, 8), 90), np.arange(8)[None] * 30], axis=-1)
    pixels = read_pixels(tmp_path / "la", png_image(gray_alpha, color_type=4), "RGB")
    assert (pixels == 90).all()  # the alpha dropped, as Pillow's convert("RGB") does
    cmyk = saved(Image.new("CMYK", (1, 8), (0, 255, 255, 0)), "JPEG")  # red, in ink
    assert np.abs(read_pixels(tmp_path / "cmyk", cmyk, "RGB")[0] - [255, 0, 0]).max() <= 3
