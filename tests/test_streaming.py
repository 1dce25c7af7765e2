"""The streaming image pipeline (issue 26): an image folder read as files by worker processes.

Same batches whatever the number of workers, exact resume mid-epoch, the cache, bad images,
a worker that fails or dies, Ctrl-C (no process and no /dev/shm segment left), and a folder
that loses files between epochs. Folders are tiny generated JPEGs in tmp_path.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from interrupt import sigint_as_usual

from tinynet import _threads, runtime
from tinynet.data import DatasetError, ImageFiles, StreamingLoader, image_files
from tinynet.data.streaming import attach_cache
from tinynet.data.workers import WorkerError

Image = pytest.importorskip("PIL.Image", reason="the image pipeline reads files with Pillow")
CLASSES = ("cat", "dog", "owl")


def jpeg_folder(root: Path, per_class: int = 8, size=(40, 30), seed: int = 0) -> Path:
    """``per_class`` random JPEGs of ``size`` (width, height) in each class folder of ``root``."""
    rng = np.random.default_rng(seed)
    for label, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
            pixels[..., label] //= 2  # a class shows in its colour
            Image.fromarray(pixels).save(root / name / f"{i:03d}.jpg", quality=90)
    return root


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def epochs_of(loader, epochs: int = 2) -> list:
    try:
        return [batch for _ in range(epochs) for batch in loader]
    finally:
        loader.close()


def assert_same(batches, others) -> None:
    assert len(batches) == len(others)
    for (images, labels), (theirs, their_labels) in zip(batches, others):
        assert images.dtype == theirs.dtype == np.float32
        np.testing.assert_array_equal(images, theirs)
        np.testing.assert_array_equal(labels, their_labels)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return jpeg_folder(tmp_path_factory.mktemp("photos"))


@pytest.mark.parametrize("augment", ["paper", "crop-flip", "crop", "none"])
def test_the_batches_are_the_same_with_0_1_and_2_workers(folder, augment):
    train = image_files(folder, 16).train
    runs = [
        epochs_of(StreamingLoader(train, 5, shuffle=True, seed=7, augment=augment, workers=n))
        for n in (0, 1, 2)
    ]
    assert_same(runs[0], runs[1])
    assert_same(runs[0], runs[2])
    images = np.concatenate([images for images, _ in runs[0]])
    assert images.shape[1:] == (3, 16, 16) and 0.0 <= images.min() and images.max() <= 1.0
    first, second = runs[0][: len(runs[0]) // 2], runs[0][len(runs[0]) // 2 :]
    if augment != "none":  # a new epoch draws new crops (and a new order)
        assert not np.array_equal(first[0][0], second[0][0])


def test_each_image_has_its_own_generator_whatever_the_batching(folder):
    """Image i of epoch e is made from (seed, e, i) alone: batched by 3 or by 8, unshuffled,
    the same pixels."""
    train = image_files(folder, 16).train
    by3 = epochs_of(StreamingLoader(train, 3, seed=1, augment="paper", workers=2), 1)
    by8 = epochs_of(StreamingLoader(train, 8, seed=1, augment="paper", workers=0), 1)
    np.testing.assert_array_equal(
        np.concatenate([b[0] for b in by3]), np.concatenate([b[0] for b in by8])
    )


def test_the_evaluation_view_is_image_folders(folder):
    from tinynet.data import image_folder

    in_memory, files = image_folder(folder, 16), image_files(folder, 16)
    assert files.classes == in_memory.classes and files.image_shape == in_memory.image_shape
    images, labels = files.test[np.arange(len(files.test))]
    np.testing.assert_array_equal(images, in_memory.test.arrays[0])
    np.testing.assert_array_equal(labels, in_memory.test.arrays[1])


def test_a_resume_mid_epoch_with_workers_gives_the_rest_of_the_run(folder):
    train = image_files(folder, 16).train

    def loader(workers):
        return StreamingLoader(train, 4, shuffle=True, seed=3, augment="paper", workers=workers)

    whole = epochs_of(loader(2), 2)
    first = loader(2)
    iterator = iter(first)
    head = [next(iterator) for _ in range(2)]
    state = first.state_dict()
    iterator.close()
    first.close()
    assert state["epoch"] == 0 and state["batch"] == 2
    resumed = loader(1)
    resumed.load_state_dict(state)
    rest = epochs_of(resumed, 2)  # the rest of epoch 0, then epoch 1
    assert_same(whole, head + rest)


def test_leaving_an_epoch_early_then_going_on_is_exact(folder):
    """An epoch left after 2 batches (as --max-batches does) with batches under way: the next
    epoch's batches are its own, not the abandoned ones."""
    train = image_files(folder, 16).train
    loader = StreamingLoader(train, 3, shuffle=True, seed=2, augment="crop-flip", workers=2)
    try:
        for step, _ in enumerate(loader):
            if step == 1:
                break
        second = list(loader)
    finally:
        loader.close()
    reference = StreamingLoader(train, 3, shuffle=True, seed=2, augment="crop-flip")
    reference.load_state_dict({**reference.state_dict(), "epoch": 1})
    assert_same(second, epochs_of(reference, 1))


