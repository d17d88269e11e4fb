"""Model files: a :class:`~lrp_num.network.Sequential` network in one NumPy ``.npz`` archive.

Layout (format version 1). Every entry is a plain array, so files are read with
``np.load(path, allow_pickle=False)`` and nothing in them is executed.

=========================  =====================  =================================================
key                        dtype, shape           meaning
=========================  =====================  =================================================
``format``                 str, ()                ``"lrp-toolkit/sequential"``
``format_version``         int64, ()              ``1``
``layer_types``            str, (L,)              class names: Dense, Conv2d, SumPool2d, AvgPool2d,
                                                  MaxPool2d, ReLU, Flatten, Identity, BatchNorm
``layer{k}.weight``        float, (n_in, n_out)   Dense: w_ij layout
                           float, (Co, Ci, kh, kw)  Conv2d: PyTorch / ONNX layout
``layer{k}.bias``          float, (n_out,)        Dense and Conv2d
``layer{k}.stride``        int64, (2,)            Conv2d and pooling
``layer{k}.padding``       int64, (2,)            Conv2d
``layer{k}.kernel``        int64, (2,)            pooling
``layer{k}.gamma``, ...    float, (C,)            BatchNorm: ``gamma``, ``beta``, ``mean``, ``var``
``layer{k}.eps``           float64, ()            BatchNorm
``input_shape``            int64, (d,)            optional: per-sample input shape
``input_domain.low``       float, input_shape     optional: lower corner l of the input box
``input_domain.high``      float, input_shape     optional: upper corner h (z^B rule bounds)
``extra.{name}``           any non-object         optional: e.g. ``extra.test_images``,
                                                  ``extra.test_labels``
=========================  =====================  =================================================

k counts from 0 over the layers as given, before BatchNorm folding (loading folds again). Layers
without parameters have no entries besides their type. Keys not listed are ignored.
"""

from __future__ import annotations

import os
import zipfile
import zlib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import BinaryIO, Callable, Mapping

import numpy as np

from lrp_num.errors import DomainError, LRPError, ModelFileError, NonFiniteError, ShapeError
from lrp_num.files import check_output_path, write_atomic
from lrp_num.layers import (
    AvgPool2d, BatchNorm, Conv2d, Dense, Flatten, Identity, Layer, MaxPool2d, ReLU, SumPool2d,
)
from lrp_num.network import Sequential

FORMAT = "lrp-toolkit/sequential"
FORMAT_VERSION = 1

#: name -> file inside the package's ``models`` folder
BUILTIN_MODELS: dict[str, str] = {
    "digits-mlp": "digits_mlp.npz",
    "digits-cnn": "digits_cnn.npz",
}


