"""What several subcommands share: loading a model, its inputs and other arrays."""

from __future__ import annotations

import argparse
import zipfile
import zlib
from pathlib import Path

import numpy as np

from lrp_num.errors import LRPError, ModelFileError, NonFiniteError, ShapeError
from lrp_num.io.model_io import BUILTIN_MODELS, ModelFile, load_builtin, load_npz

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
        from lrp_num.io.onnx_import import load_onnx

        return ModelFile(load_onnx(path))
    return load_npz(path)


def read_array(path: str, flag: str) -> np.ndarray:
    """The numeric array in the ``.npy`` file ``path`` given with ``flag`` (e.g. ``--input``).

    Read without pickle. One clear ModelFileError for a missing path, a folder, an empty
    (0-byte) file, an ``.npz`` archive, a file that is not ``.npy`` or an array that is not
    numeric; NonFiniteError for NaN or Inf values.
    """
    where = f"{flag} {path!r}"
    file = Path(path)
    if not file.exists():
        raise ModelFileError(f"{where}: no such file")
    if file.is_dir():
        raise ModelFileError(f"{where} is a folder, not an .npy file")
    if file.stat().st_size == 0:
        raise ModelFileError(f"{where} is an empty file (0 bytes), not an .npy array")
    try:
        loaded = np.load(file, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as error:
        raise ModelFileError(f"{where} is not a readable .npy array ({error})") from None
    if isinstance(loaded, np.lib.npyio.NpzFile):
        with loaded:
            names = ", ".join(loaded.files[:5]) or "none"
        raise ModelFileError(f"{where} is an .npz archive (arrays: {names}); save the one "
                             "array with numpy.save as .npy")
    array = np.asarray(loaded)
    if array.dtype.kind not in "biuf":
        raise ModelFileError(f"{where} holds {array.dtype} values, not numbers")
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        bad = int(np.count_nonzero(~np.isfinite(array)))
        raise NonFiniteError(f"{where} holds {bad} NaN or Inf value(s)")
    return array


def load_inputs(args: argparse.Namespace, model: ModelFile) -> np.ndarray:
    """The batch to explain: --input file, or stored test images (--sample)."""
    if args.input is not None:
        return as_batch(read_array(args.input, "--input"), model.network.input_shape, args.input)
    images = model.test_images
    if images is None:
        raise LRPError("this model stores no test images: pass --input X.npy")
    samples = args.sample or [0]
    for k in samples:
        if not 0 <= k < len(images):
            raise ShapeError(f"--sample {k} out of range: the model stores {len(images)} test images")
    return images[samples]


def sample_names(args: argparse.Namespace, batch: int) -> list[str]:
    """How each explained sample is named: the stored test image's own number (``--sample``),
    or the row of the ``--input`` file (a file holding one sample has row 0)."""
    if args.input is not None:
        return [f"row {k} of {Path(args.input).name}" for k in range(batch)]
    return [f"test image {k}" for k in (args.sample or [0])]


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