def test_the_cache_gives_the_same_batches_is_reused_and_is_rebuilt_when_the_folder_changes(
    tmp_path,
):
    root = jpeg_folder(tmp_path / "photos", per_class=4)
    train = image_files(root, 16).train
    plain = epochs_of(StreamingLoader(train, 4, shuffle=True, seed=5, augment="crop-flip"))
    cache = attach_cache(train, tmp_path / "cache", "crop-flip", workers=2, batch_size=3)
    assert cache.array.shape == (len(train), 3, 16, 16) and cache.array.dtype == np.uint8
    cached = epochs_of(StreamingLoader(train, 4, shuffle=True, seed=5, augment="crop-flip"))
    assert_same(plain, cached)
    os.utime(cache.path, (1, 1))  # marks the file: reused means not written again
    again = attach_cache(image_files(root, 16).train, tmp_path / "cache", "crop-flip")
    assert again.path == cache.path and os.stat(again.path).st_mtime == 1
    changed = sorted((root / "cat").iterdir())[0]
    Image.new("RGB", (40, 30), (250, 0, 0)).save(changed)
    fresh = attach_cache(image_files(root, 16).train, tmp_path / "cache", "crop-flip")
    assert fresh.path != cache.path
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [fresh.path.name]  # stale: gone


def test_the_paper_cache_keeps_larger_squares(tmp_path, folder):
    train = image_files(folder, 16).train
    cache = attach_cache(train, tmp_path, "paper")
    assert cache.array.shape[2:] == (18, 18)  # round(16 * 256 / 224)
    batches = epochs_of(StreamingLoader(train, 4, seed=0, augment="paper", workers=1), 1)
    assert batches[0][0].shape == (4, 3, 16, 16)


def test_a_bad_image_mid_epoch_is_named_or_skipped_and_listed(tmp_path):
    root = jpeg_folder(tmp_path / "photos", per_class=3)
    bad = root / "dog" / "001.jpg"
    truncate(bad)
    train = image_files(root, 16, test_fraction=0.5, seed=1).train
    if bad not in train.files:  # the bad one in the training split, wherever the split put it
        train = image_files(root, 16, test_fraction=0.5, seed=1).test
    assert bad in train.files
    for workers in (0, 2):
        with pytest.raises(DatasetError, match=f"{bad}: cannot decode this image"):
            epochs_of(StreamingLoader(train, 2, augment="paper", workers=workers), 1)
    loader = StreamingLoader(train, 2, augment="paper", workers=2, skip_bad_images=True)
    batches = epochs_of(loader, 1)
    assert sum(len(labels) for _, labels in batches) == len(train) - 1
    assert len(loader.skipped) == 1 and str(bad) in loader.skipped[0]


