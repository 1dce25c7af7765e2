"""tinynet.save / tinynet.load: round trips, atomic writes, and clear errors for bad files."""

import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tinynet
from tinynet.io import load, save
from tinynet.models import googlenet_small


def test_nested_checkpoints_round_trip(tmp_path):
    checkpoint = {
        "model": {
            "w": np.arange(6, dtype=np.float32).reshape(2, 3),
            "steps": np.zeros((), np.int64),
        },
        "optimizer": {"state": [{"momentum": np.ones(3)}, {}], "lr": 0.1},
        "rng": {"bit_generator": "PCG64", "state": {"state": 2**127 + 5, "inc": 7}},
        "epoch": 4,
        "done": False,
        "name": "googlenet",
        "note": None,
        "flags": np.array([True, False]),
    }
    save(checkpoint, tmp_path / "run.npz")
    loaded = load(tmp_path / "run.npz")
    assert loaded["epoch"] == 4 and loaded["done"] is False and loaded["note"] is None
    assert loaded["rng"]["state"]["state"] == 2**127 + 5
    assert loaded["optimizer"]["lr"] == 0.1 and loaded["optimizer"]["state"][1] == {}
    np.testing.assert_array_equal(loaded["model"]["w"], checkpoint["model"]["w"])
    assert loaded["model"]["w"].dtype == np.float32 and loaded["model"]["steps"].shape == ()
    np.testing.assert_array_equal(loaded["optimizer"]["state"][0]["momentum"], np.ones(3))
    assert loaded["flags"].dtype == bool


def test_a_model_state_dict_round_trips(tmp_path):
    tinynet.manual_seed(1)
    model = googlenet_small()
    save(model.state_dict(), tmp_path / "weights.npz")
    fresh = googlenet_small()
    fresh.load_state_dict(load(tmp_path / "weights.npz"))
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(fresh.state_dict()[key], value)


def test_a_failed_write_leaves_no_file_and_keeps_the_old_one(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.npz"
    save({"v": np.ones(2)}, path)

    def crash(file, **arrays):
        file.write(b"PK partial")
        raise KeyboardInterrupt  # Ctrl-C in the middle of the write

    monkeypatch.setattr(np, "savez", crash)
    with pytest.raises(KeyboardInterrupt):
        save({"v": np.zeros(2)}, path)
    assert os.listdir(tmp_path) == ["ckpt.npz"]  # no temporary file left behind
    monkeypatch.undo()
    np.testing.assert_array_equal(load(path)["v"], np.ones(2))


def test_corrupt_truncated_and_foreign_files_are_named(tmp_path):
    good = tmp_path / "good.npz"
    save({"v": np.arange(1000.0)}, good)
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(good.read_bytes()[:200])
    with pytest.raises(ValueError, match=r"truncated\.npz is corrupt or truncated"):
        load(truncated)
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"\x00" * 64)
    with pytest.raises(ValueError, match=r"garbage\.npz is corrupt or truncated"):
        load(garbage)
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, weights=np.ones(3))
    with pytest.raises(
        ValueError, match=r"foreign\.npz is an \.npz archive but was not written by tinynet"
    ):
        load(foreign)
    single = tmp_path / "single.npy"
    np.save(single, np.ones(3))
    with pytest.raises(ValueError, match=r"single\.npy holds a single \.npy array"):
        load(single)
    with pytest.raises(FileNotFoundError, match=r"no such file: .*missing\.npz"):
        load(tmp_path / "missing.npz")


def test_unsavable_values_are_refused_before_anything_is_written(tmp_path):
    target = tmp_path / "x.npz"
    with pytest.raises(TypeError, match="dtype object"):
        save({"a": np.array([{}, None])}, target)
    with pytest.raises(TypeError, match="keys must be strings without '/'"):
        save({"a/b": np.ones(1)}, target)
    with pytest.raises(TypeError, match="cannot save a set at 'a'"):
        save({"a": {1, 2}}, target)
    with pytest.raises(TypeError, match="obj must be a dict"):
        save([np.ones(1)], target)
    assert not target.exists()


def test_saved_files_get_ordinary_permissions(tmp_path):
    current = os.umask(0o022)
    try:
        save({"v": np.ones(1)}, tmp_path / "w.npz")
    finally:
        os.umask(current)
    assert (tmp_path / "w.npz").stat().st_mode & 0o777 == 0o644


