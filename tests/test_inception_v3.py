"""Inception-v3: torchvision's own ``Inception3`` as the oracle (state dict, eval logits in float32,
every gradient in float64), parameter counts, the paper's stage shapes at 299 through the
summary command, the small-image stem, gradcheck of each block type, the reference path, the
registry's choice of network, a resumed RMSprop run, and errors."""

import inspect
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tinynet
from tinynet.cli import main
from tinynet.models import (
    Inception3,
    InceptionV3Outputs,
    inception_v3,
    inception_v3_loss,
    inception_v3_small,
)
from tinynet.models.inception_v3 import (
    InceptionA,
    InceptionAux,
    InceptionB,
    InceptionC,
    InceptionD,
    InceptionE,
)
from tinynet.models.registry import model_entry

from compare import assert_close, module_gradcheck
from strategies import seeds, uniform
from upstream import upstream_torchvision


def relative_error(actual, expected) -> float:
    actual = np.asarray(getattr(actual, "data", actual))
    return float(np.abs(actual - expected).max() / np.abs(expected).max())


# ------------------------------------------------------------------ torchvision's own network
@pytest.fixture(scope="module")
def upstream(torch):
    """torchvision's ``Inception3`` (random weights; random BatchNorm affine parameters and
    statistics, so BatchNorm is not the identity) and its state dict as NumPy arrays."""
    upstream_torchvision()
    from torchvision.models.inception import Inception3 as TorchInception3

    torch.manual_seed(0)
    theirs = TorchInception3(aux_logits=True, init_weights=False, dropout=0.0)
    with torch.no_grad():
        for module in theirs.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 1.5)
    state = {k: v.detach().numpy().copy() for k, v in theirs.state_dict().items()}
    return theirs, state


def ours_from(state, dtype, **options):
    model = inception_v3(init="default", dropout=0.0, **options).to(dtype)
    model.load_state_dict(state)
    return model


def test_parameter_counts_with_and_without_the_aux_head():
    count = lambda model: sum(p.size for p in model.parameters())
    assert count(inception_v3(init="default")) == 27_161_264
    assert count(inception_v3(aux_logits=False, init="default")) == 23_834_568


def test_torchvisions_state_dict_has_our_keys_and_shapes(upstream):
    _, state = upstream
    ours = inception_v3(init="default").state_dict()
    assert list(ours) == list(state)
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in state.items()}


@pytest.mark.parametrize("transform_input", [False, True])
def test_eval_logits_match_torchvision_at_75x75(torch, upstream, transform_input):
    """75x75, the smallest input torchvision's network accepts: every block runs (at grids
    of 7, 3 and 1)."""
    theirs, state = upstream
    theirs.transform_input = transform_input
    ours = ours_from(state, np.float32, transform_input=transform_input).eval()
    x = uniform(1, (2, 3, 75, 75), -2, 2, np.float32)
    with torch.no_grad():
        expected = theirs.float().eval()(torch.from_numpy(x)).numpy()
    theirs.transform_input = False
    assert relative_error(ours(x), expected) <= 1e-4


def test_every_gradient_matches_torchvision_in_float64(torch, upstream):
    """Eval mode (running statistics), so every BatchNorm, pool and branch of the main path is
    differentiated as it is at inference; the aux head, which only runs on 17x17 grids, is
    compared on its own below."""
    theirs, state = upstream
    theirs = theirs.double().eval()
    ours = ours_from(state, np.float64).eval()
    x = uniform(2, (2, 3, 75, 75), -2, 2)
    target = np.array([3, 917])

    inception_v3_loss(ours(x), target).backward()
    theirs.zero_grad()
    t_loss = torch.nn.functional.cross_entropy(theirs(torch.from_numpy(x)), torch.from_numpy(target))
    t_loss.backward()
    t_grads = {k: p.grad for k, p in theirs.named_parameters()}
    compared = 0
    for key, p in ours.named_parameters():
        if key.startswith("AuxLogits."):
            assert p.grad is None and t_grads[key] is None
            continue
        assert relative_error(p.grad, t_grads[key].numpy()) <= 1e-9, key
        compared += 1
    assert compared == 94 * 3 + 2  # every conv, BatchNorm γ and β, and the classifier
    theirs.float()


