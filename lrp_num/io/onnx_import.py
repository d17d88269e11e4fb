"""Import an ONNX model as a :class:`~lrp_num.engine.network.Sequential` chain or a
:class:`~lrp_num.engine.graph.Graph`.

Supported operators (opsets 9 to 21), each node translated into a graph node named after the
ONNX node:

* Gemm (transA = 0, transB 0 or 1, alpha = beta = 1), MatMul with a constant, and an Add of a
  constant right after Gemm / MatMul (the bias) -> :class:`~lrp_num.layers.Dense`;
* Conv (2-d, any group, dilation 1, symmetric pads) -> :class:`~lrp_num.layers.Conv2d`;
* MaxPool, AveragePool (symmetric pads, ceil_mode, count_include_pad) -> MaxPool2d, AvgPool2d;
  GlobalAveragePool -> GlobalAvgPool;
* Pad with zeros on height and width only, symmetric, feeding Conv or AveragePool: folded into
  their padding (MaxPool pads with -inf, so a zero Pad before it is refused);
* Add and Sum of two or more model tensors -> Add; Concat of model tensors (not on the batch
  axis) -> Concat;
* attention (:mod:`lrp_num.io.onnx_attention`): MatMul of tokens by a constant (TokenDense) or of
  two model tensors, Softmax over the last axis, Mul, Mul/Div of scores by a scalar, Transpose
  and Reshape of the head split and merge;
* Relu, Identity, Dropout (inference), Flatten (axis 1), Reshape that flattens each sample
  ((0, -1), (N, -1), (-1, k) with k the sample size) or keeps its shape;
* BatchNormalization (inference) -> :class:`~lrp_num.layers.BatchNorm`, folded into the layer
  before it where possible;
* Gelu (opset 20, both forms), and the exact GELU as older exporters write it,
  Div(x, sqrt 2) (or Mul by 1/sqrt 2) -> Erf -> Add 1 -> Mul by x -> Mul by 0.5 (the two Mul in
  either order) -> :class:`~lrp_num.layers.GELU`; Sigmoid, Tanh -> Sigmoid, Tanh;
  LayerNormalization over the last axis -> :class:`~lrp_num.layers.LayerNorm`;
* Constant, and chains of Shape, Gather, Unsqueeze, Squeeze, Concat, Cast, Identity on
  constants and on the input's shape (as ``torch.onnx.export`` writes ``x.view(x.size(0), -1)``):
  evaluated at import, the batch size kept symbolic, and folded away.

A model that is a chain (every node reads the one before, every BatchNorm follows a Dense or
Conv2d layer) is returned as a Sequential, which every command takes; any other model as a
Graph. Weights come from the graph's initializers or Constant nodes. Anything else raises a
one-line :class:`~lrp_num.errors.UnsupportedLayerError` naming the node and its operator.
Needs the optional ``onnx`` package; nothing is unpickled.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from lrp_num.errors import LRPError, MissingDependencyError, ModelFileError, UnsupportedLayerError
from lrp_num.engine.graph import Graph
from lrp_num.io.graph_builder import GraphBuilder, Tensor
from lrp_num.layers import (GELU, Add, AvgPool2d, BatchNorm, Concat, Conv2d, Dense, Dropout,
                            Flatten, GlobalAvgPool, Identity, LayerNorm, MaxPool2d, ReLU, Sigmoid,
                            Tanh)
from lrp_num.engine.network import Sequential

SUPPORTED_OPS = (
    "Gemm", "MatMul", "Add", "Sum", "Conv", "Relu", "MaxPool", "AveragePool", "GlobalAveragePool",
    "Pad", "Concat", "Flatten", "Reshape", "BatchNormalization", "Identity", "Dropout", "Constant",
    "Shape", "Gather", "Unsqueeze", "Squeeze", "Cast", "Gelu", "Sigmoid", "Tanh",
    "LayerNormalization", "Div", "Mul", "Erf",
)
#: the stages of the exact GELU x (1 + erf(x / sqrt 2)) / 2 written as elementary ONNX ops
_GELU_STAGES = ("x / sqrt 2", "erf(x / sqrt 2)", "1 + erf(x / sqrt 2)", "x (1 + erf(x / sqrt 2))",
                "x / 2")


@dataclass
class _GeluPart:
    """A partial result of the exact GELU pattern: ``stage`` (an index into _GELU_STAGES) of the
    model tensor ``data``; only the next op of the pattern may read it."""

    data: Tensor
    stage: int
    node: Any


class _Batch:
    """The batch size, unknown at import: the first entry of the Shape of a model tensor."""

    def __repr__(self) -> str:
        return "N"


BATCH = _Batch()


@dataclass(frozen=True)
class _Padded:
    """A zero Pad of ``source`` by ``padding`` (rows, columns on each side), to be folded into
    the Conv or AveragePool that reads it."""

    source: Tensor
    padding: tuple[int, int]
    node: Any


def load_onnx(path: str | os.PathLike) -> Sequential | Graph:
    """Read an ONNX file of supported operators.

    Parameters
    ----------
    path : path-like
        The ``.onnx`` file.

    Returns
    -------
    Sequential or Graph
        A Sequential when the model is a chain, else a Graph with nodes named after the ONNX
        nodes; ``input_shape`` is set when the graph input has a fixed per-sample shape.

    Raises
    ------
    MissingDependencyError
        The ``onnx`` package is not installed.
    ModelFileError
        The file is missing or not a valid ONNX model.
    UnsupportedLayerError
        An operator or attribute outside the supported set, naming the node.
    GraphError
        Shapes that do not fit (e.g. addends of different shapes), naming the node.
    """
    try:
        import onnx
        import onnx.numpy_helper  # noqa: F401 (used as onnx.numpy_helper)
    except ImportError:
        raise MissingDependencyError(
            "ONNX import needs the onnx package: pip install 'lrp-toolkit[onnx]'"
        ) from None
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"ONNX file {path} does not exist")
    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
    except Exception as error:  # onnx raises protobuf DecodeError, ValidationError, ...
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ModelFileError(f"{path} is not a valid ONNX model: {message}") from None
    reader = _GraphReader(model.graph, onnx)
    reader.opset = next((entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx")), 13)
    return reader.network()


class _GraphReader:
    """Walk an ONNX graph node by node (ONNX stores them in topological order)."""

    def __init__(self, graph: Any, onnx: Any) -> None:
        self.graph = graph
        self.onnx = onnx
        self.values: dict[str, Any] = {  # tensor name -> Tensor, _Padded or a constant array
            init.name: onnx.numpy_helper.to_array(init) for init in graph.initializer}
        self.readers: dict[str, list[Any]] = {}
        for node in graph.node:
            for name in node.input:
                self.readers.setdefault(name, []).append(node)
        for output in graph.output:
            self.readers.setdefault(output.name, []).append(None)
        self.builder: GraphBuilder | None = None
        self.handlers: dict[str, Callable] = {op: getattr(self, f"_op_{op}") for op in SUPPORTED_OPS}
        self.opset = 13
        from lrp_num.io import onnx_attention  # MatMul of two tensors, Softmax, Mul, Div, Transpose

        onnx_attention.register(self)

    def network(self) -> Sequential | Graph:
        inputs = [i for i in self.graph.input if i.name not in self.values]
        if len(inputs) != 1:
            raise UnsupportedLayerError(f"ONNX graph has {len(inputs)} non-constant inputs; only one is supported")
        self.builder = GraphBuilder(_per_sample_shape(inputs[0]))
        self.values[inputs[0].name] = self.builder.input
        for node in self.graph.node:
            handler = self.handlers.get(node.op_type)
            if handler is None or node.domain not in ("", "ai.onnx"):
                raise UnsupportedLayerError(
                    f"ONNX node {_name(node)!r} has unsupported op type {node.op_type}; "
                    f"supported: {', '.join(sorted(self.handlers))}")
            handler(node, self._attributes(node))
        outputs = [o.name for o in self.graph.output]
        if len(outputs) != 1:
            raise UnsupportedLayerError(f"ONNX graph has {len(outputs)} outputs {outputs}; only one is supported")
        output = self.values.get(outputs[0])
        if isinstance(output, _Padded):
            self._unsupported(output.node, "a Pad whose result is the model output")
        if isinstance(output, _GeluPart):
            self._unsupported(output.node, f"a partial GELU ({_GELU_STAGES[output.stage]}) as "
                                           f"the model output")
        if not isinstance(output, Tensor):
            raise UnsupportedLayerError(f"ONNX graph output {outputs[0]!r} is a constant, not computed from the input")
        if not self.builder.nodes:
            raise UnsupportedLayerError("ONNX graph has no layers")
        return self.builder.chain(output) or self.builder.graph(output, "the ONNX model")

    # ---- helpers ----

    def _attributes(self, node: Any) -> dict[str, Any]:
        return {a.name: self.onnx.helper.get_attribute_value(a) for a in node.attribute}

    @staticmethod
    def _unsupported(node: Any, why: str) -> None:
        raise UnsupportedLayerError(f"ONNX node {_name(node)!r} ({node.op_type}): {why} is not supported")

    def _input(self, node: Any, index: int) -> Any:
        """The value of input ``index`` (None when absent)."""
        if index >= len(node.input) or not node.input[index]:
            return None
        value = self.values[node.input[index]]
        if isinstance(value, _GeluPart) and node.op_type not in ("Erf", "Add", "Mul"):
            self._unsupported(value.node, f"{_GELU_STAGES[value.stage]} read by "
                                          f"{node.op_type} {_name(node)!r} (only the exact GELU "
                                          f"pattern x (1 + erf(x / sqrt 2)) / 2 is imported)")
        if isinstance(value, _Padded) and node.op_type not in ("Conv", "AveragePool"):
            what = "a MaxPool (it pads with -inf)" if node.op_type == "MaxPool" else f"{node.op_type} {_name(node)!r}"
            self._unsupported(value.node, f"a zero Pad feeding {what}; only a Pad feeding Conv or AveragePool")
        return value

    def _data(self, node: Any, index: int = 0) -> Tensor | _Padded:
        value = self._input(node, index)
        if not isinstance(value, (Tensor, _Padded)):
            self._unsupported(node, f"a constant as input {index}")
        return value

    def _constant(self, node: Any, index: int, what: str) -> np.ndarray | None:
        value = self._input(node, index)
        if isinstance(value, (Tensor, _Padded)):
            self._unsupported(node, f"{what} computed from the model input (it must be a constant)")
        return value

    def _single_output(self, node: Any) -> None:
        if any(name and self.readers.get(name) for name in node.output[1:]):
            self._unsupported(node, f"{node.op_type} with its second output used")

    def _add(self, node: Any, operation: Any, inputs: list[Tensor]) -> None:
        self._single_output(node)
        self.values[node.output[0]] = self.builder.add(_name(node), operation, inputs,
                                                       f"ONNX node {_name(node)!r} ({node.op_type})")

    def _layer(self, node: Any, build: Callable[[], Any]) -> Any:
        try:
            return build()
        except LRPError as error:
            raise UnsupportedLayerError(f"ONNX node {_name(node)!r} ({node.op_type}): {error}") from None

    def _symmetric_pads(self, node: Any, attrs: dict) -> tuple[int, int]:
        auto_pad = attrs.get("auto_pad", b"NOTSET")
        auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
        if auto_pad not in ("NOTSET", "VALID"):
            self._unsupported(node, f"auto_pad={auto_pad}")
        pads = list(attrs.get("pads", [0, 0, 0, 0]))
        if len(pads) != 4:
            self._unsupported(node, f"{len(pads) // 2}-d pads {pads}")
        top, left, bottom, right = pads
        if (top, left) != (bottom, right):
            self._unsupported(node, f"asymmetric pads {pads}")
        return top, left

    def _all_constant(self, node: Any) -> bool:
        return all(not name or not isinstance(self.values[name], (Tensor, _Padded)) for name in node.input)

    # ---- constants and shape arithmetic, evaluated at import ----

    def _op_Constant(self, node: Any, attrs: dict) -> None:
        if "value" not in attrs:
            self._unsupported(node, f"a Constant given by {', '.join(attrs) or 'nothing'} (only 'value')")
        self.values[node.output[0]] = self.onnx.numpy_helper.to_array(attrs["value"])

    def _op_Shape(self, node: Any, attrs: dict) -> None:
        value = self._input(node, 0)
        if isinstance(value, _Padded):
            self._unsupported(node, "the Shape of a padded tensor")
        if isinstance(value, Tensor):
            if value.shape is None:
                self._unsupported(node, "Shape of a tensor in a graph without a fixed input shape")
            shape = np.array([BATCH, *value.shape], dtype=object)
        else:
            shape = np.array(value.shape, dtype=np.int64)
        start, end = attrs.get("start", 0), attrs.get("end", None)
        self.values[node.output[0]] = shape[start:end]

    def _folded(self, node: Any, compute: Callable[[list], np.ndarray]) -> None:
        if not self._all_constant(node):
            self._unsupported(node, f"{node.op_type} of a model tensor")
        arrays = [None if not name else self.values[name] for name in node.input]
        try:
            self.values[node.output[0]] = np.asarray(compute(arrays))
        except (IndexError, ValueError, TypeError) as error:
            self._unsupported(node, f"{node.op_type} of constants that cannot be evaluated ({error})")

    def _op_Gather(self, node: Any, attrs: dict) -> None:
        self._folded(node, lambda a: np.take(a[0], a[1], axis=attrs.get("axis", 0)))

    def _axes(self, attrs: dict, arrays: list) -> list[int] | None:
        axes = attrs.get("axes")
        if axes is None and len(arrays) > 1 and arrays[1] is not None:
            axes = arrays[1].tolist()
        return None if axes is None else list(axes)

    def _op_Unsqueeze(self, node: Any, attrs: dict) -> None:
        def unsqueeze(arrays: list) -> np.ndarray:
            result, axes = arrays[0], self._axes(attrs, arrays)
            rank = result.ndim + len(axes)
            for axis in sorted(a % rank for a in axes):
                result = np.expand_dims(result, axis)
            return result
        self._folded(node, unsqueeze)

    def _op_Squeeze(self, node: Any, attrs: dict) -> None:
        def squeeze(arrays: list) -> np.ndarray:
            axes = self._axes(attrs, arrays)
            return np.squeeze(arrays[0], axis=None if axes is None else tuple(axes))
        self._folded(node, squeeze)

    def _op_Cast(self, node: Any, attrs: dict) -> None:
        def cast(arrays: list) -> np.ndarray:
            if arrays[0].dtype == object:  # a shape with the symbolic batch size stays as it is
                return arrays[0]
            return arrays[0].astype(self.onnx.helper.tensor_dtype_to_np_dtype(attrs["to"]))
        self._folded(node, cast)

    # ---- layers ----

    def _op_Gemm(self, node: Any, attrs: dict) -> None:
        if attrs.get("transA", 0) != 0 or attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0:
            self._unsupported(node, f"Gemm with transA={attrs.get('transA', 0)}, alpha={attrs.get('alpha', 1.0)}, "
                                    f"beta={attrs.get('beta', 1.0)} (need 0, 1, 1)")
        data = self._data(node, 0)
        weight = self._constant(node, 1, "a Gemm weight")
        weight = weight.T if attrs.get("transB", 0) else weight
        bias = self._constant(node, 2, "a Gemm bias")
        bias = None if bias is None else self._layer(node, lambda: np.broadcast_to(bias, (weight.shape[1],)))
        self._add(node, self._layer(node, lambda: Dense(weight, bias)), [data])

    def _op_MatMul(self, node: Any, attrs: dict) -> None:
        data = self._input(node, 0)
        weight = self._input(node, 1)
        if not isinstance(data, Tensor) or isinstance(weight, (Tensor, _Padded)):
            self._unsupported(node, "MatMul other than data @ constant")
        self._add(node, self._layer(node, lambda: Dense(weight)), [data])

    def _op_Add(self, node: Any, attrs: dict) -> None:
        values = [self._input(node, k) for k in range(len(node.input))]
        parts = [v for v in values if isinstance(v, _GeluPart)]
        if parts:  # 1 + erf(x / sqrt 2) of an exact GELU
            others = [v for v in values if not isinstance(v, _GeluPart)]
            if len(parts) != 1 or parts[0].stage != 1 or len(others) != 1 \
                    or isinstance(others[0], Tensor) or not _is_scalar(others[0], 1.0):
                self._unsupported(node, "Add other than 1 + erf(x / sqrt 2) of an exact GELU")
            self._gelu_part(node, parts[0].data, 2)
            return
        if all(isinstance(v, Tensor) for v in values):
            self._add(node, Add(), values)
            return
        if all(not isinstance(v, Tensor) for v in values):
            self._folded(node, lambda a: a[0] + a[1])
            return
        # by position, not values.index(data): that compares with ==, elementwise against an
        # array constant (torch's exporter writes Add(bias, x @ W) with the constant first)
        position = next(k for k, v in enumerate(values) if isinstance(v, Tensor))
        data, constant = values[position], values[1 - position]
        producer = self.builder.producer(data)
        previous = None if producer is None else producer.operation
        if not isinstance(previous, Dense) or len(self.readers.get(node.input[position], [])) != 1:
            self._unsupported(node, "Add other than a constant bias right after Gemm or MatMul")
        try:
            bias = np.broadcast_to(constant, (1, previous.n_out)).reshape(previous.n_out)
        except ValueError:
            self._unsupported(node, f"Add of shape {constant.shape} after {previous!r}")
        self.builder.replace(data, type(previous)(previous.weight, previous.bias + bias))  # Dense or TokenDense
        self.values[node.output[0]] = data

    def _op_Gelu(self, node: Any, attrs: dict) -> None:
        approximate = attrs.get("approximate", b"none")
        approximate = approximate.decode() if isinstance(approximate, bytes) else approximate
        self._add(node, self._layer(node, lambda: GELU(approximate)), [self._data(node, 0)])

    def _op_Sigmoid(self, node: Any, attrs: dict) -> None:
        self._add(node, Sigmoid(), [self._data(node, 0)])

    def _op_Tanh(self, node: Any, attrs: dict) -> None:
        self._add(node, Tanh(), [self._data(node, 0)])

    def _op_LayerNormalization(self, node: Any, attrs: dict) -> None:
        data = self._data(node, 0)
        axis = attrs.get("axis", -1)
        rank = None if data.shape is None else len(data.shape) + 1
        if axis != -1 and axis != (rank or 0) - 1:
            self._unsupported(node, f"LayerNormalization over axis {axis} (only the last axis)")
        scale = self._constant(node, 1, "a LayerNormalization scale")
        bias = self._constant(node, 2, "a LayerNormalization bias")
        if scale is None or np.ndim(scale) != 1:
            self._unsupported(node, "LayerNormalization without a 1-d scale")
        self._add(node, self._layer(node, lambda: LayerNorm(scale, bias,
                                                            attrs.get("epsilon", 1e-5))), [data])

    # ---- the exact GELU written as Div/Mul -> Erf -> Add -> Mul -> Mul ----

    def _gelu_part(self, node: Any, data: Tensor, stage: int) -> None:
        self._single_output(node)
        self.values[node.output[0]] = _GeluPart(data, stage, node)

    def _op_Div(self, node: Any, attrs: dict) -> None:
        values = [self._input(node, k) for k in range(2)]
        if all(not isinstance(v, (Tensor, _GeluPart)) for v in values):
            self._folded(node, lambda a: a[0] / a[1])
            return
        if isinstance(values[0], Tensor) and _is_scalar(values[1], math.sqrt(2)):
            self._gelu_part(node, values[0], 0)
            return
        self._unsupported(node, "Div other than x / sqrt 2 starting an exact GELU")

    def _op_Erf(self, node: Any, attrs: dict) -> None:
        value = self._input(node, 0)
        if not isinstance(value, _GeluPart) or value.stage != 0:
            self._unsupported(node, "Erf other than erf(x / sqrt 2) of an exact GELU")
        self._gelu_part(node, value.data, 1)

    def _op_Mul(self, node: Any, attrs: dict) -> None:
        values = [self._input(node, k) for k in range(2)]
        if all(not isinstance(v, (Tensor, _GeluPart)) for v in values):
            self._folded(node, lambda a: a[0] * a[1])
            return
        tensors = [v for v in values if isinstance(v, Tensor)]
        parts = [v for v in values if isinstance(v, _GeluPart)]
        constants = [v for v in values if not isinstance(v, (Tensor, _GeluPart))]
        if len(tensors) == 1 and len(constants) == 1 and _is_scalar(constants[0], 1 / math.sqrt(2)):
            self._gelu_part(node, tensors[0], 0)  # x * (1 / sqrt 2)
        elif len(tensors) == 1 and len(constants) == 1 and _is_scalar(constants[0], 0.5):
            self._gelu_part(node, tensors[0], 4)  # x / 2, to be multiplied by 1 + erf
        elif len(tensors) == 1 and len(parts) == 1 and parts[0].stage == 2 \
                and parts[0].data == tensors[0]:
            self._gelu_part(node, tensors[0], 3)  # x (1 + erf), to be halved
        elif len(parts) == 1 and len(constants) == 1 and parts[0].stage == 3 \
                and _is_scalar(constants[0], 0.5):
            self._add(node, GELU(), [parts[0].data])
        elif len(parts) == 2 and {p.stage for p in parts} == {2, 4} \
                and parts[0].data == parts[1].data:
            self._add(node, GELU(), [parts[0].data])
        else:
            self._unsupported(node, "Mul other than a step of the exact GELU pattern")

    def _op_Sum(self, node: Any, attrs: dict) -> None:
        values = [self._input(node, k) for k in range(len(node.input))]
        if not all(isinstance(v, Tensor) for v in values) or len(values) < 2:
            self._unsupported(node, "Sum other than of two or more model tensors")
        self._add(node, Add(), values)

    def _op_Concat(self, node: Any, attrs: dict) -> None:
        if self._all_constant(node):
            self._folded(node, lambda a: np.concatenate(a, axis=attrs["axis"]))
            return
        values = [self._input(node, k) for k in range(len(node.input))]
        if not all(isinstance(v, Tensor) for v in values):
            self._unsupported(node, "Concat of model tensors and constants")
        if attrs["axis"] == 0:
            self._unsupported(node, "Concat along the batch axis 0")
        self._add(node, self._layer(node, lambda: Concat(attrs["axis"])), values)

    def _op_Conv(self, node: Any, attrs: dict) -> None:
        data = self._data(node, 0)
        weight = self._constant(node, 1, "a Conv weight")
        if weight is None or weight.ndim != 4:
            self._unsupported(node, "Conv without a constant 4-d weight")
        if any(d != 1 for d in attrs.get("dilations", [1, 1])):
            self._unsupported(node, f"Conv with dilations={attrs['dilations']}")
        padding = self._symmetric_pads(node, attrs)
        if isinstance(data, _Padded):
            data, padding = data.source, (padding[0] + data.padding[0], padding[1] + data.padding[1])
        bias = self._constant(node, 2, "a Conv bias")
        layer = self._layer(node, lambda: Conv2d(weight, bias, tuple(attrs.get("strides", [1, 1])), padding,
                                                 attrs.get("group", 1)))
        self._add(node, layer, [data])

    def _pool_geometry(self, node: Any, attrs: dict) -> tuple:
        kernel = tuple(attrs["kernel_shape"])
        if len(kernel) != 2:
            self._unsupported(node, f"{len(kernel)}-d pooling")
        if any(d != 1 for d in attrs.get("dilations", [1, 1])):
            self._unsupported(node, f"pooling with dilations={attrs['dilations']}")
        # ONNX's default stride is 1 (PyTorch's the kernel)
        return kernel, tuple(attrs.get("strides", [1, 1])), self._symmetric_pads(node, attrs)

    def _op_MaxPool(self, node: Any, attrs: dict) -> None:
        data = self._data(node, 0)
        kernel, stride, padding = self._pool_geometry(node, attrs)
        layer = self._layer(node, lambda: MaxPool2d(kernel, stride, padding, bool(attrs.get("ceil_mode", 0))))
        self._add(node, layer, [data])

    def _op_AveragePool(self, node: Any, attrs: dict) -> None:
        data = self._data(node, 0)
        kernel, stride, padding = self._pool_geometry(node, attrs)
        count_include_pad = bool(attrs.get("count_include_pad", 0))  # ONNX's default: 0
        if isinstance(data, _Padded):  # the Pad's zeros are inputs, counted in every window
            if padding != (0, 0) and not count_include_pad:
                self._unsupported(data.node, "a zero Pad before an AveragePool with its own pads and "
                                             "count_include_pad=0")
            data, padding = data.source, (padding[0] + data.padding[0], padding[1] + data.padding[1])
            count_include_pad = True
        layer = self._layer(node, lambda: AvgPool2d(kernel, stride, padding, bool(attrs.get("ceil_mode", 0)),
                                                    count_include_pad))
        self._add(node, layer, [data])

    def _op_GlobalAveragePool(self, node: Any, attrs: dict) -> None:
        self._add(node, GlobalAvgPool(), [self._data(node, 0)])

    def _op_Pad(self, node: Any, attrs: dict) -> None:
        data = self._data(node, 0)
        if isinstance(data, _Padded):
            self._unsupported(node, "a Pad of a padded tensor")
        mode = attrs.get("mode", b"constant")
        mode = mode.decode() if isinstance(mode, bytes) else mode
        pads = attrs.get("pads")
        pads = self._constant(node, 1, "Pad pads") if pads is None else np.asarray(pads)
        value = self._constant(node, 2, "a Pad value") if len(node.input) > 2 else attrs.get("value", 0.0)
        axes = self._constant(node, 3, "Pad axes")
        if mode != "constant" or (value is not None and np.any(np.asarray(value) != 0)):
            self._unsupported(node, f"a Pad with mode={mode!r} and value {value} (only zero padding)")
        pads = [int(p) for p in np.asarray(pads).ravel()]
        rank = 4 if axes is None else None
        if axes is not None:  # opset 18: pads of the listed axes only
            full = [0] * 8
            for k, axis in enumerate(np.asarray(axes).ravel()):
                full[int(axis) % 4], full[4 + int(axis) % 4] = pads[k], pads[len(pads) // 2 + k]
            pads, rank = full, 4
        if len(pads) != 2 * rank or any(pads[k] for k in (0, 1, 4, 5)) or pads[2:4] != pads[6:8] \
                or min(pads) < 0:
            self._unsupported(node, f"a Pad with pads {pads} (only equal zero padding of height and "
                                    "width of a 4-d tensor)")
        if pads[2:4] == [0, 0]:
            self.values[node.output[0]] = data
        else:
            self.values[node.output[0]] = _Padded(data, (pads[2], pads[3]), node)

    def _op_Relu(self, node: Any, attrs: dict) -> None:
        self._add(node, ReLU(), [self._data(node, 0)])

    def _op_Identity(self, node: Any, attrs: dict) -> None:
        if self._all_constant(node):
            self.values[node.output[0]] = self.values[node.input[0]]
            return
        self._add(node, Identity(), [self._data(node, 0)])

    def _op_Dropout(self, node: Any, attrs: dict) -> None:
        data = self._data(node, 0)
        ratio = self._constant(node, 1, "a Dropout ratio")
        training = self._constant(node, 2, "a Dropout training_mode")
        if training is not None and bool(training):
            self._unsupported(node, "Dropout in training mode")
        ratio = attrs.get("ratio", 0.5) if ratio is None else float(ratio)
        self._add(node, self._layer(node, lambda: Dropout(ratio)), [data])

    def _op_Flatten(self, node: Any, attrs: dict) -> None:
        if attrs.get("axis", 1) != 1:
            self._unsupported(node, f"Flatten with axis={attrs['axis']}")
        self._add(node, Flatten(), [self._data(node, 0)])

    def _op_Reshape(self, node: Any, attrs: dict) -> None:
        data = self._data(node, 0)
        target = self._constant(node, 1, "a Reshape shape")
        if target is None:
            self._unsupported(node, "Reshape without a shape")
        target = [t for t in np.asarray(target).ravel().tolist()]
        if attrs.get("allowzero", 0) and 0 in target:
            self._unsupported(node, f"Reshape with allowzero=1 to {target}")
        per_sample = _per_sample_target(target, data.shape)
        flat = (-1,) if data.shape is None else (math.prod(data.shape),)
        if per_sample is None or per_sample not in (flat, data.shape):
            hint = ("; export with a dynamic batch axis (torch.onnx.export(..., dynamic_axes=...))"
                    if isinstance(target[0], int) and target[0] > 0 else "")
            self._unsupported(node, f"Reshape to {tuple(target)} of samples of shape {data.shape} (only "
                                    f"flattening: (0, -1), (N, -1) or (-1, k) with k the sample size{hint})")
        if per_sample == data.shape:
            self.values[node.output[0]] = data  # no change
        else:
            self._add(node, Flatten(), [data])

    def _op_BatchNormalization(self, node: Any, attrs: dict) -> None:
        if attrs.get("training_mode", 0) != 0:
            self._unsupported(node, "BatchNormalization in training mode")
        data = self._data(node, 0)
        gamma, beta, mean, var = (self._constant(node, k, "a BatchNormalization parameter") for k in range(1, 5))
        self._add(node, self._layer(node, lambda: BatchNorm(gamma, beta, mean, var, attrs.get("epsilon", 1e-5))),
                  [data])


def _is_scalar(value: Any, expected: float) -> bool:
    """Whether ``value`` is a constant holding one number within float32 rounding of ``expected``."""
    if value is None or isinstance(value, (Tensor, _Padded, _GeluPart)):
        return False
    array = np.asarray(value, dtype=np.float64)
    return array.size == 1 and abs(float(array.ravel()[0]) - expected) <= 1e-6 * abs(expected)


def _name(node: Any) -> str:
    """The node's name, or its first output's when it has none."""
    return node.name or node.output[0]


def _per_sample_target(target: list, shape: tuple[int, ...] | None) -> tuple[int, ...] | None:
    """The per-sample shape a Reshape to ``target`` gives, or None when it would mix samples.

    0 copies the input's dimension, -1 is inferred; the batch axis must be kept (0 or the
    symbolic batch size), or be -1 with every other dimension fixed. Without a known input
    shape only the flattening (0, -1) / (N, -1) is resolved, as (-1,).
    """
    if not target:
        return None
    first, rest = target[0], list(target[1:])
    if shape is None:
        return (-1,) if (first is BATCH or first == 0) and rest == [-1] else None
    rest = [shape[k] if t == 0 and k < len(shape) else t for k, t in enumerate(rest)]
    if any(t is BATCH or not isinstance(t, int) or t < -1 or t == 0 for t in rest) \
            or sum(t == -1 for t in rest) > 1:
        return None
    size = int(np.prod(shape, dtype=np.int64))
    known = int(np.prod([t for t in rest if t != -1], dtype=np.int64))
    if first is BATCH or first == 0:
        if -1 in rest:
            if known == 0 or size % known:
                return None
            rest = [size // known if t == -1 else t for t in rest]
    elif first != -1 or -1 in rest:
        return None
    return tuple(rest) if int(np.prod(rest, dtype=np.int64)) == size else None


def _per_sample_shape(value_info: Any) -> tuple[int, ...] | None:
    """The graph input's shape without the batch axis, if every such dimension is fixed."""
    dims = value_info.type.tensor_type.shape.dim
    shape = tuple(d.dim_value if d.HasField("dim_value") else 0 for d in dims[1:])
    return shape if dims and all(d > 0 for d in shape) else None
