"""``tinynet convert`` of ``.safetensors`` files: timm's Inception-v4 weights saved by the
safetensors package through the command into ``load_state_dict``, every dtype NumPy holds, and
the files it must refuse (one line naming the file, nothing written), without torch and, when the
package is missing, with an error naming the extra."""

import json
import os
import struct
import subprocess
import sys

import numpy as np
import pytest

import tinynet.io
from tinynet.cli import main
from tinynet.convert import CheckpointError, convert_torch_checkpoint, read_safetensors
from tinynet.models import inception_v4

from bounded import run_bounded
from strategies import uniform
from timm_twins import SMALLEST, relative_error, timm_network

safetensors_numpy = pytest.importorskip("safetensors.numpy")


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tinynet convert: error: "), err
    return lines[0]


def test_timms_weights_go_through_the_command_into_load_state_dict(torch, tmp_path, capsys):
    from safetensors.torch import save_file

    theirs = timm_network(torch, "inception_v4").eval()
    save_file(theirs.state_dict(), tmp_path / "inception_v4.safetensors")
    code = main(["convert", str(tmp_path / "inception_v4.safetensors"), str(tmp_path / "v4.npz")])
    assert code == 0
    assert "wrote 896 tensors" in capsys.readouterr().out
    state = tinynet.io.load(tmp_path / "v4.npz")
    assert state["features.0.bn.num_batches_tracked"].dtype == np.int64
    ours = inception_v4(num_classes=5)
    ours.load_state_dict(state)
    ours.eval()
    x = uniform(5, (2, 3, SMALLEST, SMALLEST), 0, 1, np.float32)
    expected = theirs(torch.from_numpy(x)).detach().numpy()
    assert relative_error(ours(x), expected) <= 1e-4


def test_every_dtype_numpy_holds_reads_back_exactly(tmp_path):
    tensors = {
        "f64": uniform(0, (2, 3)),
        "f32": uniform(1, (4,), dtype=np.float32),
        "f16": uniform(2, (2, 2), dtype=np.float16),
        "i64 scalar": np.array(7, np.int64),
        "i32": np.arange(6, dtype=np.int32).reshape(3, 2),
        "u8": np.arange(5, dtype=np.uint8),
        "bool": np.array([True, False]),
        "empty": np.zeros((0, 3), np.float32),
    }
    safetensors_numpy.save_file(tensors, tmp_path / "all.safetensors")
    convert_torch_checkpoint(tmp_path / "all.safetensors", tmp_path / "all.npz")
    state = tinynet.io.load(tmp_path / "all.npz")
    assert state.keys() == tensors.keys()
    for key, value in tensors.items():
        assert state[key].dtype == value.dtype and state[key].shape == value.shape, key
        np.testing.assert_array_equal(state[key], value, err_msg=key)


def _header_file(header: dict, data: bytes = b"") -> bytes:
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + data


def _valid() -> bytes:
    return safetensors_numpy.save({"w": np.arange(4, dtype=np.float32)})


