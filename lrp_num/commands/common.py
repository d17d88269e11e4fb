"""What several subcommands share: loading a model and its inputs, writing files safely."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
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
        shape = model.network.input_shape
        if shape is not None and tuple(x.shape) == tuple(shape):
            x = x[None]
        return x
    images = model.test_images
    if images is None:
        raise LRPError("this model stores no test images: pass --input X.npy")
    samples = args.sample or [0]
    for k in samples:
        if not 0 <= k < len(images):
            raise ShapeError(f"--sample {k} out of range: the model stores {len(images)} test images")
    return images[samples]


def write_npy(path: str | os.PathLike, array: np.ndarray) -> Path:
    """Save ``array`` to ``path`` through a temporary file, so no half-written file is left."""
    path = Path(path)
    handle, temporary = tempfile.mkstemp(dir=path.parent if str(path.parent) else ".", suffix=".npy")
    os.close(handle)
    try:
        np.save(temporary, array, allow_pickle=False)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    return path


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
