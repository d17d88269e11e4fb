"""Import a feed-forward ONNX model as a :class:`~lrp_num.network.Sequential` network.

Supported: a linear chain (each node consumes the previous node's output) of

* Gemm (transA = 0, transB 0 or 1, alpha = beta = 1), MatMul with a constant, Add of a constant
  right after Gemm / MatMul (the bias) -> :class:`~lrp_num.layers.Dense`;
* Conv (2-d, group 1, dilation 1, symmetric pads) -> :class:`~lrp_num.layers.Conv2d`;
* MaxPool, AveragePool (no padding, ceil_mode 0) -> MaxPool2d, AvgPool2d;
* Relu, Identity, Flatten (axis 1) and Reshape to (0, -1) or (-1, k) when k is the sample size;
* BatchNormalization (inference) -> :class:`~lrp_num.layers.BatchNorm`, folded on construction.

Weights come from the graph's initializers (or Constant nodes). Anything else raises
:class:`~lrp_num.errors.UnsupportedLayerError` naming the node. Needs the optional ``onnx``
package.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from lrp_num.errors import MissingDependencyError, ModelFileError, UnsupportedLayerError
from lrp_num.layers import AvgPool2d, BatchNorm, Conv2d, Dense, Flatten, Identity, Layer, MaxPool2d, ReLU
from lrp_num.network import Sequential

SUPPORTED_OPS = (
    "Gemm", "MatMul", "Add", "Conv", "Relu", "MaxPool", "AveragePool", "Flatten", "Reshape",
    "BatchNormalization", "Identity",
)


def load_onnx(path: str | os.PathLike) -> Sequential:
    """Read an ONNX file holding a linear chain of supported operators.

    Parameters
    ----------
    path : path-like
        The ``.onnx`` file.

    Returns
    -------
    Sequential
        With ``input_shape`` set when the graph input has a fixed per-sample shape.

    Raises
    ------
    MissingDependencyError
        The ``onnx`` package is not installed.
    ModelFileError
        The file is missing or not a valid ONNX model.
    UnsupportedLayerError
        An operator or attribute outside the supported set, or a graph that is not a chain.
    """
    try:
        import onnx
        from onnx import numpy_helper
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
    return _ChainReader(model.graph, numpy_helper).network()


class _ChainReader:
    """Walk an ONNX graph node by node and translate each node into layers."""

    def __init__(self, graph: Any, numpy_helper: Any) -> None:
        self.graph = graph
        self.constants = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
        self.numpy_helper = numpy_helper
        self.layers: list[Layer] = []
        self.flatten_sizes: dict[int, tuple[int, Any]] = {}  # Reshape (-1, k) to verify

    def network(self) -> Sequential:
        inputs = [i for i in self.graph.input if i.name not in self.constants]
        if len(inputs) != 1:
            raise UnsupportedLayerError(f"ONNX graph has {len(inputs)} non-constant inputs; only one is supported")
        current = inputs[0].name
        for node in self.graph.node:
            if node.op_type == "Constant":
                self._read_constant(node)
                continue
            data = [name for name in node.input if name and name not in self.constants]
            if data != [current]:
                raise UnsupportedLayerError(
                    f"ONNX node {node.name!r} ({node.op_type}) takes inputs {list(node.input)}, not the "
                    f"single output {current!r} of the previous node; only linear chains are supported"
                )
            if len([o for o in node.output if o]) != 1:
                raise UnsupportedLayerError(f"ONNX node {node.name!r} ({node.op_type}) has several outputs")
            self._translate(node)
            current = node.output[0]
        outputs = [o.name for o in self.graph.output]
        if outputs != [current]:
            raise UnsupportedLayerError(f"ONNX graph outputs {outputs}, but the chain ends in {current!r}")
        if not self.layers:
            raise UnsupportedLayerError("ONNX graph has no layers")
        network = Sequential(self.layers, input_shape=_per_sample_shape(inputs[0]))
        self._check_flatten_sizes(network)
        return network

    def _check_flatten_sizes(self, network: Sequential) -> None:
        """A Reshape to (-1, k) is a flatten only if k is the per-sample size; check it."""
        for index, (size, node) in self.flatten_sizes.items():
            index -= sum(isinstance(layer, BatchNorm) for layer in self.layers[:index])  # folded away
            if network.shapes is None:
                self._unsupported(node, f"Reshape to (-1, {size}) in a graph without a fixed input shape")
            if network.shapes[index + 1] != (size,):
                self._unsupported(node, f"Reshape to (-1, {size}) of samples of shape {network.shapes[index]}")

    def _read_constant(self, node: Any) -> None:
        attrs = {a.name: a for a in node.attribute}
        if "value" not in attrs:
            self._unsupported(node, "a Constant without a tensor 'value'")
        self.constants[node.output[0]] = self.numpy_helper.to_array(attrs["value"].t)

    def _attributes(self, node: Any) -> dict[str, Any]:
        import onnx

        return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}

    def _constant(self, node: Any, index: int) -> np.ndarray | None:
        if index >= len(node.input) or not node.input[index]:
            return None
        return self.constants[node.input[index]]

    @staticmethod
    def _unsupported(node: Any, why: str) -> None:
        raise UnsupportedLayerError(f"ONNX node {node.name!r} ({node.op_type}): {why} is not supported")

    def _translate(self, node: Any) -> None:
        op, attrs = node.op_type, self._attributes(node)
        handler = getattr(self, f"_op_{op}", None)
        if handler is None:
            raise UnsupportedLayerError(
                f"ONNX node {node.name!r} has unsupported op type {op}; supported: {', '.join(SUPPORTED_OPS)}"
            )
        handler(node, attrs)

    # ---- one method per operator ----

    def _op_Gemm(self, node: Any, attrs: dict) -> None:
        if attrs.get("transA", 0) != 0 or attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0:
            self._unsupported(node, f"Gemm with transA={attrs.get('transA', 0)}, alpha={attrs.get('alpha', 1.0)}, "
                                    f"beta={attrs.get('beta', 1.0)} (need 0, 1, 1)")
        if node.input[0] != self._data_input(node):
            self._unsupported(node, "Gemm with a constant first operand")
        weight = self._constant(node, 1)
        weight = weight.T if attrs.get("transB", 0) else weight
        bias = self._constant(node, 2)
        bias = np.zeros(weight.shape[1]) if bias is None else np.broadcast_to(bias, (weight.shape[1],))
        self.layers.append(Dense(weight, bias))

    def _op_MatMul(self, node: Any, attrs: dict) -> None:
        if node.input[0] != self._data_input(node) or self._constant(node, 1) is None:
            self._unsupported(node, "MatMul other than data @ constant")
        self.layers.append(Dense(self._constant(node, 1)))

    def _op_Add(self, node: Any, attrs: dict) -> None:
        previous = self.layers[-1] if self.layers else None
        constant = next((self.constants[n] for n in node.input if n in self.constants), None)
        if not isinstance(previous, Dense) or constant is None:
            self._unsupported(node, "Add other than a constant bias right after Gemm or MatMul")
        try:
            bias = np.broadcast_to(constant, (1, previous.n_out)).reshape(previous.n_out)
        except ValueError:
            self._unsupported(node, f"Add of shape {constant.shape} after {previous!r}")
        self.layers[-1] = Dense(previous.weight, previous.bias + bias)

    def _op_Conv(self, node: Any, attrs: dict) -> None:
        weight = self._constant(node, 1)
        if weight is None or weight.ndim != 4:
            self._unsupported(node, "Conv without a constant 4-d weight")
        if attrs.get("group", 1) != 1:
            self._unsupported(node, f"Conv with group={attrs['group']}")
        if any(d != 1 for d in attrs.get("dilations", [1, 1])):
            self._unsupported(node, f"Conv with dilations={attrs['dilations']}")
        padding = self._symmetric_pads(node, attrs)
        self.layers.append(Conv2d(weight, self._constant(node, 2), tuple(attrs.get("strides", [1, 1])), padding))

    def _symmetric_pads(self, node: Any, attrs: dict) -> tuple[int, int]:
        auto_pad = attrs.get("auto_pad", b"NOTSET")
        auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
        if auto_pad not in ("NOTSET", "VALID"):
            self._unsupported(node, f"auto_pad={auto_pad}")
        top, left, bottom, right = attrs.get("pads", [0, 0, 0, 0])
        if (top, left) != (bottom, right):
            self._unsupported(node, f"asymmetric pads {attrs['pads']}")
        return top, left

    def _pool_geometry(self, node: Any, attrs: dict) -> tuple[tuple[int, ...], tuple[int, ...]]:
        kernel = tuple(attrs["kernel_shape"])
        if len(kernel) != 2:
            self._unsupported(node, f"{len(kernel)}-d pooling")
        if self._symmetric_pads(node, attrs) != (0, 0):
            self._unsupported(node, f"pooling with pads {attrs['pads']}")
        if attrs.get("ceil_mode", 0) != 0:
            self._unsupported(node, "ceil_mode=1")
        if any(d != 1 for d in attrs.get("dilations", [1, 1])):
            self._unsupported(node, f"pooling with dilations={attrs['dilations']}")
        return kernel, tuple(attrs.get("strides", [1, 1]))  # ONNX's default stride is 1

    def _op_MaxPool(self, node: Any, attrs: dict) -> None:
        self.layers.append(MaxPool2d(*self._pool_geometry(node, attrs)))

    def _op_AveragePool(self, node: Any, attrs: dict) -> None:
        self.layers.append(AvgPool2d(*self._pool_geometry(node, attrs)))  # no pads: count_include_pad moot

    def _op_Relu(self, node: Any, attrs: dict) -> None:
        self.layers.append(ReLU())

    def _op_Identity(self, node: Any, attrs: dict) -> None:
        self.layers.append(Identity())

    def _op_Flatten(self, node: Any, attrs: dict) -> None:
        if attrs.get("axis", 1) != 1:
            self._unsupported(node, f"Flatten with axis={attrs['axis']}")
        self.layers.append(Flatten())

    def _op_Reshape(self, node: Any, attrs: dict) -> None:
        shape = self._constant(node, 1)
        target = None if shape is None else shape.tolist()
        if target == [0, -1]:
            self.layers.append(Flatten())
        elif target is not None and len(target) == 2 and target[0] == -1 and target[1] > 0:
            self.layers.append(Flatten())  # (-1, k): a flatten only if k is the sample size
            self.flatten_sizes[len(self.layers) - 1] = (target[1], node)
        else:
            self._unsupported(node, f"Reshape to {target} (only (0, -1) or (-1, k), i.e. flatten)")

    def _op_BatchNormalization(self, node: Any, attrs: dict) -> None:
        if attrs.get("training_mode", 0) != 0:
            self._unsupported(node, "BatchNormalization in training mode")
        gamma, beta, mean, var = (self._constant(node, k) for k in range(1, 5))
        self.layers.append(BatchNorm(gamma, beta, mean, var, attrs.get("epsilon", 1e-5)))

    def _data_input(self, node: Any) -> str:
        return next(name for name in node.input if name and name not in self.constants)


def _per_sample_shape(value_info: Any) -> tuple[int, ...] | None:
    """The graph input's shape without the batch axis, if every such dimension is fixed."""
    dims = value_info.type.tensor_type.shape.dim
    shape = tuple(d.dim_value if d.HasField("dim_value") else 0 for d in dims[1:])
    return shape if dims and all(d > 0 for d in shape) else None
