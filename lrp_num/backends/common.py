"""What the device backends (torch, CuPy) share: weights moved once, array-API operators.

A device backend holds one device and one floating dtype. Its operator of a layer keeps the
layer's weights (and each transform g(W) a kernel asks for) on that device in that dtype,
computed once from the layer's float64 host weights exactly as the NumPy layers compute them
(g on float64, then the cast), and cached with the layer (:func:`lrp_num.backends.operator_of`).
The operators of dense layers, per-channel affine maps, additions and the shape-only
operations are array-API code and serve every backend; convolutions and pooling are the
backend's own (:meth:`ArrayBackend.build`).
"""

from __future__ import annotations

import math
from types import ModuleType
from typing import Any

import array_api_compat
import numpy as np

from lrp_num.backends import operator_of
from lrp_num.checks import check_target
from lrp_num.errors import NonFiniteError, ShapeError, UnsupportedLayerError
from lrp_num.engine import kernel_runtime
from lrp_num.layers import (GELU, Add, ChannelAffine, Concat, Dense, Dropout, Flatten, Identity,
                            LayerNorm, MatMul, MergeHeads, Multiply, ReLU, RMSNorm, SiLU, Sigmoid,
                            Softmax, SplitHeads, Tanh)
from lrp_num.layers.branching import StackedAddends
from lrp_num.layers.operators import weight_transform

Array = Any


class DeviceWeights:
    """g(W) on the backend's device for one host weight array, each transform made once.

    Parameters
    ----------
    host : ndarray
        The layer's float64 weight (or bias).
    backend : ArrayBackend
        Where the copies live.
    layout : callable, optional
        Applied to g(W) on the host before the move (a transpose, a reshape).
    """

    def __init__(self, host: np.ndarray, backend: "ArrayBackend", layout=None) -> None:
        self.host, self.backend, self.layout = host, backend, layout
        self._cache: dict[str, Array] = {}

    def get(self, g: str) -> Array:
        if g not in self._cache:
            transformed = weight_transform(g)(self.host)
            if self.layout is not None:
                transformed = self.layout(transformed)
            self._cache[g] = self.backend.from_host(transformed)
        return self._cache[g]


class ArrayDense:
    """A :class:`~lrp_num.layers.Dense` layer on a device: z = a g(W), s g(W)^T, g(b)."""

    def __init__(self, layer: Dense, backend: "ArrayBackend") -> None:
        self.layer, self.xp = layer, backend.xp
        self._weights = DeviceWeights(layer.weight, backend)
        self._biases = DeviceWeights(layer.bias, backend)

    def __repr__(self) -> str:
        return repr(self.layer)

    def __call__(self, x: Array) -> Array:
        return self.forward(x) + self._biases.get("identity")

    def forward(self, a: Array, g: str = "identity") -> Array:
        return a @ self._weights.get(g)

    def transpose(self, s: Array, g: str = "identity") -> Array:
        return s @ self.xp.matrix_transpose(self._weights.get(g))

    def bias_like(self, z: Array, g: str = "identity") -> Array:
        return self.xp.broadcast_to(self._biases.get(g), z.shape)


class ArrayAffine:
    """A :class:`~lrp_num.layers.ChannelAffine` map y_c = s_c x_c + t_c on a device."""

    def __init__(self, layer: ChannelAffine, backend: "ArrayBackend") -> None:
        self.layer, self.xp = layer, backend.xp
        self._scales = DeviceWeights(layer.scale, backend)
        self._shifts = DeviceWeights(layer.shift, backend)

    def __repr__(self) -> str:
        return repr(self.layer)

    def _per_channel(self, values: Array, ndim: int) -> Array:
        return self.xp.reshape(values, (1, self.layer.n_channels) + (1,) * (ndim - 2))

    def __call__(self, x: Array) -> Array:
        return self.forward(x) + self.bias_like(x)

    def forward(self, a: Array, g: str = "identity") -> Array:
        return a * self._per_channel(self._scales.get(g), a.ndim)

    def transpose(self, s: Array, g: str = "identity") -> Array:
        return s * self._per_channel(self._scales.get(g), s.ndim)

    def bias_like(self, z: Array, g: str = "identity") -> Array:
        return self.xp.broadcast_to(self._per_channel(self._shifts.get(g), z.ndim), z.shape)


