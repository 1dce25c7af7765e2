"""The thread policy (tinynet/_threads.py, applied by tinynet.runtime.configure()), checked in
fresh processes as users start them: no import-order rule, pools sized to the cores a process is
given, runs sharing the machine."""

import os
import subprocess
import sys
import textwrap
import time

import pytest

from tinynet import _threads

from datafiles import snapshot

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# After a threaded GEMM, how much CPU the process burns while its main thread sleeps: OpenBLAS's
# workers spinning for more work (~0.1 s each) show up here; asleep, they burn nothing.
SPIN = """
import time, json
{imports}
from threadpoolctl import threadpool_info
a = np.ones((512, 2048), np.float32); b = np.ones((2048, 2048), np.float32)
burnt = []
for _ in range(3):
    a @ b
    cpu = time.process_time()
    time.sleep(0.2)
    burnt.append(time.process_time() - cpu)
blas = [(i["internal_api"], i.get("threading_layer"), i["num_threads"])
        for i in threadpool_info() if i["user_api"] == "blas"]
print(json.dumps({{"burnt": min(burnt), "blas": blas}}))
"""


def run(code: str, env: dict | None = None, preexec_fn=None) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if not k.startswith(_THREAD_VARIABLES)}
    environment.update({"PYTHONPATH": ROOT, **(env or {})})
    return subprocess.run(
        [sys.executable, "-W", "error::RuntimeWarning", "-c", textwrap.dedent(code)],
        env=environment, capture_output=True, text=True, preexec_fn=preexec_fn, timeout=300,
    )  # fmt: skip


# Settings the test process may carry (tinynet's own, or pytest-xdist's) that would decide the
# answer for the child instead of the policy under test.
_THREAD_VARIABLES = (
    "OPENBLAS_", "OMP_", "MKL_", "NUMBA_NUM_THREADS", "TINYNET_NUM_THREADS", "PMI_", "MPI_"
)


def spin(imports: str) -> dict:
    import json

    done = run(SPIN.format(imports=imports))
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


CONFIGURE = "tinynet.runtime.configure()"


def test_openblas_threads_sleep_whatever_the_import_order():
    """NumPy alone: its OpenBLAS workers spin after a GEMM (the control: this test can see a
    spin). Importing tinynet changes nothing there; with the policy applied, tinynet imported
    after NumPy, as most code does, or before it, they sleep, and no warning is raised (the
    child turns RuntimeWarnings into errors)."""
    alone = spin("import numpy as np")
    pools = alone["blas"]
    if not any(api == "openblas" and layer == "pthreads" and n > 1 for api, layer, n in pools):
        pytest.skip(f"NumPy's BLAS here is {alone['blas']}: no pthreads OpenBLAS pool to spin")
    # Spinning burns ~0.1 s a GEMM on an idle machine (0.019 s seen on one loaded by four
    # other jobs); asleep, nothing.
    assert alone["burnt"] > 0.01, alone
    imported = spin("import numpy as np\nimport tinynet")
    assert imported["burnt"] > 0.01 and imported["blas"] == alone["blas"], imported
    after = spin(f"import numpy as np\nimport tinynet\n{CONFIGURE}")
    before = spin(f"import tinynet\nimport numpy as np\n{CONFIGURE}")
    assert after["burnt"] < 0.005 and before["burnt"] < 0.005, (after, before)
    assert after["blas"] == alone["blas"]  # every core still used by the GEMM


