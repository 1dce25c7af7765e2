"""tinynet.convert: PyTorch writes checkpoints, tinynet reads them without torch. Every dtype,
views and shared storages, wrappers, GoogLeNet end to end against PyTorch's logits, and the
files it must refuse, each with a message that names the file and the problem."""

import subprocess
import sys
import warnings
import zipfile

import numpy as np
import pytest

import tinynet.io
from tinynet.convert import CheckpointError, convert_torch_checkpoint, read_torch_checkpoint
from tinynet.models import googlenet_torchvision
from tinynet.models.googlenet import TORCHVISION

from reference import assert_close
from strategies import uniform


def _expected(torch, tensor):
    """What torch.load gives, as the NumPy array tinynet should return (bfloat16 -> float32)."""
    tensor = tensor.detach().resolve_conj().resolve_neg()
    if tensor.dtype == torch.bfloat16:
        tensor = tensor.float()
    return tensor.numpy()


def _assert_same_as_torch_load(torch, path, ours):
    theirs = torch.load(path)
    assert list(ours) == [key for key, value in theirs.items() if isinstance(value, torch.Tensor)]
    for key, array in ours.items():
        expected = _expected(torch, theirs[key])
        assert array.dtype == expected.dtype, key
        assert array.shape == expected.shape, key
        assert array.flags.c_contiguous, key
        np.testing.assert_array_equal(array, expected, err_msg=key)


def _rewrite(src, dst, drop=(), replace=None):
    """A copy of the zip archive ``src`` without the entries ending in ``drop`` and with
    ``replace``'s entries (name suffix -> function of the bytes) changed."""
    replace = replace or {}
    with zipfile.ZipFile(src) as old, zipfile.ZipFile(dst, "w") as new:
        for name in old.namelist():
            if any(name.endswith(suffix) for suffix in drop):
                continue
            data = old.read(name)
            for suffix, change in replace.items():
                if name.endswith(suffix):
                    data = change(data)
            new.writestr(name, data)


# ------------------------------------------------------------------ dtypes, views, storages
DTYPES = [
    "float32",
    "float64",
    "float16",
    "bfloat16",
    "int64",
    "int32",
    "int16",
    "int8",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "bool",
    "complex64",
    "complex128",
]


def test_every_dtype_reads_as_torch_load_gives_it(torch, tmp_path):
    generator = torch.Generator().manual_seed(0)
    state = {}
    for name in DTYPES:
        values = torch.randn(3, 4, generator=generator, dtype=torch.float64) * 50
        if name == "bool":
            values = values > 0
        elif name.startswith("u"):
            values = values.abs()
        elif name.startswith("complex"):
            values = torch.complex(values, -values)
        state[name] = values.to(getattr(torch, name))
    torch.save(state, tmp_path / "dtypes.pth")
    ours = read_torch_checkpoint(tmp_path / "dtypes.pth")
    _assert_same_as_torch_load(torch, tmp_path / "dtypes.pth", ours)
    assert ours["bfloat16"].dtype == np.float32  # widened, exactly


def test_views_offsets_and_shared_storages_become_contiguous_copies(torch, tmp_path):
    base = torch.arange(60, dtype=torch.float32).reshape(3, 4, 5)
    state = {
        "base": base,
        "transposed": base.permute(2, 0, 1),
        "offset_slice": base[1:, 2:, 1::2],
        "row": base[2, 3],
        "expanded": torch.arange(3.0).reshape(3, 1).expand(3, 4),  # stride 0
        "neg_bit": torch._neg_view(torch.arange(4.0)),
        "conj_bit": torch.tensor([1 + 2j, 3 - 4j]).conj(),
        "empty": base[:, :0],
    }
    torch.save(state, tmp_path / "views.pth")
    with zipfile.ZipFile(tmp_path / "views.pth") as archive:
        storages = [name for name in archive.namelist() if "/data/" in name]
    assert len(storages) == 4  # base and its four views share the first
    ours = read_torch_checkpoint(tmp_path / "views.pth")
    _assert_same_as_torch_load(torch, tmp_path / "views.pth", ours)
    ours["transposed"][0, 0, 0] = -1.0  # copies: no array shares memory with another
    assert ours["base"][0, 0, 0] == 0.0


