"""tinynet.convert: PyTorch writes checkpoints, tinynet reads them without torch, in both of
torch.save's formats (zip, and legacy). Every dtype, views and shared storages, wrappers,
GoogLeNet end to end against PyTorch's logits, and the files it must refuse, each with a message
that names the file and the problem."""

import pickle
import pickletools
import subprocess
import sys
import tarfile
import warnings
import zipfile
from collections import OrderedDict

import numpy as np
import pytest

import tinynet.io
from tinynet.convert import CheckpointError, convert_torch_checkpoint, read_torch_checkpoint
from tinynet.models import googlenet_torchvision
from tinynet.models.googlenet import TORCHVISION

from compare import assert_close
from strategies import uniform


def _expected(torch, tensor):
    """What torch.load gives, as the NumPy array tinynet should return (bfloat16 -> float32)."""
    tensor = tensor.detach().resolve_conj().resolve_neg()
    if tensor.dtype == torch.bfloat16:
        tensor = tensor.float()
    return tensor.numpy()


FORMATS = ["zip", "legacy"]


def _save(torch, obj, path, fmt):
    """torch.save in the zip format (the default since PyTorch 1.6) or the legacy one."""
    torch.save(obj, path, _use_new_zipfile_serialization=fmt == "zip")


def _assert_same(torch, ours, theirs):
    """ours holds the tensors of theirs (what torch.load gives), in order, as exact arrays."""
    assert list(ours) == [key for key, value in theirs.items() if isinstance(value, torch.Tensor)]
    for key, array in ours.items():
        expected = _expected(torch, theirs[key])
        assert array.dtype == expected.dtype, key
        assert array.shape == expected.shape, key
        assert array.flags.c_contiguous, key
        np.testing.assert_array_equal(array, expected, err_msg=key)


def _assert_same_as_torch_load(torch, path, ours):
    _assert_same(torch, ours, torch.load(path))


