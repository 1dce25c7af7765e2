"""timm's own Inception-v4 and Inception-ResNet-v2 as oracles: a timm network with random
weights and random BatchNorm statistics, its state dict loaded into tinynet's twin, and the
comparisons the tests of both files make (eval logits in float32, every parameter's gradient of
a cross-entropy in float64)."""

import copy

import numpy as np

import tinynet

from strategies import uniform
from upstream import upstream_timm

# Both networks take at least 75x75 images (their last grid is then 1x1).
SMALLEST = 75
# The gradients are compared in training mode, where BatchNorm normalises with the batch's own
# statistics. At 75x75 the last grid is 1x1, so with a batch of two BatchNorm normalises two
# numbers per channel, which makes the gradient so ill-conditioned that the two frameworks'
# float64 roundings part at 1e-7; at 107x107 (a 2x2 last grid) they agree to 1e-10.
GRADIENT_SIZE = 107


def timm_network(torch, name: str, num_classes: int = 5):
    """timm's ``name`` (float32) with PyTorch's initial weights and random BatchNorm affine
    parameters and running statistics, so that eval mode is not an identity around the convs."""
    timm = upstream_timm()
    torch.manual_seed(0)
    network = timm.create_model(name, pretrained=False, num_classes=num_classes)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for key, value in network.state_dict().items():
            if key.endswith(("running_var", "bn.weight")):
                value.uniform_(0.5, 1.5, generator=generator)
            elif key.endswith(("running_mean", "bn.bias")):
                value.uniform_(-0.1, 0.1, generator=generator)
    return network


def numpy_state(network) -> dict:
    return {key: value.numpy() for key, value in network.state_dict().items()}


def relative_error(actual, expected) -> float:
    """max |actual - expected| / max |expected|."""
    actual = np.asarray(getattr(actual, "data", actual))
    return float(np.abs(actual - expected).max() / np.abs(expected).max())


def assert_eval_logits_match(torch, ours, theirs):
    """Eval-mode logits of a batch of two SMALLEST-sized images, float32: relative error
    <= 1e-4."""
    ours.load_state_dict(numpy_state(theirs))
    ours.eval(), theirs.eval()
    x = uniform(3, (2, 3, SMALLEST, SMALLEST), 0, 1, np.float32)
    expected = theirs(torch.from_numpy(x)).detach().numpy()
    assert relative_error(ours(x), expected) <= 1e-4


def assert_training_gradients_match(torch, ours, theirs):
    """Every parameter's gradient of a cross-entropy in training mode, float64: each within
    1e-9 of that gradient's largest element (plus 1e-15 for the gradients that are exactly 0
    in exact arithmetic, such as a bias right before a training-mode BatchNorm)."""
    theirs = copy.deepcopy(theirs).double().train()
    ours.load_state_dict(numpy_state(theirs))
    ours.to(np.float64).train()
    x = uniform(4, (2, 3, GRADIENT_SIZE, GRADIENT_SIZE), 0, 1)
    target = np.array([1, 3])
    tinynet.functional.cross_entropy(ours(x), target).backward()
    torch.nn.functional.cross_entropy(
        theirs(torch.from_numpy(x)), torch.from_numpy(target)
    ).backward()
    expected = {key: p.grad.numpy() for key, p in theirs.named_parameters()}
    ours_grads = dict(ours.named_parameters())
    assert ours_grads.keys() == expected.keys()
    for key, grad in expected.items():
        error = np.abs(ours_grads[key].grad - grad).max()
        assert error <= 1e-9 * np.abs(grad).max() + 1e-15, (key, error, np.abs(grad).max())
