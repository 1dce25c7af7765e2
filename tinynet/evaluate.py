"""Using a trained checkpoint: accuracy on a test split (single, 10- or 144-crop) and the
top classes of image files.

Multi-crop follows the paper (section 7): the crops' softmax outputs are averaged. For 10-crop
the shorter side is first scaled by 256/224 (as ImageNet's 224 crops of 256 images); for the
144 crops the paper's scales 256, 288, 320, 352 are scaled by size/224 (32-pixel images: 37,
41, 46, 50). An image folder's crops are read from the files (``file_crops``): each scale is the
photograph resized from its full resolution, its whole width or height kept for the three
squares, rather than the network-sized square enlarged.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from tinynet.data import average_softmax, paper_crops, read_image
from tinynet.data import transforms as T
from tinynet.data.formats import to_unit_float
from tinynet.data.image_files import ImageFiles
from tinynet.data.multicrop import PAPER_SCALES, ten_crop
from tinynet.function import no_grad
from tinynet.inference import inference
from tinynet.metrics import topk_correct
from tinynet.train import TrainConfig, check_data_fits, evaluate, load_data, load_trained_model

MULTI_CROP = ("none", "10", "144")
PREDICT_BATCH = 64  # images per forward of ``predict_files``: memory stays bounded for many files


def crops_of(batch: np.ndarray, size: int, multi_crop: str) -> np.ndarray:
    """(K, N, C, size, size) crops of a batch of size x size images for ``multi_crop``."""
    if multi_crop == "10":
        return ten_crop(T.resize(batch, round(size * 256 / 224)), size)
    if multi_crop == "144":
        return paper_crops(batch, crop=size, scales=[round(size * s / 224) for s in PAPER_SCALES])
    return batch[None]


def file_crops(test: ImageFiles, indices, size: int, multi_crop: str) -> np.ndarray:
    """(K, N, C, size, size) crops of the images ``indices`` of an image folder's split, each
    scale decoded from its file (the module docstring): 10-crop from the centred square at
    256/224 of ``size``; the paper's 144 from the whole image at each scale's shorter side."""
    if multi_crop == "10":
        side = round(size * 256 / 224)
        squares = to_unit_float(np.stack([test.square(int(i), side) for i in indices]))
        return ten_crop(squares, size)
    if multi_crop == "144":
        per_image = []
        for i in indices:
            crops = []
            for scale in PAPER_SCALES:
                side = round(size * scale / 224)
                image = to_unit_float(test.scaled(int(i), side))[None]
                crops.append(paper_crops(image, crop=size, scales=[side]))  # 36 at this scale
            per_image.append(np.concatenate(crops))
        return np.concatenate(per_image, axis=1)
    return to_unit_float(np.stack([test.square(int(i), size) for i in indices]))[None]


def _test_split(path, config: TrainConfig, dataset, data_dir, download):
    name = dataset or config.dataset
    if data_dir is None and name == config.dataset:
        data_dir = config.data_dir
    source = dataclasses.replace(
        config, dataset=name, data_dir=data_dir, download=download, image_size=config.input_size
    )
    data = load_data(source)
    check_data_fits(source, data, f"{path}'s network")
    return data.test


def evaluate_checkpoint(
    path,
    dataset: str | None = None,
    data_dir=None,
    download: bool = False,
    multi_crop: str = "none",
    batch_size: int = 64,
    averaged: bool = True,
) -> dict:
    """Loss, top-1 and top-5 of the checkpoint's network on a test split (the run's dataset
    by default): ``{'loss', 'top1', 'top5', 'images', 'crops'}``."""
    if multi_crop not in MULTI_CROP:
        raise ValueError(f"multi_crop must be one of {MULTI_CROP}; got {multi_crop!r}")
    model, config = load_trained_model(path, averaged)
    test = _test_split(path, config, dataset, data_dir, download)
    normalize = T.Normalize(config.mean, config.std)
    if multi_crop == "none":
        return {**evaluate(model, test, normalize, batch_size), "crops": 1}
    loss = top1 = top5 = seen = 0
    plan = inference(model)  # one plan for every crop batch
    with no_grad():
        for start in range(0, len(test), batch_size):
            indices = np.arange(start, min(start + batch_size, len(test)))
            if isinstance(test, ImageFiles):
                crops = file_crops(test, indices, config.input_size, multi_crop)
                labels = test.labels[indices]
            else:
                images, labels = test[indices]
                crops = crops_of(images, config.input_size, multi_crop)
            logits = np.stack([plan(normalize(c)).data for c in crops])
            probabilities = average_softmax(logits)
            chosen = probabilities[np.arange(len(labels)), labels]
            loss -= float(np.log(np.maximum(chosen, np.finfo(chosen.dtype).tiny)).sum())
            top1 += topk_correct(probabilities, labels, 1)
            top5 += topk_correct(probabilities, labels, 5)
            seen += len(labels)
    return {"loss": loss / seen, "top1": top1 / seen, "top5": top5 / seen,
            "images": seen, "crops": len(crops)}  # fmt: skip


def predict_files(
    path, files, top: int = 5, load=load_trained_model
) -> list[tuple[str, list[tuple[str, float]]]]:
    """For each image file, the ``top`` most probable classes and their probabilities.
    ``load(path)`` -> (model, settings with channels, input_size, mean, std and classes)."""
    if top < 1:
        raise ValueError(f"top must be >= 1; got {top}")
    model, config = load(path)
    mode = "L" if config.channels == 1 else "RGB"
    batch = np.stack([read_image(f, config.input_size, mode) for f in files])
    images = T.Normalize(config.mean, config.std)(batch)
    plan = inference(model, trace_on_call=2)  # planned if 2 chunks of PREDICT_BATCH images
    with no_grad(), np.errstate(all="ignore"):  # a NaN or inf is refused below, in one line
        logits = np.concatenate([plan(images[start : start + PREDICT_BATCH]).data
                                 for start in range(0, len(images), PREDICT_BATCH)])  # fmt: skip
    if logits.shape != (len(files), len(config.classes)):  # an ONNX file's declared shape lied
        raise ValueError(f"{path}: the model gives scores of shape {logits.shape} for "
                         f"{len(files)} images of {len(config.classes)} classes")  # fmt: skip
    if not np.isfinite(logits).all():
        raise ValueError(f"{path}: the model gives NaN or infinite scores for "
                         f"{files[int(np.nonzero(~np.isfinite(logits))[0][0])]}")  # fmt: skip
    probabilities = average_softmax(logits[None])
    results = []
    for file, row in zip(files, probabilities):
        best = np.argsort(-row)[:top]
        results.append((str(file), [(config.classes[k], float(row[k])) for k in best]))
    return results
