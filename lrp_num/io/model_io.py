"""Model files: a :class:`~lrp_num.engine.network.Sequential` or :class:`~lrp_num.engine.graph.Graph` network
in one NumPy ``.npz`` archive.

Layout (format version 1). Every entry is a plain array, so files are read with
``np.load(path, allow_pickle=False)`` and nothing in them is executed.

A Sequential (``format`` ``"lrp-toolkit/sequential"``):

=========================  =====================  =================================================
key                        dtype, shape           meaning
=========================  =====================  =================================================
``format``                 str, ()                ``"lrp-toolkit/sequential"``
``format_version``         int64, ()              ``1``
``layer_types``            str, (L,)              class names: Dense, Conv2d, SumPool2d, AvgPool2d,
                                                  MaxPool2d, ReLU, Flatten, Identity, BatchNorm
``layer{k}.weight``        float, (n_in, n_out)   Dense: w_ij layout
                           float, (Co, Ci/G, kh, kw)  Conv2d: PyTorch / ONNX layout
``layer{k}.bias``          float, (n_out,)        Dense and Conv2d
``layer{k}.stride``        int64, (2,)            Conv2d and pooling
``layer{k}.padding``       int64, (2,)            Conv2d; pooling (optional, default 0)
``layer{k}.groups``        int64, ()              Conv2d, optional (default 1)
``layer{k}.kernel``        int64, (2,)            SumPool2d, AvgPool2d, MaxPool2d
``layer{k}.ceil_mode``     bool, ()               pooling, optional (default False)
``layer{k}.count_include_pad``  bool, ()          AvgPool2d, optional (default True)
``layer{k}.output_size``   int64, (2,)            AdaptiveAvgPool2d
``layer{k}.p``             float64, ()            Dropout
``layer{k}.gamma``, ...    float, (C,)            BatchNorm: ``gamma``, ``beta``, ``mean``, ``var``
``layer{k}.eps``           float64, ()            BatchNorm
``layer{k}.scale``, ``.shift``  float, (C,)       ChannelAffine (graphs)
``layer{k}.axis``          int64, ()              Concat, Softmax (graphs)
``layer{k}.weight``, ``.bias``  float             TokenDense: as Dense (w_ij layout)
``layer{k}.transpose_b``   bool, ()               MatMul (graphs); ``.scale`` float64, ()
``layer{k}.heads``         int64, ()              SplitHeads (graphs)
``layer{k}.weight``, ``.bias``, ``.eps``          LayerNorm (RMSNorm: weight, eps)
``layer{k}.tanh_approximation``  bool, ()         GELU (absent: the exact form)
``layer{k}.shape``         int64, (d,)            Reshape: the per-sample output shape
``input_shape``            int64, (d,)            optional: per-sample input shape
``input_domain.low``       float, input_shape     optional: lower corner l of the input box
``input_domain.high``      float, input_shape     optional: upper corner h (z^B rule bounds)
``extra.{name}``           any non-object         optional: e.g. ``extra.test_images``,
                                                  ``extra.test_labels``
=========================  =====================  =================================================

k counts from 0 over the layers as given, before BatchNorm folding (loading folds again). Layers
without parameters (ReLU, Flatten, Identity, GlobalAvgPool, Add) have no entries besides their
type; optional entries are written only when they differ from their default. Keys not listed
are ignored.

A Graph (``format`` ``"lrp-toolkit/graph"``) replaces ``layer_types`` by a header and stores each
node's arrays as above under ``node{k}.`` instead of ``layer{k}.`` (k over the nodes as given,
BatchNorm nodes included; loading resolves them again):

=========================  =====================  =================================================
``graph``                  str, ()                JSON: ``{"input": name of the graph input,
                                                  "output": output node, "nodes": [{"name": ...,
                                                  "type": class name, "inputs": [names]}, ...]}``
=========================  =====================  =================================================

``input_shape``, ``input_domain.*`` and ``extra.*`` are as for a Sequential.
"""

from __future__ import annotations

import json
import os
import zipfile
import zlib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Callable, Mapping

import numpy as np

from lrp_num.errors import DomainError, LRPError, ModelFileError, NonFiniteError, ShapeError
from lrp_num.io.files import check_output_path, write_atomic
from lrp_num.layers import (
    AdaptiveAvgPool2d, Add, AvgPool2d, BatchNorm, ChannelAffine, Concat, Conv2d, Dense, Dropout,
    Flatten, GELU, GlobalAvgPool, Identity, Layer, LayerNorm, MatMul, MaxPool2d, MergeHeads, Multiply,
    RMSNorm, ReLU, Reshape, SiLU, Sigmoid, Softmax, SplitHeads, SumPool2d, Tanh, TokenDense,
)
from lrp_num.engine.network import Sequential

