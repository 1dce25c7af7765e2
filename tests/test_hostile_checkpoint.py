"""Hostile and damaged files, bad options and failing runs (issue 10): each is refused early with
one line naming the file or option, through the Python API and through the ``tinynet`` command,
in bounded memory, and without creating or changing any output file."""

import io as stdio
import json
import math
import struct
import warnings
import zipfile
import zlib

import numpy as np
import pytest

import tinynet
from tinynet.cli import EXIT_ERROR, main
from tinynet.data import DataSplits, TensorDataset, load_dataset
from tinynet.train import (
    CHECKPOINT,
    MAX_CLASSES,
    METRICS,
    TrainConfig,
    Trainer,
    TrainingError,
    load_trained_model,
)

from bounded import run_bounded
from datafiles import needs_pillow, needs_sklearn, snapshot

TINY = ["--width", "0.125", "--batch-size", "16", "--max-batches", "2"]


# ------------------------------------------------------------------ helpers
def npy_bytes(array: np.ndarray) -> bytes:
    buffer = stdio.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def npy_header(shape, dtype) -> bytes:
    """The .npy magic and header of an array of ``shape`` and ``dtype``, without its data."""
    buffer = stdio.BytesIO()
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False,
              "shape": shape}  # fmt: skip
    np.lib.format.write_array_header_1_0(buffer, header)
    return buffer.getvalue()


def meta_entry(tree_json: str) -> bytes:
    """The ``__tinynet__`` entry tinynet.save writes, holding ``tree_json`` as the tree."""
    return npy_bytes(np.array(f'{{"format": "tinynet-npz", "version": 1, "tree": {tree_json}}}'))


def raw_zip(entries) -> bytes:
    """A zip archive written byte by byte, so its directory can say anything: ``entries`` are
    (name, bytes as stored, method, crc, declared uncompressed size)."""
    body, directory = b"", b""
    for name, stored, method, crc, size in entries:
        name = name.encode()
        directory += struct.pack(
            "<4s6H3L5H2L", b"PK\x01\x02", 20, 20, 0, method, 0, 0, crc, len(stored), size,
            len(name), 0, 0, 0, 0, 0, len(body),
        ) + name  # fmt: skip
        body += struct.pack(
            "<4s5H3L2H", b"PK\x03\x04", 20, 0, method, 0, 0, crc, len(stored), size, len(name), 0
        ) + name + stored  # fmt: skip
    count = len(entries)
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, count, count, len(directory), len(body), 0)
    return body + directory + end


def stored(name: str, data: bytes, size: int | None = None):
    return (name, data, zipfile.ZIP_STORED, zlib.crc32(data), len(data) if size is None else size)


def deflated_zeros(name: str, header: bytes, zeros: int, size: int | None = None):
    """An entry holding ``header`` then ``zeros`` zero bytes, deflated chunk by chunk so that
    writing a bomb of hundreds of MB costs the test a few hundred KB."""
    compressor, chunk = zlib.compressobj(9, zlib.DEFLATED, -15), bytes(1 << 20)
    parts, crc = [compressor.compress(header)], zlib.crc32(header)
    for _ in range(zeros >> 20):
        parts.append(compressor.compress(chunk))
        crc = zlib.crc32(chunk, crc)
    parts.append(compressor.flush())
    honest = len(header) + (zeros >> 20 << 20)
    return (name, b"".join(parts), zipfile.ZIP_DEFLATED, crc, honest if size is None else size)


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def refused(capsys, command: str, *argv) -> str:
    """The one error line of ``tinynet COMMAND ARGV``, checked to exit 1 without a traceback
    (argparse's errors included)."""
    try:
        code, _, err = run(capsys, command, *argv)
    except SystemExit as exit_:
        code, err = exit_.code, capsys.readouterr().err
    assert code == EXIT_ERROR, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"tinynet {command}: error: "), err
    return lines[0]


