"""TensorDataset and DataLoader: every sample once an epoch, batch sizes, drop_last, seeded
order, one fancy-index per batch, and resuming from a saved state_dict mid-training."""

import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tinynet
import tinynet.io
from tinynet.data import DataLoader, Dataset, TensorDataset
from tinynet.data import transforms as T

from strategies import seeds


def ids_dataset(n, image_shape=(1, 2, 2)):
    """Images whose every pixel holds the sample's index, labels = the index."""
    images = np.broadcast_to(np.arange(n, dtype=np.float64)[:, None, None, None], (n, *image_shape))
    return TensorDataset(np.ascontiguousarray(images), np.arange(n, dtype=np.uint8))


loader_settings = st.fixed_dictionaries(
    {
        "n": st.integers(0, 40),
        "batch_size": st.integers(1, 12),
        "shuffle": st.booleans(),
        "seed": seeds,
    }
)


def epoch_labels(loader):
    return [labels.tolist() for _, labels in loader]


# ----------------------------------------------------------------- TensorDataset
def test_tensor_dataset_indexes_every_array_the_same_way():
    images, labels = np.arange(24.0).reshape(6, 1, 2, 2), np.arange(6) * 10
    dataset = TensorDataset(images, labels)
    assert len(dataset) == 6
    batch_images, batch_labels = dataset[np.array([4, 1])]
    np.testing.assert_array_equal(batch_images, images[[4, 1]])
    np.testing.assert_array_equal(batch_labels, [40, 10])
    assert dataset[2][1] == 20
    assert "float64[6, 1, 2, 2]" in repr(dataset)


def test_tensor_dataset_accepts_tensors():
    dataset = TensorDataset(tinynet.tensor(np.zeros((3, 2), np.float32)), np.arange(3))
    assert isinstance(dataset.arrays[0], np.ndarray) and len(dataset) == 3


def test_tensor_dataset_errors_name_the_lengths():
    with pytest.raises(ValueError, match=r"array 0: 5, array 1: 4"):
        TensorDataset(np.zeros((5, 1, 2, 2)), np.zeros(4))
    with pytest.raises(ValueError, match="at least one array"):
        TensorDataset()
    with pytest.raises(ValueError, match="array 1 is a scalar"):
        TensorDataset(np.zeros(3), np.float32(2.0))


def test_base_dataset_says_what_to_define():
    with pytest.raises(NotImplementedError, match="__len__"):
        len(Dataset())
    with pytest.raises(NotImplementedError, match="__getitem__"):
        Dataset()[0]


