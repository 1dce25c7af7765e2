"""Hostile and malformed data files (issue 10): each is refused by name as one line, in bounded
memory, with nothing written or changed in the data folder.

The files are built here from the writers in ``datafiles`` and read through the public API,
``load_dataset`` and ``read_image``, as a user reads them. The allocation cases run in a fresh
process capped at ``BUDGET_MB`` above its imports (``bounded.run_bounded``) while the attack asks
for far more: the snippet prints the error it got, and the test asserts the message and that the
process did not die of MemoryError.
"""

import gzip
import hashlib
import math
import tarfile
from pathlib import Path

import numpy as np
import pytest

from tinynet.cli import EXIT_ERROR, main
from tinynet.data import DatasetError, DownloadError, load_dataset, read_image
from tinynet.data import datasets as D

from bounded import run_bounded
from datafiles import (
    cifar_batches,
    cifar_members,
    gzip_then_zeros,
    idx_bytes,
    idx_header,
    leftovers,
    needs_pillow,
    png_bytes,
    snapshot,
    write_cifar_folder,
    write_mnist,
    write_tar,
)

BUDGET_MB = 200
# 27283913 x 820044 x 824472 = 2**64 + 1568: an int64 product wraps to 1568, two 28x28 images.
WRAPS = (27283913, 820044, 824472)


def bounded_error(call: str, folder: Path) -> str:
    """The one-line error that ``call`` (Python, on tinynet.data's public names) raises in a
    fresh process allowed ``BUDGET_MB`` more than its imports, checked to leave ``folder`` as
    it was and not to die of MemoryError."""
    before = snapshot(folder)
    result = run_bounded(
        f"try:\n    {call}\nexcept (DatasetError, DownloadError) as error:\n    print(error)\n"
        f"else:\n    print('no error')\n",
        budget_mb=BUDGET_MB,
        imports="from tinynet.data import DatasetError, DownloadError, load_dataset, read_image",
    )
    assert result.returncode == 0 and "MemoryError" not in result.stderr, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1, result.stdout
    assert snapshot(folder) == before
    return lines[0]


# ================================================================= IDX
@pytest.mark.parametrize("gz", [True, False])
def test_idx_dimensions_whose_product_wraps_int64_are_refused(tmp_path, gz):
    assert math.prod(WRAPS) == 2**64 + 1568
    write_mnist(tmp_path, gz=gz)
    path = tmp_path / ("train-images-idx3-ubyte" + (".gz" if gz else ""))
    data = idx_header(WRAPS) + bytes(1568)
    path.write_bytes(gzip.compress(data) if gz else data)
    assert bounded_error(f"load_dataset('mnist', {str(tmp_path)!r})", tmp_path) == (
        f"{path}: truncated data: the header describes a 27283913x820044x824472 uint8 array "
        f"({2**64 + 1568} bytes), the file holds 1568 bytes after it"
    )


def test_gzip_idx_decompressing_far_past_its_header_is_read_only_that_far(tmp_path):
    arrays = write_mnist(tmp_path)
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(gzip_then_zeros(idx_bytes(arrays["t10k-images-idx3-ubyte"]), 1 << 30))
    assert path.stat().st_size < 2 << 20  # a 1 GiB bomb in about 1 MiB
    assert bounded_error(f"load_dataset('mnist', {str(tmp_path)!r})", tmp_path) == (
        f"{path}: extra data: the header describes a 3x28x28 uint8 array (2352 bytes), the file "
        f"holds more than 2352 bytes after it"
    )


def test_a_valid_idx_file_too_large_for_memory_is_named(tmp_path):
    write_mnist(tmp_path)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    n = 400_000  # 400,000 x 28 x 28 bytes = 314 MB, all of which a valid file needs
    path.write_bytes(gzip_then_zeros(idx_header((n, 28, 28)), n * 28 * 28))
    message = bounded_error(f"load_dataset('mnist', {str(tmp_path)!r})", tmp_path)
    assert message.startswith(f"{path}: not enough memory to read it ("), message


# ================================================================= CIFAR-10
def test_cifar_archive_member_too_large_for_a_batch_is_refused_and_nothing_extracted(tmp_path):
    batches = cifar_batches()
    del batches["test_batch"]
    huge = tarfile.TarInfo("cifar-10-batches-py/test_batch")
    huge.size = 1 << 30  # a hole: costs no disk
    archive = tmp_path / "cifar-10-python.tar.gz"
    write_tar(archive, [*cifar_members(batches), (huge, None)])  # the good batches come first
    before = snapshot(tmp_path)
    with pytest.raises(DatasetError) as error:
        load_dataset("cifar10", tmp_path)
    assert str(error.value) == (
        f"{archive}: cifar-10-batches-py/test_batch is {1 << 30} bytes, more than the "
        f"{D.CIFAR10_MAX_MEMBER} a genuine one can be; refusing to extract it"
    )
    assert snapshot(tmp_path) == before
    assert leftovers(tmp_path) == ["cifar-10-python.tar.gz"]