@dataclass(frozen=True)
class InputDomain:
    """The input box l <= x <= h (bounds of the z^B rule), broadcastable to one sample."""

    low: np.ndarray
    high: np.ndarray

    def __post_init__(self) -> None:
        try:
            low, high = np.asarray(self.low, dtype=float), np.asarray(self.high, dtype=float)
        except (TypeError, ValueError):
            raise ShapeError(f"input domain bounds must be numbers or numeric arrays, got "
                             f"{_describe(self.low)} and {_describe(self.high)}") from None
        if not (np.isfinite(low).all() and np.isfinite(high).all()):
            raise NonFiniteError("input domain bounds must be finite (no NaN or Inf): z^B needs a "
                                 "bounded box; for an unbounded input use w2 (R^n) or zplus (x >= 0)")
        try:
            np.broadcast_shapes(low.shape, high.shape)
        except ValueError:
            raise ShapeError(f"input domain low {low.shape} and high {high.shape} do not broadcast") from None
        if np.any(low > high):
            raise ShapeError("input domain needs low <= high everywhere")
        object.__setattr__(self, "low", low)
        object.__setattr__(self, "high", high)

    @classmethod
    def of(cls, value: "InputDomain | tuple | list") -> "InputDomain":
        """An InputDomain, or one built from a (low, high) pair; ShapeError for anything else."""
        if isinstance(value, cls):
            return value
        if not isinstance(value, (tuple, list)) or len(value) != 2:
            raise ShapeError(f"input_domain must be an InputDomain or a pair (low, high), got {_describe(value)}")
        return cls(*value)

    def check_fits(self, input_shape: tuple[int, ...]) -> None:
        """Raise ShapeError unless low and high broadcast to one sample of ``input_shape``."""
        for name, bound in (("low", self.low), ("high", self.high)):
            try:
                if np.broadcast_shapes(bound.shape, tuple(input_shape)) != tuple(input_shape):
                    raise ValueError
            except ValueError:
                raise ShapeError(
                    f"input domain {name} of shape {bound.shape} does not fit inputs of shape {tuple(input_shape)}"
                ) from None


    def check_contains(self, x: np.ndarray) -> None:
        """Raise DomainError unless l <= x <= h for a batch ``x`` (within a few rounding units).

        The bounds must fit one sample of ``x`` (see :meth:`check_fits`).
        """
        tolerance = 8 * np.finfo(x.dtype if x.dtype.kind == "f" else np.float64).eps
        low = self.low - tolerance * np.maximum(1.0, np.abs(self.low))
        high = self.high + tolerance * np.maximum(1.0, np.abs(self.high))
        outside = (x < low) | (x > high)
        if outside.any():
            raise DomainError(
                f"{int(np.count_nonzero(outside))} input value(s) lie outside the declared input domain "
                f"[{_bound_text(self.low)}, {_bound_text(self.high)}] (min {x.min():.6g}, max {x.max():.6g}); "
                "z^B is derived for inputs inside the box: fix the input or the domain")