BAD_FILES = {
    "not safetensors": (b"PK\x03\x04 a zip, not this", "is not a valid .safetensors file"),
    "empty": (b"", "is not a valid .safetensors file: Error while deserializing header"),
    "truncated": (_valid()[:-3], "is not a valid .safetensors file"),
    "header longer than the file": (
        struct.pack("<Q", 10**6) + b"{}",
        "is not a valid .safetensors file",
    ),
    "a tensor past the end": (
        _header_file({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 4),
        "is not a valid .safetensors file",
    ),
    "a header that is not JSON": (struct.pack("<Q", 4) + b"{{{{", "is not a valid"),
    "no tensors": (_header_file({"__metadata__": {"format": "pt"}}), "holds no tensors"),
    "an unknown dtype": (
        _header_file({"w": {"dtype": "XYZ", "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 4),
        "is not a valid .safetensors file",
    ),
    "overlapping tensors": (
        _header_file(
            {
                "a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
                "b": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
            },
            b"\0" * 4,
        ),
        "is not a valid .safetensors file",
    ),
    "a header that is not UTF-8": (struct.pack("<Q", 4) + b"\xff\xfe{}", "is not a valid"),
    "bfloat16": (
        _header_file({"w": {"dtype": "BF16", "shape": [2], "data_offsets": [0, 4]}}, b"\0" * 4),
        "dtype NumPy cannot hold",
    ),
}


@pytest.mark.parametrize("case", BAD_FILES)
def test_bad_files_are_one_line_naming_the_file_and_nothing_is_written(tmp_path, capsys, case):
    content, phrase = BAD_FILES[case]
    src, dst = tmp_path / "bad.safetensors", tmp_path / "out" / "converted.npz"
    src.write_bytes(content)
    with pytest.raises(CheckpointError, match=phrase):
        read_safetensors(src)
    assert main(["convert", str(src), str(dst)]) == 1
    line = _one_line_error(capsys)
    assert str(src) in line and phrase.split(":")[0] in line
    assert not dst.parent.exists()


def test_an_upper_case_suffix_is_a_safetensors_file(tmp_path, capsys):
    weights = {"w": np.arange(4, dtype=np.float32)}
    safetensors_numpy.save_file(weights, tmp_path / "W.SAFETENSORS")
    assert main(["convert", str(tmp_path / "W.SAFETENSORS"), str(tmp_path / "w.npz")]) == 0
    assert tinynet.io.load(tmp_path / "w.npz")["w"].tolist() == [0.0, 1.0, 2.0, 3.0]


@pytest.mark.parametrize("kind", ["folder", "fifo"])
def test_what_is_not_a_regular_file_is_named(tmp_path, capsys, kind):
    src, dst = tmp_path / "weights.safetensors", tmp_path / "out" / "converted.npz"
    src.mkdir() if kind == "folder" else os.mkfifo(src)
    with pytest.raises(CheckpointError, match="it is not a regular file"):
        read_safetensors(src)  # a FIFO is not opened: nothing waits for a writer
    assert main(["convert", str(src), str(dst)]) == 1
    assert _one_line_error(capsys) == (
        f"tinynet convert: error: {src} is not a .safetensors file: it is not a regular file"
    )
    assert not dst.parent.exists()


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file: .*nothere.safetensors"):
        convert_torch_checkpoint(tmp_path / "nothere.safetensors", tmp_path / "out.npz")
    assert not (tmp_path / "out.npz").exists()


def test_a_huge_declared_tensor_is_refused_before_any_allocation(tmp_path):
    src = tmp_path / "huge.safetensors"
    size = 4 * 10**10  # 40 GB declared, 16 bytes stored
    src.write_bytes(
        _header_file({"w": {"dtype": "F32", "shape": [10**10], "data_offsets": [0, size]}}, b"0")
    )
    result = run_bounded(
        f"""
        from tinynet.convert import read_safetensors
        try:
            read_safetensors({str(src)!r})
        except Exception as error:
            print(type(error).__name__, error)
        """,
        imports="import safetensors.numpy",
    )
    assert "MemoryError" not in result.stdout + result.stderr, result.stderr
    assert result.stdout.startswith("CheckpointError"), result.stdout + result.stderr
    assert f"{src} is not a valid .safetensors file" in result.stdout


def test_safetensors_reads_without_torch_and_names_the_extra_without_the_package(tmp_path):
    safetensors_numpy.save_file({"w": np.arange(3.0)}, tmp_path / "w.safetensors")
    without = "import sys; sys.modules['torch'] = None\n"  # any `import torch` now fails
    code = (
        "from tinynet.convert import read_safetensors\n"
        f"w = read_safetensors({str(tmp_path / 'w.safetensors')!r})['w']\n"
        "assert w.tolist() == [0.0, 1.0, 2.0], w\n"
    )
    subprocess.run([sys.executable, "-c", without + code], check=True)
    code = (
        "import sys; sys.modules['safetensors'] = None\n"  # as if the extra were not installed
        "from tinynet.cli import main\n"
        f"sys.exit(main(['convert', {str(tmp_path / 'w.safetensors')!r}, 'out.npz']))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path
    )
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"tinynet convert: error: reading {tmp_path / 'w.safetensors'} needs the safetensors "
        "package, which is not installed: pip install 'tinynet[safetensors]'"
    )
    assert not (tmp_path / "out.npz").exists()
