"""Datasets: digits; the IDX, CIFAR and image-folder readers on small files written here in the
exact formats (and broken in each way they check); downloads from a local HTTP server."""

import gzip
import http.server
import os
import socket
import sys
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest

from tinynet.data import (
    DatasetError,
    DownloadError,
    cifar10,
    digits,
    fashion_mnist,
    image_folder,
    load_dataset,
    mnist,
)
from tinynet.data import datasets as D
from tinynet.data.download import download_file, fetch, sha256_file
from tinynet.data.formats import read_idx

from datafiles import (
    cifar_archive_bytes,
    cifar_batches,
    idx_bytes,
    leftovers,
    needs_pillow,
    needs_sklearn,
    write_cifar_folder,
    write_mnist,
)


# ================================================================= digits
@needs_sklearn
def test_digits_sizes_split_range_and_classes():
    data = digits()
    train_images, train_labels = data.train.arrays
    test_images, test_labels = data.test.arrays
    # 1,797 samples; the last round(1797 * 0.2) = 359 of the seeded permutation are the test set.
    assert (len(data.train), len(data.test)) == (1438, 359)
    assert train_images.shape == (1438, 1, 32, 32) and test_images.shape == (359, 1, 32, 32)
    assert train_images.dtype == np.float32 and train_labels.dtype == np.int64
    assert 0.0 <= train_images.min() and train_images.max() <= 1.0 and train_images.max() > 0.9
    assert data.classes == tuple("0123456789") and data.num_classes == 10
    assert data.channels == 1 and data.image_size == (32, 32)
    for labels, least in ((train_labels, 120), (test_labels, 20)):  # about 180 and 36 each
        counts = np.bincount(labels, minlength=10)
        assert counts.min() >= least, counts


@needs_sklearn
def test_digits_match_scikit_learn_and_resize():
    from sklearn.datasets import load_digits

    bunch = load_digits()
    data = digits(image_size=8, seed=3)
    order = np.random.default_rng(3).permutation(1797)
    expected = (bunch.images / 16.0).astype(np.float32)[order[:1438], None]
    np.testing.assert_allclose(data.train.arrays[0], expected, atol=1e-7)
    np.testing.assert_array_equal(data.test.arrays[1], bunch.target[order[1438:]])
    from tinynet.data.transforms import resize

    np.testing.assert_array_equal(
        digits(image_size=24, seed=3).train.arrays[0], resize(expected, 24)
    )


@needs_sklearn
def test_digits_split_is_deterministic_per_seed():
    a, b, c = digits(seed=1), digits(seed=1), digits(seed=2)
    np.testing.assert_array_equal(a.test.arrays[0], b.test.arrays[0])
    np.testing.assert_array_equal(a.train.arrays[1], b.train.arrays[1])
    assert not np.array_equal(a.test.arrays[1], c.test.arrays[1])
    assert len(digits(test_fraction=0.5).test) == 898  # round(898.5) = 898, half to even


@needs_sklearn
def test_digits_errors():
    with pytest.raises(ValueError, match=r"test_fraction must be in \(0, 1\); got 1.5"):
        digits(test_fraction=1.5)
    with pytest.raises(ValueError, match="leaves 0 for testing"):
        digits(test_fraction=0.0001)
    with pytest.raises(TypeError, match="image_size must be an int"):
        digits(image_size=2.5)


def test_without_the_train_extra_the_error_says_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "sklearn", None)  # import sklearn now fails
    monkeypatch.setitem(sys.modules, "PIL", None)
    with pytest.raises(ImportError, match=r"scikit-learn, .*pip install 'tinynet\[train\]'"):
        digits()
    with pytest.raises(ImportError, match=r"Pillow, .*pip install 'tinynet\[train\]'"):
        image_folder(tmp_path, 8)


# ================================================================= IDX: MNIST, Fashion-MNIST
@pytest.mark.parametrize("gz", [True, False])
def test_mnist_reads_the_idx_files(tmp_path, gz):
    arrays = write_mnist(tmp_path, gz=gz)
    data = mnist(tmp_path)
    images, labels = data.train.arrays
    assert images.shape == (5, 1, 28, 28) and images.dtype == np.float32
    np.testing.assert_allclose(images[:, 0] * 255, arrays["train-images-idx3-ubyte"], atol=1e-4)
    np.testing.assert_array_equal(labels, arrays["train-labels-idx1-ubyte"])
    assert labels.dtype == np.int64 and len(data.test) == 3
    assert data.classes == tuple("0123456789")


