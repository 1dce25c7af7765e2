"""tinynet inspect activations: one image through a tiny trained checkpoint, one PNG per group
(the stem and each Inception block), titled rows, atomic writes and one-line errors."""

import re

import numpy as np
import pytest

import tinynet
from tinynet.cli import main
from tinynet.inspect_activations import activation_groups, branch_activations, top_channels
from tinynet.models import googlenet_paper, googlenet_small
from tinynet.train import CHECKPOINT, TrainConfig, Trainer

from datafiles import needs_sklearn

pytest.importorskip("matplotlib")
pytest.importorskip("PIL")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A two-batch run of a width-0.125 small GoogLeNet on digits, and a digit as a PNG."""
    from PIL import Image

    folder = tmp_path_factory.mktemp("run")
    config = TrainConfig(width=0.125, batch_size=16, max_batches=2, epochs=1, out_dir=str(folder))
    Trainer(config, log=lambda line: None).fit()
    digit = np.zeros((8, 8), np.uint8)
    digit[1:7, 3:5] = 255  # a "1"
    Image.fromarray(digit).save(folder / "one.png")
    return folder / CHECKPOINT, folder / "one.png"


def test_groups_are_the_stem_convolutions_and_each_blocks_four_branches():
    groups = activation_groups(googlenet_paper(width=0.125))
    assert groups["stem"] == ["conv1", "conv2", "conv3"]  # not the pools or LRNs between them
    assert list(groups)[1:] == [f"inception{b}" for b in
                                ("3a", "3b", "4a", "4b", "4c", "4d", "4e", "5a", "5b")]  # fmt: skip
    assert groups["inception4c"] == [f"inception4c.branch{k}" for k in (1, 2, 3, 4)]


def test_branch_activations_are_the_blocks_outputs_split_by_channel():
    model = googlenet_small(width=0.125, in_channels=1).eval()
    image = np.random.default_rng(0).normal(size=(1, 32, 32)).astype(np.float32)
    seen = branch_activations(model, image)
    with tinynet.capture(model, ["inception3a"]) as record, tinynet.no_grad():
        model(image[None])
    joined = np.concatenate([seen[f"inception3a.branch{k}"] for k in (1, 2, 3, 4)])
    np.testing.assert_array_equal(joined, record.activations["inception3a"][0])


def test_top_channels_orders_by_mean_activation():
    activation = np.stack([np.full((2, 2), v, np.float32) for v in (0.5, 3.0, 0.0, 3.0, 1.0)])
    assert top_channels(activation, 3).tolist() == [1, 3, 4]
    assert top_channels(activation, 9).tolist() == [1, 3, 4, 0, 2]


@needs_sklearn
def test_the_command_writes_one_titled_png_per_group(run, tmp_path, capsys):
    checkpoint, image = run
    out = tmp_path / "grids"
    assert main(["inspect", "activations", str(checkpoint), str(image), "--out", str(out)]) == 0
    blocks = ["3a", "3b", "4a", "4b", "4c", "4d", "4e", "5a", "5b"]
    names = ["stem.png"] + [f"inception{b}.png" for b in blocks]
    assert sorted(p.name for p in out.iterdir()) == sorted(names)  # no temporary file left
    printed = capsys.readouterr().out.splitlines()
    assert printed == [f"wrote {out / name}" for name in names]
    for name in names:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@needs_sklearn
@pytest.mark.parametrize(
    "case, expected",
    [
        ("checkpoint", r"tinynet inspect: error: .*not-there\.npz"),
        ("image", r"tinynet inspect: error: .*no-image\.png"),
        ("out", r"tinynet inspect: error: --out .* cannot hold files: .* is a file"),
    ],
)
def test_bad_arguments_are_one_line_and_leave_nothing(run, tmp_path, capsys, case, expected):
    checkpoint, image = run
    out = tmp_path / "grids"
    if case == "checkpoint":
        checkpoint = tmp_path / "not-there.npz"
    elif case == "image":
        image = tmp_path / "no-image.png"
    else:
        (tmp_path / "a-file").write_text("")
        out = tmp_path / "a-file" / "grids"
    assert main(["inspect", "activations", str(checkpoint), str(image), "--out", str(out)]) == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1, error
    assert re.search(expected, error), error
    assert not out.exists()
