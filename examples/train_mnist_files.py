"""Train the small GoogLeNet on MNIST (or Fashion-MNIST) from the standard IDX .gz files.

What it shows: ``tinynet.data.load_dataset`` reading the four files every MNIST mirror serves,

    train-images-idx3-ubyte.gz   train-labels-idx1-ubyte.gz
    t10k-images-idx3-ubyte.gz    t10k-labels-idx1-ubyte.gz

from a folder (``--download`` fetches the missing ones and keeps each only if its SHA-256 matches
the published digest); the splits then go straight to a ``Trainer``. When a file is missing,
or broken, tinynet's own error says which file and what to do, and this script prints it and
exits with status 1.

Run:

    python examples/train_mnist_files.py --data-dir ~/data/mnist --download
    python examples/train_mnist_files.py --data-dir ~/data/mnist --epochs 1 --max-batches 20
    python examples/train_mnist_files.py --dataset fashion_mnist --data-dir ~/data/fashion

A full MNIST epoch on 2 CPU cores takes a while; --max-batches and --train-images keep it short.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

import tinynet
from tinynet.data import DatasetError, DataSplits, DownloadError, TensorDataset, load_dataset
from tinynet.train import TrainConfig, Trainer


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data-dir", required=True, help="the folder holding (or to receive) the IDX files"
    )
    parser.add_argument(
        "--download", action="store_true", help="fetch missing files (SHA-256 verified)"
    )
    parser.add_argument("--dataset", choices=["mnist", "fashion_mnist"], default="mnist")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument(
        "--max-batches", type=int, default=None, help="stop each epoch after this many batches"
    )
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument(
        "--train-images", type=int, default=None, help="train on the first N images only"
    )
    parser.add_argument("--out", default="runs/mnist-example", help="the run folder")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        data = load_dataset(args.dataset, args.data_dir, download=args.download)
    except (FileNotFoundError, DatasetError, DownloadError) as error:
        # FileNotFoundError: a file is missing and --download was not given; DatasetError: a
        # file is there but is not valid IDX (truncated, wrong magic, labels out of range);
        # DownloadError: no mirror delivered the file intact.
        print(f"error: {error}", file=sys.stderr)
        if isinstance(error, FileNotFoundError) and not args.download:
            print("(in this script: add --download to fetch the missing files)", file=sys.stderr)
        return 1

    train_images, train_labels = data.train.arrays
    print(
        f"{args.dataset} from {args.data_dir}: {len(data.train)} train / {len(data.test)} test "
        f"images of {train_images.shape[1:]}, pixel range [{train_images.min():.1f}, "
        f"{train_images.max():.1f}], classes {', '.join(data.classes)}"
    )
    counts = np.bincount(train_labels, minlength=len(data.classes))
    print("train images per class: " + " ".join(str(int(c)) for c in counts))
    if args.train_images is not None:
        data = DataSplits(
            TensorDataset(train_images[: args.train_images], train_labels[: args.train_images]),
            data.test,
            data.classes,
        )

    # Passing the splits in skips the Trainer's own loading; dataset and data_dir are still
    # recorded in the checkpoint, so `tinynet evaluate` can find the test split again.
    config = TrainConfig(
        dataset=args.dataset,
        data_dir=args.data_dir,
        epochs=args.epochs,
        batch_size=args.batch_size,
        max_batches=args.max_batches,
        out_dir=args.out,
    )
    history = Trainer(config, data=data, log=print).fit()
    last = history[-1]
    print(
        f"done: test top-1 {100 * last['test_top1']:.2f}% after {last['epoch']} epoch(s); "
        f"checkpoint, metrics and curves in {args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