def test_fashion_mnist_names_and_resizing(tmp_path):
    write_mnist(tmp_path)
    data = fashion_mnist(tmp_path, image_size=32)
    assert data.classes[0] == "T-shirt/top" and data.classes[9] == "Ankle boot"
    assert data.train.arrays[0].shape == (5, 1, 32, 32)


def test_read_idx_other_types_and_byte_order(tmp_path):
    values = np.arange(-6, 6, dtype=np.int16).reshape(3, 4)
    (tmp_path / "a").write_bytes(idx_bytes(values, code=0x0B))
    out = read_idx(tmp_path / "a")
    np.testing.assert_array_equal(out, values)
    assert out.dtype.isnative


IDX_BREAKAGES = {
    "wrong magic": (
        lambda data: b"\x00\x00\x07\x03" + data[4:],
        r"train-images-idx3-ubyte.gz: wrong magic number 0x00000703",
    ),
    "truncated data": (
        lambda data: data[:-100],
        r"train-images-idx3-ubyte.gz: truncated data: the header describes a 5x28x28 uint8 array "
        r"\(3920 bytes\), the file holds 3820 bytes",
    ),
    "trailing bytes": (
        lambda data: data + b"xx",
        r"extra data: the header describes a 5x28x28 uint8 array \(3920 bytes\), the file "
        r"holds more than 3920 bytes after it",
    ),
    "truncated header": (lambda data: data[:10], r"truncated header: 3 dimensions need 16 bytes"),
    "not gzip": (lambda data: b"\x1f\x8bnot really", r"not a readable gzip file"),
}


@pytest.mark.parametrize("breakage", sorted(IDX_BREAKAGES))
def test_broken_idx_files_are_named_with_the_problem(tmp_path, breakage):
    write_mnist(tmp_path)
    spoil, message = IDX_BREAKAGES[breakage]
    path = tmp_path / "train-images-idx3-ubyte.gz"
    data = gzip.decompress(path.read_bytes())
    path.write_bytes(spoil(data) if breakage == "not gzip" else gzip.compress(spoil(data)))
    with pytest.raises(DatasetError, match=message):
        mnist(tmp_path)


def test_a_cut_off_gzip_stream_is_named(tmp_path):
    write_mnist(tmp_path)
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-30])
    with pytest.raises(DatasetError, match=r"t10k-images-idx3-ubyte.gz: not a readable gzip"):
        mnist(tmp_path)


def test_label_count_and_range_are_checked(tmp_path):
    write_mnist(tmp_path)
    labels = tmp_path / "train-labels-idx1-ubyte.gz"
    labels.write_bytes(gzip.compress(idx_bytes(np.zeros(4, np.uint8))))
    with pytest.raises(DatasetError, match=r"4 labels, but .*train-images-idx3-ubyte.gz holds 5"):
        mnist(tmp_path)
    labels.write_bytes(gzip.compress(idx_bytes(np.array([1, 2, 10, 3, 12], np.uint8))))
    with pytest.raises(DatasetError, match=r"label 10 at index 2 is outside 0..9 \(2 such"):
        mnist(tmp_path)
    labels.write_bytes(gzip.compress(idx_bytes(np.zeros((5, 1), np.uint8))))
    with pytest.raises(DatasetError, match="expected a 1-D unsigned-byte label array"):
        mnist(tmp_path)


def test_missing_files_say_how_to_get_them(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"train-images-idx3-ubyte.gz is not in .*download"):
        mnist(tmp_path)
    with pytest.raises(FileNotFoundError, match="cifar-10-python.tar.gz exists; pass download"):
        cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py").mkdir()
    with pytest.raises(FileNotFoundError, match="cifar-10-batches-py lacks data_batch_1; remove"):
        cifar10(tmp_path, download=True)


# ================================================================= CIFAR-10
@pytest.mark.parametrize("python2", [True, False])
def test_cifar10_reads_the_extracted_folder(tmp_path, python2):
    batches = cifar_batches()
    write_cifar_folder(tmp_path / "cifar-10-batches-py", batches, python2)
    data = cifar10(tmp_path)
    images, labels = data.train.arrays
    assert images.shape == (20, 3, 32, 32) and images.dtype == np.float32
    first = batches["data_batch_1"][b"data"][0]
    np.testing.assert_allclose(images[0, 0, 0, :3] * 255, first[:3], atol=1e-4)  # red row 0
    np.testing.assert_allclose(images[0, 1, 0, 0] * 255, first[1024], atol=1e-4)  # green
    np.testing.assert_allclose(images[0, 2, 31, 31] * 255, first[3071], atol=1e-4)  # blue end
    np.testing.assert_array_equal(labels[4:8], batches["data_batch_2"][b"labels"])
    assert len(data.test) == 4 and data.classes == D.CIFAR10_CLASSES
    assert cifar10(tmp_path / "cifar-10-batches-py", image_size=16).test.arrays[0].shape[2:] == (
        16,
        16,
    )