class ArrayAddends:
    """The sum of K addends stacked as (N, K, ...) with the unit weight (see StackedAddends)."""

    def __init__(self, n_addends: int, backend: "ArrayBackend") -> None:
        self.n_addends, self.xp = n_addends, backend.xp
        self._unit = DeviceWeights(np.ones(()), backend)

    def __repr__(self) -> str:
        return f"StackedAddends({self.n_addends})"

    def forward(self, a: Array, g: str = "identity") -> Array:
        if a.ndim < 2 or a.shape[1] != self.n_addends:
            raise ShapeError(f"{self!r} expects addends stacked as (N, {self.n_addends}, ...), "
                             f"got {tuple(a.shape)}")
        return self.xp.sum(a, axis=1) * self._unit.get(g)

    def transpose(self, s: Array, g: str = "identity") -> Array:
        weighted = self.xp.expand_dims(s * self._unit.get(g), axis=1)
        return self.xp.broadcast_to(weighted, (s.shape[0], self.n_addends, *s.shape[1:]))

    def bias_like(self, z: Array, g: str = "identity") -> Array:
        return self.xp.zeros_like(z)


class ArrayElementwise:
    """ReLU, Flatten, Identity, Dropout, Add and Concat as array-API functions."""

    def __init__(self, layer: object, backend: "ArrayBackend") -> None:
        self.layer, self.xp = layer, backend.xp

    def __repr__(self) -> str:
        return repr(self.layer)

    def __call__(self, *inputs: Array) -> Array:
        xp, layer = self.xp, self.layer
        if isinstance(layer, ReLU):
            return xp.clip(inputs[0], min=0)
        if isinstance(layer, Flatten):
            return xp.reshape(inputs[0], (inputs[0].shape[0], -1))
        if isinstance(layer, Add):
            layer.output_shape(*(tuple(a.shape[1:]) for a in inputs))
            total = inputs[0]
            for a in inputs[1:]:
                total = total + a
            return total
        if isinstance(layer, Concat):
            layer.output_shape(*(tuple(a.shape[1:]) for a in inputs))
            return xp.concat(list(inputs), axis=layer.sample_axis(inputs[0].ndim - 1) + 1)
        return inputs[0]  # Identity, Dropout (the identity at inference)


class ArrayTransformerLayer:
    """GELU, SiLU, Tanh, Sigmoid, LayerNorm and RMSNorm as array-API functions (the forward
    passes of :mod:`lrp_num.layers.nonlinear` and :mod:`lrp_num.layers.normalization`; their
    rules take the layer itself)."""

    def __init__(self, layer: object, backend: "ArrayBackend") -> None:
        self.layer, self.xp = layer, backend.xp

    def __repr__(self) -> str:
        return repr(self.layer)

    def _sigmoid(self, x: Array) -> Array:
        xp = self.xp
        e = xp.exp(-xp.abs(x))
        return xp.where(x >= 0, 1 / (1 + e), e / (1 + e))

    def __call__(self, x: Array) -> Array:
        xp, layer = self.xp, self.layer
        if isinstance(layer, GELU):
            if layer.approximate == "tanh":
                inner = math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)
                return x * (1 + xp.tanh(inner)) / 2
            return x * kernel_runtime.normal_cdf(x)
        if isinstance(layer, SiLU):
            return x * self._sigmoid(x)
        if isinstance(layer, Sigmoid):
            return self._sigmoid(x)
        if isinstance(layer, Tanh):
            return xp.tanh(x)
        layer.output_shape(tuple(x.shape[1:]))
        weight, bias = kernel_runtime.like(layer.weight, x), kernel_runtime.like(layer.bias, x)
        if isinstance(layer, LayerNorm):
            x = x - xp.mean(x, axis=-1, keepdims=True)
        sigma = xp.sqrt(xp.mean(x * x, axis=-1, keepdims=True) + layer.eps)
        return weight * x / sigma + bias