def test_a_cifar_batch_too_large_for_memory_is_named(tmp_path):
    batches = cifar_batches()
    rows = 20_000  # 61 MB of pixels, under the member limit; as float32, 246 MB
    batches["data_batch_1"][b"data"] = np.zeros((rows, 3072), np.uint8)
    batches["data_batch_1"][b"labels"] = [0] * rows
    write_cifar_folder(tmp_path, batches, python2=False)
    message = bounded_error(f"load_dataset('cifar10', {str(tmp_path)!r})", tmp_path)
    assert message.startswith(f"{tmp_path / 'data_batch_1'}: not enough memory to read it (")


# ================================================================= images
@needs_pillow
@pytest.mark.parametrize("side", [10_000, 50_000], ids=["warning", "error"])
def test_decompression_bombs_are_refused_by_name(tmp_path, side):
    """10,000^2 pixels is past Pillow's warning (MAX_IMAGE_PIXELS), 50,000^2 past its error
    (twice that); the warning is a refusal too, else decoding would take 400 MB."""
    from PIL import Image

    (tmp_path / "cat").mkdir()
    (tmp_path / "cat" / "ok.png").write_bytes(png_bytes(6, 6))
    (tmp_path / "dog").mkdir()
    bomb = tmp_path / "dog" / "bomb.png"
    bomb.write_bytes(png_bytes(side, side))
    limit = Image.MAX_IMAGE_PIXELS * (1 if side * side <= 2 * Image.MAX_IMAGE_PIXELS else 2)
    expected = (
        f"{bomb}: cannot decode this image (Image size ({side * side} pixels) exceeds limit of "
        f"{limit} pixels, could be decompression bomb DOS attack.)"
    )
    call = f"load_dataset('image_folder', {str(tmp_path)!r}, image_size=8)"
    assert bounded_error(call, tmp_path) == expected
    assert bounded_error(f"read_image({str(bomb)!r}, 8)", tmp_path) == expected


@needs_pillow
@pytest.mark.parametrize(
    "content, reason",
    [
        (b"P6\n\xae55 10\n255\n", "its content is PPM; only PNG and JPEG are read"),  # never parsed
        (png_bytes(6, 6)[:45], "image file is truncated"),  # cut inside its pixels
        (png_bytes(6, 6).replace(b"IDATx", b"IDAT\xff"), "broken data stream"),  # bad zlib
        (b"not an image at all", "cannot identify image file: neither PNG nor JPEG, nor any"),
        (b"\x89PNG\r\n\x1a\n not really an image", "a PNG signature, then no valid header"),
    ],
)
def test_undecodable_images_are_one_line_naming_the_file(tmp_path, content, reason):
    (tmp_path / "cat").mkdir()
    (tmp_path / "cat" / "ok.png").write_bytes(png_bytes(6, 6))
    (tmp_path / "dog").mkdir()
    bad = tmp_path / "dog" / "bad.png"
    bad.write_bytes(content)
    before = snapshot(tmp_path)
    for read in (lambda: load_dataset("image_folder", tmp_path, image_size=8),
                 lambda: read_image(bad, 8)):  # fmt: skip
        with pytest.raises(DatasetError, match=rf"^{bad}: cannot decode this image \(.*{reason}"):
            read()
    assert snapshot(tmp_path) == before


@needs_pillow
def test_images_too_many_for_memory_at_their_size_are_named(tmp_path):
    for name in ("cat", "dog"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "a.png").write_bytes(png_bytes(6, 6))
    call = f"load_dataset('image_folder', {str(tmp_path)!r}, image_size=6000)"
    message = bounded_error(call, tmp_path)
    assert message.startswith(f"{tmp_path}: not enough memory to read it (Unable to allocate")


