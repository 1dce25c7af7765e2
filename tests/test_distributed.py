"""Data-parallel training over MPI (tinynet.distributed), run as a user runs it: `mpiexec -n 2`
launching Python, against one process computing the same global batch.

Each run is a small script in a subprocess (tiny width, a few steps) that writes what rank 0 has
(losses, weights) into an .npz; the tests compare those files.
"""

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import tinynet
from tinynet.train import CHECKPOINT, METRICS

pytest.importorskip("mpi4py", reason="the `mpi` extra (mpi4py, MPICH) is not installed")
MPIEXEC = shutil.which("mpiexec", path=f"{Path(sys.executable).parent}{os.pathsep}{os.defpath}")
if MPIEXEC is None:
    pytest.skip("mpi4py is installed but no mpiexec is on the PATH", allow_module_level=True)

ROOT = Path(__file__).resolve().parent.parent

# Steps of the small GoogLeNet on a seeded stream of random global batches: rank 0 saves the
# global mean losses and its state. argv: dtype, sync|per, global batch, steps, out.npz
STEPS = """
import sys
import tinynet
import numpy as np
from tinynet import distributed, optim
from tinynet.models.registry import model_entry

dtype, mode, batch, steps, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
group = distributed.world()
tinynet.manual_seed(0)
entry = model_entry("small")
model = entry.build(in_channels=1, num_classes=10, width=0.0625).to(dtype)
if mode == "sync":
    distributed.sync_batchnorm(model, group)
parallel = distributed.DataParallel(group, model, average_buffers=mode != "sync")
dropouts = [m for m in model.modules() if isinstance(m, tinynet.nn.Dropout)]
optimizer = optim.SGD(model.parameters(), 0.05, momentum=0.9)
data = np.random.default_rng(1)
losses = []
for step in range(steps):
    images = data.standard_normal((batch, 1, 32, 32)).astype(dtype)
    labels = data.integers(0, 10, batch)
    {step}
    optimizer.step()
if group.rank == 0:
    np.savez(out, losses=np.array(losses), **model.state_dict())
"""

# Every rank's step: its shard of the batch, its gradient, the sum over the ranks.
PARALLEL_STEP = """
    images, labels = parallel.shard(images, labels)
    loss = entry.loss(model(images), labels, 0.3, 0.0)
    optimizer.zero_grad()
    parallel.backward(loss)
    (total,) = parallel.allreduce_gradients(loss.item() * len(labels))
    losses.append(total / batch)
"""

# Per-rank BatchNorm's closed form in one process: each shard's gradient of (B_r/B) L_r with
# BatchNorm over that shard alone, summed; the running statistics averaged over the shards;
# each shard's Dropout masks are its rows of the masks drawn for the whole batch.
CLOSED_FORM_STEP = """
    optimizer.zero_grad()
    buffers = [b for _, b in model.named_buffers() if b.dtype.kind == "f"]
    before, after, total = [b.copy() for b in buffers], [], 0.0
    masks = tinynet.rng.default_generator().bit_generator.state
    for rows in (slice(0, batch // 2), slice(batch // 2, batch)):
        for b, saved in zip(buffers, before):
            b[...] = saved
        for layer in dropouts:
            layer.generator = distributed.ShardedDraws(rows, batch)
        tinynet.rng.default_generator().bit_generator.state = masks
        loss = entry.loss(model(images[rows]), labels[rows], 0.3, 0.0)
        (loss * 0.5).backward()
        after.append([b.copy() for b in buffers])
        total += loss.item() * (batch // 2)
    for b, first, second in zip(buffers, *after):
        b[...] = (first + second) / 2
    losses.append(total / batch)
"""


