"""Hostile files of a few hundred bytes (issue 10): each refused with one line naming the file,
in memory bounded by what a valid file with the same declared content needs, with nothing
written and nothing in the process changed.

Every hostile file is crafted here, opcode by opcode (``_pickled``) and entry by entry
(``_zip``); torch only makes the honest files they are compared with. Each bounded case runs in
a fresh process capped at 200 MB above its imports (tests/bounded.py) while the attack asks for
512 MB or more: a reader that allocates first dies there of MemoryError.
"""

import struct
import subprocess
import sys
import zipfile
import zlib
from typing import NamedTuple

import numpy as np
import pytest

from tinynet.cli import EXIT_ERROR
from tinynet.convert import CheckpointError, convert_torch_checkpoint, read_torch_checkpoint
from tinynet.torch_pth import _ALLOWED

from bounded import run_bounded


# ------------------------------------------------------------------ a pickle writer
class Global(NamedTuple):
    module: str
    name: str


class Call(NamedTuple):
    """``function(*args)``: REDUCE."""

    function: object
    args: tuple


class Build(NamedTuple):
    """``obj`` given ``state``: BUILD."""

    obj: object
    state: object


class Pid(NamedTuple):
    """A persistent id: BINPERSID."""

    id: tuple


class Raw(NamedTuple):
    """Opcodes written as they are."""

    ops: bytes


def _ops(x) -> bytes:
    if isinstance(x, Raw):
        return x.ops
    if isinstance(x, Global):
        return b"c" + f"{x.module}\n{x.name}\n".encode()
    if isinstance(x, Call):
        return _ops(x.function) + _ops(tuple(x.args)) + b"R"
    if isinstance(x, Build):
        return _ops(x.obj) + _ops(x.state) + b"b"
    if isinstance(x, Pid):
        return _ops(x.id) + b"Q"
    if x is None:
        return b"N"
    if isinstance(x, bool):
        return b"\x88" if x else b"\x89"
    if isinstance(x, int):
        return b"J" + struct.pack("<i", x)
    if isinstance(x, str):
        return b"X" + struct.pack("<I", len(x.encode())) + x.encode()
    if isinstance(x, bytes):
        return b"B" + struct.pack("<I", len(x)) + x
    if isinstance(x, tuple):
        return b"(" + b"".join(map(_ops, x)) + b"t"
    if isinstance(x, list):
        return b"(" + b"".join(map(_ops, x)) + b"l"
    if isinstance(x, dict):
        return b"}(" + b"".join(_ops(k) + _ops(v) for k, v in x.items()) + b"u"
    raise TypeError(x)


def _pickled(x) -> bytes:
    return b"\x80\x02" + _ops(x) + b"."


def _shared_list(depth: int) -> Raw:
    """[x, x] where x = [y, y] ..., ``depth`` levels of one list each, [0] at the bottom: a few
    bytes a level, 2**depth entries to anything that walks it without noticing the sharing."""
    ops = b"(K\x00lq\x000"  # [0], memo 0, popped
    for level in range(1, depth + 1):
        below = bytes([level - 1])
        ops += b"(h" + below + b"h" + below + b"lq" + bytes([level]) + b"0"
    return Raw(ops + b"h" + bytes([depth]))


def _bytes8(length: int) -> Raw:
    """BINBYTES8 declaring ``length`` bytes, of which 4 follow."""
    return Raw(b"\x8e" + struct.pack("<Q", length) + b"abcd")


def _tensor(key, numel, size, stride):
    """torch's pickle of a float32 tensor: _rebuild_tensor_v2 of the storage ``key``."""
    storage = Pid(("storage", Global("torch", "FloatStorage"), key, "cpu", numel))
    hooks = Call(Global("collections", "OrderedDict"), ())
    rebuild = Global("torch._utils", "_rebuild_tensor_v2")
    return Call(rebuild, (storage, 0, size, stride, False, hooks))


# ------------------------------------------------------------------ a zip writer
class Entry(NamedTuple):
    """A zip entry: ``data`` as stored (deflated already if ``method`` is 8), and what the
    archive declares: its uncompressed ``size`` and ``crc`` (None: those of ``data``)."""

    name: str
    data: bytes
    method: int = zipfile.ZIP_STORED
    size: int | None = None
    crc: int | None = None


