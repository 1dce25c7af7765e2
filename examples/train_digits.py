"""Train the default small GoogLeNet on scikit-learn's bundled digits through the Python API.

What it shows: the same run as ``tinynet train``, written with ``TrainConfig`` and ``Trainer``;
the run folder every epoch writes (checkpoint.npz, metrics.jsonl, curves.png); and using the
result: ``load_trained_model`` rebuilds the network from the checkpoint (with the run's
normalisation and class names) and it classifies a few test digits.

Run (needs the ``train`` extra: ``pip install 'tinynet[train]'``):

    python examples/train_digits.py        # 6 epochs: ~99% test top-1, 1-2 min on 2 idle cores
    python examples/train_digits.py --epochs 1 --max-batches 3 --out /tmp/digits   # a smoke run
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

import tinynet
from tinynet.data import transforms as T
from tinynet.train import TrainConfig, Trainer, load_trained_model


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=6, help="epochs to train (default 6)")
    parser.add_argument(
        "--max-batches",
        type=int,
        default=None,
        help="stop each epoch's training and evaluation after this many batches (smoke runs)",
    )
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/digits-example", help="the run folder")
    parser.add_argument("--show", type=int, default=8, help="test digits to predict (default 8)")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)

    # 1. Configure and train. Everything not given keeps TrainConfig's defaults: the 'small'
    #    preset (BatchNorm, small-image stem, width 0.25), SGD with Nesterov momentum, a cosine
    #    schedule, random crops and Polyak averaging (EMA) of the weights for evaluation.
    config = TrainConfig(
        dataset="digits",
        epochs=args.epochs,
        batch_size=args.batch_size,
        max_batches=args.max_batches,
        seed=args.seed,
        out_dir=args.out,
    )
    trainer = Trainer(config, log=print)  # log to stdout; the progress bar goes to stderr
    history = trainer.fit()

    print("\nper-epoch accuracy")
    print("epoch  train top-1  test top-1  test top-5")
    for record in history:
        print(
            f"{record['epoch']:>5}  {100 * record['train_top1']:>10.2f}%  "
            f"{100 * record['test_top1']:>9.2f}%  {100 * record['test_top5']:>9.2f}%"
        )

    # 2. The run folder: the checkpoint (model, optimiser, schedule, EMA, loader and RNG state,
    #    enough to resume exactly with Trainer.resume), one JSON line per epoch, the curves.
    out = Path(args.out)
    print(f"\nrun folder {out}:")
    for path in sorted(out.iterdir()):
        print(f"  {path.name:<16} {path.stat().st_size:>10,} bytes")
    with open(out / "metrics.jsonl") as file:
        last = json.loads(file.readlines()[-1])
    print(f"metrics.jsonl, last line: epoch {last['epoch']}, test_top1 {last['test_top1']:.4f}")

    # 3. Reload the network from the checkpoint alone, as a separate program would. It comes
    #    back in eval mode with the averaged weights; the config carries the normalisation
    #    statistics and class names fixed when the run started.
    model, saved = load_trained_model(out / "checkpoint.npz")
    images, labels = trainer.data.test[np.arange(args.show)]  # float32 (N, 1, 32, 32) in [0, 1]
    normalize = T.Normalize(saved.mean, saved.std)
    with tinynet.no_grad():
        logits = model(normalize(images)).data
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    probabilities = shifted / shifted.sum(axis=1, keepdims=True)
    predicted = probabilities.argmax(axis=1)

    print(f"\nreloaded {out / 'checkpoint.npz'}: predictions on the first {args.show} test digits")
    for i, (label, guess) in enumerate(zip(labels, predicted)):
        mark = "ok" if label == guess else "wrong"
        print(
            f"  test digit {i}: true {saved.classes[label]}, predicted {saved.classes[guess]} "
            f"(p={probabilities[i, guess]:.2f}) {mark}"
        )
    print(f"{int((predicted == labels).sum())}/{args.show} correct")


if __name__ == "__main__":
    main()
