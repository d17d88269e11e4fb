"""What several subcommands share: loading a model and its inputs, writing files safely."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from lrp_num.errors import LRPError, ModelFileError, ShapeError
from lrp_num.model_io import BUILTIN_MODELS, ModelFile, load_builtin, load_npz

DEFAULT_MODEL = "digits-cnn"


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=DEFAULT_MODEL, metavar="PATH|NAME",
                        help=f"a model file (.npz, .onnx) or a built-in model "
                             f"({', '.join(BUILTIN_MODELS)}); default {DEFAULT_MODEL}")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--input", metavar="X.npy", help="input batch (or one sample) as .npy")
    source.add_argument("--sample", type=int, metavar="K", action="append",
                        help="use the model's stored test image K (repeatable); default 0")


def load_model(spec: str) -> ModelFile:
    """A built-in model name, an .npz model file, or an .onnx file."""
    if spec in BUILTIN_MODELS:
        return load_builtin(spec)
    path = Path(spec)
    if not path.exists():
        raise ModelFileError(f"no model file {spec!r} and no built-in model of that name "
                             f"(built-in: {', '.join(BUILTIN_MODELS)})")
    if path.is_dir():
        raise ModelFileError(f"model file {spec!r} is a folder, not a model file")
    if path.suffix.lower() == ".npy":
        raise ModelFileError(f"model file {spec!r} is a single .npy array, not an .npz model")
    if path.suffix.lower() == ".onnx":
        from lrp_num.onnx_import import load_onnx

        return ModelFile(load_onnx(path))
    return load_npz(path)


def load_inputs(args: argparse.Namespace, model: ModelFile) -> np.ndarray:
    """The batch to explain: --input file, or stored test images (--sample)."""
    if args.input:
        try:
            x = np.load(args.input, allow_pickle=False)
        except (OSError, ValueError) as error:
            raise ModelFileError(f"cannot read input {args.input!r}: {error}") from None
        return as_batch(x, model.network.input_shape, args.input)
    images = model.test_images
    if images is None:
        raise LRPError("this model stores no test images: pass --input X.npy")
    samples = args.sample or [0]
    for k in samples:
        if not 0 <= k < len(images):
            raise ShapeError(f"--sample {k} out of range: the model stores {len(images)} test images")
    return images[samples]


def as_batch(x: np.ndarray, input_shape: tuple[int, ...] | None, name: str) -> np.ndarray:
    """``x`` as a non-empty batch: one sample of ``input_shape`` gains a batch axis.

    Raises ShapeError for a 0-d array, an empty batch, or samples whose shape is not the
    model's ``input_shape`` (when the model declares one).
    """
    if x.ndim == 0:
        raise ShapeError(f"input {name!r} is a single number (a 0-d array), not a sample or a batch")
    if input_shape is not None:
        shape = tuple(int(n) for n in input_shape)
        if tuple(x.shape) == shape:
            x = x[None]
        elif tuple(x.shape[1:]) != shape:
            raise ShapeError(f"input {name!r} has shape {tuple(x.shape)}; the model takes samples of "
                             f"shape {shape} (one sample, or a batch of shape (N, {', '.join(map(str, shape))}))")
    if len(x) == 0:
        raise ShapeError(f"input {name!r} is an empty batch (shape {tuple(x.shape)})")
    return x


def progress(iterable, total: int, label: str):
    """Yield from ``iterable`` with a one-line progress bar on stderr when it is a terminal."""
    show = sys.stderr.isatty() and total > 1
    for done, item in enumerate(iterable, start=1):
        yield item
        if show:
            filled = int(30 * done / total)
            print(f"\r{label} [{'#' * filled}{'.' * (30 - filled)}] {done}/{total}",
                  end="", file=sys.stderr, flush=True)
    if show:
        print(file=sys.stderr)