def load_bounded(path) -> str:
    """The error ``tinynet.load(path)`` gives in a process allowed 100 MB above its imports,
    checked not to be a MemoryError."""
    result = run_bounded(
        f"""
        try:
            tinynet.load({str(path)!r})
        except ValueError as error:
            print(error)
        """,
        budget_mb=100,
    )
    assert "MemoryError" not in result.stderr and result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"tinynet.load: {path}"), result.stdout
    return result.stdout


def strict_json_lines(path) -> list:
    def refuse(constant):
        raise ValueError(f"{path} holds {constant}")

    return [json.loads(line, parse_constant=refuse) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def digits():
    pytest.importorskip("sklearn")
    train, test, classes = load_dataset("digits")
    return DataSplits(TensorDataset(*train[:64]), TensorDataset(*test[:32]), classes)


@pytest.fixture(scope="module")
def finished(tmp_path_factory, digits):
    """A finished one-epoch tiny run on digits: its folder (never changed by the tests)."""
    out = tmp_path_factory.mktemp("finished")
    config = TrainConfig(width=0.125, batch_size=16, max_batches=2, epochs=1, out_dir=str(out))
    Trainer(config, digits, log=lambda message: None).fit()
    return out


def run_copy(finished, folder):
    """A copy of the finished run in ``folder``, to damage or resume."""
    folder.mkdir()
    for name in (CHECKPOINT, METRICS):
        (folder / name).write_bytes((finished / name).read_bytes())
    return folder


# ------------------------------------------------------------------ A1: entries that lie
@pytest.mark.parametrize("lying_directory", [False, True], ids=["honest-zip", "lying-zip"])
def test_an_entry_that_inflates_past_its_header_is_refused_in_bounded_memory(
    tmp_path, lying_directory
):
    # The .npy header says 10 float64s; the entry inflates to 256 MB (a 250 KB file). With an
    # honest zip directory the sizes disagree before anything is read; with a lying one (it
    # says 208 bytes) reading stops at 208 bytes and the CRC exposes the rest.
    header = npy_header((10,), np.float64)
    size = len(header) + 80 if lying_directory else None
    bomb = tmp_path / "bomb.npz"
    bomb.write_bytes(
        raw_zip([stored("__tinynet__.npy", meta_entry('{"__dict__": {"w": {"__array__": "w"}}}')),
                 deflated_zeros("w.npy", header, 256 << 20, size)])  # fmt: skip
    )
    refusal = load_bounded(bomb)
    if lying_directory:
        assert "bomb.npz is corrupt or truncated" in refusal and "CRC" in refusal
    else:
        assert f"bomb.npz: entry 'w' holds {256 << 20:,} bytes of data but its header says " \
               "(10,) float64, 80 bytes" in refusal  # fmt: skip


@pytest.mark.parametrize(
    "entry, expected",
    [
        # The header asks for 800 MB; 80 bytes follow and the directory says so.
        (stored("w.npy", npy_header((10**8,), np.float64) + bytes(80)),
         "entry 'w' holds 80 bytes of data but its header says (100000000,) float64"),
        # The directory agrees with the header, but 208 stored bytes cannot hold 800 MB ...
        (stored("w.npy", npy_header((10**8,), np.float64) + bytes(80), 128 + 8 * 10**8),
         "entry 'w' claims 800,000,128 bytes from 208 stored ones"),
        # ... nor can a few deflated bytes, which expand at most 1032 times.
        (deflated_zeros("w.npy", npy_header((10**8,), np.float64), 0, 128 + 8 * 10**8),
         "entry 'w' claims 800,000,128 bytes from"),
    ],
    ids=["header-too-big", "stored-too-big", "deflated-too-big"],
)
def test_an_entry_claiming_more_than_the_file_holds_is_refused_before_allocating(
    tmp_path, entry, expected
):
    bomb = tmp_path / "claims.npz"
    bomb.write_bytes(raw_zip([entry]))
    assert f"claims.npz: {expected}" in load_bounded(bomb)


def test_the_command_refuses_a_bomb_in_bounded_memory_with_one_line(tmp_path):
    bomb = tmp_path / "bomb.npz"
    bomb.write_bytes(raw_zip([deflated_zeros("w.npy", npy_header((10,), np.float64), 256 << 20)]))
    result = run_bounded(
        f"""
        from tinynet.cli import main
        raise SystemExit(main(["evaluate", {str(bomb)!r}]))
        """,
        budget_mb=100,
    )
    assert result.returncode == EXIT_ERROR and "MemoryError" not in result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"tinynet evaluate: error: tinynet.load: {bomb}: entry 'w' holds")