def test_cifar10_extracts_the_archive_once_and_safely(tmp_path):
    evil = []
    for name in ("../escaped", "/tmp/absolute-escape", "cifar-10-batches-py/../../escaped2"):
        info = tarfile.TarInfo(name)
        info.size = 4
        evil.append((info, b"evil"))
    link = tarfile.TarInfo("cifar-10-batches-py/readme.html")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    evil.append((link, None))
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "cifar-10-python.tar.gz").write_bytes(cifar_archive_bytes(cifar_batches(), evil))
    data = cifar10(data_dir)
    assert len(data.train) == 20
    assert leftovers(data_dir) == ["cifar-10-batches-py", "cifar-10-python.tar.gz"]
    assert sorted(leftovers(data_dir / "cifar-10-batches-py")) == sorted(D.CIFAR10_FILES)
    assert leftovers(tmp_path) == ["data"] and not Path("/tmp/absolute-escape").exists()
    assert len(cifar10(data_dir).test) == 4  # now from the folder


def test_cifar10_archive_with_a_linked_batch_is_refused_and_leaves_nothing(tmp_path):
    batches = cifar_batches()
    del batches["test_batch"]
    link = tarfile.TarInfo("cifar-10-batches-py/test_batch")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    (tmp_path / "cifar-10-python.tar.gz").write_bytes(cifar_archive_bytes(batches, [(link, None)]))
    with pytest.raises(DatasetError, match="test_batch is not a regular file"):
        cifar10(tmp_path)
    assert leftovers(tmp_path) == ["cifar-10-python.tar.gz"]


def test_cifar10_truncated_archive_is_named_and_leaves_nothing(tmp_path):
    archive = tmp_path / "cifar-10-python.tar.gz"
    archive.write_bytes(cifar_archive_bytes(cifar_batches())[:-2000])
    with pytest.raises(DatasetError, match=r"cifar-10-python.tar.gz: not a readable tar archive"):
        cifar10(tmp_path)
    assert leftovers(tmp_path) == ["cifar-10-python.tar.gz"]


class Exploit:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


@pytest.mark.parametrize(
    "spoil, message",
    [
        (lambda b: Exploit(), r"data_batch_3: not a readable CIFAR pickle \(refusing to load"),
        (lambda b: {**b, b"data": b[b"data"][:, :100]}, "rows must hold 3072 values"),
        (lambda b: {**b, b"labels": b[b"labels"][:-1]}, r"data_batch_3: 3 labels for 4 images"),
        (lambda b: {**b, b"labels": [0, 1, 2, 11]}, "label 11 at index 3 is outside 0..9"),
        (lambda b: {b"data": b[b"data"]}, "expected a dict with keys b'data' and b'labels'"),
        (lambda b: {**b, b"data": b[b"data"].astype(np.float32)}, "must be a .N, 3072. uint8"),
    ],
)
def test_broken_cifar_batches_are_named(tmp_path, spoil, message):
    batches = cifar_batches()
    batches["data_batch_3"] = spoil(batches["data_batch_3"])
    write_cifar_folder(tmp_path, batches)
    with pytest.raises(DatasetError, match=message):
        cifar10(tmp_path)


def test_truncated_cifar_pickle_is_named(tmp_path):
    write_cifar_folder(tmp_path, cifar_batches())
    path = tmp_path / "test_batch"
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(DatasetError, match="test_batch: not a readable CIFAR pickle"):
        cifar10(tmp_path)


# ================================================================= image folders
def write_image(path: Path, color, size=(10, 6), mode="RGB"):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path)


@needs_pillow
def test_image_folder_reads_sorted_classes_in_rgb(tmp_path):
    write_image(tmp_path / "zebra" / "a.png", (255, 0, 0))
    write_image(tmp_path / "zebra" / "b.JPG", (0, 255, 0))
    write_image(tmp_path / "ant" / "c.jpeg", 128, mode="L")
    write_image(tmp_path / "ant" / "d.png", (0, 0, 255), size=(6, 12))
    (tmp_path / "ant" / "notes.txt").write_text("not an image")
    data = image_folder(tmp_path, 4, test_fraction=0.25, seed=0)
    assert data.classes == ("ant", "zebra") and data.channels == 3
    images = np.concatenate([data.train.arrays[0], data.test.arrays[0]])
    labels = np.concatenate([data.train.arrays[1], data.test.arrays[1]])
    assert images.shape == (4, 3, 4, 4) and images.dtype == np.float32
    assert sorted(labels.tolist()) == [0, 0, 1, 1] and len(data.test) == 1
    colours = {tuple(np.round(image[:, 2, 2] * 255).astype(int)) for image in images}
    assert (255, 0, 0) in colours and (0, 0, 255) in colours and (128, 128, 128) in colours


