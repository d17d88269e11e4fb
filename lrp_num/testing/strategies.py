"""Hypothesis strategies for testing LRP code: random ReLU networks, inputs per domain, edge cases.

For downstream users and this project's own suite. Every strategy draws float64 values that are
finite, not subnormal and of moderate size, so that a failure points at the rule, not at
overflow. Requires ``hypothesis`` (a test dependency, not imported by ``lrp_num`` itself).

Strategies
----------
dense_layers(n_in, n_out, bias=...)
    A :class:`~lrp_num.layers.Dense` layer; ``bias`` is "mixed", "positive", "negative",
    "nonpositive" or "zero".
networks(kind=..., bias=..., pooling=...)
    A :class:`~lrp_num.engine.network.Sequential` with ``input_shape`` set: an MLP of ReLU layers, or a
    small convolutional network (Conv2d, ReLU, optional sum / average / max pooling, Flatten,
    Dense).
inputs(shape, domain, lower=None, upper=None)
    One input of ``shape`` in "R^n", "orthant" or "box" (inside [lower, upper]).
boxes(shape)
    Bounds (lower, upper) with lower < upper.
networks_with_inputs(domain=..., ...)
    (network, x, lower, upper): a network and one input in the domain.
near_zero_layers(n_in, n_out)
    (layer, x): a dense layer whose first neuron's pre-activation z_0 is exactly 0 or tiny.
residual_networks(bias=..., branch_bias=...)
    (graph, chain): a :class:`~lrp_num.engine.graph.Graph` with one identity skip connection, h + D(h)
    summed by an Add node, and the :class:`~lrp_num.engine.network.Sequential` that computes the same
    function with the skip folded into the branch's weights (W + I).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from lrp_num.engine.graph import Graph, Node
from lrp_num.layers import Add, AvgPool2d, Conv2d, Dense, Flatten, MaxPool2d, ReLU, SumPool2d
from lrp_num.engine.network import Sequential

DOMAINS = ("R^n", "orthant", "box")
BIAS_KINDS = ("mixed", "positive", "negative", "nonpositive", "zero")


def _floats(low: float, high: float) -> st.SearchStrategy[float]:
    return st.floats(low, high, allow_nan=False, allow_infinity=False, allow_subnormal=False, width=64)


def _array(shape, low: float, high: float) -> st.SearchStrategy[np.ndarray]:
    return hnp.arrays(np.float64, shape, elements=_floats(low, high))


#: smallest non-zero magnitude of drawn weights and inputs: products and squares stay normal
TINY = 1e-100


def _signed(low: float, high: float) -> st.SearchStrategy[float]:
    """0 or a value in [low, high] of magnitude >= TINY (no underflow in w^2 or x w)."""
    parts = [st.just(0.0)]
    if high >= TINY:
        parts.append(_floats(max(low, TINY), high))
    if low <= -TINY:
        parts.append(_floats(low, min(high, -TINY)))
    return st.one_of(*parts)


def _values(shape, low: float, high: float) -> st.SearchStrategy[np.ndarray]:
    return hnp.arrays(np.float64, shape, elements=_signed(low, high))


def biases(size: int, kind: str = "mixed") -> st.SearchStrategy[np.ndarray]:
    """Bias vectors of one sign kind (see :data:`BIAS_KINDS`)."""
    if kind not in BIAS_KINDS:
        raise ValueError(f"bias kind must be one of {BIAS_KINDS}, got {kind!r}")
    if kind == "zero":
        return st.just(np.zeros(size))
    ranges = {"mixed": (-1.0, 1.0), "positive": (1e-3, 1.0), "negative": (-1.0, -1e-3),
              "nonpositive": (-1.0, 0.0)}
    return _array((size,), *ranges[kind])


@st.composite
def dense_layers(draw, n_in: int, n_out: int, bias: str = "mixed") -> Dense:
    """A dense layer with weights in [-2, 2] (w_ij layout (n_in, n_out))."""
    weight = draw(_values((n_in, n_out), -2.0, 2.0))
    return Dense(weight, draw(biases(n_out, bias)))


@st.composite
def _mlp(draw, bias: str, max_depth: int, max_width: int):
    n_in = draw(st.integers(1, max_width))
    widths = draw(st.lists(st.integers(1, max_width), min_size=0, max_size=max_depth - 1))
    n_out = draw(st.integers(1, 4))
    layers, previous = [], n_in
    for width in widths:
        layers += [draw(dense_layers(previous, width, bias)), ReLU()]
        previous = width
    layers.append(draw(dense_layers(previous, n_out, bias)))
    return Sequential(layers, input_shape=(n_in,))


@st.composite
def _convnet(draw, bias: str, pooling: bool | None):
    channels = draw(st.integers(1, 2))
    height, width = draw(st.integers(3, 6)), draw(st.integers(3, 6))
    kernel = (draw(st.integers(1, min(3, height))), draw(st.integers(1, min(3, width))))
    stride = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    padding = (draw(st.integers(0, kernel[0] - 1)), draw(st.integers(0, kernel[1] - 1)))
    out_channels = draw(st.integers(1, 3))
    conv = Conv2d(draw(_values((out_channels, channels, *kernel), -2.0, 2.0)),
                  draw(biases(out_channels, bias)), stride, padding)
    layers = [conv, ReLU()]
    shape = conv.output_shape((channels, height, width))
    use_pooling = draw(st.booleans()) if pooling is None else pooling
    if use_pooling and shape[1] >= 2 and shape[2] >= 2:
        pool_type = draw(st.sampled_from([SumPool2d, AvgPool2d, MaxPool2d]))
        pool_stride = draw(st.integers(1, 2))
        layers.append(pool_type(2, pool_stride))
        shape = layers[-1].output_shape(shape)
    layers.append(Flatten())
    n_out = draw(st.integers(1, 3))
    layers.append(draw(dense_layers(int(np.prod(shape)), n_out, bias)))
    return Sequential(layers, input_shape=(channels, height, width))


def networks(kind: str | None = None, bias: str = "mixed", pooling: bool | None = None,
             max_depth: int = 3, max_width: int = 6) -> st.SearchStrategy[Sequential]:
    """Random ReLU networks with ``input_shape`` set.

    Parameters
    ----------
    kind : {"mlp", "conv"} or None
        None draws either.
    bias : str
        Sign kind of every bias (:data:`BIAS_KINDS`).
    pooling : bool or None
        Conv networks: always, never, or sometimes (None) a 2x2 pooling layer.
    max_depth, max_width : int
        MLP: at most this many Dense layers, each at most this wide.
    """
    mlp = _mlp(bias, max_depth, max_width)
    conv = _convnet(bias, pooling)
    if kind == "mlp":
        return mlp
    if kind == "conv":
        return conv
    return st.one_of(mlp, conv)


@st.composite
def boxes(draw, shape) -> tuple[np.ndarray, np.ndarray]:
    """(lower, upper) of ``shape`` with lower in [-2, 1] and upper - lower in [0.25, 3]."""
    lower = draw(_array(shape, -2.0, 1.0))
    return lower, lower + draw(_array(shape, 0.25, 3.0))


@st.composite
def inputs(draw, shape, domain: str = "R^n", lower=None, upper=None) -> np.ndarray:
    """One input of ``shape`` in the domain; zeros appear often in the orthant (ReLU-like)."""
    if domain == "R^n":
        return draw(_values(shape, -3.0, 3.0))
    if domain == "orthant":
        values = draw(_values(shape, 0.0, 3.0))
        mask = draw(hnp.arrays(np.bool_, shape))
        return np.where(mask, 0.0, values)
    if domain == "box":
        if lower is None or upper is None:
            raise ValueError("a box input needs lower and upper")
        fraction = draw(_array(np.shape(lower), 0.0, 1.0))
        return np.clip(lower + fraction * (upper - lower), lower, upper)
    raise ValueError(f"domain must be one of {DOMAINS}, got {domain!r}")


@st.composite
def networks_with_inputs(draw, domain: str = "R^n", **network_options: Any):
    """(network, x, lower, upper): x is one sample in the domain (bounds None unless "box")."""
    network = draw(networks(**network_options))
    lower = upper = None
    if domain == "box":
        lower, upper = draw(boxes(network.input_shape))
    x = draw(inputs(network.input_shape, domain, lower, upper))
    return network, x, lower, upper


@st.composite
def near_zero_layers(draw, n_in: int, n_out: int):
    """(layer, x): neuron 0 has z_0 = 0 exactly, or a tiny multiple of sum_i |x_i w_i0|."""
    weight = draw(_array((n_in, n_out), -2.0, 2.0))
    x = draw(_array((n_in,), 0.0, 3.0))
    bias = draw(biases(n_out, "mixed"))
    tiny = draw(st.sampled_from([0.0, 1e-300, 1e-17, 1e-12]))
    contribution = float(x @ weight[:, 0])
    # b_0 = -sum_i x_i w_i0 rounded; choose the representable bias that gives z_0 closest to tiny
    bias[0] = -contribution + tiny * (1.0 + float(np.abs(x) @ np.abs(weight[:, 0])))
    return Dense(weight, bias), x


@st.composite
def residual_networks(draw, bias: str = "mixed", branch_bias: str = "zero", max_width: int = 5):
    """(graph, chain): x -> Dense -> ReLU -> h; y = ReLU(h + D(h)) -> Dense, as a Graph with an
    Add node, and as a Sequential whose middle layer has weight W_D + I and bias b_D.

    The two compute the same function; the graph's h has two consumers (D and the Add).
    """
    n_in, width = draw(st.integers(1, max_width)), draw(st.integers(1, max_width))
    n_out = draw(st.integers(1, 3))
    stem = draw(dense_layers(n_in, width, bias))
    branch = draw(dense_layers(width, width, branch_bias))
    head = draw(dense_layers(width, n_out, bias))
    graph = Graph([Node("stem", stem, "input"), Node("h", ReLU(), "stem"),
                   Node("branch", branch, "h"), Node("sum", Add(), ("h", "branch")),
                   Node("y", ReLU(), "sum"), Node("head", head, "y")], input_shape=(n_in,))
    merged = Dense(branch.weight + np.eye(width), branch.bias)
    chain = Sequential([stem, ReLU(), merged, ReLU(), head], input_shape=(n_in,))
    return graph, chain


__all__ = ["BIAS_KINDS", "DOMAINS", "biases", "boxes", "dense_layers", "inputs", "near_zero_layers",
           "networks", "networks_with_inputs", "residual_networks"]