# ------------------------------------------------------------------ A2, A3, A4: damaged checkpoints
def _changed(**changes):
    """A damage: set (or with KeyError, delete) parts of the checkpoint; ``a__b`` is a/b."""

    def change(path):
        checkpoint = tinynet.load(path)
        for where, value in changes.items():
            *parents, key = where.split("__")
            node = checkpoint
            for parent in parents:
                node = node[parent]
            if value is KeyError:
                del node[key]
            else:
                node[key] = value
        tinynet.save(checkpoint, path)

    return change


def _complex_weight(path):
    """fc.weight stored as complex numbers (tinynet.save refuses them, so written directly)."""
    with zipfile.ZipFile(path) as archive:
        entries = {info.filename: archive.read(info) for info in archive.infolist()}
    weight = np.load(stdio.BytesIO(entries["model/fc.weight.npy"]))
    entries["model/fc.weight.npy"] = npy_bytes(weight.astype(np.complex64))
    path.write_bytes(raw_zip([stored(name, data) for name, data in entries.items()]))


def _poison(part: str, value: float):
    """Put ``value`` into the first weight of the checkpoint's ``part`` ('model' or 'ema')."""

    def poison(path):
        checkpoint = tinynet.load(path)
        weights = checkpoint["model"] if part == "model" else checkpoint["ema"]["shadow"]
        weights[next(iter(weights))].flat[0] = value
        tinynet.save(checkpoint, path)

    return poison


def _tree(tree_json):
    def write(path):
        path.write_bytes(raw_zip([stored("__tinynet__.npy", meta_entry(tree_json))]))

    return write


NAMES = [str(i) for i in range(MAX_CLASSES + 1)]
DAMAGES = {
    "top-level-list": (_tree("[1, 2]"), "holds a list at the top level; tinynet.save writes a"),
    "deep-json": (_tree("[" * 100_000 + "]" * 100_000), "unreadable __tinynet__ entry (Recursion"),
    "deep-tree": (_tree('{"__dict__": {"a": ' * 150 + "1" + "}}" * 150), "nests deeper than 100"),
    "no-config": (_changed(config=KeyError), "training checkpoint: its 'config' is missing"),
    "config-list": (_changed(config=[1, 2]), "training checkpoint: its 'config' is list"),
    "model-list": (_changed(model=[]), "training checkpoint: its 'model' is list"),
    "nan-weight": (_poison("model", math.nan), "model/conv1.conv.weight holds NaN or infinite"),
    "inf-average": (_poison("ema", math.inf), "ema/shadow/conv1.conv.weight holds NaN or infinite"),
    "nan-history": (_changed(history=[{"test_top1": math.nan}]), "history/0/test_top1 holds NaN"),
    "nan-lr": (_changed(config__lr=math.nan), "config/lr holds NaN or infinite values"),
    "complex-weight": (_complex_weight, "entry 'model/fc.weight' has dtype complex64"),
    "huge-width": (
        _changed(config__width=1e9),
        "holds a configuration that is refused: width must be a number in (0, 4]; got 1000000000.0",
    ),
    "width-text": (_changed(config__width="wide"), "width must be a number in (0, 4]; got 'wide'"),
    "huge-input": (_changed(config__input_size=10**6), "input_size must be an int in [1, 2048]"),
    "many-channels": (_changed(config__channels=10**5), "channels must be an int in [1, 64]"),
    "huge-classes": (
        _changed(config__classes=NAMES),
        "classes must be a list of at most 100,000 distinct names (str); got ['0', ",
    ),
}


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_a_damaged_checkpoint_is_named_by_the_api_and_the_command(
    finished, tmp_path, capsys, damage
):
    make, expected = DAMAGES[damage]
    folder = run_copy(finished, tmp_path / "run")
    make(folder / CHECKPOINT)
    before = snapshot(folder)
    with pytest.raises(ValueError) as error:
        load_trained_model(folder / CHECKPOINT)
    assert str(folder / CHECKPOINT) in str(error.value) and expected in str(error.value)
    with pytest.raises(ValueError) as error:
        Trainer.resume(folder, epochs=2)
    assert expected in str(error.value)
    for command, argv in [("evaluate", [folder / CHECKPOINT]),
                          ("predict", [folder / CHECKPOINT, "image.png"]),
                          ("train", ["--resume", "--out", folder, "--epochs", "2"])]:  # fmt: skip
        line = refused(capsys, command, *argv)
        assert str(folder / CHECKPOINT) in line and expected in line, line
    assert snapshot(folder) == before


