"""Look inside an Inception block: what each of its four branches produces.

What it shows: an Inception block runs four branches on the same input,

    branch1  1x1 conv
    branch2  1x1 reduce -> 3x3 conv
    branch3  1x1 reduce -> 5x5 conv (3x3 in the torchvision variant)
    branch4  3x3 max pool (stride 1) -> 1x1 projection

and concatenates their outputs on the channel axis. Forward hooks
(``Module.register_forward_hook``) on the block and its branches record every output during one
ordinary forward pass of the whole network; the script prints each branch's shape, the channels
it fills in the block's output, its mean activation and the fraction of zeros its final ReLU
leaves, and asserts that the branches concatenated are exactly the block's output.

The network has random weights unless --checkpoint names a run of ``tinynet train`` (or of
examples/train_digits.py); the input is a batch of digits from scikit-learn if installed, else
noise. A random-weight network runs in training mode, so that BatchNorm normalises each layer
with the batch's statistics: in eval mode its freshly initialised running statistics (mean 0,
variance 1) normalise nothing, and the activations shrink towards 0 layer after layer.

Run:

    python examples/inception_branches.py                         # small preset, inception3a
    python examples/inception_branches.py --block inception4e --plot branches.png
    python examples/inception_branches.py --model paper --width 0.25 --size 224
    python examples/inception_branches.py --checkpoint runs/digits/checkpoint.npz --plot b.png
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

import tinynet
from tinynet.models import Inception
from tinynet.models.registry import model_entry
from tinynet.train import load_trained_model

BRANCHES = ("branch1", "branch2", "branch3", "branch4")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=["small", "paper", "torchvision"], default="small")
    parser.add_argument("--width", type=float, default=None, help="channel multiplier")
    parser.add_argument("--size", type=int, default=None, help="image side (32; 224 for paper)")
    parser.add_argument("--block", default="inception3a", help="which Inception block")
    parser.add_argument("--checkpoint", help="a training checkpoint to load instead")
    parser.add_argument("--noise", action="store_true", help="random images, not digits")
    parser.add_argument("--batch", type=int, default=4, help="images in the batch (default 4)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plot", help="save a PNG grid of feature maps here (matplotlib)")
    return parser.parse_args(argv)


def build(args):
    """The network (eval mode if trained, training mode if random), its input's (channels,
    size), and a description."""
    if args.checkpoint:
        model, config = load_trained_model(args.checkpoint)
        return model, config.channels, config.input_size, f"trained: {args.checkpoint}"
    options = {"in_channels": 1, "num_classes": 10}
    if args.width is not None:
        options["width"] = args.width
    tinynet.manual_seed(args.seed)  # the layers' initialisation draws from tinynet's generator
    model = model_entry(args.model).build(**options)
    size = args.size or model_entry(args.model).input_size
    return model.train(), 1, size, f"{args.model} preset, width {model.config.width}, random"


def input_images(count: int, channels: int, size: int, noise: bool, seed: int):
    """(count, channels, size, size) images, standardised, and what they are."""
    images, what = None, f"{count} images of uniform noise"
    if not noise:
        try:
            from tinynet.data import digits

            images, labels = digits(image_size=size).test[np.arange(count)]
            what = f"{count} test digits ({', '.join(str(int(k)) for k in labels)})"
        except ImportError:
            print("(scikit-learn not installed: using noise instead of digits)")
    if images is None:
        images = np.random.default_rng(seed).random((count, 1, size, size), dtype=np.float32)
    images = np.repeat(images, channels, axis=1)
    images = (images - images.mean()) / (images.std() + 1e-6)
    return images.astype(np.float32), what


def main(argv=None) -> int:
    args = parse_args(argv)
    model, channels, size, source = build(args)
    block = getattr(model, args.block, None)
    if not isinstance(block, Inception):
        names = [name for name, m in model.named_children() if isinstance(m, Inception)]
        print(f"error: {args.block!r} is not an Inception block; one of {names}", file=sys.stderr)
        return 1

    # Hooks see (module, inputs, output) after each forward; keep the arrays by name.
    seen: dict[str, np.ndarray] = {}

    def record(name):
        def hook(module, inputs, output):
            seen[name], seen[f"{name} input"] = output.data, inputs[0].data

        return hook

    handles = [block.register_forward_hook(record("block"))]
    handles += [getattr(block, b).register_forward_hook(record(b)) for b in BRANCHES]

    images, what = input_images(args.batch, channels, size, args.noise, args.seed)
    with tinynet.no_grad():
        outputs = model(images)
    for handle in handles:
        handle.remove()

    print(f"GoogLeNet ({source}) on {what}, input {images.shape}")
    if not model.training:
        print(f"predicted classes: {outputs.data.argmax(axis=1).tolist()}")
    print(f"{args.block}: input {seen['block input'].shape} -> output {seen['block'].shape}\n")

    header = f"{'branch':<8} {'layers':<26} {'output shape':<18} {'channels':<12} {'mean':>7}"
    print(header + f" {'zeros':>7}")
    start = 0
    for name in BRANCHES:
        out = seen[name]
        stop = start + out.shape[1]
        layers = describe(getattr(block, name))
        zeros = float((out == 0).mean())  # every branch ends in a ReLU
        print(
            f"{name:<8} {layers:<26} {str(out.shape):<18} {f'[{start}:{stop}]':<12} "
            f"{out.mean():>7.3g} {100 * zeros:>6.1f}%"
        )
        # The block's output, sliced at this branch's channels, is this branch's output.
        assert np.array_equal(seen["block"][:, start:stop], out), name
        start = stop

    joined = np.concatenate([seen[b] for b in BRANCHES], axis=1)
    assert joined.shape == seen["block"].shape and np.array_equal(joined, seen["block"])
    print(
        f"\nconcatenation check: cat(branch1..branch4, dim=1) {joined.shape} equals the "
        f"{args.block} output exactly ({block.out_channels} channels)"
    )

    if args.plot:
        plot(seen, args.plot, args.block)
    return 0


def describe(branch) -> str:
    """'1x1 -> 3x3' style description of a branch's layers."""
    steps = []
    for module in branch.modules():
        kind = type(module).__name__
        if kind == "Conv2d":
            steps.append("x".join(map(str, module.weight.shape[2:])))
        elif kind == "MaxPool2d":
            steps.append("maxpool")
    return " -> ".join(steps)


def plot(seen: dict, path: str, block: str, per_branch: int = 6) -> None:
    """Rows: the block's input and the four branches; columns: their first few feature maps."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(matplotlib not installed: no plot; pip install 'tinynet[train]')")
        return
    rows = ["block input", *BRANCHES]
    figure, axes = plt.subplots(
        len(rows), per_branch, figsize=(1.6 * per_branch, 1.7 * len(rows)), squeeze=False
    )
    for r, name in enumerate(rows):
        maps = seen[name][0]
        for c in range(per_branch):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c < len(maps):
                ax.imshow(maps[c], cmap="viridis")
                ax.set_title(f"{name} ch {c}", fontsize=7)
            else:
                ax.axis("off")
    figure.suptitle(f"{block}: first feature maps of each branch (image 0)")
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    plt.close(figure)
    print(f"saved feature maps to {path}")


if __name__ == "__main__":
    sys.exit(main())