def _storage_keys(path):
    """The storage keys of a checkpoint of either format, read with plain zipfile and pickle."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            return [name for name in archive.namelist() if "/data/" in name]
    with open(path, "rb") as file:
        for _ in range(3):  # magic number, protocol version, sys_info
            pickle.load(file)
        for _ in pickletools.genops(file):  # the object pickle, skipped without running it
            pass
        return pickle.load(file)


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


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_dtype_reads_as_torch_load_gives_it(torch, tmp_path, fmt):
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
    _save(torch, state, tmp_path / "dtypes.pth", fmt)
    ours = read_torch_checkpoint(tmp_path / "dtypes.pth")
    # torch 2.13 writes uint16/32/64 into legacy files (an untyped storage, _rebuild_tensor_v3)
    # but cannot load them back ('UntypedStorage' has no attribute 'dtype'): there, compare with
    # the tensors that were saved.
    _assert_same(torch, ours, torch.load(tmp_path / "dtypes.pth") if fmt == "zip" else state)
    assert ours["bfloat16"].dtype == np.float32  # widened, exactly


@pytest.mark.parametrize("fmt", FORMATS)
def test_views_offsets_and_shared_storages_become_contiguous_copies(torch, tmp_path, fmt):
    base = torch.arange(60, dtype=torch.float32).reshape(3, 4, 5)
    state = {
        "base": base,
        "transposed": base.permute(2, 0, 1),
        "offset_slice": base[1:, 2:, 1::2],
        "row": base[2, 3],
        "expanded": torch.arange(12.0).reshape(12, 1)[:3].expand(3, 4),  # stride 0, 12 stored
        "neg_bit": torch._neg_view(torch.arange(4.0)),
        "conj_bit": torch.tensor([1 + 2j, 3 - 4j]).conj(),
        "empty": base[:, :0],
    }
    _save(torch, state, tmp_path / "views.pth", fmt)
    assert len(_storage_keys(tmp_path / "views.pth")) == 4  # base and its four views share one
    ours = read_torch_checkpoint(tmp_path / "views.pth")
    _assert_same_as_torch_load(torch, tmp_path / "views.pth", ours)
    ours["transposed"][0, 0, 0] = -1.0  # copies: no array shares memory with another
    assert ours["base"][0, 0, 0] == 0.0


@pytest.mark.parametrize("fmt", FORMATS)
def test_batchnorm_state_with_a_0d_counter_and_metadata(torch, tmp_path, fmt):
    bn = torch.nn.BatchNorm2d(3)
    bn.num_batches_tracked += 7
    state = bn.state_dict()
    assert hasattr(state, "_metadata")
    _save(torch, state, tmp_path / "bn.pth", fmt)
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


def test_big_endian_zip_checkpoints_are_byte_swapped(torch, tmp_path):
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


# ------------------------------------------------------------------ the legacy format
class _StorageId:
    """Pickled as the persistent id ``pid`` (see _LegacyPickler): a storage, or a storage view."""

    def __init__(self, pid):
        self.pid = pid


class _Reduced:
    """Pickled as the call ``function(*args)``, as torch pickles its tensors."""

    def __init__(self, function, *args):
        self.reduce = (function, args)

    def __reduce__(self):
        return self.reduce


class _LegacyPickler(pickle.Pickler):
    def persistent_id(self, obj):
        return obj.pid if isinstance(obj, _StorageId) else None


def _write_legacy(path, obj, storages):
    """A legacy checkpoint written by hand, part by part as torch/serialization.py's
    _legacy_save writes it; storages: key -> the tensor whose values it holds."""
    sys_info = {"protocol_version": 1001, "little_endian": True}
    sys_info["type_sizes"] = {"short": 2, "int": 4, "long": 4}
    with open(path, "wb") as file:
        for header in (0x1950A86A20F9469CFC6C, 1001, sys_info):
            pickle.dump(header, file, protocol=2)
        _LegacyPickler(file, protocol=2).dump(obj)
        pickle.dump(list(storages), file, protocol=2)
        for values in storages.values():
            file.write(values.numel().to_bytes(8, "little") + values.numpy().tobytes())


def test_storage_views_and_pre_0_4_tensors_read_as_torch_load_gives_them(torch, tmp_path):
    # PyTorch before 0.4 could save a storage view, a window of another storage, and pickled
    # tensors with _rebuild_tensor. torch 2.13 writes neither (its view_metadata is always None),
    # but still reads both: this file is written by hand, and torch.load is the reference.
    whole = _StorageId(("storage", torch.FloatStorage, "140", "cpu", 10, None))
    window = _StorageId(("storage", torch.FloatStorage, "140", "cpu", 10, ("141", 3, 4)))
    v2, v1 = torch._utils._rebuild_tensor_v2, torch._utils._rebuild_tensor
    state = OrderedDict(
        whole=_Reduced(v2, whole, 0, (10,), (1,), False, OrderedDict()),
        in_window=_Reduced(v2, window, 1, (3,), (1,), False, OrderedDict()),
        pre_0_4=_Reduced(v1, window, 0, (2, 2), (1, 2)),
    )
    _write_legacy(tmp_path / "old.pth", state, {"140": torch.arange(10.0)})
    ours = read_torch_checkpoint(tmp_path / "old.pth")
    _assert_same_as_torch_load(torch, tmp_path / "old.pth", ours)
    assert ours["in_window"].tolist() == [4.0, 5.0, 6.0]
    assert ours["pre_0_4"].tolist() == [[3.0, 5.0], [4.0, 6.0]]

    # A tensor may not reach past its window, though the storage goes on (nor does torch.load).
    state["in_window"] = _Reduced(v2, window, 1, (4,), (1,), False, OrderedDict())
    _write_legacy(tmp_path / "outside.pth", state, {"140": torch.arange(10.0)})
    with pytest.raises(CheckpointError, match="reaches element 4 of storage 141, which has 4"):
        read_torch_checkpoint(tmp_path / "outside.pth")


def test_legacy_files_pickled_with_a_newer_protocol(torch, tmp_path):
    # pickle_protocol=4 frames each pickle: the magic number no longer opens the file.
    state = {"w": torch.arange(6.0).reshape(2, 3)}
    torch.save(state, tmp_path / "p4.pth", pickle_protocol=4, _use_new_zipfile_serialization=False)
    assert (tmp_path / "p4.pth").read_bytes()[:3] == b"\x80\x04\x95"  # PROTO 4, FRAME
    ours = read_torch_checkpoint(tmp_path / "p4.pth")
    # torch's weights_only unpickler refuses FRAME ("Unsupported operand 149"); this file is ours.
    _assert_same(torch, ours, torch.load(tmp_path / "p4.pth", weights_only=False))


# ------------------------------------------------------------------ wrappers
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("key", ["state_dict", "model", "model_state_dict"])
def test_a_training_checkpoint_yields_the_state_dict_under_its_key(torch, tmp_path, key, fmt):
    model = torch.nn.Linear(3, 2)
    checkpoint = {"epoch": 4, key: model.state_dict(), "best_acc": 0.5}
    _save(torch, checkpoint, tmp_path / "ckpt.pth", fmt)
    notes = []
    ours = read_torch_checkpoint(tmp_path / "ckpt.pth", log=notes.append)
    assert list(ours) == ["weight", "bias"]
    np.testing.assert_array_equal(ours["weight"], model.weight.detach().numpy())
    assert any(repr(key) in note and "epoch" in note for note in notes)


@pytest.mark.parametrize("fmt", FORMATS)
def test_the_data_parallel_prefix_is_removed(torch, tmp_path, fmt):
    model = torch.nn.DataParallel(torch.nn.Sequential(torch.nn.Linear(3, 2)))
    assert all(key.startswith("module.") for key in model.state_dict())
    _save(torch, {"state_dict": model.state_dict()}, tmp_path / "dp.pth", fmt)
    notes = []
    assert list(read_torch_checkpoint(tmp_path / "dp.pth", log=notes.append)) == [
        "0.weight",
        "0.bias",
    ]
    assert any("'module.'" in note for note in notes)


# ------------------------------------------------------------------ GoogLeNet end to end
@pytest.mark.parametrize("fmt", FORMATS)  # torchvision's googlenet-1378be20.pth (2019): legacy
def test_googlenet_from_pytorch_gives_pytorchs_logits(torch, tmp_path, fmt):
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
    _save(torch, theirs.state_dict(), tmp_path / "googlenet.pth", fmt)

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


def _legacy_cut(keep):
    """A legacy checkpoint of 1000 float32s, only its first ``keep`` bytes (negative: all but)."""

    def write(torch, path):
        _save(torch, {"w": torch.ones(1000)}, path, "legacy")
        path.write_bytes(path.read_bytes()[:keep])

    return write


def _legacy_sys_info(**change):
    """A legacy checkpoint whose sys_info (its third pickle) has the entries ``change``."""

    def write(torch, path):
        _save(torch, {"w": torch.ones(2)}, path, "legacy")
        with open(path, "rb") as file:
            headers = [pickle.load(file) for _ in range(3)]
            rest = file.read()
        with open(path, "wb") as file:
            for header in (*headers[:2], {**headers[2], **change}):
                pickle.dump(header, file, protocol=2)
            file.write(rest)

    return write


def _legacy_unlisted_storage(torch, path):
    storage = _StorageId(("storage", torch.FloatStorage, "140", "cpu", 2, None))
    rebuild = torch._utils._rebuild_tensor_v2
    _write_legacy(path, {"w": _Reduced(rebuild, storage, 0, (2,), (1,), False, None)}, {})


def _expanded(torch, path):
    # A stride-0 view of 3 stored values as 12: refused, as a few stored bytes could otherwise
    # ask for any amount of memory (tests/test_hostile_pth.py: the hostile version).
    torch.save({"w": torch.arange(3.0).reshape(3, 1).expand(3, 4)}, path)


def _tar(torch, path):
    # PyTorch 0.1.x: a tar of 'sys_info', 'pickle', 'storages' and 'tensors'.
    (path.parent / "pickle").write_bytes(pickle.dumps({}, protocol=2))
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        tar.add(path.parent / "pickle", arcname="pickle")


BAD_FILES = {
    "truncated zip": (_truncated, ["truncated", "starts as a zip archive"]),
    "random bytes": (_random_bytes, ["not a PyTorch checkpoint", "neither"]),
    "missing storage": (_missing_storage, ["data/1 is missing from the archive"]),
    "torchscript": (_torchscript, ["TorchScript", "torch.jit.load"]),
    "tinynet npz": (_tinynet_npz, ["NumPy .npz archive", "tinynet.io.load"]),
    "legacy, cut in its storages": (
        _legacy_cut(-1000),
        ["is truncated: storage", "promises 1000 torch.float32 values (4000 bytes)", "only 3000"],
    ),
    "legacy, cut in its pickle": (_legacy_cut(150), ["is truncated: it ends inside the pickled"]),
    "legacy, big-endian": (_legacy_sys_info(little_endian=False), ["big-endian", "torch.save("]),
    "legacy, odd type sizes": (
        _legacy_sys_info(type_sizes={"short": 2, "int": 4, "long": 8}),
        ["type sizes", "PyTorch always wrote"],
    ),
    "legacy, unlisted storage": (_legacy_unlisted_storage, ["storages the pickle names (140)"]),
    "tar": (_tar, ["tar archive", "0.1.x", "torch.save(torch.load("]),
    "a view larger than its storage": (
        _expanded,
        ["size (3, 4), stride (1, 0) repeats", "12 elements from the 3 stored", ".contiguous()"],
    ),
}

# What either format may hold and tinynet still refuses: callables of torch, giving the object.
BAD_CONTENTS = {
    "whole model": (
        lambda torch: torch.nn.Sequential(torch.nn.Linear(2, 2)),
        ["torch.nn.modules.container.Sequential", "torch.save(model.state_dict(), path)"],
    ),
    "a tensor": (lambda torch: torch.ones(2), ["holds a single tensor, not a state dict"]),
    "no tensors": (
        lambda torch: {"epoch": 3, "weights": {"w": 1}},
        ["without tensors", "state_dict", "epoch, weights"],
    ),
}


def _assert_refused(src, dst, phrases):
    with pytest.raises(CheckpointError) as error:
        convert_torch_checkpoint(src, dst)
    message = str(error.value)
    assert str(src) in message
    for phrase in phrases:
        assert phrase in message
    assert not dst.parent.exists()  # not even the folder, let alone a partial file


@pytest.mark.parametrize("case", BAD_FILES)
def test_bad_files_are_refused_naming_the_file_and_nothing_is_written(torch, tmp_path, case):
    write, phrases = BAD_FILES[case]
    write(torch, tmp_path / "bad.pth")
    _assert_refused(tmp_path / "bad.pth", tmp_path / "out" / "converted.npz", phrases)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("case", BAD_CONTENTS)
def test_what_is_not_a_state_dict_is_refused_in_either_format(torch, tmp_path, case, fmt):
    make, phrases = BAD_CONTENTS[case]
    _save(torch, make(torch), tmp_path / "bad.pth", fmt)
    _assert_refused(tmp_path / "bad.pth", tmp_path / "out" / "converted.npz", phrases)


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


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_checkpoint_reads_where_torch_cannot_be_imported(torch, tmp_path, fmt):
    _save(torch, {"w": torch.arange(6.0).reshape(2, 3).t()}, tmp_path / "w.pth", fmt)
    code = (
        "import sys; sys.modules['torch'] = None\n"  # any `import torch` now fails
        "from tinynet.convert import read_torch_checkpoint\n"
        f"w = read_torch_checkpoint({str(tmp_path / 'w.pth')!r})['w']\n"
        "assert w.tolist() == [[0.0, 3.0], [1.0, 4.0], [2.0, 5.0]], w\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