def test_an_absurd_stored_config_is_refused_before_anything_is_allocated(finished, tmp_path):
    folder = run_copy(finished, tmp_path / "run")
    _changed(config__width=4000.0, config__input_size=100_000)(folder / CHECKPOINT)
    result = run_bounded(
        f"""
        from tinynet.train import load_trained_model
        try:
            load_trained_model({str(folder / CHECKPOINT)!r})
        except ValueError as error:
            print(error)
        """,
        budget_mb=100,
    )
    assert "MemoryError" not in result.stderr and result.returncode == 0, result.stderr
    assert "width must be a number in (0, 4]; got 4000.0" in result.stdout


# ------------------------------------------------------------------ A5: stray temporaries
@needs_sklearn
def test_a_stray_temporary_from_a_killed_save_is_removed_by_the_next_run(tmp_path, capsys):
    stray = [tmp_path / ".checkpoint.npz.k1ll3d00.tmp", tmp_path / ".metrics.jsonl.x9.tmp"]
    for path in stray:
        path.write_bytes(b"PK\x03\x04 half a file")
    (tmp_path / "notes.tmp").write_text("mine")  # not tinynet's: left alone
    code, _, err = run(capsys, "train", "--epochs", "1", *TINY, "--out", tmp_path)
    assert code == 0, err
    assert not any(path.exists() for path in stray) and (tmp_path / "notes.tmp").exists()
    assert tinynet.load(tmp_path / CHECKPOINT)["format"] == "tinynet-train-checkpoint"


# ------------------------------------------------------------------ B6: finite options
FLOAT_OPTIONS = ["width", "lr", "momentum", "weight_decay", "warmup_epochs", "label_smoothing",
                 "aux_weight", "ema_decay", "grad_clip"]  # fmt: skip


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan])
@pytest.mark.parametrize("option", FLOAT_OPTIONS)
def test_every_float_option_must_be_finite(option, value):
    with pytest.raises(ValueError, match=rf"^{option} must be .*; got {value}$"):
        TrainConfig(**{option: value})