def _zip(path, pickled: bytes, storages: dict | None = None, extra=()):
    """A checkpoint written by hand as torch.save lays it out (archive/data.pkl first, then
    archive/byteorder and archive/data/<key>), so that an entry may declare what it likes."""
    entries = [Entry("archive/data.pkl", pickled), Entry("archive/byteorder", b"little")]
    entries += [Entry(f"archive/data/{key}", data) for key, data in (storages or {}).items()]
    out, central = bytearray(), bytearray()
    for name, data, method, size, crc in [*entries, *extra]:
        size = len(data) if size is None else size
        crc = zlib.crc32(data) if crc is None else crc
        fields = (method, 0, 0x21, crc, len(data), size, len(name))  # date 0x21: 1980-01-01
        central += struct.pack(
            zipfile.structCentralDir, zipfile.stringCentralDir, 20, 0, 20, 0, 0, *fields,
            0, 0, 0, 0, 0, len(out)
        ) + name.encode()  # fmt: skip
        out += struct.pack(
            zipfile.structFileHeader, zipfile.stringFileHeader, 20, 0, 0, *fields, 0
        ) + name.encode() + data  # fmt: skip
    count = len(entries) + len(extra)
    end = struct.pack(
        zipfile.structEndArchive, zipfile.stringEndArchive, 0, 0, count, count, len(central),
        len(out), 0
    )  # fmt: skip
    path.write_bytes(bytes(out + central + end))


def _zeros_deflated(megabytes: int) -> bytes:
    """A raw deflate stream of ``megabytes`` MB of zeros, about 1 KB a megabyte: one fully
    flushed megabyte compresses to the same bytes each time, so it is made once, repeated."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    megabyte = compressor.compress(bytes(2**20)) + compressor.flush(zlib.Z_FULL_FLUSH)
    return megabyte * megabytes + compressor.flush()


ONE_FLOAT = {"0": b"\x00\x00\x80\x3f"}  # storage '0': the float32 1.0


# ------------------------------------------------------------------ hostile checkpoints
def _stride_0(path):
    # 2**27 float32s (512 MB) from one stored value.
    _zip(path, _pickled({"w": _tensor("0", 1, (2**27,), (0,))}), ONE_FLOAT)


def _overlapping(path):
    # 2**28 float32s (1 GB) from 2**15 stored ones: rows that each start one element on.
    pickled = _pickled({"w": _tensor("0", 2**15, (2**14, 2**14), (1, 1))})
    _zip(path, pickled, {"0": bytes(4 * 2**15)})


def _deflated_storage(path):
    # data/0 declares (truly) 512 MB, deflated to half a megabyte; the pickle expects 4 bytes.
    entry = Entry("archive/data/0", _zeros_deflated(512), zipfile.ZIP_DEFLATED, 2**29, 0)
    _zip(path, _pickled({"w": _tensor("0", 1, (1,), (1,))}), extra=[entry])


def _bytes8_in_pickle(path):
    _zip(path, _pickled({"w": _bytes8(2**29)}))


def _memo_index(path):
    # LONG_BINPUT 2**26: CPython grows its memo to twice that many pointers (1 GB).
    _zip(path, _pickled({"w": Raw(b"Nr" + struct.pack("<I", 2**26))}))


def _device_of_shared_list(path):
    device = Call(Global("torch", "device"), (_shared_list(30),))
    _zip(path, _pickled({"w": _tensor("0", 1, (1,), (1,)), "where": device}), ONE_FLOAT)


def _storage_is_shared_list(path):
    rebuild = Global("torch._utils", "_rebuild_tensor_v2")
    tensor = Call(rebuild, (_shared_list(30), 0, (1,), (1,), False, None))
    _zip(path, _pickled({"w": tensor}))


HOSTILE = {
    "stride 0": (_stride_0, ["size (134217728,), stride (0,) repeats the values of storage 0"]),
    "overlapping view": (_overlapping, ["268435456 elements from the 32768 stored"]),
    "deflated storage": (
        _deflated_storage,
        ["storage archive/data/0 holds 536870912 bytes", "expects 1 torch.float32 values"],
    ),
    "BINBYTES8 length": (
        _bytes8_in_pickle,
        ["truncated or corrupt", "expected 536870912 bytes in a bytes8, but only"],
    ),
    "memo index": (_memo_index, ["memo index 67108864 where 0 objects are stored"]),
    "torch.device of a shared list": (_device_of_shared_list, ["torch.device([[[[...], [...]]"]),
    "storage is a shared list": (_storage_is_shared_list, ["storage id; got [[[[...], [...]]"]),
}

_CONVERT = """
from tinynet.convert import CheckpointError, convert_torch_checkpoint
try:
    convert_torch_checkpoint({src!r}, {dst!r})
