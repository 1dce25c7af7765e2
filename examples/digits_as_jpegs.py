"""Write the bundled digits out as a folder of JPEG files, to train on them through the streaming
image pipeline (``--dataset image_folder``) and compare with the in-memory run.

    python examples/digits_as_jpegs.py runs/digits-jpegs
    tinynet train --dataset image_folder --data-dir runs/digits-jpegs --image-size 32 \\
        --augment crop --out runs/digits-files

The folder gets ``train/<digit>/*.jpg`` and ``test/<digit>/*.jpg``: exactly the split ``tinynet
train`` makes of the digits in memory (``load_dataset("digits", seed=0)``, 32 x 32), each image
saved as an 8-bit grayscale JPEG at quality 95. The streaming path reads them as RGB (three equal
channels), so the network is the same but for its first convolution's input channels.
``--augment crop`` crops them as the in-memory digits are, without mirroring (a mirrored 2 is
not a 2). After 6 epochs (seed 0) the streamed run scores 98.33% on the test digits and the
same files loaded in memory 98.89%, as the main job does on the digits (docs/training.md).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def write_digits(root, seed: int = 0, quality: int = 95) -> dict:
    """The digits' train and test splits as JPEGs under ``root``; returns the counts per split."""
    from PIL import Image

    from tinynet.data import load_dataset

    data = load_dataset("digits", image_size=32, seed=seed)
    counts = {}
    for split, dataset in (("train", data.train), ("test", data.test)):
        images, labels = dataset.arrays
        for name in data.classes:
            (Path(root) / split / str(name)).mkdir(parents=True, exist_ok=True)
        for i, (image, label) in enumerate(zip(images, labels)):
            pixels = np.clip(np.rint(image[0] * 255.0), 0, 255).astype(np.uint8)
            path = Path(root) / split / str(data.classes[label]) / f"{i:05d}.jpg"
            Image.fromarray(pixels, "L").save(path, quality=quality)
        counts[split] = len(labels)
    return counts


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", help="the folder to write (made if missing)")
    parser.add_argument("--seed", type=int, default=0, help="the split's seed (tinynet's: 0)")
    args = parser.parse_args(argv)
    counts = write_digits(args.root, args.seed)
    print(f"wrote {counts['train']} train and {counts['test']} test JPEGs under {args.root}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