if TYPE_CHECKING:  # a graph model, for annotations only (lrp_num.engine.graph imports this module)
    from lrp_num.engine.graph import Graph

FORMAT = "lrp-toolkit/sequential"
GRAPH_FORMAT = "lrp-toolkit/graph"
FORMAT_VERSION = 1

#: name -> file inside the package's ``models`` folder
BUILTIN_MODELS: dict[str, str] = {
    "digits-mlp": "digits_mlp.npz",
    "digits-cnn": "digits_cnn.npz",
    "digits-resnet": "digits_resnet.npz",
    "digits-paths": "digits_paths.npz",
    "digits-vit": "digits_vit.npz",
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

    network: "Sequential | Graph"
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


def _optional(**entries: tuple[object, object, np.ndarray]) -> dict[str, np.ndarray]:
    """The entries whose value differs from its default (value, default, array to store)."""
    return {name: array for name, (value, default, array) in entries.items() if value != default}


def _pool_arrays(layer) -> dict[str, np.ndarray]:
    arrays = {"kernel": _int_pair(layer.kernel), "stride": _int_pair(layer.stride)}
    arrays.update(_optional(padding=(layer.padding, (0, 0), _int_pair(layer.padding)),
                            ceil_mode=(layer.ceil_mode, False, np.bool_(layer.ceil_mode))))
    if isinstance(layer, AvgPool2d):
        arrays.update(_optional(count_include_pad=(layer.count_include_pad, True,
                                                   np.bool_(layer.count_include_pad))))
    return arrays


# layer type -> (arrays to store, rebuild from arrays)
_WRITERS: dict[type, Callable[[Layer], dict[str, np.ndarray]]] = {
    Dense: lambda l: {"weight": l.weight, "bias": l.bias},
    Conv2d: lambda l: {"weight": l.weight, "bias": l.bias, "stride": _int_pair(l.stride),
                       "padding": _int_pair(l.padding),
                       **_optional(groups=(l.groups, 1, np.int64(l.groups)))},
    SumPool2d: _pool_arrays, AvgPool2d: _pool_arrays, MaxPool2d: _pool_arrays,
    AdaptiveAvgPool2d: lambda l: {"output_size": _int_pair(l.output_size)},
    BatchNorm: lambda l: {"gamma": l.gamma, "beta": l.beta, "mean": l.mean, "var": l.var,
                          "eps": np.float64(l.eps)},
    ChannelAffine: lambda l: {"scale": l.scale, "shift": l.shift},
    Dropout: lambda l: {"p": np.float64(l.p)},
    Concat: lambda l: {"axis": np.int64(l.axis)},
    ReLU: lambda l: {}, Flatten: lambda l: {}, Identity: lambda l: {}, GlobalAvgPool: lambda l: {},
    Add: lambda l: {}, Reshape: lambda l: {"shape": np.asarray(l.shape, dtype=np.int64)},
    TokenDense: lambda l: {"weight": l.weight, "bias": l.bias},
    Softmax: lambda l: {"axis": np.int64(l.axis)},
    MatMul: lambda l: {"transpose_b": np.bool_(l.transpose_b), "scale": np.float64(l.scale)},
    SplitHeads: lambda l: {"heads": np.int64(l.heads)},
    Multiply: lambda l: {}, MergeHeads: lambda l: {},
    GELU: lambda l: {"tanh_approximation": np.bool_(l.approximate == "tanh")},
    SiLU: lambda l: {}, Tanh: lambda l: {}, Sigmoid: lambda l: {},
    LayerNorm: lambda l: {"weight": l.weight, "bias": l.bias, "eps": np.float64(l.eps)},
    RMSNorm: lambda l: {"weight": l.weight, "eps": np.float64(l.eps)},
}


def _scalar(value: np.ndarray, kind: str, what: str):
    """A 0-d array of the given kind ("b", "i" or "f") as a Python value."""
    value = np.asarray(value)
    kinds = {"b": "b", "i": "iu", "f": "iuf"}[kind]
    if value.shape != () or value.dtype.kind not in kinds:
        raise ShapeError(f"{what} must be a single {dict(b='bool', i='int', f='number')[kind]}, "
                         f"got {value.dtype} of shape {value.shape}")
    return {"b": bool, "i": int, "f": float}[kind](value)


def _read_pool(cls):
    def read(a):
        options = {"padding": tuple(a("padding", np.zeros(2, np.int64))),
                   "ceil_mode": _scalar(a("ceil_mode", np.bool_(False)), "b", "ceil_mode")}
        if cls is AvgPool2d:
            options["count_include_pad"] = _scalar(a("count_include_pad", np.bool_(True)), "b",
                                                   "count_include_pad")
        return cls(tuple(a("kernel")), tuple(a("stride")), **options)
    return read


_READERS: dict[str, Callable[..., Layer]] = {
    "Dense": lambda a: Dense(a("weight"), a("bias")),
    "Conv2d": lambda a: Conv2d(a("weight"), a("bias"), tuple(a("stride")), tuple(a("padding")),
                               _scalar(a("groups", np.int64(1)), "i", "groups")),
    "SumPool2d": _read_pool(SumPool2d),
    "AvgPool2d": _read_pool(AvgPool2d),
    "MaxPool2d": _read_pool(MaxPool2d),
    "AdaptiveAvgPool2d": lambda a: AdaptiveAvgPool2d(tuple(a("output_size"))),
    "BatchNorm": lambda a: BatchNorm(a("gamma"), a("beta"), a("mean"), a("var"), float(a("eps"))),
    "ChannelAffine": lambda a: ChannelAffine(a("scale"), a("shift")),
    "Dropout": lambda a: Dropout(_scalar(a("p"), "f", "p")),
    "Concat": lambda a: Concat(_scalar(a("axis"), "i", "axis")),
    "ReLU": lambda a: ReLU(), "Flatten": lambda a: Flatten(), "Identity": lambda a: Identity(),
    "GlobalAvgPool": lambda a: GlobalAvgPool(), "Add": lambda a: Add(),
    "TokenDense": lambda a: TokenDense(a("weight"), a("bias")),
    "Softmax": lambda a: Softmax(_scalar(a("axis"), "i", "axis")),
    "MatMul": lambda a: MatMul(_scalar(a("transpose_b"), "b", "transpose_b"), _scalar(a("scale"), "f", "scale")),
    "SplitHeads": lambda a: SplitHeads(_scalar(a("heads"), "i", "heads")),
    "Multiply": lambda a: Multiply(), "MergeHeads": lambda a: MergeHeads(),
    "Reshape": lambda a: Reshape(tuple(np.atleast_1d(a("shape")).tolist())),
    "GELU": lambda a: GELU("tanh" if _scalar(a("tanh_approximation", np.bool_(False)), "b",
                                             "tanh_approximation") else "none"),
    "SiLU": lambda a: SiLU(), "Tanh": lambda a: Tanh(), "Sigmoid": lambda a: Sigmoid(),
    "LayerNorm": lambda a: LayerNorm(a("weight"), a("bias"), _scalar(a("eps"), "f", "eps")),
    "RMSNorm": lambda a: RMSNorm(a("weight"), _scalar(a("eps"), "f", "eps")),
}


def save_npz(
    network: "Sequential | Graph",
    path: str | os.PathLike,
    *,
    input_domain: InputDomain | tuple[np.ndarray, np.ndarray] | None = None,
    extra: Mapping[str, np.ndarray] | None = None,
) -> None:
    """Write ``network`` (layers or nodes as given, before folding) to a compressed ``.npz`` file.

    The file is written to a temporary file in the same folder and renamed into place, so
    ``path`` never holds a half-written model. A path that cannot be written (a missing folder,
    a folder, no permission) raises :class:`~lrp_num.errors.OutputPathError`.

    Parameters
    ----------
    network : Sequential or Graph
    path : path-like
        Target file, written exactly as named (no suffix added).
    input_domain : InputDomain or (low, high), optional
        The box l <= x <= h the inputs live in.
    extra : mapping of str to array, optional
        Further arrays (e.g. ``test_images``, ``test_labels``), stored as ``extra.{name}``.
    """
    from lrp_num.engine.graph import Graph

    if isinstance(network, Graph):
        arrays = _graph_arrays(network)
    else:
        arrays = {
            "format": np.asarray(FORMAT),
            "format_version": np.int64(FORMAT_VERSION),
            "layer_types": np.asarray([type(layer).__name__ for layer in network.source_layers]),
        }
        for index, layer in enumerate(network.source_layers):
            arrays.update(_layer_arrays(layer, f"layer{index}"))
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


def _layer_arrays(layer: object, prefix: str) -> dict[str, np.ndarray]:
    return {f"{prefix}.{name}": np.asarray(value) for name, value in _WRITERS[type(layer)](layer).items()}


def _graph_arrays(graph) -> dict[str, np.ndarray]:
    """The header and per-node arrays of a graph (nodes as given)."""
    header = {"input": graph.input_name, "output": graph.source_output,
              "nodes": [{"name": node.name, "type": type(node.operation).__name__,
                         "inputs": list(node.inputs)} for node in graph.source_nodes]}
    arrays = {"format": np.asarray(GRAPH_FORMAT), "format_version": np.int64(FORMAT_VERSION),
              "graph": np.asarray(json.dumps(header, sort_keys=True))}
    for index, node in enumerate(graph.source_nodes):
        arrays.update(_layer_arrays(node.operation, f"node{index}"))
    return arrays


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


def _read_layer(arrays: dict[str, np.ndarray], type_name: object, prefix: str, what: str,
                source: str) -> Layer:
    """Rebuild one layer of type ``type_name`` from the arrays ``{prefix}.*``."""
    if type_name not in _READERS:
        raise ModelFileError(f"{source}: {what} has unknown type {type_name!r}; known: {', '.join(_READERS)}")
    missing = object()

    def array(name: str, default: object = missing) -> np.ndarray:
        key = f"{prefix}.{name}"
        if key not in arrays:
            if default is not missing:
                return default
            raise ModelFileError(f"{source}: {what} ({type_name}) lacks the array {key!r}")
        return arrays[key]

    try:
        return _READERS[type_name](array)
    except ModelFileError:
        raise
    except (LRPError, ValueError, TypeError) as error:
        raise ModelFileError(f"{source}: {what} ({type_name}) is invalid: {error}") from None


def _graph_header(arrays: dict[str, np.ndarray], source: str) -> dict:
    """The parsed ``graph`` entry: input, output and a list of {name, type, inputs}."""
    value = arrays.get("graph")
    try:
        if value is None or value.shape != () or value.dtype.kind != "U":
            raise ValueError("it must be one string")
        header = json.loads(str(value))
        nodes = header["nodes"]
        valid = isinstance(header, dict) and isinstance(header.get("input"), str) \
            and isinstance(header.get("output"), str) and isinstance(nodes, list) and all(
                isinstance(n, dict) and isinstance(n.get("name"), str) and isinstance(n.get("type"), str)
                and isinstance(n.get("inputs"), list) and all(isinstance(i, str) for i in n["inputs"])
                for n in nodes)
        if not valid:
            raise ValueError("it needs input, output and nodes of {name, type, inputs}")
    except (ValueError, KeyError, TypeError) as error:
        raise ModelFileError(f"{source}: the graph header is not valid ({error})") from None
    return header


def _network_from_arrays(arrays: dict[str, np.ndarray], form: str, input_shape, source: str):
    if form == GRAPH_FORMAT:
        from lrp_num.engine.graph import Graph, Node

        header = _graph_header(arrays, source)
        nodes = [Node(entry["name"], _read_layer(arrays, entry["type"], f"node{index}",
                                                 f"node {index} {entry['name']!r}", source),
                      tuple(entry["inputs"]))
                 for index, entry in enumerate(header["nodes"])]
        return Graph(nodes, input_shape=input_shape, output=header["output"], input_name=header["input"])
    layer_types = [str(t) for t in np.atleast_1d(arrays.get("layer_types", np.asarray([], dtype=str)))]
    layers = [_read_layer(arrays, type_name, f"layer{index}", f"layer {index}", source)
              for index, type_name in enumerate(layer_types)]
    return Sequential(layers, input_shape=input_shape)


def _model_from_arrays(arrays: dict[str, np.ndarray], source: str) -> ModelFile:
    form = str(arrays["format"]) if "format" in arrays and arrays["format"].dtype.kind == "U" else None
    if form not in (FORMAT, GRAPH_FORMAT):
        raise ModelFileError(f"{source} is an .npz archive but not an lrp-toolkit model (no format {FORMAT!r} "
                             f"or {GRAPH_FORMAT!r})")
    version = arrays.get("format_version")
    if version is None or version.shape != () or int(version) != FORMAT_VERSION:
        raise ModelFileError(
            f"{source} has model format version {version}, this lrp-toolkit reads version {FORMAT_VERSION}"
        )
    input_shape = _input_shape(arrays["input_shape"], source) if "input_shape" in arrays else None
    try:
        network = _network_from_arrays(arrays, form, input_shape, source)
        domain = None
        if "input_domain.low" in arrays and "input_domain.high" in arrays:
            domain = InputDomain(arrays["input_domain.low"], arrays["input_domain.high"])
            if input_shape is not None:
                domain.check_fits(input_shape)
    except ModelFileError:
        raise
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

    ``"digits-mlp"``, ``"digits-cnn"``, ``"digits-paths"`` (Sequential; the last reaches a padded
    stride-2 and a narrowing convolution) and ``"digits-resnet"`` (a Graph with two residual
    blocks) are ReLU networks trained on scikit-learn's 8x8 digits (inputs scaled to
    [0, 1], input domain l = 0, h = 1) by ``scripts/train_digits.py``; each holds 8 held-out test
    images and labels as ``extra``.
    """
    if name not in BUILTIN_MODELS:
        raise ModelFileError(f"no built-in model {name!r}; available: {', '.join(BUILTIN_MODELS)}")
    resource = resources.files("lrp_num") / "models" / BUILTIN_MODELS[name]
    with resources.as_file(resource) as path:
        return load_npz(path)
