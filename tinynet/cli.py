"""The ``tinynet`` command (also ``python -m tinynet``).

    tinynet train                    train the default GoogLeNet on the bundled digits
    tinynet evaluate RUN/checkpoint.npz [--multi-crop 10|144]
    tinynet predict RUN/checkpoint.npz image.png ...
    tinynet summary --model paper --input-shape 3 224 224
    tinynet gradcheck inception
    tinynet inspect gradients        vanishing gradients, with and without aux heads or BatchNorm
    tinynet inspect activations RUN/checkpoint.npz image.png   each Inception branch's maps
    tinynet convert googlenet.pth googlenet.npz
    tinynet export RUN/checkpoint.npz model.onnx     (or --model NAME; the onnx extra)
    tinynet explore RUN/checkpoint.npz --out page.html   one page: modules, values, gradients,
                                                         the backward step by step
    tinynet exercises start DIR      graded exercises; then tinynet exercises check DIR

Errors (a bad option, a bad file, running out of memory) are one line on stderr and exit code
1; ``--debug`` shows the traceback. The training options are checked by ``TrainConfig`` (the
same rules as the Python API); every other numeric option by its ``_number`` type here.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from pathlib import Path

EXIT_ERROR, EXIT_INTERRUPTED = 1, 130


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors as one line and exit code 1 like every other error."""

    def error(self, message):
        print(f"{self.prog}: error: {message} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(EXIT_ERROR)


def _number(parse, allowed: str, ok=lambda value: True):
    """An argparse type: ``parse`` (int or float) the text and refuse NaN, infinities and values
    that are not ``ok``, saying what is ``allowed``."""

    def number(text: str):
        try:
            value = parse(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or not ok(value):
            raise argparse.ArgumentTypeError(f"must be {allowed}; got {text!r}")
        return value

    return number


_POSITIVE_INT = _number(int, "a positive int", lambda value: value > 0)
_POSITIVE = _number(float, "a finite number > 0", lambda value: value > 0)
_SEED = _number(int, "an int >= 0", lambda value: value >= 0)


def _train_parser(commands):
    from tinynet.data.datasets import BUILDERS
    from tinynet.models.registry import MODELS
    from tinynet.train import DEFAULT_LR, MAX_EPOCHS, OPTIMIZERS, SCHEDULES, TrainConfig

    default = {field.name: field.default for field in dataclasses.fields(TrainConfig)}
    p = commands.add_parser(
        "train",
        help="train a network (default: the small BatchNorm GoogLeNet on the bundled digits)",
        description="Train a network of the Inception family (--model). Every epoch writes "
        "OUT/checkpoint.npz, OUT/metrics.jsonl and OUT/curves.png; --resume continues a run "
        "exactly.",
    )
    g = p.add_argument_group("model and data")
    g.add_argument(
        "--model",
        choices=sorted(MODELS),
        help=f"the network (default {default['model']}: BatchNorm, small-image stem); the "
        "small Inception-v3/v4/ResNet variants bring their own defaults for the options below "
        "(their recipe in tinynet/models/registry.py), which options given override",
    )
    g.add_argument("--width", type=float, help="channel multiplier (default: 0.25 for small)")
    g.add_argument(
        "--dataset", help=f"default {default['dataset']}; one of {', '.join(sorted(BUILDERS))}"
    )
    g.add_argument("--data-dir", help="folder holding the dataset's files")
    g.add_argument(
        "--download",
        action="store_true",
        default=None,
        help="download missing dataset files (SHA-256 verified)",
    )
    g.add_argument("--image-size", type=int, help="image side in pixels (default: the dataset's)")
    g = p.add_argument_group("optimisation")
    g.add_argument(
        "--epochs",
        type=_number(int, f"an int in [1, {MAX_EPOCHS:,}]", lambda value: 1 <= value <= MAX_EPOCHS),
        help=f"number of epochs (default {default['epochs']})",
    )
    g.add_argument(
        "--batch-size", type=int, help=f"images per step (default {default['batch_size']})"
    )
    g.add_argument(
        "--accumulate",
        type=int,
        metavar="K",
        help="sum the gradients of K batches before each optimizer step: the step of K x "
        "--batch-size images in the memory of one batch (BatchNorm still normalises each batch "
        "alone); the schedule, --max-batches and the logs count optimizer steps (default 1)",
    )
    g.add_argument(
        "--tensorboard",
        action="store_true",
        default=None,
        help="also write TensorBoard event files into OUT/tensorboard/ (the tensorboard extra): "
        "losses, accuracies, learning rate and data wait per step and epoch, weight and gradient "
        "histograms, the first augmented batch",
    )
    g.add_argument(
        "--histogram-every",
        type=int,
        metavar="N",
        help="with --tensorboard: the weight and gradient histograms every N steps (default 100)",
    )
    g.add_argument(
        "--optimizer",
        choices=sorted(OPTIMIZERS),
        help=f"default {default['optimizer']} (SGD with Nesterov momentum)",
    )
    g.add_argument(
        "--lr",
        type=float,
        help="peak learning rate (default "
        + ", ".join(f"{lr:g} for {name}" for name, lr in DEFAULT_LR.items())
        + ")",
    )
    g.add_argument("--momentum", type=float, help=f"SGD momentum (default {default['momentum']})")
    g.add_argument("--weight-decay", type=float, help=f"default {default['weight_decay']:g}")
    g.add_argument(
        "--schedule",
        choices=SCHEDULES,
        help=f"default {default['schedule']}; step is the paper's x0.96 every 8 epochs",
    )
    g.add_argument(
        "--warmup-epochs",
        type=float,
        help=f"linear warm-up length (default {default['warmup_epochs']:g})",
    )
    g.add_argument("--label-smoothing", type=float, help=f"default {default['label_smoothing']:g}")
    g.add_argument(
        "--ema-decay",
        type=float,
        help=f"Polyak averaging for evaluation (default {default['ema_decay']})",
    )
    g.add_argument(
        "--no-ema",
        dest="ema_decay",
        action="store_const",
        const=0.0,
        help="evaluate the last weights, not an average",
    )
    g.add_argument("--grad-clip", type=float, help="clip the gradient norm to this value")
    g.add_argument(
        "--augment",
        choices=("paper", "crop-flip", "crop", "none"),
        help="paper (image folders): GoogLeNet's random-resized crops of 8-100%% of the area, "
        "photometric distortions and random interpolations; crop-flip (default): random crops "
        "and mirroring; crop: random crops alone (digits, letters); none: the evaluation view",
    )
    g.add_argument(
        "--no-augment", dest="augment", action="store_const", const="none", help="--augment none"
    )
    g = p.add_argument_group("image folders (--dataset image_folder)")
    g.add_argument(
        "--workers",
        type=_number(int, "an int >= 0", lambda value: value >= 0),
        help="processes decoding and augmenting images while the step runs; their cores come off "
        "the step's threads (0: the main process decodes; default: a quarter of the cores)",
    )
    g.add_argument(
        "--cache",
        action="store_true",
        default=None,
        help="keep the decoded images in a memory-mapped file (OUT/image-cache, or --cache-dir), "
        "reused while the folder is unchanged, so later epochs skip decoding",
    )
    g.add_argument("--cache-dir", help="where --cache keeps its file (implies --cache)")
    g.add_argument(
        "--skip-bad-images",
        action="store_true",
        default=None,
        help="leave out an image that cannot be decoded (counted and listed in metrics.jsonl) "
        "instead of stopping the run",
    )
    g = p.add_argument_group("run")
    g.add_argument(
        "--seed", type=int, help=f"seed of every random choice (default {default['seed']})"
    )
    g.add_argument(
        "--out",
        dest="out_dir",
        help="output folder (default runs/<dataset>); one run at a time writes there",
    )
    again = g.add_mutually_exclusive_group()
    again.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out from its checkpoint (to --epochs if given)",
    )
    again.add_argument(
        "--overwrite",
        action="store_true",
        help="start a new run in an --out that holds one, replacing its checkpoint, metrics "
        "and curves (without it, such a folder is refused)",
    )
    g.add_argument(
        "--max-batches", type=int, help="stop each epoch after this many batches (quick smoke runs)"
    )
    g.add_argument(
        "--log-gradients",
        type=int,
        metavar="N",
        help="every N steps, record each layer's gradient norm and update-to-weight ratio in "
        "OUT/metrics.jsonl and draw them in OUT/gradients.png",
    )
    g.add_argument(
        "--explore-every",
        type=int,
        metavar="N",
        help="every N steps, write the loss, each layer's gradient norm and update ratio and a "
        "test image's activations into OUT/explore/, for `tinynet explore --watch OUT`",
    )
    g.add_argument(
        "--sync-batchnorm",
        action="store_true",
        default=None,
        help="under mpiexec: normalise with the whole batch's statistics across the ranks",
    )
    g.add_argument(
        "--detect-anomaly",
        action="store_true",
        help="stop at the first op whose output or gradient holds a NaN or an infinity, naming "
        "it, its module, the step and its inputs (tinynet.detect_anomaly; slower)",
    )
    p.set_defaults(run=_train)


def _train(args) -> None:
    import contextlib

    import numpy as np

    from tinynet import distributed, io, run_folder
    from tinynet.anomaly import detect_anomaly
    from tinynet.explore.snapshots import FILES as EXPLORE_FILES
    from tinynet.train import CHECKPOINT, RUN_FILES, TrainConfig, Trainer

    chosen = {
        name: value
        for name, value in vars(args).items()
        if name in TrainConfig.__dataclass_fields__ and value is not None
    }
    if chosen.get("ema_decay") == 0.0:
        chosen["ema_decay"] = None
    if "cache_dir" in chosen:
        chosen["cache"] = True
    if "histogram_every" in chosen and not chosen.get("tensorboard"):
        raise ValueError(
            f"--histogram-every {chosen['histogram_every']} sets how often --tensorboard writes "
            f"histograms; add --tensorboard, or drop it"
        )
    out_dir = Path(chosen.pop("out_dir", f"runs/{chosen.get('dataset', 'digits')}"))
    epochs = chosen.pop("epochs", None) if args.resume else None
    if args.resume and chosen:
        raise ValueError(
            f"--resume continues {out_dir} with the settings it was started with; drop "
            f"{', '.join('--' + k.replace('_', '-') for k in chosen)} (only --out and "
            f"--epochs may be given)"
        )
    # The settings are checked before the folder is looked at: a bad option is named as such,
    # whatever out_dir holds.
    config = None if args.resume else TrainConfig.for_model(**chosen, out_dir=str(out_dir))
    writer = distributed.world().rank == 0  # the rank that writes into out_dir
    if writer:
        io.check_writable_folder(out_dir, "out_dir")  # as Trainer says it, before the lock makes it
    lock = run_folder.hold(out_dir) if writer else contextlib.nullcontext()
    checkpoint, interrupted = out_dir / CHECKPOINT, False
    with lock:  # one run at a time in out_dir, from here to its end
        if writer and checkpoint.exists() and not (args.resume or args.overwrite):
            raise FileExistsError(
                f"--out {out_dir} already holds a run ({checkpoint}); continue it with --resume "
                f"or replace it with --overwrite"
            )
        try:
            if args.resume:
                trainer = Trainer.resume(out_dir, epochs)
            else:
                trainer = Trainer(config)
                if writer and args.overwrite:  # the old run's files go once the new one is ready
                    for name in (*RUN_FILES, *EXPLORE_FILES):
                        (out_dir / name).unlink(missing_ok=True)
            # The trainer checks every loss for NaN and inf and stops with advice: NumPy's
            # overflow warnings on the way there would only bury that one line.
            quiet = np.errstate(over="ignore", invalid="ignore", divide="ignore")
            with quiet, detect_anomaly(args.detect_anomaly):
                history = trainer.fit()
        except BaseException as error:
            if not _interrupted(error):
                raise
            interrupted = True
    if interrupted:  # the lock let go first: a rank leaves without running any `finally`
        print("\n" + _rank_named(_resume_hint(checkpoint, writer)), file=sys.stderr)
        _leave_if_parallel(EXIT_INTERRUPTED)
        raise SystemExit(EXIT_INTERRUPTED)
    if history and writer:
        last = history[-1]
        print(
            f"test top-1 {100 * last['test_top1']:.2f}% after {last['epoch']} epochs; "
            f"checkpoint, metrics and curves in {trainer.out_dir}"
        )


def _resume_hint(checkpoint: Path, writer: bool) -> str:
    """What a run interrupted by Ctrl-C says: where it can be continued from, if anywhere (the
    ranks that do not write say only that they stopped)."""
    if not writer:
        return "interrupted"
    if not checkpoint.exists():
        return (
            f"interrupted before the first epoch's checkpoint was written: nothing to resume in "
            f"{checkpoint.parent}"
        )
    return (
        f"interrupted: {checkpoint} holds the last completed epoch; continue with: "
        f"tinynet train --resume --out {checkpoint.parent}"
    )


def _evaluate_parser(commands):
    p = commands.add_parser("evaluate", help="top-1/top-5 accuracy of a trained checkpoint")
    p.add_argument("checkpoint", help="a checkpoint.npz written by `tinynet train`")
    p.add_argument("--dataset", help="evaluate on this dataset's test split (default: the run's)")
    p.add_argument("--data-dir")
    p.add_argument("--download", action="store_true")
    p.add_argument(
        "--multi-crop",
        choices=["none", "10", "144"],
        default="none",
        help="average the softmax over 10 crops, or the paper's 144",
    )
    p.add_argument("--batch-size", type=_POSITIVE_INT, default=64)
    p.add_argument(
        "--last-weights",
        action="store_true",
        help="use the last weights instead of the Polyak average",
    )
    p.set_defaults(run=_evaluate)


def _evaluate(args) -> None:
    from tinynet.evaluate import evaluate_checkpoint

    result = evaluate_checkpoint(
        args.checkpoint, args.dataset, args.data_dir, args.download, args.multi_crop,
        args.batch_size, averaged=not args.last_weights,
    )  # fmt: skip
    print(
        f"{result['images']} test images, {result['crops']} crop(s) each: top-1 "
        f"{100 * result['top1']:.2f}%, top-5 {100 * result['top5']:.2f}%"
    )


def _predict_parser(commands):
    p = commands.add_parser("predict", help="top classes of image files")
    p.add_argument(
        "checkpoint", help="a checkpoint.npz written by `tinynet train`, or an .onnx model"
    )
    p.add_argument("images", nargs="+", help="PNG or JPEG files")
    p.add_argument(
        "--top", type=_POSITIVE_INT, default=5, help="how many classes to show (default 5)"
    )
    p.set_defaults(run=_predict)


def _predict(args) -> None:
    from tinynet.evaluate import load_trained_model, predict_files

    if Path(args.checkpoint).suffix.lower() == ".onnx":
        from tinynet.onnx import load_for_prediction as load
    else:
        load = load_trained_model
    for path, ranked in predict_files(args.checkpoint, args.images, args.top, load):
        shown = ", ".join(f"{name} {100 * p:.1f}%" for name, p in ranked)
        print(f"{path}: {shown}")


def _summary_parser(commands):
    p = commands.add_parser("summary", help="layers, output shapes, parameters, multiply-adds")
    from tinynet.models.registry import MODELS

    p.add_argument("--model", choices=sorted(MODELS), default="paper")
    p.add_argument("--width", type=_POSITIVE)
    p.add_argument("--num-classes", type=_POSITIVE_INT)
    p.add_argument(
        "--input-shape",
        type=_POSITIVE_INT,
        nargs=3,
        metavar=("C", "H", "W"),
        help="default: 3 channels at the side the network was designed for (224; 32 for small)",
    )
    p.add_argument(
        "--depth", type=_POSITIVE_INT, default=1, help="how deep to list modules (default 1)"
    )
    p.add_argument(
        "--batch-size",
        type=_POSITIVE_INT,
        metavar="B",
        help="also state the estimated peak memory of a training step on B images (with the "
        "model's training recipe: its loss and optimizer)",
    )
    p.set_defaults(run=_summary)


def _summary(args) -> None:
    from tinynet.models.registry import model_entry
    from tinynet.summary import summary

    entry = model_entry(args.model)
    shape = args.input_shape or (3, entry.input_size, entry.input_size)
    options = {"in_channels": shape[0]}
    if args.width is not None:
        options["width"] = args.width
    if args.num_classes is not None:
        options["num_classes"] = args.num_classes
    model = entry.build(**options)
    print(summary(model, shape, depth=args.depth))
    if args.batch_size is not None:
        from tinynet.memory_estimate import estimate_training_memory
        from tinynet.train import TrainConfig, build_optimizer

        config = TrainConfig.for_model(model=args.model)
        loss = lambda outputs, labels: entry.loss(  # noqa: E731
            outputs, labels, config.aux_weight, config.label_smoothing
        )
        optimizer = lambda params: build_optimizer(config, params)  # noqa: E731
        print(estimate_training_memory(model, shape, args.batch_size, loss, optimizer))


def _gradcheck_parser(commands):
    from tinynet.gradcheck_cases import CASES

    p = commands.add_parser(
        "gradcheck",
        help="check an op's backward against finite differences",
        description="Compare analytic gradients with central finite differences in float64 "
        "for every input of an op or an Inception block, and show the errors.",
    )
    p.add_argument(
        "target",
        nargs="?",
        default="inception",
        choices=sorted(CASES),
        help="what to check (default inception)",
    )
    p.add_argument("--seed", type=_SEED, default=0)
    p.add_argument("--eps", type=_POSITIVE, default=1e-6, help="finite-difference step")
    p.set_defaults(run=_gradcheck)


def _gradcheck(args) -> None:
    import numpy as np

    from tinynet.gradcheck import check_gradients
    from tinynet.gradcheck_cases import CASES

    fn, inputs = CASES[args.target](np.random.default_rng(args.seed))
    result = check_gradients(fn, inputs, eps=args.eps, atol=1e-7, rtol=1e-5, seed=args.seed)
    print(f"{args.target}: analytic vs central differences (eps={args.eps}, float64)")
    print(result)
    print("ok: every gradient matches" if result.ok else "FAILED")
    if not result.ok:
        raise SystemExit(EXIT_ERROR)


def _inspect_parser(commands):
    p = commands.add_parser("inspect", help="look inside the network while it trains")
    targets = p.add_subparsers(dest="target", metavar="WHAT", required=True)
    g = targets.add_parser(
        "gradients",
        help="gradient flow of the paper's network without aux heads, with them, with BatchNorm",
        description="Train the paper's network (small stem, narrow) without its aux heads, with "
        "them and with BatchNorm, side by side on the digits; print the gradient norm at conv1, "
        "3a, 4a, 4d and 5b at the start and the end, and draw OUT/gradients.png (records in "
        "OUT/gradients.jsonl).",
    )
    g.add_argument("--width", type=_POSITIVE, default=0.125, help="channel multiplier (0.125)")
    g.add_argument("--steps", type=_POSITIVE_INT, default=300, help="SGD steps each (300)")
    g.add_argument("--batch-size", type=_POSITIVE_INT, default=16, help="images per step (16)")
    g.add_argument("--lr", type=_POSITIVE, default=0.01, help="constant learning rate (0.01)")
    g.add_argument(
        "--log-every", type=_POSITIVE_INT, default=10, metavar="N", help="record every N steps"
    )
    g.add_argument("--seed", type=_SEED, default=0)
    g.add_argument("--out", default="runs/inspect-gradients", help="output folder")
    g.set_defaults(run=_inspect_gradients)
    a = targets.add_parser(
        "activations",
        help="each Inception branch's (and the stem's) feature maps for one image",
        description="Run one image through a trained checkpoint and draw OUT/stem.png and one "
        "OUT/<block>.png per Inception block: each branch's most active feature maps, titled "
        "with the module's name and output shape.",
    )
    a.add_argument("checkpoint", help="a checkpoint.npz written by `tinynet train`")
    a.add_argument("image", help="a PNG or JPEG file")
    a.add_argument("--channels", type=_POSITIVE_INT, default=8, help="maps per row (default 8)")
    a.add_argument("--out", default="runs/inspect-activations", help="output folder")
    a.set_defaults(run=_inspect_activations)


def _inspect_gradients(args) -> None:
    from tinynet import io
    from tinynet.inspect_gradients import compare_gradient_flow, save_runs, table

    io.check_writable_folder(args.out, "--out")  # before minutes of training
    log = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
    runs = compare_gradient_flow(
        args.width, args.steps, args.batch_size, args.lr, args.log_every, args.seed, log=log
    )
    print(f"gradient norm per block, width {args.width:g}, batch {args.batch_size}, SGD lr "
          f"{args.lr:g} (momentum 0.9), seed {args.seed}:")  # fmt: skip
    print(table(runs))
    for path in save_runs(runs, args.out):
        print(f"wrote {path}")


def _inspect_activations(args) -> None:
    from tinynet import io
    from tinynet.inspect_activations import inspect_activations

    io.check_writable_folder(args.out, "--out")
    for path in inspect_activations(args.checkpoint, args.image, args.out, args.channels):
        print(f"wrote {path}")


def _convert_parser(commands):
    p = commands.add_parser(
        "convert",
        help="convert a PyTorch .pth state dict or a .safetensors file to tinynet's .npz "
        "(no torch needed)",
    )
    p.add_argument(
        "source",
        help="a .pth file written by torch.save(state_dict), a .safetensors file (timm's "
        "weights; needs the safetensors extra), or an .onnx model's initializers (the onnx extra)",
    )
    p.add_argument("destination", help="the .npz to write")
    p.set_defaults(run=_convert)


def _convert(args) -> None:
    from tinynet.convert import convert_torch_checkpoint

    if Path(args.source).suffix.lower() == ".onnx":
        from tinynet.onnx import convert_onnx as convert_torch_checkpoint
    state = convert_torch_checkpoint(args.source, args.destination, log=print)
    print(f"wrote {len(state)} tensors to {args.destination}")


def _graph_parser(commands):
    from tinynet.models.registry import MODELS

    p = commands.add_parser(
        "graph",
        help="draw a model's autograd graph (.dot, .svg or .png)",
        description="Run one random image through a model and draw the graph behind its "
        "output, modules as nested boxes. .svg and .png need Graphviz: the graph extra "
        "(pygraphviz) or a system `dot`.",
    )
    p.add_argument("--model", choices=sorted(MODELS), default="paper")
    p.add_argument("--width", type=_POSITIVE)
    p.add_argument(
        "--input-size", type=_POSITIVE_INT, help="image side (default: the model's design size)"
    )
    p.add_argument("--module", help="draw only this module, e.g. inception3a")
    p.add_argument(
        "--depth",
        type=_POSITIVE_INT,
        help="module levels drawn open; deeper ones become one node each "
        "(default 1 for a whole model, every level with --module)",
    )
    p.add_argument(
        "--backward",
        action="store_true",
        help="run backward from a cross-entropy loss and show each gradient's norm",
    )
    p.add_argument("--seed", type=_SEED, default=0)
    p.add_argument("--out", required=True, help="the file to write: .dot, .svg or .png")
    p.set_defaults(run=_graph)


def _graph(args) -> None:
    import numpy as np

    import tinynet
    from tinynet.graph import FORMATS, draw_graph
    from tinynet.models.registry import model_entry

    if Path(args.out).suffix.lower() not in FORMATS:  # before minutes of forward pass
        raise ValueError(f"--out must end in one of {', '.join(FORMATS)}; got {args.out!r}")
    entry = model_entry(args.model)
    tinynet.manual_seed(args.seed)
    model = entry.build(**({} if args.width is None else {"width": args.width})).eval()
    if args.module is not None and args.module not in dict(model.named_modules()):
        children = ", ".join(name for name, _ in model.named_children())
        raise ValueError(f"--module must be one of {children} (or a dotted name below them); "
                         f"got {args.module!r}")  # fmt: skip
    size = args.input_size or entry.input_size
    image = np.random.default_rng(args.seed).standard_normal((1, 3, size, size), np.float32)
    output = model(tinynet.tensor(image, requires_grad=True))
    depth = args.depth or (None if args.module else 1)
    graph = draw_graph(output, model, depth=depth, module=args.module, grad_norms=args.backward)
    if args.backward:
        tinynet.functional.cross_entropy(output, np.zeros(1, dtype=np.int64)).backward()
    print(f"wrote {graph.save(args.out)}")


def _export_parser(commands):
    from tinynet.models.registry import MODELS

    p = commands.add_parser(
        "export",
        help="write a trained checkpoint or a registered model as ONNX (the onnx extra)",
        description="Trace the network's eval-mode forward and write it as standard ONNX ops "
        "with a dynamic batch axis: `tinynet export RUN/checkpoint.npz out.onnx` or "
        "`tinynet export --model NAME out.onnx` (random weights, seeded).",
    )
    p.add_argument("paths", nargs="+", metavar="[CHECKPOINT] OUT", help="checkpoint and .onnx")
    p.add_argument("--model", choices=sorted(MODELS), help="export this network instead")
    p.add_argument("--width", type=_POSITIVE, help="with --model: channel multiplier")
    p.add_argument(
        "--input-size", type=_POSITIVE_INT, help="image side (default: the network's own)"
    )
    p.add_argument("--opset", type=_POSITIVE_INT, default=17, help="ONNX opset (13..21; 17)")
    p.add_argument("--seed", type=_SEED, default=0, help="with --model: the weights' seed")
    p.set_defaults(run=_export)


def _export(args) -> None:
    import json

    import numpy as np

    import tinynet
    from tinynet.models.registry import model_entry
    from tinynet.onnx import export
    from tinynet.train import load_trained_model

    if len(args.paths) != (1 if args.model else 2):
        usage = "--model NAME OUT" if args.model else "CHECKPOINT OUT (or --model NAME OUT)"
        raise ValueError(f"export takes {usage}; got {len(args.paths)} paths: {args.paths}")
    if Path(args.paths[-1]).suffix.lower() != ".onnx":
        raise ValueError(f"the output must end in .onnx; got {args.paths[-1]!r}")
    if args.model:
        entry = model_entry(args.model)
        tinynet.manual_seed(args.seed)
        model = entry.build(**({} if args.width is None else {"width": args.width}))
        channels, size, metadata = 3, entry.input_size, {}
    else:
        if args.width is not None:
            raise ValueError("--width applies to --model; a checkpoint keeps its own width")
        model, config = load_trained_model(args.paths[0])
        channels, size = config.channels, config.input_size
        metadata = {f"tinynet.{key}": json.dumps(getattr(config, key))
                    for key in ("mean", "std", "classes")}  # fmt: skip
    size = args.input_size or size
    example = np.zeros((1, channels, size, size), np.float32)
    path = export(model, example, args.paths[-1], args.opset, metadata)
    print(f"wrote {path} (input (N, {channels}, {size}, {size}), opset {args.opset})")


def _explore_parser(commands):
    from tinynet.models.registry import MODELS

    p = commands.add_parser(
        "explore",
        help="one HTML page to look inside a network: modules, graph, values, gradients, "
        "the backward step by step",
        description="Run one image through a network and its backward from the cross-entropy "
        "of --label, and write one self-contained page (it opens from disk, no server): "
        "`tinynet explore RUN/checkpoint.npz --out page.html` or `tinynet explore --model "
        "NAME --out page.html` (random weights, seeded).",
    )
    p.add_argument("checkpoint", nargs="?", help="a training checkpoint (RUN/checkpoint.npz)")
    p.add_argument("--model", choices=sorted(MODELS), help="this network instead, seeded")
    p.add_argument(
        "--image",
        help="an image file (default: the run's first test image, if at hand; else a fixed "
        "sample, seeded noise)",
    )
    p.add_argument(
        "--label",
        type=_number(int, "a class index (an int >= 0)", lambda value: value >= 0),
        help="the class whose loss the backward starts from (default: the predicted one)",
    )
    p.add_argument(
        "--input-size", type=_POSITIVE_INT, help="image side (default: the network's own)"
    )
    p.add_argument("--out", help="the .html file to write")
    live = p.add_argument_group("live while training")
    live.add_argument(
        "--watch",
        metavar="RUN_DIR",
        help="instead: serve a live page of the run `tinynet train --out RUN_DIR` writes (its "
        "curves; with --explore-every, its layers' gradients and a test image's activations)",
    )
    live.add_argument(
        "--port",
        type=_number(int, "a port in [0, 65535]", lambda value: 0 <= value <= 65535),
        help="with --watch: the port to serve on (default 0: a free one; the URL is printed)",
    )
    live.add_argument("--host", help="with --watch: the address to serve on (default 127.0.0.1)")
    p.set_defaults(run=_explore)


def _explore(args) -> None:
    if args.watch is not None:
        return _explore_watch(args)
    if args.port is not None or args.host is not None:
        raise ValueError("--port and --host go with --watch RUN_DIR")
    from tinynet.explore.network import write_network_page

    path = write_network_page(
        args.checkpoint, args.model, args.image, args.label, args.out, args.input_size
    )
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")


def _explore_watch(args) -> None:
    from tinynet.explore.server import LOCALHOST, serve

    page_options = ("model", "image", "label", "input_size", "out")
    given = [f"--{name.replace('_', '-')}" for name in page_options if getattr(args, name)]
    given = ([args.checkpoint] if args.checkpoint else []) + given
    if given:
        raise ValueError(f"--watch serves a run's live page (only --port and --host go with it); "
                         f"drop {' '.join(given)}")  # fmt: skip
    serve(args.watch, args.host or LOCALHOST, args.port or 0)


def _exercises_parser(commands):
    p = commands.add_parser(
        "exercises",
        help="graded exercises: write a backward, a convolution, an Inception block or a "
        "training loop in NumPy, and let tinynet check it",
        description="Practise: `start DIR` writes one file per exercise (a stub with the math "
        "and a hint), `check DIR` grades them against tinynet (exit 0 only when every one "
        "named passes), `solution NAME` prints tinynet's own answer.",
    )
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    actions.add_parser("list", help="the exercises in order, and the lessons they practise")
    start = actions.add_parser(
        "start", help="write DIR/<name>.py for every exercise (a file that exists is kept)"
    )
    start.add_argument("directory", metavar="DIR")
    check = actions.add_parser(
        "check", help="grade DIR's exercises (all, or the NAMEs): passed / failing / not started"
    )
    check.add_argument("directory", metavar="DIR")
    check.add_argument("names", nargs="*", metavar="NAME", help="default: every exercise")
    check.add_argument(
        "--max-examples", type=_POSITIVE_INT, default=100, help="cases per op exercise (100)"
    )
    check.add_argument("--seed", type=_SEED, default=0, help="which cases are drawn (0)")
    solution = actions.add_parser("solution", help="print tinynet's solution of NAME")
    solution.add_argument("name", metavar="NAME")
    p.set_defaults(run=_exercises)


def _exercises(args) -> int:
    from tinynet.exercises.command import run

    return run(args)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="tinynet",
        description="GoogLeNet from scratch in NumPy + numba: train, evaluate, predict, "
        "inspect and gradient-check it on a CPU.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in (_train_parser, _evaluate_parser, _predict_parser, _summary_parser,
                _gradcheck_parser, _inspect_parser, _convert_parser, _graph_parser,
                _export_parser, _explore_parser, _exercises_parser):  # fmt: skip
        add(commands)
    return parser