def run(ranks: int, code: str, *args, timeout: float = 240) -> subprocess.CompletedProcess:
    """``code`` run by ``ranks`` processes (one process alone without mpiexec) in ROOT's tinynet."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-c", textwrap.dedent(code), *map(str, args)]
    if ranks > 1:
        command = [MPIEXEC, "-n", str(ranks), *command]
    return subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def steps(tmp_path, ranks, mode, dtype, batch, count, closed_form=False) -> dict:
    out = tmp_path / f"{ranks}-{mode}-{dtype}-{closed_form}.npz"
    code = STEPS.replace("{step}", (CLOSED_FORM_STEP if closed_form else PARALLEL_STEP).strip())
    result = run(ranks, code, dtype, mode, batch, count, out)
    assert result.returncode == 0, result.stderr
    with np.load(out) as saved:
        return {name: saved[name] for name in saved.files}


def relative_error(a: dict, b: dict, keys) -> float:
    """|a - b| / |a| over the named arrays, flattened together (float64)."""
    first = np.concatenate([np.ravel(a[k]).astype(np.float64) for k in keys])
    second = np.concatenate([np.ravel(b[k]).astype(np.float64) for k in keys])
    return float(np.linalg.norm(first - second) / np.linalg.norm(first))


def state_keys(saved: dict):
    return [k for k in saved if k != "losses" and saved[k].dtype.kind == "f"]


# float32 over one step only: this tiny network on random data sits near a kink (a ReLU or
# max-pool near-tie) at its second step, where any 1e-7 rounding change, even computing one
# process's BatchNorm statistics in float64 instead of float32, moves the gradient by 2e-3.
@pytest.mark.parametrize("dtype, count, tolerance", [("float64", 3, 1e-10), ("float32", 1, 1e-5)])
def test_two_ranks_with_synced_batchnorm_compute_one_process_with_the_whole_batch(
    tmp_path, dtype, count, tolerance
):
    one = steps(tmp_path, 1, "sync", dtype, 16, count)
    two = steps(tmp_path, 2, "sync", dtype, 16, count)
    losses = np.abs(one["losses"] - two["losses"]) / one["losses"]
    print(f"{dtype}: losses {losses.max():.2e}, state {relative_error(one, two, state_keys(one)):.2e}")
    assert losses.max() <= tolerance
    assert relative_error(one, two, state_keys(one)) <= tolerance


def test_per_rank_batchnorm_is_its_closed_form(tmp_path):
    closed = steps(tmp_path, 1, "per", "float64", 16, 3, closed_form=True)
    two = steps(tmp_path, 2, "per", "float64", 16, 3)
    synced = steps(tmp_path, 1, "sync", "float64", 16, 3)
    assert np.abs(closed["losses"] - two["losses"]).max() <= 1e-10 * closed["losses"].max()
    assert relative_error(closed, two, state_keys(closed)) <= 1e-10
    assert relative_error(synced, two, state_keys(closed)) > 1e-6  # it differs from synced BN


TRAIN = """
import sys
import tinynet
from tinynet.train import TrainConfig, Trainer
out, epochs = sys.argv[1], int(sys.argv[2])
if len(sys.argv) > 3:
    Trainer.resume(out, epochs).fit()
else:
    Trainer(TrainConfig(width=0.0625, batch_size=16, max_batches=1, epochs=epochs, out_dir=out,
                        sync_batchnorm=True, ema_decay=None)).fit()
"""


def finished(folder: Path):
    records = [json.loads(line) for line in (folder / METRICS).read_text().splitlines()]
    return records, tinynet.io.load(folder / CHECKPOINT)["model"]


def test_a_run_resumes_with_another_number_of_ranks_on_the_same_trajectory(tmp_path):
    first = tmp_path / "two-ranks"
    result = run(2, TRAIN, first, 1)
    assert result.returncode == 0, result.stderr
    ends = {}
    for ranks in (1, 2):
        folder = tmp_path / f"then-{ranks}"
        shutil.copytree(first, folder)
        result = run(ranks, TRAIN, folder, 2, "resume")
        assert result.returncode == 0, result.stderr
        ends[ranks] = finished(folder)
    (one, one_model), (two, two_model) = ends[1], ends[2]
    assert [r["epoch"] for r in one] == [r["epoch"] for r in two] == [1, 2]
    assert one[0] == two[0]  # the epoch both took from the checkpoint
    for key in ("train_loss", "test_loss"):
        assert abs(one[1][key] - two[1][key]) <= 1e-5 * abs(one[1][key])
    keys = [k for k in one_model if one_model[k].dtype.kind == "f"]
    assert relative_error(one_model, two_model, keys) <= 1e-5


FAILING = """
import sys
import numpy as np
import tinynet
from tinynet import distributed
from tinynet.data import DataSplits, TensorDataset, load_dataset
from tinynet.train import TrainConfig, Trainer
digits = load_dataset("digits")
images, labels = (array[:64].copy() for array in digits.train.arrays)
if distributed.world().rank == 1:
    images[:] = np.nan  # this rank's data is bad
test = TensorDataset(*(array[:32] for array in digits.test.arrays))
data = DataSplits(TensorDataset(images, labels), test, digits.classes)
fixed = dict(mean=[0.0], std=[1.0], channels=1, input_size=images.shape[-1],
             classes=[str(c) for c in digits.classes])  # not measured on the bad images
Trainer(TrainConfig(width=0.0625, batch_size=16, max_batches=2, epochs=1, out_dir=sys.argv[1],
                    ema_decay=None, **fixed), data).fit()
"""


def test_a_failing_rank_stops_every_rank_with_its_reason_and_no_checkpoint(tmp_path):
    result = run(2, FAILING, tmp_path / "run", timeout=120)
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if "rank 1 of 2" in line]
    assert len(lines) == 1, result.stderr
    assert "TrainingError: the loss became nan at epoch 1, batch 1" in lines[0]
    assert not (tmp_path / "run" / CHECKPOINT).exists()


def test_without_mpiexec_the_group_is_one_process_and_mpi4py_is_not_imported():
    result = run(1, """
        import sys
        from tinynet import distributed
        group = distributed.world()
        print(group.rank, group.size, "mpi4py" in sys.modules)
    """)
    assert result.stdout.split() == ["0", "1", "False"], result.stderr


def test_each_rank_sizes_its_thread_pools_to_its_share_of_the_cores():
    result = run(2, """
        import os
        import tinynet
        import numba
        print(os.environ["OPENBLAS_NUM_THREADS"], numba.get_num_threads())
    """)
    assert result.returncode == 0, result.stderr
    share = str(max(1, os.cpu_count() // 2))
    assert result.stdout.split() == [share, share] * 2