class ArrayAttention:
    """Softmax, Multiply, MatMul, SplitHeads and MergeHeads as array-API functions."""

    def __init__(self, layer: object, backend: "ArrayBackend") -> None:
        self.layer, self.xp = layer, backend.xp

    def __repr__(self) -> str:
        return repr(self.layer)

    def __call__(self, *inputs: Array) -> Array:
        xp, layer = self.xp, self.layer
        layer.output_shape(*(tuple(a.shape[1:]) for a in inputs))
        if isinstance(layer, Softmax):
            axis = layer.batch_axis(inputs[0].ndim - 1)
            shifted = xp.exp(inputs[0] - xp.max(inputs[0], axis=axis, keepdims=True))
            return shifted / xp.sum(shifted, axis=axis, keepdims=True)
        if isinstance(layer, Multiply):
            return inputs[0] * inputs[1]
        if isinstance(layer, MatMul):
            right = xp.matrix_transpose(inputs[1]) if layer.transpose_b else inputs[1]
            return xp.matmul(layer.scaled_first(inputs[0]), right)
        return layer.apply(inputs[0])  # SplitHeads, MergeHeads


class DLPackBridge:
    """Another library's operator applied to this backend's arrays: each array crosses by
    DLPack, without a copy (the CuPy backend runs torch's convolutions on CuPy arrays so).

    Parameters
    ----------
    operator : object
        The operator of the other library (forward, transpose, bias_like, patches, unpatch).
    into, back : callable
        ``from_dlpack`` of the other library and of this backend's.
    """

    def __init__(self, operator: object, into, back) -> None:
        self.operator, self.into, self.back = operator, into, back

    def __repr__(self) -> str:
        return repr(self.operator)

    def _call(self, method: str, a: Array, *rest: object) -> Array:
        return self.back(getattr(self.operator, method)(self.into(a), *rest))

    def __call__(self, x: Array) -> Array:
        return self._call("__call__", x)

    def forward(self, a: Array, g: str = "identity") -> Array:
        return self._call("forward", a, g)

    def transpose(self, s: Array, g: str = "identity") -> Array:
        return self._call("transpose", s, g)

    def bias_like(self, z: Array, g: str = "identity") -> Array:
        return self._call("bias_like", z, g)

    def patches(self, x: Array) -> Array:
        return self._call("patches", x)

    def unpatch(self, r: Array) -> Array:
        return self._call("unpatch", r)