def _rank_named(message: str) -> str:
    """Under mpiexec, ``message`` naming the rank it happened on."""
    from tinynet.distributed import rank_named

    return rank_named(message)


def _leave_if_parallel(code: int) -> None:
    """Under mpiexec, end this rank at once: the launcher then ends the others (no rank waits
    for it in a collective forever)."""
    from tinynet.distributed import leave_if_parallel

    leave_if_parallel(code)


def _interrupted(error: BaseException) -> bool:
    """Whether Ctrl-C caused ``error``: a KeyboardInterrupt, or an error with one among its
    causes and contexts (numba's dispatcher reports one raised while a kernel ran as
    "SystemError: CPUDispatcher(...) returned a result with an exception set")."""
    seen, chain = set(), [error]
    while chain:
        error = chain.pop()
        if error is None or id(error) in seen:
            continue
        if isinstance(error, KeyboardInterrupt):
            return True
        seen.add(id(error))
        chain += [error.__cause__, error.__context__]
    return False


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        from tinynet import runtime

        runtime.configure()  # the thread and memory policy of a run: see tinynet/runtime.py
        code = args.run(args)  # None, or an exit code (exercises check)
    except SystemExit:
        raise
    except BaseException as error:  # noqa: BLE001 - every failure becomes one readable line
        if _interrupted(error):
            print("\n" + _rank_named("interrupted"), file=sys.stderr)
            _leave_if_parallel(EXIT_INTERRUPTED)
            return EXIT_INTERRUPTED
        if args.debug or not isinstance(error, Exception):
            raise
        message = " ".join(line.strip() for line in str(error).splitlines() if line.strip())
        if isinstance(error, MemoryError):  # numpy's allocation errors included
            message = f"out of memory: {message}" if message else "out of memory"
        message = _rank_named(message or type(error).__name__)
        print(f"tinynet {args.command}: error: {message}", file=sys.stderr)
        _leave_if_parallel(EXIT_ERROR)
        return EXIT_ERROR
    return code or 0