def test_a_stray_temporary_of_a_killed_save_is_removed_by_the_next_one(tmp_path):
    path = tmp_path / "w.npz"
    stray = tmp_path / ".w.npz.abc123de.tmp"  # as mkstemp names it; the save was SIGKILLed
    stray.write_bytes(b"PK half")
    other = tmp_path / ".other.npz.abc123de.tmp"  # another file's: not this save's to remove
    other.write_bytes(b"PK half")
    save({"v": np.ones(2)}, path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [other.name, "w.npz"]


@pytest.mark.parametrize("mode", [0o600, 0o640, 0o444], ids=oct)
def test_a_save_keeps_the_permissions_of_the_file_it_replaces(tmp_path, mode):
    path = tmp_path / "w.npz"
    save({"v": np.ones(1)}, path)
    path.chmod(mode)
    save({"v": np.zeros(2)}, path)
    assert path.stat().st_mode & 0o777 == mode
    assert load(path)["v"].tolist() == [0.0, 0.0]


# Holds an fcntl lock on argv[1], as a save does on its temporary file, until stdin closes.
HOLD_LOCK = """
import fcntl, os, sys
handle = os.open(sys.argv[1], os.O_RDWR)
fcntl.lockf(handle, fcntl.LOCK_EX)
print("held", flush=True)
sys.stdin.read()
"""


def test_the_sweep_removes_only_temporaries_whose_writer_is_gone(tmp_path):
    """A writer is gone when the process its temporary's name records is not running and no
    process holds the file's lock (a writer on another machine, or in another PID namespace)."""
    path = tmp_path / "w.npz"
    gone = 2**22 + 1  # above Linux's largest process id: no such process
    dead = tmp_path / f".w.npz.{gone}.abc123de.tmp"
    alive = tmp_path / f".w.npz.{os.getppid()}.abc123de.tmp"  # a process that runs
    locked = tmp_path / f".w.npz.{gone + 1}.abc123de.tmp"
    for stray in (dead, alive, locked):
        stray.write_bytes(b"PK half")
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(locked)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline() == "held\n"
        save({"v": np.ones(2)}, path)
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
            [alive.name, locked.name, path.name]
        )
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)
    save({"v": np.ones(2)}, path)  # its lock gone with its holder, the file is stray now
    assert sorted(p.name for p in tmp_path.iterdir()) == [alive.name, path.name]


# Saves argv[2] times to argv[1], after a line on stdin, and prints how many failed.
SAVE_MANY = """
import sys
import numpy as np
from tinynet.io import load, save
sys.stdin.readline()
failed = 0
for step in range(int(sys.argv[2])):
    try:
        save({"step": step, "v": np.full(4096, step)}, sys.argv[1])
    except Exception as error:
        failed += 1
        print(type(error).__name__, error, file=sys.stderr)
print(failed)
"""


def test_saves_racing_from_several_processes_all_land(tmp_path):
    path = tmp_path / "w.npz"
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", SAVE_MANY, str(path), "100"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for _ in range(3)
    ]
    for writer in writers:
        writer.stdin.write("go\n")
        writer.stdin.flush()
    for writer in writers:
        out, err = writer.communicate(timeout=300)
        assert (writer.returncode, out.strip()) == (0, "0"), err
    assert load(path)["step"] == 99
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_complex_arrays_a_top_level_list_and_deep_nesting_are_refused_by_name(tmp_path):
    complex_file = tmp_path / "complex.npz"
    tree = '{"__dict__": {"w": {"__array__": "w"}}}'
    meta = f'{{"format": "tinynet-npz", "version": 1, "tree": {tree}}}'
    np.savez(complex_file, __tinynet__=np.array(meta), w=np.ones(2, np.complex128))
    with pytest.raises(ValueError, match=r"complex\.npz: entry 'w' has dtype complex128; tinynet"):
        load(complex_file)
    listed = tmp_path / "listed.npz"
    np.savez(listed, __tinynet__=np.array('{"format": "tinynet-npz", "version": 1, "tree": []}'))
    with pytest.raises(ValueError, match=r"listed\.npz holds a list at the top level"):
        load(listed)
    deep = tmp_path / "deep.npz"
    tree = "[" * 50_000 + "]" * 50_000
    meta = f'{{"format": "tinynet-npz", "version": 1, "tree": {tree}}}'
    np.savez(deep, __tinynet__=np.array(meta))
    with pytest.raises(ValueError, match=r"deep\.npz has an unreadable __tinynet__ entry \(Recurs"):
        load(deep)


@settings(max_examples=40)
@given(st.data())
def test_a_damaged_file_loads_as_saved_or_is_refused_by_name(tmp_path_factory, data):
    # Any byte changed or the file cut anywhere: the CRCs and size checks leave two outcomes.
    folder = tmp_path_factory.mktemp("damaged")
    saved = {"w": np.arange(12.0).reshape(3, 4), "n": np.int64(7), "name": "net"}
    save(saved, folder / "good.npz")
    raw = bytearray((folder / "good.npz").read_bytes())
    if data.draw(st.booleans(), label="cut"):
        raw = raw[: data.draw(st.integers(0, len(raw) - 1), label="length")]
    else:
        raw[data.draw(st.integers(0, len(raw) - 1), label="offset")] ^= data.draw(
            st.integers(1, 255), label="xor"
        )
    damaged = folder / "damaged.npz"
    damaged.write_bytes(bytes(raw))
    try:
        loaded = load(damaged)
    except ValueError as error:
        assert str(error).startswith(f"tinynet.load: {damaged}") and "\n" not in str(error)
    else:
        assert loaded["n"] == 7 and loaded["name"] == "net"
        np.testing.assert_array_equal(loaded["w"], saved["w"])