def test_the_aux_head_matches_torchvisions_in_training_mode_in_float64(torch):
    upstream_torchvision()
    from torchvision.models.inception import InceptionAux as TorchInceptionAux

    torch.manual_seed(1)
    theirs = TorchInceptionAux(768, 10).double().train()
    ours = InceptionAux(768, 10).double()
    ours.load_state_dict({k: v.detach().numpy().copy() for k, v in theirs.state_dict().items()})
    x = uniform(3, (2, 768, 17, 17), -1, 1)
    target = np.array([4, 9])
    out = ours(x)
    tinynet.functional.cross_entropy(out, target).backward()
    t_out = theirs(torch.from_numpy(x))
    torch.nn.functional.cross_entropy(t_out, torch.from_numpy(target)).backward()
    assert relative_error(out, t_out.detach().numpy()) <= 1e-12
    t_params = dict(theirs.named_parameters())
    for key, p in ours.named_parameters():
        assert relative_error(p.grad, t_params[key].grad.numpy()) <= 1e-9, key
    t_buffers = dict(theirs.named_buffers())
    for key, buffer in ours.named_buffers():
        assert_close(buffer, t_buffers[key].numpy(), dtype=np.float64)


# ------------------------------------------------------------------ shapes
def test_summary_command_gives_the_papers_stages_and_the_forward_comments_at_299(capsys):
    """``tinynet summary --model inception_v3`` runs the paper's network on 299x299: its table
    has the stage outputs of the paper's table 1, and every ``# N x C x H x W`` comment under a
    ``x = self.<layer>(x)`` line of Inception3.forward is that layer's row."""
    assert main(["summary", "--model", "inception_v3"]) == 0
    out = capsys.readouterr().out
    rows = {
        m[1]: tuple(int(v) for v in m[2].split(", "))
        for m in re.finditer(r"^(\w+)\s+\w+\s+\(([\d, ]+)\)", out, re.M)
    }
    assert rows["Mixed_5d"] == (1, 288, 35, 35)
    assert rows["Mixed_6e"] == (1, 768, 17, 17)
    assert rows["Mixed_7c"] == (1, 2048, 8, 8)
    assert "parameters: 27,161,264 (23,834,568 used at inference)" in out

    lines = inspect.getsource(Inception3.forward).splitlines()
    commented = {}
    for line, below in zip(lines, lines[1:]):
        call = re.fullmatch(r"\s*x = self\.([A-Za-z]\w*)\(x\)", line)
        shape = re.match(r"\s*# N x (\d+(?: x \d+)*)", below)
        if call and shape:
            commented[call[1]] = (1,) + tuple(int(v) for v in shape[1].split(" x "))
    assert len(commented) == 19  # 5 stem convs, 2 pools, 11 blocks, avgpool
    assert {name: rows[name] for name in commented} == commented


@given(
    size=st.sampled_from([28, 32]),
    width=st.sampled_from([1 / 16, 1 / 8]),
    in_channels=st.integers(1, 3),
    num_classes=st.integers(2, 12),
    aux_logits=st.booleans(),
)
@settings(max_examples=4)
def test_small_stem_shapes_and_outputs(size, width, in_channels, num_classes, aux_logits):
    """The small stem keeps the paper's three stages at 28-32 px: 32 -> 15 -> 7 -> 3 and
    28 -> 13 -> 6 -> 2; training mode returns logits and aux logits, eval mode the logits."""
    model = inception_v3_small(
        width=width, in_channels=in_channels, num_classes=num_classes, aux_logits=aux_logits
    )
    shapes = {}
    for name in ("Mixed_5d", "Mixed_6e", "Mixed_7c"):
        getattr(model, name).register_forward_hook(
            lambda m, i, out, name=name: shapes.update({name: out.shape[2:]})
        )
    x = uniform(0, (2, in_channels, size, size), 0, 1, np.float32)
    out = model(x)
    grids = {32: (15, 7, 3), 28: (13, 6, 2)}[size]
    assert [shapes[n] for n in ("Mixed_5d", "Mixed_6e", "Mixed_7c")] == [(g, g) for g in grids]
    if aux_logits:
        assert isinstance(out, InceptionV3Outputs)
        assert out.logits.shape == out.aux_logits.shape == (2, num_classes)
    else:
        assert out.shape == (2, num_classes)
    model.eval()
    assert model(x).shape == (2, num_classes)