def test_batchnorm_state_with_a_0d_counter_and_metadata(torch, tmp_path):
    bn = torch.nn.BatchNorm2d(3)
    bn.num_batches_tracked += 7
    state = bn.state_dict()
    assert hasattr(state, "_metadata")
    torch.save(state, tmp_path / "bn.pth")
    ours = read_torch_checkpoint(tmp_path / "bn.pth")
    assert list(ours) == ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
    counter = ours["num_batches_tracked"]
    assert counter.shape == () and counter.dtype == np.int64 and counter == 7


def test_entries_that_are_not_tensors_are_skipped_and_reported(torch, tmp_path):
    state = {"weight": torch.ones(2), "step": 3, "names": ["a"], "dtype": torch.float16}
    torch.save(state, tmp_path / "mixed.pth")
    notes = []
    assert list(read_torch_checkpoint(tmp_path / "mixed.pth", log=notes.append)) == ["weight"]
    assert len(notes) == 1 and "'step' (int)" in notes[0] and "'names' (list)" in notes[0]


def test_big_endian_checkpoints_are_byte_swapped(torch, tmp_path):
    torch.save(
        {"f": torch.tensor([1.5, -2.25]), "i": torch.tensor([1, -(2**40)])}, tmp_path / "le.pth"
    )
    swap = lambda dtype: lambda data: np.frombuffer(data, dtype).byteswap().tobytes()  # noqa: E731
    _rewrite(
        tmp_path / "le.pth",
        tmp_path / "be.pth",
        replace={"/byteorder": lambda _: b"big", "/data/0": swap("<f4"), "/data/1": swap("<i8")},
    )
    ours = read_torch_checkpoint(tmp_path / "be.pth")
    assert ours["f"].dtype == np.float32 and ours["f"].tolist() == [1.5, -2.25]
    assert ours["i"].dtype == np.int64 and ours["i"].tolist() == [1, -(2**40)]


# ------------------------------------------------------------------ wrappers
@pytest.mark.parametrize("key", ["state_dict", "model", "model_state_dict"])
def test_a_training_checkpoint_yields_the_state_dict_under_its_key(torch, tmp_path, key):
    model = torch.nn.Linear(3, 2)
    torch.save({"epoch": 4, key: model.state_dict(), "best_acc": 0.5}, tmp_path / "ckpt.pth")
    notes = []
    ours = read_torch_checkpoint(tmp_path / "ckpt.pth", log=notes.append)
    assert list(ours) == ["weight", "bias"]
    np.testing.assert_array_equal(ours["weight"], model.weight.detach().numpy())
    assert any(repr(key) in note and "epoch" in note for note in notes)


def test_the_data_parallel_prefix_is_removed(torch, tmp_path):
    model = torch.nn.DataParallel(torch.nn.Sequential(torch.nn.Linear(3, 2)))
    assert all(key.startswith("module.") for key in model.state_dict())
    torch.save({"state_dict": model.state_dict()}, tmp_path / "dp.pth")
    notes = []
    assert list(read_torch_checkpoint(tmp_path / "dp.pth", log=notes.append)) == [
        "0.weight",
        "0.bias",
    ]
    assert any("'module.'" in note for note in notes)


# ------------------------------------------------------------------ GoogLeNet end to end
def test_googlenet_from_pytorch_gives_pytorchs_logits(torch, tmp_path):
    from torch_googlenet import TorchGoogLeNet

    torch.manual_seed(0)
    theirs = TorchGoogLeNet(TORCHVISION).eval()
    with torch.no_grad():
        for module in theirs.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.1, 0.1)
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
                module.num_batches_tracked.fill_(100)
    torch.save(theirs.state_dict(), tmp_path / "googlenet.pth")

    state = convert_torch_checkpoint(tmp_path / "googlenet.pth", tmp_path / "googlenet.npz")
    saved = tinynet.io.load(tmp_path / "googlenet.npz")
    expected_shapes = {key: tuple(value.shape) for key, value in theirs.state_dict().items()}
    assert {key: value.shape for key, value in saved.items()} == expected_shapes
    assert list(state) == list(expected_shapes) and len(state) == 364
    assert saved["conv1.bn.num_batches_tracked"].dtype == np.int64

    ours = googlenet_torchvision()
    ours.load_state_dict(saved, strict=True)
    ours.eval()
    x = uniform(5, (2, 3, 224, 224), -1, 1, np.float32)
    with torch.no_grad():
        expected = theirs(torch.from_numpy(x)).numpy()
    assert_close(ours(x), expected, scale=float(np.abs(expected).max()))