except CheckpointError as error:
    print(error)
"""


def _bounded_line(code: str, budget_mb: int = 200) -> str:
    """The one line ``code`` prints in a process capped at ``budget_mb`` above its imports."""
    result = run_bounded(code, budget_mb=budget_mb, imports="import tinynet.convert")
    assert result.returncode == 0 and "MemoryError" not in result.stderr, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert len(lines) == 1, result.stdout[:2000]
    return lines[0]


@pytest.mark.parametrize("case", HOSTILE)
def test_hostile_checkpoints_are_refused_in_bounded_memory_writing_nothing(tmp_path, case):
    write, phrases = HOSTILE[case]
    src, dst = tmp_path / "bad.pth", tmp_path / "out" / "w.npz"
    write(src)
    assert src.stat().st_size < 600_000
    line = _bounded_line(_CONVERT.format(src=str(src), dst=str(dst)))
    assert str(src) in line, line
    for phrase in phrases:
        assert phrase in line, line
    assert not dst.parent.exists()


def test_a_deflated_entry_is_read_no_further_than_its_declared_size(tmp_path):
    # data/0 declares 4 bytes (and their CRC) but its stream inflates to 512 MB: the 4 are read.
    bomb, crc = _zeros_deflated(512), zlib.crc32(bytes(4))
    entry = Entry("archive/data/0", bomb, zipfile.ZIP_DEFLATED, 4, crc)
    _zip(tmp_path / "w.pth", _pickled({"w": _tensor("0", 1, (1,), (1,))}), extra=[entry])
    code = f"""
        from tinynet.convert import read_torch_checkpoint
        print(read_torch_checkpoint({str(tmp_path / "w.pth")!r})["w"].tolist())
    """
    assert _bounded_line(code) == "[0.0]"


# ------------------------------------------------------------------ what a pickle reaches is fixed
def _honest(torch, path):
    """An honest checkpoint and what torch.load gives for it, as arrays."""
    generator = torch.Generator().manual_seed(0)
    state = {"w": torch.randn(3, 4, generator=generator), "n": torch.arange(5), "t": None}
    state["t"] = state["w"].t()
    torch.save(state, path)
    return {key: value.numpy() for key, value in torch.load(path).items()}


def _assert_reads_as(path, expected):
    ours = read_torch_checkpoint(path)
    assert list(ours) == list(expected)
    for key, array in expected.items():
        assert ours[key].dtype == array.dtype
        np.testing.assert_array_equal(ours[key], array, err_msg=key)


def test_a_pickle_cannot_change_the_rebuild_function_for_later_files(torch, tmp_path):
    # BUILD with slot state setattr()s on the object it is given: here the __defaults__ of
    # _rebuild_tensor_v2, whose metadata would then default to {'neg': True}, negating every
    # tensor read afterwards in this process.
    expected = _honest(torch, tmp_path / "honest.pth")
    _assert_reads_as(tmp_path / "honest.pth", expected)
    rebuild = Global("torch._utils", "_rebuild_tensor_v2")
    negate = Build(rebuild, (None, {"__defaults__": ({"neg": True},)}))
    _zip(tmp_path / "bad.pth", _pickled({"f": negate, "w": _tensor("0", 1, (1,), (1,))}), ONE_FLOAT)
    with pytest.raises(CheckpointError) as error:
        convert_torch_checkpoint(tmp_path / "bad.pth", tmp_path / "out.npz")
    message = str(error.value)
    assert "\n" not in message and str(tmp_path / "bad.pth") in message
    assert "refusing to change torch._utils._rebuild_tensor_v2" in message
    assert not (tmp_path / "out.npz").exists()
    _assert_reads_as(tmp_path / "honest.pth", expected)


REACHABLE = {
    **{f"{module}.{name}": Global(module, name) for module, name in _ALLOWED},
    "a storage": Pid(("storage", Global("torch", "FloatStorage"), "0", "cpu", 1)),
}


@pytest.mark.parametrize("target", REACHABLE)
def test_no_object_a_pickle_can_reach_takes_its_state(torch, tmp_path, target):
    expected = _honest(torch, tmp_path / "honest.pth")
    probe = Build(REACHABLE[target], ({"probe": 1}, {"probe": 1}))
    _zip(tmp_path / "bad.pth", _pickled({"x": probe, "w": _tensor("0", 1, (1,), (1,))}), ONE_FLOAT)
    with pytest.raises(CheckpointError, match="bad.pth: cannot rebuild its contents"):
        read_torch_checkpoint(tmp_path / "bad.pth")
    assert not any(hasattr(value, "probe") for value in _ALLOWED.values())
    _assert_reads_as(tmp_path / "honest.pth", expected)


# ------------------------------------------------------------------ the command line
def test_convert_on_the_command_line_refuses_in_one_line_and_leaves_outputs_alone(tmp_path):
    _stride_0(tmp_path / "bad.pth")
    (tmp_path / "kept.npz").write_bytes(b"an earlier conversion")
    for out in ("new.npz", "kept.npz"):
        result = subprocess.run(
            [sys.executable, "-m", "tinynet", "convert", str(tmp_path / "bad.pth"),
             str(tmp_path / out)],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert result.returncode == EXIT_ERROR
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
        assert lines[0].startswith("tinynet convert: error: ") and "bad.pth" in lines[0]
        assert "repeats the values of storage 0" in lines[0]
    assert not (tmp_path / "new.npz").exists()
    assert (tmp_path / "kept.npz").read_bytes() == b"an earlier conversion"


# ------------------------------------------------------------------ CIFAR batches, same unpickler
RECONSTRUCT = Global("numpy.core.multiarray", "_reconstruct")
NDARRAY = Global("numpy", "ndarray")


def _object_dtype():
    return Call(Global("numpy", "dtype"), ("O", False, True))


HOSTILE_CIFAR = {
    # 2**27 pointers (1 GB) from 72 bytes: an array of Python objects, all None.
    "object array": (
        Call(RECONSTRUCT, (NDARRAY, (2**27,), _object_dtype())),
        ["refusing an array of Python objects (dtype 'O')"],
    ),
    "absurd shape": (
        Call(RECONSTRUCT, (NDARRAY, (2**30,), b"b")),
        ["_reconstruct(numpy.ndarray, (0,), b'b'); got", "(1073741824,)"],
    ),
    "object array by BUILD": (
        Build(Call(RECONSTRUCT, (NDARRAY, (0,), b"b")), (1, (2**27,), _object_dtype(), False, [])),
        ["refusing an array of Python objects"],
    ),
    "BINBYTES8 length": (_bytes8(2**29), ["expected 536870912 bytes in a bytes8"]),
}


def _cifar_line(path) -> str:
    code = f"""
        from tinynet.data.formats import DatasetError, read_cifar_batch
        try:
            read_cifar_batch({str(path)!r})
        except DatasetError as error:
            print(error)
    """
    return _bounded_line(code)


@pytest.mark.parametrize("case", HOSTILE_CIFAR)
def test_hostile_cifar_arrays_are_refused_in_bounded_memory(tmp_path, case):
    data, phrases = HOSTILE_CIFAR[case]
    (tmp_path / "data_batch_1").write_bytes(_pickled({b"data": data, b"labels": []}))
    line = _cifar_line(tmp_path / "data_batch_1")
    assert line.startswith(f"{tmp_path / 'data_batch_1'}: not a readable CIFAR pickle"), line
    for phrase in phrases:
        assert phrase in line, line


def test_cifar_labels_that_share_lists_are_refused_before_numpy_sees_them(tmp_path):
    # np.asarray would make a 2**26-element int64 array (512 MB) of a list 26 levels deep.
    data = Build(
        Call(RECONSTRUCT, (NDARRAY, (0,), b"b")),
        (1, (1, 3072), Call(Global("numpy", "dtype"), ("u1", False, True)), False, bytes(3072)),
    )
    (tmp_path / "data_batch_1").write_bytes(
        _pickled({b"data": data, b"labels": _shared_list(26)})
    )
    line = _cifar_line(tmp_path / "data_batch_1")
    assert line.startswith(f"{tmp_path / 'data_batch_1'}: b'labels' must be a list of ints"), line