def _fail_on(index, how):
    original = ImageFiles.pixels

    def pixels(self, i, augment="none", rng=None):
        if i == index:
            if how == "die":
                os._exit(3)
            raise ZeroDivisionError("a bug in the worker")
        return original(self, i, augment, rng)

    return pixels


@pytest.mark.parametrize("how", ["raise", "die"])
def test_a_failing_or_dying_worker_ends_the_epoch_with_its_error(folder, monkeypatch, how):
    train = image_files(folder, 16).train
    monkeypatch.setattr(ImageFiles, "pixels", _fail_on(5, how))  # the forked workers inherit it
    loader = StreamingLoader(train, 2, workers=2)
    expected = (
        "died \\(exit code 3\\)" if how == "die" else "ZeroDivisionError: a bug in the worker"
    )
    with pytest.raises(WorkerError, match=expected):
        epochs_of(loader, 1)
    assert loader._pool is None  # closed: the workers are gone
    assert not [
        name for name in os.listdir("/dev/shm") if name.startswith(f"tinynet-{os.getpid()}-")
    ]


def test_a_folder_that_loses_files_or_vanishes_between_epochs_is_named(tmp_path):
    root = jpeg_folder(tmp_path / "photos", per_class=3)
    train = image_files(root, 16).train
    loader = StreamingLoader(train, 4, workers=1)
    try:
        list(loader)
        gone = train.files[2]
        gone.unlink()
        with pytest.raises(DatasetError, match=f"lost 1 of the {len(train)} files.*{gone}"):
            list(loader)
        shutil.rmtree(root)
        with pytest.raises(DatasetError, match=f"image folder {train.root} is gone"):
            list(loader)
    finally:
        loader.close()


def test_workers_take_their_cores_from_the_training_step():
    runtime.configure()
    own = _threads._pools.requested or _threads.OWN_THREADS
    with _threads.reserve_for_workers(1):
        assert _threads._pools.threads == max(1, own - 1)
    assert _threads._pools.threads == max(1, own) or _threads.OWN_THREADS == own
    assert _threads.default_workers() == _threads.threads_per_rank() // 4


def _cli(*args, **popen):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "tinynet", "train", *map(str, args)],
                            env=env, stderr=subprocess.PIPE, text=True,
                            preexec_fn=sigint_as_usual, **popen)  # fmt: skip


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid == pid:
                found.append(int(entry.name))
    return found


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads the process table in /proc")
def test_ctrl_c_stops_every_worker_and_leaves_no_shared_memory(tmp_path):
    root = jpeg_folder(tmp_path / "photos", per_class=30, size=(160, 120))
    run = _cli("--dataset", "image_folder", "--data-dir", root, "--image-size", 32,
               "--augment", "paper", "--workers", 2, "--epochs", 50, "--batch-size", 4,
               "--out", tmp_path / "run")  # fmt: skip
    workers = []
    try:
        deadline = time.monotonic() + 120
        while len(workers) < 2 and time.monotonic() < deadline and run.poll() is None:
            workers = [p for p in _children(run.pid)
                       if "tinynet-data" in Path(f"/proc/{p}/comm").read_text()
                       or Path(f"/proc/{p}/cmdline").read_bytes().startswith(
                           Path(f"/proc/{run.pid}/cmdline").read_bytes())]  # fmt: skip
            time.sleep(0.2)
        assert len(workers) >= 2, run.stderr.read() if run.poll() is not None else "no workers"
        time.sleep(1.0)  # well into the epoch
        run.send_signal(signal.SIGINT)
        _, err = run.communicate(timeout=60)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == 130, err
    assert "interrupted" in err
    for pid in workers:
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text()
    assert not _children(run.pid)
    assert not [n for n in os.listdir("/dev/shm") if n.startswith(f"tinynet-{run.pid}-")]