# ------------------------------------------------------------------ files it must refuse
def _legacy(torch, path):
    torch.save({"w": torch.ones(2)}, path, _use_new_zipfile_serialization=False)


def _whole_model(torch, path):
    torch.save(torch.nn.Sequential(torch.nn.Linear(2, 2)), path)


def _truncated(torch, path):
    torch.save({"w": torch.ones(1000)}, path)
    path.write_bytes(path.read_bytes()[:2500])


def _random_bytes(torch, path):
    path.write_bytes(b"\x00" + np.random.default_rng(0).bytes(999))


def _missing_storage(torch, path):
    torch.save({"a": torch.ones(2), "b": torch.zeros(3)}, path.with_suffix(".full"))
    _rewrite(path.with_suffix(".full"), path, drop=("/data/1",))


def _torchscript(torch, path):
    with warnings.catch_warnings():  # torch.jit is deprecated, and still how such files are made
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), path)


def _tinynet_npz(torch, path):
    tinynet.io.save({"w": np.ones(2)}, path)


def _a_tensor(torch, path):
    torch.save(torch.ones(2), path)


def _no_tensors(torch, path):
    torch.save({"epoch": 3, "weights": {"w": 1}}, path)


BAD_FILES = {
    "legacy": (_legacy, ["legacy format", "torch.save(torch.load("]),
    "whole model": (
        _whole_model,
        ["torch.nn.modules.container.Sequential", "torch.save(model.state_dict(), path)"],
    ),
    "truncated": (_truncated, ["truncated", "starts as a zip archive"]),
    "random bytes": (_random_bytes, ["not a PyTorch checkpoint", "not one"]),
    "missing storage": (_missing_storage, ["data/1 is missing from the archive"]),
    "torchscript": (_torchscript, ["TorchScript", "torch.jit.load"]),
    "tinynet npz": (_tinynet_npz, ["NumPy .npz archive", "tinynet.io.load"]),
    "a tensor": (_a_tensor, ["holds a single tensor, not a state dict"]),
    "no tensors": (_no_tensors, ["without tensors", "state_dict", "epoch, weights"]),
}


@pytest.mark.parametrize("case", BAD_FILES)
def test_bad_files_are_refused_naming_the_file_and_nothing_is_written(torch, tmp_path, case):
    write, phrases = BAD_FILES[case]
    src, dst = tmp_path / "bad.pth", tmp_path / "out" / "converted.npz"
    write(torch, src)
    with pytest.raises(CheckpointError) as error:
        convert_torch_checkpoint(src, dst)
    message = str(error.value)
    assert str(src) in message
    for phrase in phrases:
        assert phrase in message
    assert not dst.parent.exists()  # not even the folder, let alone a partial file


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file: .*nothere.pth"):
        read_torch_checkpoint(tmp_path / "nothere.pth")
    assert not (tmp_path / "out.npz").exists()


def test_the_source_is_never_overwritten(torch, tmp_path):
    torch.save({"w": torch.ones(2)}, tmp_path / "w.pth")
    with pytest.raises(ValueError, match="is the source file"):
        convert_torch_checkpoint(tmp_path / "w.pth", tmp_path / "w.pth")
    assert read_torch_checkpoint(tmp_path / "w.pth")["w"].tolist() == [1.0, 1.0]


# ------------------------------------------------------------------ no torch inside tinynet
def test_the_converter_does_not_import_torch():
    code = "import sys, tinynet.convert; assert 'torch' not in sys.modules, 'torch was imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_checkpoint_reads_where_torch_cannot_be_imported(torch, tmp_path):
    torch.save({"w": torch.arange(6.0).reshape(2, 3).t()}, tmp_path / "w.pth")
    code = (
        "import sys; sys.modules['torch'] = None\n"  # any `import torch` now fails
        "from tinynet.convert import read_torch_checkpoint\n"
        f"w = read_torch_checkpoint({str(tmp_path / 'w.pth')!r})['w']\n"
        "assert w.tolist() == [[0.0, 3.0], [1.0, 4.0], [2.0, 5.0]], w\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