POOLS = """
import numpy, tinynet, numba
tinynet.runtime.configure()
from threadpoolctl import threadpool_info
blas = [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
print(numba.get_num_threads(), *blas)
"""


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no CPU affinity on this OS")
@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs 2 cores to restrict to 1")
def test_pools_follow_the_affinity_mask():
    done = run(POOLS, preexec_fn=lambda: os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}))
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["1", "1"]


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs 2 cores to restrict to 1")
def test_tinynet_num_threads_sets_every_pool():
    done = run(POOLS, env={"TINYNET_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["1", "1"]


@pytest.mark.parametrize("value", ["0", "-2", "two", ""])
def test_a_malformed_thread_count_is_one_clear_error(value):
    done = run(f"import tinynet\n{CONFIGURE}", env={"TINYNET_NUM_THREADS": value})
    assert done.returncode == 1
    assert f"ValueError: TINYNET_NUM_THREADS must be a positive integer; got {value!r}" in (
        done.stderr.splitlines()[-1]
    )


@pytest.mark.parametrize(
    "files, cpus",
    [
        ({"cpu.max": "150000 100000\n"}, 1.5),
        ({"cpu.max": "max 100000\n"}, None),
        ({"cpu/cpu.cfs_quota_us": "300000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 3.0),
        ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
        ({"cpu.max": "garbage\n"}, None),
        ({}, None),
    ],
)
def test_cgroup_quota(tmp_path, files, cpus):
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text(text)
    assert _threads.cgroup_cpu_limit(str(tmp_path)) == cpus


# A second run: it joins the share, says so, and stays until its stdin closes.
OTHER_RUN = """
import sys
import tinynet
from tinynet import _threads
tinynet.runtime.configure()
with _threads.share_cores() as share:
    print(share.rebalance(), flush=True)
    sys.stdin.read()
"""


@pytest.mark.skipif((os.cpu_count() or 1) < 2 or not hasattr(os, "getuid"), reason="2 cores, POSIX")
def test_runs_share_the_cores(tmp_path, monkeypatch):
    """One run takes every core; when a second starts, each takes half (counted again at the
    next rebalance); when the second ends, or was killed, the first takes every core again."""
    import numba

    monkeypatch.setenv("TINYNET_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("TINYNET_NUM_THREADS", raising=False)
    cores = _threads.machine_cores()
    with _threads.share_cores() as share:
        assert share.rebalance() == cores == numba.get_num_threads()
        other = subprocess.Popen(
            [sys.executable, "-c", OTHER_RUN], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            text=True, env={**os.environ, "PYTHONPATH": ROOT},
        )  # fmt: skip
        assert int(other.stdout.readline()) == cores // 2
        share.checked = time.monotonic()  # however long the other took to start
        assert share.rebalance() == cores  # counted at most once a second
        share.checked -= _threads.REBALANCE_SECONDS
        assert share.rebalance() == cores // 2 == numba.get_num_threads()
        other.kill()  # no clean exit: its entry stays behind, naming a process that is gone
        other.wait()
        assert len(list((tmp_path / "running").iterdir())) == 2
        share.checked -= _threads.REBALANCE_SECONDS
        assert share.rebalance() == cores
        assert [p.name for p in (tmp_path / "running").iterdir()] == [str(os.getpid())]
    assert not list((tmp_path / "running").iterdir())
    assert numba.get_num_threads() == _threads.OWN_THREADS


def test_training_takes_part_in_the_share(tmp_path, monkeypatch):
    """`Trainer.fit` runs inside share_cores: while it trains, its process is listed."""
    from tinynet.train import TrainConfig, Trainer

    monkeypatch.setenv("TINYNET_CACHE_DIR", str(tmp_path / "cache"))
    listed = []
    trainer = Trainer(
        TrainConfig(epochs=1, max_batches=1, batch_size=8, out_dir=str(tmp_path / "run")),
        log=lambda line: None,
    )
    original = trainer.train_epoch

    def train_epoch(epoch):
        listed.extend(p.name for p in (tmp_path / "cache" / "running").iterdir())
        return original(epoch)

    trainer.train_epoch = train_epoch
    trainer.fit()
    assert listed == [str(os.getpid())]
    assert trainer.cores is None
    assert not list((tmp_path / "cache" / "running").iterdir())


def _ended_pid() -> int:
    ended = subprocess.Popen([sys.executable, "-c", ""])
    ended.wait()
    return ended.pid


def _plant_not_runs(folder, outside) -> None:
    """What another user (where the cache root was once shared) or an accident could leave in the
    registry: none of it is an entry of one of this user's runs."""
    folder.mkdir(parents=True, mode=0o700)
    (folder / "123").mkdir()
    for name in ["9" * 20, "١٢٣", "0", "007", "-1", "12.5", "notes.txt"]:
        (folder / name).write_text("")
    outside.write_text("keep")
    (folder / str(_ended_pid())).symlink_to(outside)  # named as a run that ended
    if os.geteuid() == 0:  # another user's file, named as a run that ended
        foreign = folder / str(_ended_pid())
        foreign.write_text("")
        os.chown(foreign, 65534, 65534)


@pytest.fixture
def registry_of_no_runs(tmp_path, monkeypatch):
    """The run registry of a cache root in tmp_path, holding only what is not a run."""
    if not hasattr(os, "getuid"):
        pytest.skip("runs share the cores only with POSIX process ids")
    monkeypatch.setenv("TINYNET_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("TINYNET_NUM_THREADS", raising=False)
    folder = tmp_path / "cache" / "running"
    _plant_not_runs(folder, tmp_path / "outside")
    return folder


def test_the_registry_skips_what_is_not_a_run_and_leaves_it_alone(registry_of_no_runs, tmp_path):
    folder = registry_of_no_runs
    before = snapshot(folder)
    with _threads.share_cores() as share:
        assert share.rebalance() == _threads.machine_cores()  # this run alone is counted
        assert sorted(p.name for p in folder.iterdir()) == sorted([*before, str(os.getpid())])
        assert _threads.count_runs(folder) == 1
    assert snapshot(folder) == before
    assert (tmp_path / "outside").read_text() == "keep"


def test_training_runs_whatever_the_registry_holds(registry_of_no_runs, tmp_path):
    from tinynet.train import TrainConfig, Trainer

    before = snapshot(registry_of_no_runs)
    trainer = Trainer(
        TrainConfig(epochs=1, max_batches=1, batch_size=8, out_dir=str(tmp_path / "run")),
        log=lambda line: None,
    )
    assert [row["epoch"] for row in trainer.fit()] == [1]
    assert snapshot(registry_of_no_runs) == before


def _symlink_to(elsewhere):
    def make(folder):
        folder.symlink_to(elsewhere)
        return "it is a symbolic link"

    return make


def _open_to_all(folder):
    folder.mkdir(mode=0o700)
    folder.chmod(0o777)
    return "its group and others can write it (mode 0777)"


def _another_users(folder):
    folder.mkdir(mode=0o700)
    os.chown(folder, 65534, 65534)
    return "it is owned by uid 65534, not by this user (uid 0)"


@pytest.mark.skipif(not hasattr(os, "getuid"), reason="POSIX owners and modes")
@pytest.mark.parametrize(
    "spoil",
    [
        pytest.param("symlink", id="symlink"),
        pytest.param(_open_to_all, id="0777"),
        pytest.param(
            _another_users,
            marks=pytest.mark.skipif(
                not hasattr(os, "geteuid") or os.geteuid() != 0,
                reason="plays another user by chowning the folder to uid 65534: needs root",
            ),
            id="another-users",
        ),
    ],
)
def test_a_registry_folder_another_user_could_write_is_not_used(tmp_path, monkeypatch, spoil):
    """The run registry is in the private cache root; a ``running`` folder there that is not
    private too (the root was once shared) is not used: this run does not share the cores."""
    root, elsewhere = tmp_path / "cache", tmp_path / "elsewhere"
    root.mkdir(mode=0o700)
    elsewhere.mkdir(mode=0o700)
    monkeypatch.setenv("TINYNET_CACHE_DIR", str(root))
    monkeypatch.delenv("TINYNET_NUM_THREADS", raising=False)
    why = (_symlink_to(elsewhere) if spoil == "symlink" else spoil)(root / "running")
    with pytest.warns(RuntimeWarning) as caught:
        with _threads.share_cores() as share:
            assert share is None
    assert [str(warning.message) for warning in caught] == [
        f"tinynet does not use {root / 'running'} to list its runs: {why}"
    ]
    assert not list(elsewhere.iterdir()) and not list((root / "running").iterdir())