# ----------------------------------------------------------------- one epoch
@given(loader_settings)
def test_every_sample_once_per_epoch(settings):
    n = settings["n"]
    loader = DataLoader(ids_dataset(n), **{k: v for k, v in settings.items() if k != "n"})
    for _ in range(2):
        batches = list(loader)
        assert len(batches) == len(loader) == -(-n // settings["batch_size"])
        seen = np.concatenate([labels for _, labels in batches]) if batches else np.array([])
        assert sorted(seen.tolist()) == list(range(n))
        for images, labels in batches:
            assert images.dtype == np.float32 and labels.dtype == np.int64
            assert images.shape == (len(labels), 1, 2, 2)
            np.testing.assert_array_equal(images[:, 0, 0, 0], labels)  # rows stay paired
        sizes = [len(labels) for _, labels in batches]
        assert all(size == settings["batch_size"] for size in sizes[:-1])
        if sizes:
            assert sizes[-1] == (n % settings["batch_size"] or settings["batch_size"])
        if not settings["shuffle"]:
            assert seen.tolist() == list(range(n))


@given(loader_settings)
def test_drop_last_keeps_only_full_batches(settings):
    n, size = settings["n"], settings["batch_size"]
    loader = DataLoader(
        ids_dataset(n), drop_last=True, **{k: v for k, v in settings.items() if k != "n"}
    )
    batches = epoch_labels(loader)
    assert len(batches) == len(loader) == n // size
    assert all(len(b) == size for b in batches)
    seen = [i for b in batches for i in b]
    assert len(set(seen)) == len(seen) == n - n % size


@given(seeds, st.integers(6, 30), st.integers(1, 7))
def test_the_same_seed_gives_the_same_batches_and_epochs_differ(seed, n, batch_size):
    first = DataLoader(ids_dataset(n), batch_size, shuffle=True, seed=seed)
    second = DataLoader(ids_dataset(n), batch_size, shuffle=True, seed=seed)
    epochs = [epoch_labels(first) for _ in range(3)]
    assert epochs == [epoch_labels(second) for _ in range(3)]
    # Three equal permutations of >= 6 items: chance 1 / 720**2.
    assert not epochs[0] == epochs[1] == epochs[2]


def test_seed_from_a_generator_or_from_tinynet_manual_seed():
    def run(**kwargs):
        return epoch_labels(DataLoader(ids_dataset(20), 4, shuffle=True, **kwargs))

    assert run(generator=np.random.default_rng(7)) == run(generator=np.random.default_rng(7))
    tinynet.manual_seed(3)
    a = run()
    tinynet.manual_seed(3)
    assert run() == a


# ----------------------------------------------------------------- batching
class CountingDataset(TensorDataset):
    def __init__(self, *arrays):
        super().__init__(*arrays)
        self.requests = []

    def __getitem__(self, index):
        self.requests.append(index)
        return super().__getitem__(index)


def test_each_batch_is_one_fancy_index_and_one_transform_call():
    dataset = CountingDataset(np.zeros((10, 1, 2, 2)), np.arange(10))
    calls = []

    def transform(images, rng):
        calls.append(images.shape)
        assert isinstance(rng, np.random.Generator)
        return images + 1

    loader = DataLoader(dataset, 4, shuffle=True, seed=0, transform=transform)
    batches = list(loader)
    assert [len(r) for r in dataset.requests] == [4, 4, 2]
    assert all(isinstance(r, np.ndarray) and r.dtype == np.int64 for r in dataset.requests)
    assert calls == [(4, 1, 2, 2), (4, 1, 2, 2), (2, 1, 2, 2)]
    assert all(np.all(images == 1) for images, _ in batches)


def test_abandoned_iteration_counts_as_an_epoch():
    loader = DataLoader(ids_dataset(12), 4, shuffle=True, seed=5)
    reference = DataLoader(ids_dataset(12), 4, shuffle=True, seed=5)
    epoch0 = epoch_labels(reference)
    epoch1 = epoch_labels(reference)
    for _, labels in loader:
        assert labels.tolist() == epoch0[0]
        break
    assert loader.state_dict()["epoch"] == 1 and loader.state_dict()["batch"] == 0
    assert epoch_labels(loader) == epoch1


def test_an_iterator_never_advanced_claims_no_epoch():
    loader = DataLoader(ids_dataset(8), 4, shuffle=True, seed=1)
    iter(loader)
    assert loader.state_dict()["epoch"] == 0 and loader.epoch == 0


# ----------------------------------------------------------------- resuming
def augmenting_loader(n, batch_size, seed, drop_last=False):
    images = np.random.default_rng(0).random((n, 2, 6, 6)).astype(np.float32)
    augment = T.Compose([T.RandomCrop(4, padding=1), T.RandomHorizontalFlip()])
    return DataLoader(
        TensorDataset(images, np.arange(n)),
        batch_size,
        shuffle=True,
        drop_last=drop_last,
        seed=seed,
        transform=augment,
    )


@given(seeds, st.integers(1, 25), st.integers(1, 6), st.booleans(), st.data())
def test_resuming_from_a_saved_state_gives_the_same_batches(seed, n, batch_size, drop_last, data):
    uninterrupted = augmenting_loader(n, batch_size, seed, drop_last)
    per_epoch = len(uninterrupted)
    stream = [batch for _ in range(3) for batch in uninterrupted]
    stop = data.draw(st.integers(0, len(stream)), label="batches before the checkpoint")

    interrupted = augmenting_loader(n, batch_size, seed, drop_last)
    consumed, state = 0, interrupted.state_dict()
    while consumed < stop:
        for _ in interrupted:
            consumed += 1
            state = interrupted.state_dict()  # as a trainer checkpoints after each step
            if consumed == stop:
                break
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "checkpoint.npz"
        tinynet.io.save({"loader": state}, path)
        restored = tinynet.io.load(path)["loader"]

    resumed = augmenting_loader(n, batch_size, seed=seed + 1, drop_last=drop_last)
    resumed.load_state_dict(restored)
    assert resumed.seed == seed
    after = [batch for _ in range(3) for batch in resumed][: len(stream) - stop]
    if per_epoch:
        assert len(after) == len(stream) - stop
    for (images, labels), (expected_images, expected_labels) in zip(after, stream[stop:]):
        np.testing.assert_array_equal(labels, expected_labels)
        np.testing.assert_array_equal(images, expected_images)


def test_state_points_at_the_next_batch():
    loader = DataLoader(ids_dataset(10), 3, shuffle=True, seed=2)
    iterator = iter(loader)
    next(iterator)
    assert (loader.state_dict()["epoch"], loader.state_dict()["batch"]) == (0, 1)
    assert loader.epoch == 0
    for _ in iterator:
        pass
    assert (loader.state_dict()["epoch"], loader.state_dict()["batch"]) == (1, 0)
    assert loader.epoch == 1


def test_the_documented_resume_loop_sees_every_batch_once():
    def run(loader, epochs, stop_after=None):
        seen = []
        while loader.epoch < epochs:
            for _, labels in loader:
                seen.append(labels.tolist())
                state = loader.state_dict()
                if len(seen) == stop_after:
                    return seen, state
        return seen, loader.state_dict()

    full, _ = run(DataLoader(ids_dataset(10), 3, shuffle=True, seed=4), epochs=3)
    first, state = run(DataLoader(ids_dataset(10), 3, shuffle=True, seed=4), 3, stop_after=6)
    resumed = DataLoader(ids_dataset(10), 3, shuffle=True)
    resumed.load_state_dict(state)
    rest, _ = run(resumed, epochs=3)
    assert len(full) == 12 and first + rest == full


def test_load_state_dict_refuses_other_settings():
    state = DataLoader(ids_dataset(10), 3, shuffle=True, seed=2).state_dict()
    with pytest.raises(ValueError, match=r"batch_size=3 but this loader has batch_size=4"):
        DataLoader(ids_dataset(10), 4, shuffle=True).load_state_dict(state)
    with pytest.raises(ValueError, match=r"num_samples=10 but this loader has num_samples=11"):
        DataLoader(ids_dataset(11), 3, shuffle=True).load_state_dict(state)
    with pytest.raises(KeyError, match="seed"):
        DataLoader(ids_dataset(10), 3).load_state_dict({"epoch": 0})
    with pytest.raises(ValueError, match="batch in"):
        DataLoader(ids_dataset(10), 3, shuffle=True).load_state_dict({**state, "batch": 9})


# ----------------------------------------------------------------- errors
def test_constructor_errors_name_the_argument():
    dataset = ids_dataset(4)
    with pytest.raises(ValueError, match="batch_size must be an int >= 1; got 0"):
        DataLoader(dataset, batch_size=0)
    with pytest.raises(ValueError, match="seed or generator"):
        DataLoader(dataset, seed=1, generator=np.random.default_rng())
    with pytest.raises(ValueError, match="seed must be a non-negative int"):
        DataLoader(dataset, seed=-1)
    with pytest.raises(TypeError, match="transform must be callable"):
        DataLoader(dataset, transform="flip")
    with pytest.raises(TypeError, match="dataset must define"):
        DataLoader([1, 2, 3][0])


def test_a_dataset_or_transform_returning_the_wrong_thing_is_named():
    class Pairs(Dataset):
        def __len__(self):
            return 3

        def __getitem__(self, index):
            return np.zeros((len(index), 1, 1, 1))

    with pytest.raises(TypeError, match=r"must return \(images, labels\); Pairs returned ndarray"):
        list(DataLoader(Pairs(), 2))
    with pytest.raises(TypeError, match="transform must return a"):
        list(DataLoader(ids_dataset(3), 2, transform=lambda images, rng: images[0]))