@pytest.mark.parametrize("option", [o for o in FLOAT_OPTIONS if o != "aux_weight"])  # no flag
def test_the_command_refuses_a_non_finite_option_before_anything_runs(tmp_path, capsys, option):
    flag = "--" + option.replace("_", "-")
    line = refused(capsys, "train", flag, "inf", "--out", tmp_path / "run")
    assert f"{option} must be " in line and line.endswith("; got inf")
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------ B7: a NaN test loss
def test_a_nan_test_loss_stops_the_run_and_keeps_the_last_good_epoch(finished, tmp_path, digits):
    folder = run_copy(finished, tmp_path / "run")
    before = snapshot(folder)
    test_images, test_labels = (a.copy() for a in digits.test.arrays)
    test_images[3] = np.nan  # poisons the test loss only: training never sees it
    poisoned = DataSplits(digits.train, TensorDataset(test_images, test_labels), digits.classes)
    trainer = Trainer.resume(folder, epochs=2, data=poisoned, log=lambda message: None)
    with pytest.raises(TrainingError, match=r"the test loss became nan after epoch 2; .*--lr"):
        trainer.fit()
    assert snapshot(folder) == before
    assert len(strict_json_lines(folder / METRICS)) == 1


@needs_sklearn
def test_the_command_stops_on_a_nan_test_loss_without_writing(tmp_path, capsys):
    # One step at lr 1e30: the training loss (before the step) is finite, the test loss not.
    # NumPy's overflow warnings on the way would bury the error line: the command silences them
    # (here any that escaped would become the error itself).
    argv = ["train", "--epochs", "1", *TINY, "--max-batches", "1", "--no-ema", "--lr", "1e30"]
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        code, _, err = run(capsys, *argv, "--out", tmp_path / "run")
    assert code == EXIT_ERROR and "Traceback" not in err and "Warning" not in err
    assert err.strip().splitlines()[-1].startswith(
        "tinynet train: error: the test loss became nan after epoch 1; training diverged"
    )
    assert not (tmp_path / "run").exists()


def test_metrics_never_hold_nan(finished):
    for record in strict_json_lines(finished / METRICS):
        assert all(math.isfinite(v) for v in record.values())


# ------------------------------------------------------------------ B8: the output folder
@pytest.mark.parametrize(
    "out, expected",
    [
        ("file", "out_dir {tmp}/file cannot hold files: {tmp}/file is a file, not a folder"),
        ("file/run", "out_dir {tmp}/file/run cannot hold files: {tmp}/file is a file, not a"),
        ("/dev/null/x", "out_dir /dev/null/x cannot hold files: /dev/null is a file, not a"),
        ("/sys/tinynet-run", "out_dir /sys/tinynet-run cannot hold files: creating one in /sys"),
    ],
)  # fmt: skip
def test_an_unusable_output_folder_is_refused_before_any_data_is_read(
    tmp_path, capsys, out, expected
):
    (tmp_path / "file").write_text("not a folder")
    out = out if out.startswith("/") else str(tmp_path / out)
    expected = expected.format(tmp=tmp_path)
    # mnist files that do not exist: the folder is refused before they are looked for
    config = TrainConfig(dataset="mnist", data_dir=str(tmp_path / "nothing"), out_dir=out)
    with pytest.raises(OSError) as error:
        Trainer(config)
    assert str(error.value).startswith(expected)
    line = refused(capsys, "train", "--dataset", "mnist", "--data-dir", tmp_path / "nothing",
                   "--out", out)  # fmt: skip
    assert expected in line
    assert [p.name for p in tmp_path.iterdir()] == ["file"]
    assert (tmp_path / "file").read_text() == "not a folder"


# ------------------------------------------------------------------ B9: class names
def _image_folder(root, classes):
    from PIL import Image

    for k, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(4):
            Image.new("RGB", (12, 12), (60 * k, 30 * i, 200)).save(root / name / f"{i}.png")