def test_eval_mode_skips_the_aux_head_and_the_loss_weights_it():
    model = inception_v3_small(width=1 / 16)
    ran = []
    model.AuxLogits.register_forward_hook(lambda *a: ran.append("aux"))
    x = uniform(1, (2, 3, 32, 32), 0, 1, np.float32)
    target = np.array([1, 2])
    outputs = model(x)
    assert ran == ["aux"]
    main_loss = tinynet.functional.cross_entropy(outputs.logits, target, label_smoothing=0.1)
    aux_loss = tinynet.functional.cross_entropy(outputs.aux_logits, target, label_smoothing=0.1)
    loss = inception_v3_loss(outputs, target, aux_weight=0.4, label_smoothing=0.1)
    assert float(loss.data) == pytest.approx(float(main_loss.data) + 0.4 * float(aux_loss.data))
    model.eval()
    logits = model(x)
    assert ran == ["aux"]
    assert float(inception_v3_loss(logits, target).data) == pytest.approx(
        float(tinynet.functional.cross_entropy(logits, target).data)
    )


# ------------------------------------------------------------------ gradients and reference path
def _block(kind):
    """Each block type at a few channels, its input (float64, 7x7) and its parameters."""
    blocks = {
        "A": (InceptionA, dict(ch1x1=2, ch5x5red=2, ch5x5=3, ch3x3dblred=2, ch3x3dbl=3,
                               pool_proj=2)),
        "B": (InceptionB, dict(ch3x3=3, ch3x3dblred=2, ch3x3dbl=3)),
        "C": (InceptionC, dict(ch1x1=2, ch7x7red=2, ch7x7=3, ch7x7dbl=2, pool_proj=2)),
        "D": (InceptionD, dict(ch3x3red=2, ch3x3=3, ch7x7x3red=2, ch7x7x3=2)),
        "E": (InceptionE, dict(ch1x1=2, ch3x3red=2, ch3x3=2, ch3x3dblred=3, ch3x3dbl=2,
                               pool_proj=2)),
    }  # fmt: skip
    cls, widths = blocks[kind]
    return cls(3, **widths).double()


@pytest.mark.parametrize("kind", ["A", "B", "C", "D", "E"])
@given(seed=seeds)
@settings(max_examples=3)
def test_block_gradients(kind, seed):
    tinynet.manual_seed(seed)
    block = _block(kind)
    x = tinynet.tensor(uniform(seed, (2, 3, 7, 7), -1, 1), requires_grad=True)
    out = block(x)
    assert out.shape[1] == block.out_channels
    assert module_gradcheck(block, x)


def test_aux_head_gradients():
    tinynet.manual_seed(0)
    head = InceptionAux(3, 4, ch_reduce=2, ch_conv=3, pool="adaptive5x5").double()
    x = tinynet.tensor(uniform(5, (2, 3, 7, 7), -1, 1), requires_grad=True)
    assert module_gradcheck(head, x)


@pytest.mark.parametrize("stem, size", [("imagenet", 75), ("small", 32)])
def test_the_reference_path_gives_the_same_outputs(stem, size):
    tinynet.manual_seed(0)
    model = Inception3(width=1 / 8, stem=stem, aux_pool="adaptive5x5", dropout=0.0).double()
    # Four images, not two: at 75x75 the last blocks' grids are 1x1, where BatchNorm normalises
    # one value per image, and two values normalise to exactly +-1 whatever they are, so the
    # backward through it divides by their (tiny) difference: with two images the paths'
    # rounding differed by 1.6e-10 of the largest gradient on an AVX2 machine, with four 6e-12.
    x = uniform(6, (4, 3, size, size), -1, 1)
    target = np.array([0, 5, 2, 7])
    fused = model(x)
    inception_v3_loss(fused, target).backward()
    fused_grads = {k: p.grad for k, p in model.named_parameters()}
    model.zero_grad()
    with tinynet.use_reference():
        composed = model(x)
        inception_v3_loss(composed, target).backward()
    for a, b in zip(fused, composed):
        assert_close(a, b.data, scale=float(np.abs(b.data).max()))
    for key, p in model.named_parameters():
        assert_close(fused_grads[key], p.grad, scale=float(np.abs(p.grad).max()))