@needs_pillow
def test_image_folder_grayscale_and_exact_size(tmp_path):
    write_image(tmp_path / "train" / "a" / "1.png", (200, 200, 200))
    write_image(tmp_path / "train" / "b" / "1.png", (10, 10, 10))
    write_image(tmp_path / "test" / "b" / "2.png", (10, 10, 10))
    data = image_folder(tmp_path, (5, 7), mode="L")
    assert data.train.arrays[0].shape == (2, 1, 5, 7) and len(data.test) == 1
    assert data.test.arrays[1].tolist() == [1]
    np.testing.assert_allclose(data.train.arrays[0][0], 200 / 255, atol=1e-6)


@needs_pillow
def test_image_folder_errors_name_the_file(tmp_path):
    write_image(tmp_path / "cat" / "good.png", (1, 2, 3))
    bad = tmp_path / "cat" / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    with pytest.raises(DatasetError, match=r"broken.jpg: cannot decode this image"):
        image_folder(tmp_path, 8)
    bad.unlink()
    with pytest.raises(ValueError, match="mode must be one of"):
        image_folder(tmp_path, 8, mode="CMYK")
    with pytest.raises(ValueError, match="image_size must be >= 1; got 0"):
        image_folder(tmp_path, 0)
    with pytest.raises(ValueError, match=r"image_size must be an int or a \(height, width\)"):
        image_folder(tmp_path, (8,))
    with pytest.raises(DatasetError, match="no class sub-folders"):
        image_folder(tmp_path / "cat", 8)
    with pytest.raises(NotADirectoryError, match="is not a directory"):
        image_folder(tmp_path / "nowhere", 8)


@needs_pillow
def test_image_folder_truncated_png_is_named(tmp_path):
    write_image(tmp_path / "a" / "x.png", (1, 2, 3), size=(64, 64))
    write_image(tmp_path / "b" / "y.png", (1, 2, 3))
    path = tmp_path / "a" / "x.png"
    path.write_bytes(path.read_bytes()[:60])
    with pytest.raises(DatasetError, match=r"x.png: cannot decode"):
        image_folder(tmp_path, 8)