@needs_pillow
@pytest.mark.parametrize("layout", ["flat", "train/test"])
def test_a_class_folder_without_images_is_refused_by_name(tmp_path, layout):
    train = tmp_path / "train" if layout == "train/test" else tmp_path
    (train / "cat").mkdir(parents=True)
    (train / "cat" / "a.png").write_bytes(png_bytes(6, 6))
    (train / "dog").mkdir()
    (train / "dog" / "notes.txt").write_text("no images here")
    if layout == "train/test":
        (tmp_path / "test" / "cat").mkdir(parents=True)
        (tmp_path / "test" / "cat" / "b.png").write_bytes(png_bytes(6, 6))
    before = snapshot(tmp_path)
    with pytest.raises(DatasetError) as error:
        load_dataset("image_folder", tmp_path, image_size=8)
    assert str(error.value) == (
        f"image_folder: class folder {train / 'dog'} holds no .png/.jpg/.jpeg images; every "
        f"class needs at least one to train on"
    )
    assert snapshot(tmp_path) == before


@needs_pillow
def test_a_test_split_may_still_lack_a_class(tmp_path):
    for split, name in [("train", "cat"), ("train", "dog"), ("test", "cat")]:
        (tmp_path / split / name).mkdir(parents=True)
        (tmp_path / split / name / "a.png").write_bytes(png_bytes(6, 6))
    (tmp_path / "test" / "dog").mkdir()  # empty: as if it were not there
    data = load_dataset("image_folder", tmp_path, image_size=8)
    assert data.classes == ("cat", "dog") and data.test.arrays[1].tolist() == [0]


# ================================================================= empty splits
@pytest.mark.parametrize("split", ["train", "test"])
def test_an_empty_split_is_refused_naming_dataset_folder_and_split(tmp_path, split):
    write_mnist(tmp_path, n_train=0 if split == "train" else 5, n_test=0 if split == "test" else 3)
    with pytest.raises(DatasetError) as error:
        load_dataset("mnist", tmp_path)
    assert str(error.value) == (
        f"mnist: the {split} split in {tmp_path} has no samples; training and evaluating need "
        f"at least one in each split"
    )
    batches = cifar_batches()
    empty = batches["test_batch" if split == "test" else "data_batch_1"]
    empty[b"data"], empty[b"labels"] = empty[b"data"][:0], []
    if split == "train":
        for name in D.CIFAR10_TRAIN[1:]:
            batches[name] = empty
    write_cifar_folder(tmp_path / "cifar", batches)
    with pytest.raises(DatasetError, match=rf"^cifar10: the {split} split in .*cifar has no"):
        load_dataset("cifar10", tmp_path / "cifar")


def test_the_cli_refuses_an_empty_training_split_in_one_line_before_training(tmp_path, capsys):
    data_dir, out = tmp_path / "data", tmp_path / "run"
    write_mnist(data_dir, n_train=0)
    before = snapshot(data_dir)
    code = main(["train", "--dataset", "mnist", "--data-dir", str(data_dir), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == EXIT_ERROR
    assert err == (
        f"tinynet train: error: mnist: the train split in {data_dir} has no samples; training "
        f"and evaluating need at least one in each split\n"
    )
    assert snapshot(data_dir) == before and not out.exists()


# ================================================================= downloads
def test_malformed_mirrors_are_passed_over_and_each_failure_named(tmp_path, monkeypatch):
    mirror = tmp_path / "mirror"
    write_mnist(mirror)
    digests = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in mirror.iterdir()}
    monkeypatch.setitem(D.SHA256, "mnist", digests)
    malformed = ["nonsense", "http://[::1", "http://127.0.0.1:port"]  # scheme, IPv6, port
    data = load_dataset("mnist", tmp_path / "data", download=True, mirrors=[*malformed,
                        mirror.as_uri()])  # fmt: skip
    assert len(data.train) == 5 and leftovers(tmp_path / "data") == sorted(digests)

    monkeypatch.setitem(D.SHA256, "mnist", {name: "0" * 64 for name in digests})
    with pytest.raises(DownloadError) as error:
        load_dataset("mnist", tmp_path / "other", download=True, mirrors=[*malformed,
                     mirror.as_uri()])  # fmt: skip
    name, message = "train-images-idx3-ubyte.gz", str(error.value)
    assert "\n" not in message
    assert message.startswith(
        f"could not download {name} into {tmp_path / 'other'}: nonsense/{name}: not a usable URL "
        f"(unknown url type: 'nonsense/{name}'); http://[::1/{name}: not a usable URL (Invalid "
        f"IPv6 URL); http://127.0.0.1:port/{name}: not a usable URL (nonnumeric port: 'port'); "
        f"{mirror.as_uri()}/{name}: SHA-256 mismatch: got {digests[name]}"
    ), message
    assert leftovers(tmp_path / "other") == []