# ------------------------------------------------------------------ the registry and training
def test_the_registry_has_the_paper_network_and_the_cpu_sized_one():
    entry, small = model_entry("inception_v3"), model_entry("inception_v3_small")
    assert (entry.input_size, small.input_size) == (299, 32)
    assert entry.loss is small.loss is inception_v3_loss
    cpu = small.build(num_classes=10, in_channels=1)
    assert (cpu.config.stem, cpu.config.width, cpu.config.in_channels) == ("small", 0.25, 1)
    assert small.build(num_classes=10, width=0.5).config.width == 0.5
    imagenet = entry.build(init="default")
    assert (imagenet.config.stem, imagenet.config.width) == ("imagenet", 1.0)
    assert imagenet.config.num_classes == 1000


def test_a_resumed_rmsprop_run_repeats_the_uninterrupted_one_exactly(tmp_path):
    pytest.importorskip("sklearn")
    from test_train import interrupt_at_step, quiet, tiny

    from tinynet.data import DataSplits, TensorDataset, load_dataset
    from tinynet.train import Trainer

    train, test, classes = load_dataset("digits")
    data = DataSplits(TensorDataset(*train[:24]), TensorDataset(*test[:16]), classes)
    changes = dict(model="inception_v3_small", optimizer="rmsprop", label_smoothing=0.1, width=1 / 16,
                   batch_size=8, max_batches=2)  # fmt: skip
    whole = Trainer(tiny(tmp_path / "whole", **changes), data, log=quiet)
    assert whole.model.config.stem == "small"
    expected = whole.fit()
    interrupted = Trainer(tiny(tmp_path / "split", **changes), data, log=quiet)
    interrupt_at_step(interrupted, interrupted.steps_per_epoch + 1)
    with pytest.raises(KeyboardInterrupt):
        interrupted.fit()
    got = Trainer.resume(tmp_path / "split", data=data, log=quiet).fit()
    for a, b in zip(got, expected):
        for key in ("train_loss", "test_loss", "test_top1", "lr"):
            assert a[key] == b[key], (a["epoch"], key)


# ------------------------------------------------------------------ errors
def test_bad_input_is_a_clear_error():
    model = inception_v3_small(width=1 / 16, in_channels=1)
    with pytest.raises(ValueError, match=r"input must be a batch of images \(N, 1, H, W\); got "
                       r"shape \(2, 3, 32, 32\)"):
        model(np.zeros((2, 3, 32, 32), np.float32))
    with pytest.raises(ValueError, match=r"images of 12x12 are too small for the 'small' stem"):
        model(np.zeros((2, 1, 12, 12), np.float32))
    paper_stem = Inception3(width=1 / 16, aux_logits=False)
    with pytest.raises(ValueError, match=r"images of 32x32 are too small for the 'imagenet' "
                       r"stem, which needs at least 75x75"):
        paper_stem(np.zeros((1, 3, 32, 32), np.float32))
    torchvision_aux = Inception3(width=1 / 16)
    with pytest.raises(ValueError, match=r"InceptionAux: the 5x5/3 average pool needs a feature "
                       r"map of at least 17x17 \(299x299 images\); got 3x3"):
        torchvision_aux(np.zeros((2, 3, 75, 75), np.float32))


@pytest.mark.parametrize(
    "options, match",
    [
        (dict(stem="tiny"), r"Inception3: stem must be one of \('imagenet', 'small'\); got 'tiny'"),
        (dict(aux_pool="max"), r"aux_pool must be one of \('avg5x5s3', 'adaptive5x5'\)"),
        (dict(num_classes=0), r"Inception3: num_classes must be a positive int; got 0"),
        (dict(width=-1.0), r"Inception3: width must be a number > 0; got -1.0"),
        (dict(dropout=1.5), r"Inception3: dropout must be in \[0, 1\]; got 1.5"),
        (dict(transform_input=True, in_channels=1), r"transform_input needs in_channels=3"),
    ],
)
def test_bad_options_are_clear_errors(options, match):
    with pytest.raises(ValueError, match=match):
        Inception3(**options)