def test_the_command_stops_on_a_bad_image_naming_it_or_skips_and_lists_it(tmp_path):
    root = jpeg_folder(tmp_path / "photos", per_class=4)
    bad = root / "owl" / "002.jpg"
    truncate(bad)
    common = ("--dataset", "image_folder", "--data-dir", root, "--image-size", 16,
              "--epochs", 1, "--batch-size", 4, "--workers", 1)  # fmt: skip
    run = _cli(*common, "--out", tmp_path / "a")
    _, err = run.communicate(timeout=300)
    assert run.returncode == 1
    assert "Traceback" not in err
    assert (
        err.strip()
        .splitlines()[-1]
        .startswith(f"tinynet train: error: {bad}: cannot decode this image (")
    )
    run = _cli(*common, "--skip-bad-images", "--out", tmp_path / "b")
    _, err = run.communicate(timeout=300)
    assert run.returncode == 0, err
    record = json.loads((tmp_path / "b" / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["skipped_images"] == 1 and str(bad) in record["bad_images"][0]
    assert record["data_wait_s"] >= 0.0
    assert "data wait" in err


def test_multi_crop_evaluation_reads_each_scale_from_the_files(tmp_path):
    from tinynet.data.multicrop import paper_crops, ten_crop
    from tinynet.evaluate import file_crops

    root = jpeg_folder(tmp_path / "photos", per_class=2, size=(80, 40))  # wide photographs
    test = image_files(root, 16).test
    indices = np.arange(len(test))
    tens = file_crops(test, indices, 16, "10")
    assert tens.shape == (10, len(test), 3, 16, 16)
    square = test.square(0, 18).astype(np.float32)[None] / 255  # 16 * 256 / 224, from the file
    np.testing.assert_array_equal(tens[:, :1], ten_crop(square, 16))
    crops = file_crops(test, indices, 16, "144")
    assert crops.shape == (144, len(test), 3, 16, 16)
    wide = test.scaled(0, 18)  # the first scale: the whole 2:1 photograph, shorter side 18
    assert wide.shape == (3, 18, 36)
    first_scale = paper_crops(wide.astype(np.float32)[None] / 255, crop=16, scales=[18])
    np.testing.assert_array_equal(crops[:36, :1], first_scale)
    # The left and right squares of a wide photograph are its sides, not the centred square's.
    np.testing.assert_array_equal(first_scale[0, 0], wide[:, :16, :16].astype(np.float32) / 255)
    np.testing.assert_array_equal(
        first_scale[6 * 2 + 1, 0], wide[:, :16, 20:36].astype(np.float32) / 255
    )


def test_a_folder_run_trains_resumes_and_evaluates_with_multi_crop_through_the_command(
    tmp_path, capsys
):
    from tinynet.cli import main

    root = jpeg_folder(tmp_path / "photos", per_class=4)
    out = tmp_path / "run"
    common = ["--dataset", "image_folder", "--data-dir", str(root), "--image-size", "16",
              "--batch-size", "4", "--workers", "2", "--augment", "paper", "--cache",
              "--width", "0.125"]  # fmt: skip
    assert main(["train", *common, "--epochs", "1", "--out", str(out)]) == 0
    assert f"image cache: {out / 'image-cache'}" in capsys.readouterr().err
    assert main(["train", "--resume", "--epochs", "2", "--out", str(out)]) == 0
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2] and all("data_wait_s" in r for r in records)
    capsys.readouterr()
    for crops in ("10", "144"):
        assert main(["evaluate", str(out / "checkpoint.npz"), "--multi-crop", crops]) == 0
        assert f"test images, {crops} crop(s) each" in capsys.readouterr().out


def test_the_digits_example_writes_the_in_memory_split_as_jpegs(tmp_path):
    from tinynet.data import load_dataset

    script = Path(__file__).parent.parent / "examples" / "digits_as_jpegs.py"
    done = subprocess.run([sys.executable, script, tmp_path / "digits"], capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "wrote 1438 train and 359 test JPEGs" in done.stdout
    files = image_files(tmp_path / "digits", 32)
    memory = load_dataset("digits", image_size=32, seed=0)
    assert files.classes == memory.classes and len(files.test) == len(memory.test)
    images, labels = files.test[np.arange(len(files.test))]
    order = np.argsort([p.name for p in files.test.files], kind="stable")  # the written order
    np.testing.assert_array_equal(labels[order], memory.test.arrays[1])
    error = np.abs(images[order] - memory.test.arrays[0]).mean(axis=(1, 2, 3))
    assert error.max() < 0.02  # each image within JPEG's quality-95 loss of the original


@pytest.mark.parametrize(
    "option, expected",
    [(("--augment", "paper"), "augment must be one of ['paper', 'crop-flip', 'crop', 'none'] "
      "(paper: with image_folder"),
     (("--workers", "2"), "workers must be an int in [0, 256] (with image_folder"),
     (("--cache",), "cache must be True or False (True with image_folder only"),
     (("--skip-bad-images",), "skip_bad_images must be True or False (True with image_folder"),
     (("--workers", "-1"), "argument --workers: must be an int >= 0; got '-1'")],
)  # fmt: skip
def test_the_folder_options_are_refused_for_in_memory_data_naming_the_option(
    tmp_path, capsys, option, expected
):
    from tinynet.cli import main

    try:
        code = main(["train", *option, "--out", str(tmp_path / "run")])
    except SystemExit as leaving:  # argparse's refusals leave through SystemExit
        code = leaving.code
    assert code == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and expected in err


def _report_threads(dataset, out, task):
    """A fill that writes what the worker's pools are: its BLAS threads and the environment."""
    from threadpoolctl import threadpool_info

    blas = [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]
    out[0, 0, 0, :2] = (max(blas, default=1), int(os.environ["OMP_NUM_THREADS"]))
    return np.array([0]), []


def test_a_worker_runs_its_own_pools_on_one_thread():
    from tinynet.data.workers import WorkerPool

    pool = WorkerPool(None, _report_threads, workers=1, slots=1, batch_shape=(1, 1, 1, 4))
    try:
        pool.submit(0, 0, ())
        slot, kept, bad = pool.next_done()
        assert pool.batch(slot, 1)[0, 0, 0, :2].tolist() == [1, 1]
    finally:
        pool.close()


KILLED_RUN = """
import sys
import numpy as np
from tinynet.data import StreamingLoader, image_files
loader = StreamingLoader(image_files(sys.argv[1], 16).train, 2, workers=2)
iterator = iter(loader)
next(iterator)
print(" ".join(str(p.pid) for p in loader._pool.processes), flush=True)
sys.stdin.read()
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_workers_end_when_their_run_is_killed(folder):
    """A run killed outright (SIGKILL: no finally runs) leaves no worker behind: the kernel ends
    them with their parent, and Python's resource tracker unlinks the segments."""
    run = subprocess.Popen([sys.executable, "-c", KILLED_RUN, str(folder)], stdin=subprocess.PIPE,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        workers = [int(pid) for pid in run.stdout.readline().split()]
        assert len(workers) == 2
        run.kill()
        run.wait(timeout=30)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(Path(f"/proc/{p}").exists() for p in workers):
            time.sleep(0.1)
        assert not any(Path(f"/proc/{p}").exists() for p in workers)
        while time.monotonic() < deadline and _segments(run.pid):
            time.sleep(0.1)
        assert not _segments(run.pid)
    finally:
        if run.poll() is None:
            run.kill()


def _segments(pid: int) -> list[str]:
    return [name for name in os.listdir("/dev/shm") if name.startswith(f"tinynet-{pid}-")]


def test_closing_the_loader_while_an_epoch_is_under_way_does_not_wait_for_it(folder):
    """As when Ctrl-C lands in the training step: the run ends the workers (close()), then the
    suspended epoch is closed with batches still under way; nothing waits for them."""
    loader = StreamingLoader(image_files(folder, 16).train, 2, augment="paper", workers=2)
    iterator = iter(loader)
    next(iterator)
    loader.close()
    signal.alarm(30)  # a hang fails the test instead of stalling the suite
    try:
        iterator.close()
    finally:
        signal.alarm(0)
    assert not _segments(os.getpid())