@needs_pillow
@pytest.mark.parametrize(
    "change, theirs",
    [("rename", "[cat, wolf]"), ("add", "[bird, cat, dog]")],
)
def test_other_class_folders_are_refused_listing_both(tmp_path, capsys, change, theirs):
    data, out = tmp_path / "images", tmp_path / "run"
    _image_folder(data, ["cat", "dog"])
    code, _, err = run(capsys, "train", "--dataset", "image_folder", "--data-dir", data,
                       "--image-size", "16", "--epochs", "1", *TINY, "--out", out)  # fmt: skip
    assert code == 0, err
    if change == "rename":
        (data / "dog").rename(data / "wolf")
    else:
        _image_folder(data, ["bird"])
    before = snapshot(out)
    expected = f"was trained on the classes [cat, dog]; image_folder has {theirs}"
    with pytest.raises(ValueError, match=r"labels would not match") as error:
        Trainer.resume(out, epochs=2)
    assert expected in str(error.value)
    line = refused(capsys, "train", "--resume", "--out", out, "--epochs", "2")
    assert expected in line and "their labels would not match" in line
    line = refused(capsys, "evaluate", out / CHECKPOINT)
    assert f"{out / CHECKPOINT}'s network {expected}" in line
    assert snapshot(out) == before


# ------------------------------------------------------------------ B10: numeric options
@pytest.mark.parametrize(
    "argv, expected",
    [
        (["gradcheck", "--eps", "0"], "argument --eps: must be a finite number > 0; got '0'"),
        (["gradcheck", "--eps", "nan"], "argument --eps: must be a finite number > 0; got 'nan'"),
        (["gradcheck", "--seed", "-1"], "argument --seed: must be an int >= 0; got '-1'"),
        (["summary", "--width", "inf"], "argument --width: must be a finite number > 0; got 'inf'"),
        (["summary", "--num-classes", "0"], "argument --num-classes: must be a positive int"),
        (["summary", "--input-shape", "3", "0", "32"],
         "argument --input-shape: must be a positive int; got '0'"),
        (["summary", "--depth", "1.5"], "argument --depth: must be a positive int; got '1.5'"),
        (["evaluate", "x.npz", "--batch-size", "-4"],
         "argument --batch-size: must be a positive int; got '-4'"),
        (["predict", "x.npz", "a.png", "--top", "0"], "argument --top: must be a positive int"),
        (["train", "--width", "inf"], "width must be a number in (0, 4]; got inf"),
        (["train", "--seed", "-1"], "seed must be an int >= 0; got -1"),
        (["train", "--image-size", "100000"], "image_size must be an int in [1, 2048]; got 100000"),
        (["train", "--max-batches", "0"], "max_batches must be a positive int; got 0"),
        (["train", "--batch-size", "ten"], "argument --batch-size: invalid int value: 'ten'"),
    ],
)  # fmt: skip
def test_every_numeric_option_says_what_is_allowed(capsys, argv, expected):
    line = refused(capsys, *argv)
    assert expected in line


# ------------------------------------------------------------------ B11: out of memory
def test_running_out_of_memory_while_reading_is_one_line_naming_the_file(tmp_path):
    big = tmp_path / "big.npz"
    tinynet.save({"w": np.zeros(12_500_000)}, big)  # 100 MB of weights, under a 40 MB budget
    result = run_bounded(
        f"""
        from tinynet.cli import main
        raise SystemExit(main(["evaluate", {str(big)!r}]))
        """,
        budget_mb=40,
    )
    assert result.returncode == EXIT_ERROR
    [line] = result.stderr.strip().splitlines()
    assert line == (
        f"tinynet evaluate: error: out of memory: tinynet.load: {big}: entry 'w' needs "
        f"100,000,000 bytes: not enough memory"
    )


@needs_sklearn
def test_running_out_of_memory_while_training_is_one_line(tmp_path):
    result = run_bounded(
        f"""
        from tinynet.cli import main
        raise SystemExit(main(["train", "--image-size", "2048", "--out", {str(tmp_path)!r}]))
        """,
        budget_mb=300,
        imports="import sklearn.datasets",
    )
    assert result.returncode == EXIT_ERROR, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("tinynet train: error: out of memory: ")
    assert "Traceback" not in result.stderr and not list(tmp_path.iterdir())