# ================================================================= downloads
class Handler(http.server.BaseHTTPRequestHandler):
    files: dict = {}

    def do_GET(self):
        folder, _, name = self.path.rpartition("/")
        body = self.files.get(name)
        if body is None or folder not in ("/ok", "/cut"):
            self.send_error(404)
            return
        self.send_response(200)
        if self.path.startswith("/cut/"):  # promise more than is sent, then hang up
            self.send_header("Content-Length", str(len(body) + 1000))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.close_connection = True
            return
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server():
    """A local HTTP server on 127.0.0.1 serving ``Handler.files``: /ok/NAME intact and
    /cut/NAME cut off half-way; anything else is 404. Yields its base URL."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


def serve(files: dict) -> dict:
    """Serve ``files`` (name -> bytes); return name -> SHA-256 hex digest."""
    import hashlib

    Handler.files = files
    return {name: hashlib.sha256(body).hexdigest() for name, body in files.items()}


def test_download_success(server, tmp_path):
    body = os.urandom(3 * (1 << 20) + 17)  # more than one chunk
    digests = serve({"blob.bin": body})
    seen = []
    path = download_file(
        f"{server}/ok/blob.bin",
        tmp_path / "d" / "blob.bin",
        digests["blob.bin"],
        progress=lambda done, total: seen.append((done, total)),
    )
    assert path.read_bytes() == body and leftovers(tmp_path / "d") == ["blob.bin"]
    assert seen[-1] == (len(body), len(body)) and len(seen) >= 4
    assert sha256_file(path) == digests["blob.bin"]


def test_checksum_mismatch_leaves_nothing(server, tmp_path):
    serve({"blob.bin": b"x" * 1000})
    with pytest.raises(DownloadError, match=r"/ok/blob.bin: SHA-256 mismatch: got [0-9a-f]{64}"):
        download_file(f"{server}/ok/blob.bin", tmp_path / "blob.bin", "0" * 64)
    assert leftovers(tmp_path) == []


def test_cut_off_transfer_leaves_nothing(server, tmp_path):
    digests = serve({"blob.bin": os.urandom(5000)})
    with pytest.raises(DownloadError, match=r"/cut/blob.bin: transfer cut off after 2500 of 6000"):
        download_file(f"{server}/cut/blob.bin", tmp_path / "blob.bin", digests["blob.bin"])
    assert leftovers(tmp_path) == []


def test_http_errors_and_refused_connections_leave_nothing(server, tmp_path):
    serve({})
    with pytest.raises(DownloadError, match=r"/ok/missing.bin: HTTP 404"):
        download_file(f"{server}/ok/missing.bin", tmp_path / "m.bin", "0" * 64)
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(DownloadError, match=rf"127.0.0.1:{port}/x.bin: cannot connect"):
        download_file(f"http://127.0.0.1:{port}/x.bin", tmp_path / "x.bin", "0" * 64)
    assert leftovers(tmp_path) == []
    with pytest.raises(ValueError, match="sha256 must be 64 hex digits"):
        download_file(f"{server}/ok/x.bin", tmp_path / "x.bin", "abc")


def test_fetch_falls_back_to_the_next_mirror_and_lists_every_failure(server, tmp_path):
    digests = serve({"blob.bin": b"payload"})
    path = fetch("blob.bin", tmp_path, [f"{server}/cut", f"{server}/ok/"], digests["blob.bin"])
    assert path.read_bytes() == b"payload"
    with pytest.raises(DownloadError, match=r"could not download blob.bin .*cut off.*HTTP 404"):
        fetch("blob.bin", tmp_path / "b", [f"{server}/cut", f"{server}/gone/x"], "1" * 64)
    assert leftovers(tmp_path / "b") == []


def test_mnist_downloads_verifies_and_reads(server, tmp_path, monkeypatch):
    source = tmp_path / "source"
    arrays = write_mnist(source)
    digests = serve({p.name: p.read_bytes() for p in source.iterdir()})
    monkeypatch.setitem(D.SHA256, "mnist", digests)
    data = load_dataset("mnist", tmp_path / "data", download=True, mirrors=[f"{server}/ok"])
    np.testing.assert_array_equal(data.test.arrays[1], arrays["t10k-labels-idx1-ubyte"])
    assert leftovers(tmp_path / "data") == sorted(digests)
    monkeypatch.setitem(D.SHA256, "fashion_mnist", {name: "0" * 64 for name in digests})
    with pytest.raises(DownloadError, match="SHA-256 mismatch"):
        fashion_mnist(tmp_path / "fashion", download=True, mirrors=[f"{server}/ok"])
    assert leftovers(tmp_path / "fashion") == []


def test_cifar10_downloads_the_archive_and_extracts_it(server, tmp_path, monkeypatch):
    digests = serve({"cifar-10-python.tar.gz": cifar_archive_bytes(cifar_batches())})
    monkeypatch.setitem(D.SHA256, "cifar10", digests)
    monkeypatch.setitem(D.MIRRORS, "cifar10", (f"{server}/ok",))
    data = cifar10(tmp_path, download=True)
    assert len(data.train) == 20
    assert leftovers(tmp_path) == ["cifar-10-batches-py", "cifar-10-python.tar.gz"]


# ================================================================= by name
@needs_sklearn
def test_load_dataset_by_name_and_unknown_names(tmp_path):
    data = load_dataset("digits", image_size=16, seed=4)
    assert data.train.arrays[0].shape[1:] == (1, 16, 16)
    write_mnist(tmp_path)
    assert load_dataset("fashion-mnist", tmp_path).classes == D.FASHION_CLASSES
    with pytest.raises(ValueError, match=r"unknown dataset 'imagenet'; known: cifar10, digits"):
        load_dataset("imagenet")
    with pytest.raises(ValueError, match="image_folder needs data_dir"):
        load_dataset("image_folder", image_size=8)
    assert len(load_dataset("digits", tmp_path / "unused", download=True).test) == 359


def test_default_data_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("TINYNET_DATA", str(tmp_path))
    assert D.default_data_dir("mnist") == tmp_path / "mnist"
    monkeypatch.delenv("TINYNET_DATA")
    assert D.default_data_dir("cifar10") == Path.home() / ".cache" / "tinynet" / "cifar10"


def test_published_checksums_are_well_formed():
    for name, table in D.SHA256.items():
        assert set(table) <= {*D.IDX_FILES["train"], *D.IDX_FILES["test"], D.CIFAR10_ARCHIVE}
        for digest in table.values():
            assert len(digest) == 64 and int(digest, 16) >= 0, (name, digest)
        assert D.MIRRORS[name]