class ArrayBackend:
    """A device backend: array namespace ``xp``, one device, one floating dtype.

    Subclasses set ``name`` and implement :meth:`from_host`, :meth:`to_host` and
    :meth:`build_spatial` (convolutions and pooling).
    """

    name = "array"

    def __init__(self, xp: ModuleType, device: object, dtype: object) -> None:
        self.xp, self.device, self.dtype = xp, device, dtype
        self.key = (self.name, str(device), str(dtype))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(device={self.device}, dtype={self.dtype})"

    def from_host(self, array: np.ndarray, like: Array | None = None) -> Array:
        raise NotImplementedError

    def to_host(self, array: Array) -> np.ndarray:
        raise NotImplementedError

    def build_spatial(self, layer: object) -> object | None:
        """The backend's operator of a convolution or pooling layer, None for other layers."""
        raise NotImplementedError

    def operator(self, layer: object) -> object:
        """The layer's operator on this device and dtype, built once and cached with the layer."""
        return operator_of(layer, self.key, self._build)

    def stack_addends(self, inputs: list[Array]) -> Array:
        """An Add node's addends stacked on axis 1, (N, K, ...): the input of the Add rules."""
        return self.xp.stack(inputs, axis=1)

    def top_relevance(self, output: Array, target: object) -> Array:
        """:func:`lrp_num.engine.explain.top_relevance` on the output's device (the same
        values): f_c(x) at the target index of each sample and zeros elsewhere, or the
        explicit output relevance moved there."""
        xp = self.xp
        batch = output.shape[0]
        checked = check_target(target, tuple(output.shape))
        flat = xp.reshape(output, (batch, -1))
        device = array_api_compat.device(flat)
        if checked is None:
            indices = xp.argmax(flat, axis=1)
        elif checked.dtype.kind == "f":
            return self.from_host(checked, like=output)
        else:
            indices = xp.asarray(checked, device=device)
        columns = xp.arange(flat.shape[1], device=device)
        chosen = xp.expand_dims(columns, axis=0) == xp.expand_dims(indices, axis=1)
        return xp.reshape(xp.where(chosen, flat, xp.zeros_like(flat)), output.shape)

    def addends(self, n_addends: int) -> ArrayAddends:
        return operator_of(_ADDENDS.setdefault(n_addends, StackedAddends(n_addends)), self.key,
                           lambda op: ArrayAddends(op.n_addends, self))

    def _build(self, layer: object) -> object:
        if isinstance(layer, Dense):
            return ArrayDense(layer, self)
        if isinstance(layer, ChannelAffine):
            return ArrayAffine(layer, self)
        if isinstance(layer, (ReLU, Flatten, Identity, Dropout, Add, Concat)):
            return ArrayElementwise(layer, self)
        if isinstance(layer, (Softmax, Multiply, MatMul, SplitHeads, MergeHeads)):
            return ArrayAttention(layer, self)
        if isinstance(layer, (GELU, SiLU, Sigmoid, Tanh, LayerNorm, RMSNorm)):
            return ArrayTransformerLayer(layer, self)
        spatial = self.build_spatial(layer)
        if spatial is None:
            raise UnsupportedLayerError(f"the {self.name} backend has no operator for {layer!r}")
        return spatial

    def forward_trace(self, graph, x: Array) -> dict[str, Array]:
        """Every node's output on the device, and the input under ``graph.input_name``."""
        if graph.input_shape is not None and tuple(x.shape[1:]) != tuple(graph.input_shape):
            raise ShapeError(f"network input must have shape (N, "
                             f"{', '.join(map(str, graph.input_shape))}), got {tuple(x.shape)}")
        values = {graph.input_name: x}
        for node in graph.nodes:
            operator = self.operator(node.operation)
            try:
                values[node.name] = operator(*(values[name] for name in node.inputs))
            except (RuntimeError, ValueError) as error:  # the library's shape complaints
                if isinstance(error, ShapeError):
                    raise ShapeError(f"node {node.name!r}: {error}") from None
                raise ShapeError(f"node {node.name!r} ({node.operation!r}): "
                                 f"{str(error).splitlines()[0]}") from None
        return values

    def checked_input(self, x: Array) -> Array:
        """The batch to explain: float32/float64 (other numbers become float64), finite, a
        non-empty batch; ShapeError or NonFiniteError as for NumPy input."""
        xp = self.xp
        if not xp.isdtype(x.dtype, "real floating") or x.dtype not in (xp.float32, xp.float64):
            if not xp.isdtype(x.dtype, ("bool", "integral", "real floating")):
                raise ShapeError(f"input must be a numeric array, got dtype {x.dtype}")
            x = xp.astype(x, xp.float64)
        if x.ndim == 0:
            raise ShapeError("the input is a single number (a 0-d array), not a sample or a batch")
        if x.shape[0] == 0:
            raise ShapeError(f"the input batch is empty (shape {tuple(x.shape)})")
        n_bad = int(xp.sum(xp.astype(~xp.isfinite(x), xp.int64)))
        if n_bad:
            raise NonFiniteError(f"input holds {n_bad} NaN or Inf value(s)")
        return x


#: one StackedAddends per number of addends: the key under which their device operators live
_ADDENDS: dict[int, StackedAddends] = {}


__all__ = ["ArrayAddends", "ArrayAffine", "ArrayBackend", "ArrayDense", "ArrayElementwise",
           "DLPackBridge", "DeviceWeights"]