def _describe(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _bound_text(bound: np.ndarray) -> str:
    if bound.size == 1 or np.all(bound == bound.flat[0]):
        return f"{float(bound.flat[0]):g}"
    return f"{float(bound.min()):g}..{float(bound.max()):g}"


@dataclass(frozen=True)
class ModelFile:
    """What a model file holds: the network, its input domain and extra arrays."""

    network: Sequential
    input_domain: InputDomain | None = None
    extra: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def test_images(self) -> np.ndarray | None:
        return self.extra.get("test_images")

    @property
    def test_labels(self) -> np.ndarray | None:
        return self.extra.get("test_labels")


def _int_pair(values: tuple[int, int]) -> np.ndarray:
    return np.asarray(values, dtype=np.int64)


# layer type -> (arrays to store, rebuild from arrays)
_WRITERS: dict[type, Callable[[Layer], dict[str, np.ndarray]]] = {
    Dense: lambda l: {"weight": l.weight, "bias": l.bias},
    Conv2d: lambda l: {"weight": l.weight, "bias": l.bias, "stride": _int_pair(l.stride),
                       "padding": _int_pair(l.padding)},
    SumPool2d: lambda l: {"kernel": _int_pair(l.kernel), "stride": _int_pair(l.stride)},
    AvgPool2d: lambda l: {"kernel": _int_pair(l.kernel), "stride": _int_pair(l.stride)},
    MaxPool2d: lambda l: {"kernel": _int_pair(l.kernel), "stride": _int_pair(l.stride)},
    BatchNorm: lambda l: {"gamma": l.gamma, "beta": l.beta, "mean": l.mean, "var": l.var,
                          "eps": np.float64(l.eps)},
    ReLU: lambda l: {}, Flatten: lambda l: {}, Identity: lambda l: {},
}

_READERS: dict[str, Callable[[Callable[[str], np.ndarray]], Layer]] = {
    "Dense": lambda a: Dense(a("weight"), a("bias")),
    "Conv2d": lambda a: Conv2d(a("weight"), a("bias"), tuple(a("stride")), tuple(a("padding"))),
    "SumPool2d": lambda a: SumPool2d(tuple(a("kernel")), tuple(a("stride"))),
    "AvgPool2d": lambda a: AvgPool2d(tuple(a("kernel")), tuple(a("stride"))),
    "MaxPool2d": lambda a: MaxPool2d(tuple(a("kernel")), tuple(a("stride"))),
    "BatchNorm": lambda a: BatchNorm(a("gamma"), a("beta"), a("mean"), a("var"), float(a("eps"))),
    "ReLU": lambda a: ReLU(), "Flatten": lambda a: Flatten(), "Identity": lambda a: Identity(),
}


def save_npz(
    network: Sequential,
    path: str | os.PathLike,
    *,
    input_domain: InputDomain | tuple[np.ndarray, np.ndarray] | None = None,
    extra: Mapping[str, np.ndarray] | None = None,
) -> None:
    """Write ``network`` (layers as given, before folding) to a compressed ``.npz`` file.

    The file is written to a temporary file in the same folder and renamed into place, so
    ``path`` never holds a half-written model. A path that cannot be written (a missing folder,
    a folder, no permission) raises :class:`~lrp_num.errors.OutputPathError`.

    Parameters
    ----------
    network : Sequential
    path : path-like
        Target file, written exactly as named (no suffix added).
    input_domain : InputDomain or (low, high), optional
        The box l <= x <= h the inputs live in.
    extra : mapping of str to array, optional
        Further arrays (e.g. ``test_images``, ``test_labels``), stored as ``extra.{name}``.
    """
    arrays: dict[str, np.ndarray] = {
        "format": np.asarray(FORMAT),
        "format_version": np.int64(FORMAT_VERSION),
        "layer_types": np.asarray([type(layer).__name__ for layer in network.source_layers]),
    }
    for index, layer in enumerate(network.source_layers):
        for name, value in _WRITERS[type(layer)](layer).items():
            arrays[f"layer{index}.{name}"] = np.asarray(value)
    if network.input_shape is not None:
        arrays["input_shape"] = np.asarray(network.input_shape, dtype=np.int64)
    if input_domain is not None:
        if not isinstance(input_domain, InputDomain):
            input_domain = InputDomain(*input_domain)
        if network.input_shape is not None:
            input_domain.check_fits(network.input_shape)
        arrays["input_domain.low"] = input_domain.low
        arrays["input_domain.high"] = input_domain.high
    for name, value in (extra or {}).items():
        value = np.asarray(value)
        if value.dtype.hasobject:
            raise ShapeError(f"extra array {name!r} has object dtype, which model files cannot hold")
        arrays[f"extra.{name}"] = value

    check_output_path(path, "the model")
    write_atomic(path, lambda stream: _write_archive(stream, arrays))


def _write_archive(stream: BinaryIO, arrays: Mapping[str, np.ndarray]) -> None:
    """Write arrays as a deflated .npz with fixed timestamps, so equal models give equal bytes."""
    with zipfile.ZipFile(stream, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for key, value in arrays.items():
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            with archive.open(info, "w", force_zip64=True) as entry:
                np.lib.format.write_array(entry, np.asanyarray(value), allow_pickle=False)


def load_npz(path: str | os.PathLike) -> ModelFile:
    """Read a model file written by :func:`save_npz`.

    Raises
    ------
    ModelFileError
        The file is missing, not an npz archive, not an lrp-toolkit model, of another format
        version, names an unknown layer type or lacks a layer's array.
    """
    path = Path(path)
    if path.is_dir():
        raise ModelFileError(f"model file {path} is a folder, not a model file")
    if not path.is_file():
        raise ModelFileError(f"model file {path} does not exist")
    try:
        archive = np.load(path, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise ModelFileError(f"model file {path} is a single .npy array, not an .npz model")
        with archive:
            arrays = {key: archive[key] for key in archive.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as error:
        raise ModelFileError(f"model file {path} is not a readable .npz archive ({error})") from None
    return _model_from_arrays(arrays, str(path))


def _model_from_arrays(arrays: dict[str, np.ndarray], source: str) -> ModelFile:
    if "format" not in arrays or str(arrays["format"]) != FORMAT:
        raise ModelFileError(f"{source} is an .npz archive but not an lrp-toolkit model (no format {FORMAT!r})")
    version = arrays.get("format_version")
    if version is None or version.shape != () or int(version) != FORMAT_VERSION:
        raise ModelFileError(
            f"{source} has model format version {version}, this lrp-toolkit reads version {FORMAT_VERSION}"
        )
    layer_types = [str(t) for t in np.atleast_1d(arrays.get("layer_types", np.asarray([], dtype=str)))]
    layers = []
    for index, type_name in enumerate(layer_types):
        if type_name not in _READERS:
            raise ModelFileError(
                f"{source}: layer {index} has unknown type {type_name!r}; known: {', '.join(_READERS)}"
            )

        def array(name: str, _index: int = index, _type: str = type_name) -> np.ndarray:
            key = f"layer{_index}.{name}"
            if key not in arrays:
                raise ModelFileError(f"{source}: layer {_index} ({_type}) lacks the array {key!r}")
            return arrays[key]

        try:
            layers.append(_READERS[type_name](array))
        except ModelFileError:
            raise
        except (LRPError, ValueError, TypeError) as error:
            raise ModelFileError(f"{source}: layer {index} ({type_name}) is invalid: {error}") from None
    input_shape = _input_shape(arrays["input_shape"], source) if "input_shape" in arrays else None
    try:
        network = Sequential(layers, input_shape=input_shape)
        domain = None
        if "input_domain.low" in arrays and "input_domain.high" in arrays:
            domain = InputDomain(arrays["input_domain.low"], arrays["input_domain.high"])
            if input_shape is not None:
                domain.check_fits(input_shape)
    except LRPError as error:
        raise ModelFileError(f"{source}: {error}") from None
    extra = {key[len("extra."):]: value for key, value in arrays.items() if key.startswith("extra.")}
    _check_test_data(extra, input_shape, source)
    return ModelFile(network, domain, extra)


def _input_shape(value: np.ndarray, source: str) -> tuple[int, ...]:
    """The stored per-sample input shape: a 1-d array of positive integers."""
    if value.ndim != 1 or value.dtype.kind not in "iu" or np.any(value <= 0):
        raise ModelFileError(f"{source}: input_shape must be a 1-d array of positive integers, "
                             f"got {value.dtype} of shape {value.shape}")
    return tuple(int(d) for d in value)


def _check_test_data(extra: dict[str, np.ndarray], input_shape: tuple[int, ...] | None,
                     source: str) -> None:
    """extra.test_images: a numeric batch of inputs; extra.test_labels: one integer per image."""
    images, labels = extra.get("test_images"), extra.get("test_labels")
    if images is not None:
        if images.dtype.kind not in "biuf" or images.ndim < 2:
            raise ModelFileError(f"{source}: extra.test_images must be a numeric batch of inputs, "
                                 f"got {images.dtype} of shape {images.shape}")
        if input_shape is not None and images.shape[1:] != input_shape:
            raise ModelFileError(f"{source}: extra.test_images have shape {images.shape[1:]} per "
                                 f"image, the network takes inputs of shape {input_shape}")
    if labels is not None:
        if labels.dtype.kind not in "iu" or labels.ndim != 1:
            raise ModelFileError(f"{source}: extra.test_labels must be a 1-d array of integer "
                                 f"labels, got {labels.dtype} of shape {labels.shape}")
        if images is not None and len(labels) != len(images):
            raise ModelFileError(f"{source}: extra.test_labels holds {len(labels)} labels for "
                                 f"{len(images)} test images")


def load_builtin(name: str) -> ModelFile:
    """Load a model shipped with the package: one of :data:`BUILTIN_MODELS`.

    ``"digits-mlp"`` and ``"digits-cnn"`` are ReLU networks trained on scikit-learn's 8x8 digits
    (inputs scaled to [0, 1], input domain l = 0, h = 1) by ``scripts/train_digits.py``; each
    holds 8 held-out test images and labels as ``extra``.
    """
    if name not in BUILTIN_MODELS:
        raise ModelFileError(f"no built-in model {name!r}; available: {', '.join(BUILTIN_MODELS)}")
    resource = resources.files("lrp_num") / "models" / BUILTIN_MODELS[name]
    with resources.as_file(resource) as path:
        return load_npz(path)
