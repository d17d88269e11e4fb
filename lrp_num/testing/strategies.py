"""Hypothesis strategies for testing LRP code: random ReLU networks, inputs per domain, edge cases.

For downstream users and this project's own suite. Every strategy draws values that are finite,
not subnormal, of moderate size and exactly representable in the requested ``dtype`` (float64 by
default, or float32: weights and inputs are then float32 numbers, so a float32 torch model
computes on the very network the reference explains), with non-zero magnitudes of at least
:func:`min_magnitude` of that dtype, so that a failure points at the rule, not at overflow or
underflow. Requires ``hypothesis`` (a test dependency, not imported by ``lrp_num`` itself).

Strategies
----------
dense_layers(n_in, n_out, bias=...)
    A :class:`~lrp_num.layers.Dense` layer; ``bias`` is "mixed", "positive", "negative",
    "nonpositive" or "zero".
networks(kind=..., bias=..., pooling=..., dtype=...)
    A :class:`~lrp_num.engine.network.Sequential` with ``input_shape`` set: an MLP of ReLU layers, or a
    small convolutional network (Conv2d, ReLU, optional sum / average / max pooling, Flatten,
    Dense). ``pooling="max"`` (or "avg", "sum", True for any) always has that pooling layer.
inputs(shape, domain, lower=None, upper=None, batch=None, dtype=...)
    One input of ``shape`` in "R^n", "orthant" or "box" (inside [lower, upper]); with ``batch``
    a batch (batch, *shape).
boxes(shape)
    Bounds (lower, upper) with lower < upper.
networks_with_inputs(domain=..., batch=None, positive_output=False, ...)
    (network, x, lower, upper): a network and one input (or a batch) in the domain;
    ``positive_output=True`` shifts the last layer's bias so that every sample's largest
    output, the one explained by default, is >= 1/2.
torch_networks(kind=..., dtype=torch.float32, batch=..., domain=..., ...)
    (torch module, input tensor): the same networks as torch modules (eval mode) with a batch.
near_zero_layers(n_in, n_out)
    (layer, x): a dense layer whose first neuron's pre-activation z_0 is exactly 0 or tiny.
residual_networks(bias=..., branch_bias=...)
    (graph, chain): a :class:`~lrp_num.engine.graph.Graph` with one identity skip connection, h + D(h)
    summed by an Add node, and the :class:`~lrp_num.engine.network.Sequential` that computes the same
    function with the skip folded into the branch's weights (W + I).
transformer_graphs(norm=..., placement=..., activation=..., gating=..., dtype=..., with_inputs=False)
    A small random transformer :class:`~lrp_num.engine.graph.Graph` on tokens (T, D): 1-2 blocks of
    multi-head self-attention and a token-wise MLP (GELU, SiLU, Tanh or Sigmoid, optionally gated
    by a Multiply), LayerNorm / RMSNorm / no norm before (pre-norm) or after (post-norm) each
    part, skip connections, a Flatten and a Dense head; ``with_inputs=True`` draws (graph, x).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from lrp_num.engine.graph import Graph, Node
from lrp_num.layers import (GELU, Add, AvgPool2d, Conv2d, Dense, Flatten, LayerNorm, MaxPool2d, Multiply, ReLU,
                            RMSNorm, Sigmoid, SiLU, SumPool2d, Tanh, TokenDense)
from lrp_num.layers.attention import multi_head_attention
from lrp_num.engine.network import Sequential

DOMAINS = ("R^n", "orthant", "box")
BIAS_KINDS = ("mixed", "positive", "negative", "nonpositive", "zero")


DTYPES = ("float64", "float32")
#: pooling layer types by name (``networks(pooling=...)``)
POOLING = {"sum": SumPool2d, "avg": AvgPool2d, "max": MaxPool2d}


def dtype_name(dtype: Any) -> str:
    """"float64" or "float32" for a NumPy dtype, its name, or a torch dtype (``torch.float32``)."""
    text = str(dtype)
    if text.startswith("torch."):
        name = text.removeprefix("torch.")
        name = {"float": "float32", "double": "float64"}.get(name, name)
    else:
        try:
            name = np.dtype(dtype).name
        except TypeError:
            name = text
    if name not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES} (or the torch dtypes), got {dtype!r}")
    return name


#: smallest non-zero magnitude of drawn weights and inputs per dtype: its cube is a normal
#: number (1e-300 in float64, 1e-36 in float32, whose smallest normal is 1.2e-38), so products
#: x w and squares w^2 stay normal, and so does one more layer's product; 1e-100 underflows to 0
#: in float32
MIN_MAGNITUDE = {"float64": 1e-100, "float32": 1e-12}


def min_magnitude(dtype: Any = "float64") -> float:
    """Smallest non-zero magnitude of drawn weights and inputs in ``dtype`` (:data:`MIN_MAGNITUDE`)."""
    return MIN_MAGNITUDE[dtype_name(dtype)]


#: smallest non-zero magnitude of drawn float64 weights and inputs (:func:`min_magnitude`)
TINY = min_magnitude("float64")


def _representable(value: float, width: int, inward: float) -> float:
    """``value`` as a float of ``width`` bits, rounded towards ``inward``'s side."""
    if width == 64:
        return value
    rounded = float(np.float32(value))
    if (rounded - value) * (inward - value) < 0:  # rounded outwards: one step back in
        rounded = float(np.nextafter(np.float32(rounded), np.float32(inward)))
    return rounded


def _floats(low: float, high: float, width: int = 64) -> st.SearchStrategy[float]:
    low, high = _representable(low, width, high), _representable(high, width, low)
    return st.floats(low, high, allow_nan=False, allow_infinity=False, allow_subnormal=False, width=width)


def _width(dtype: Any) -> int:
    return 32 if dtype_name(dtype) == "float32" else 64


def _array(shape, low: float, high: float, dtype: Any = "float64") -> st.SearchStrategy[np.ndarray]:
    width = _width(dtype)
    return hnp.arrays(np.float64, shape, elements=_floats(low, high, width))


def _signed(low: float, high: float, dtype: Any = "float64") -> st.SearchStrategy[float]:
    """0 or a value in [low, high] of magnitude >= min_magnitude(dtype) (no underflow in w^2 or x w)."""
    tiny, width = min_magnitude(dtype), _width(dtype)
    parts = [st.just(0.0)]
    if high >= tiny:
        parts.append(_floats(max(low, tiny), high, width))
    if low <= -tiny:
        parts.append(_floats(low, min(high, -tiny), width))
    return st.one_of(*parts)


def _values(shape, low: float, high: float, dtype: Any = "float64") -> st.SearchStrategy[np.ndarray]:
    return hnp.arrays(np.float64, shape, elements=_signed(low, high, dtype))


def biases(size: int, kind: str = "mixed", dtype: Any = "float64") -> st.SearchStrategy[np.ndarray]:
    """Bias vectors of one sign kind (see :data:`BIAS_KINDS`), values representable in ``dtype``."""
    if kind not in BIAS_KINDS:
        raise ValueError(f"bias kind must be one of {BIAS_KINDS}, got {kind!r}")
    if kind == "zero":
        return st.just(np.zeros(size))
    ranges = {"mixed": (-1.0, 1.0), "positive": (1e-3, 1.0), "negative": (-1.0, -1e-3),
              "nonpositive": (-1.0, 0.0)}
    return _array((size,), *ranges[kind], dtype=dtype)


@st.composite
def dense_layers(draw, n_in: int, n_out: int, bias: str = "mixed", dtype: Any = "float64") -> Dense:
    """A dense layer with weights in [-2, 2] (w_ij layout (n_in, n_out)), representable in ``dtype``."""
    weight = draw(_values((n_in, n_out), -2.0, 2.0, dtype))
    return Dense(weight, draw(biases(n_out, bias, dtype)))


@st.composite
def _mlp(draw, bias: str, max_depth: int, max_width: int, dtype: Any = "float64"):
    n_in = draw(st.integers(1, max_width))
    widths = draw(st.lists(st.integers(1, max_width), min_size=0, max_size=max_depth - 1))
    n_out = draw(st.integers(1, 4))
    layers, previous = [], n_in
    for width in widths:
        layers += [draw(dense_layers(previous, width, bias, dtype)), ReLU()]
        previous = width
    layers.append(draw(dense_layers(previous, n_out, bias, dtype)))
    return Sequential(layers, input_shape=(n_in,))


def _pool_types(pooling: bool | str | tuple | None) -> list[type]:
    if pooling is None or isinstance(pooling, bool):
        return [SumPool2d, AvgPool2d, MaxPool2d]
    names = (pooling,) if isinstance(pooling, str) else tuple(pooling)
    if not names or any(name not in POOLING for name in names):
        raise ValueError(f"pooling must be True, False, None, one of {tuple(POOLING)} or a tuple of them, "
                         f"got {pooling!r}")
    return [POOLING[name] for name in names]


@st.composite
def _convnet(draw, bias: str, pooling: bool | str | tuple | None, dtype: Any = "float64"):
    channels = draw(st.integers(1, 2))
    requested = pooling not in (None, False)
    if requested:
        # the convolution's output must hold a 2x2 window: (H + 2 p - k) // s + 1 >= 2
        kernel = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
        stride = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
        padding = (draw(st.integers(0, kernel[0] - 1)), draw(st.integers(0, kernel[1] - 1)))
        height, width = (draw(st.integers(max(3, k + s - 2 * p), 6)) for k, s, p in zip(kernel, stride, padding))
    else:
        height, width = draw(st.integers(3, 6)), draw(st.integers(3, 6))
        kernel = (draw(st.integers(1, min(3, height))), draw(st.integers(1, min(3, width))))
        stride = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
        padding = (draw(st.integers(0, kernel[0] - 1)), draw(st.integers(0, kernel[1] - 1)))
    out_channels = draw(st.integers(1, 3))
    conv = Conv2d(draw(_values((out_channels, channels, *kernel), -2.0, 2.0, dtype)),
                  draw(biases(out_channels, bias, dtype)), stride, padding)
    layers = [conv, ReLU()]
    shape = conv.output_shape((channels, height, width))
    use_pooling = draw(st.booleans()) if pooling is None else requested
    if use_pooling and shape[1] >= 2 and shape[2] >= 2:
        pool_type = draw(st.sampled_from(_pool_types(pooling)))
        pool_stride = draw(st.integers(1, 2))
        layers.append(pool_type(2, pool_stride))
        shape = layers[-1].output_shape(shape)
    layers.append(Flatten())
    n_out = draw(st.integers(1, 3))
    layers.append(draw(dense_layers(int(np.prod(shape)), n_out, bias, dtype)))
    return Sequential(layers, input_shape=(channels, height, width))


def networks(kind: str | None = None, bias: str = "mixed", pooling: bool | str | tuple | None = None,
             max_depth: int = 3, max_width: int = 6, dtype: Any = "float64") -> st.SearchStrategy[Sequential]:
    """Random ReLU networks with ``input_shape`` set.

    Parameters
    ----------
    kind : {"mlp", "conv"} or None
        None draws either.
    bias : str
        Sign kind of every bias (:data:`BIAS_KINDS`).
    pooling : bool, {"max", "avg", "sum"}, a tuple of them, or None
        Conv networks: always a 2x2 pooling layer (True: any of the three types; a name or a
        tuple of names: one of those types), never (False), or sometimes (None). When asked for,
        it is always there: the convolution is drawn so that its output holds a 2x2 window.
    max_depth, max_width : int
        MLP: at most this many Dense layers, each at most this wide.
    dtype : "float64", "float32" or a torch dtype
        Every weight and bias is a number of this type (kept as float64 in the layers).
    """
    dtype_name(dtype)
    _pool_types(pooling)
    mlp = _mlp(bias, max_depth, max_width, dtype)
    conv = _convnet(bias, pooling, dtype)
    if kind == "mlp":
        return mlp
    if kind == "conv":
        return conv
    if kind is not None:
        raise ValueError(f"kind must be 'mlp', 'conv' or None, got {kind!r}")
    return st.one_of(mlp, conv)


@st.composite
def boxes(draw, shape) -> tuple[np.ndarray, np.ndarray]:
    """(lower, upper) of ``shape`` with lower in [-2, 1] and upper - lower in [0.25, 3]."""
    lower = draw(_array(shape, -2.0, 1.0))
    return lower, lower + draw(_array(shape, 0.25, 3.0))


@st.composite
def inputs(draw, shape, domain: str = "R^n", lower=None, upper=None, batch: int | None = None,
           dtype: Any = "float64") -> np.ndarray:
    """One input of ``shape`` in the domain, or with ``batch`` a batch (batch, *shape); zeros
    appear often in the orthant (ReLU-like). Values are numbers of ``dtype`` (a box input is
    rounded into the box in that type)."""
    if batch is not None:
        if not isinstance(batch, int) or batch < 1:
            raise ValueError(f"batch must be a positive integer or None, got {batch!r}")
        shape = (batch, *shape)
    if domain == "R^n":
        return draw(_values(shape, -3.0, 3.0, dtype))
    if domain == "orthant":
        values = draw(_values(shape, 0.0, 3.0, dtype))
        mask = draw(hnp.arrays(np.bool_, shape))
        return np.where(mask, 0.0, values)
    if domain == "box":
        if lower is None or upper is None:
            raise ValueError("a box input needs lower and upper")
        fraction = draw(_array(shape, 0.0, 1.0))
        x = np.clip(lower + fraction * (upper - lower), lower, upper)
        if dtype_name(dtype) == "float32":  # round to float32 and back into the box
            x32 = x.astype(np.float32)
            x32 = np.where(x32 < lower, np.nextafter(x32, np.float32(np.inf)), x32)
            x32 = np.where(x32 > upper, np.nextafter(x32, np.float32(-np.inf)), x32)
            x = x32.astype(np.float64)
        return x
    raise ValueError(f"domain must be one of {DOMAINS}, got {domain!r}")


def with_positive_output(network: Sequential, x: np.ndarray, margin: float = 0.5,
                         dtype: Any = "float64") -> Sequential:
    """``network`` with its last Dense layer's bias raised by one constant so that every sample's
    largest output is >= ``margin`` (adding a constant to every logit keeps the largest one).
    The new bias is rounded to ``dtype``, within the extra 1 of slack the shift adds."""
    batch = x if x.shape != tuple(network.input_shape) else x[None]
    top = network.forward(batch).max(axis=1).min()
    if top >= margin:
        return network
    last = network.layers[-1]
    bias = (last.bias + (margin - top + 1.0)).astype(dtype_name(dtype)).astype(np.float64)
    layers = list(network.layers[:-1]) + [Dense(last.weight, bias)]
    return Sequential(layers, input_shape=network.input_shape)


@st.composite
def networks_with_inputs(draw, domain: str = "R^n", batch: int | None = None, positive_output: bool = False,
                         dtype: Any = "float64", **network_options: Any):
    """(network, x, lower, upper): x is one sample in the domain (with ``batch``, a batch of
    them); bounds None unless "box". ``positive_output``: every sample's largest output, the one
    explained by default, is >= 1/2 (:func:`with_positive_output`), as deep Taylor assumes."""
    network = draw(networks(dtype=dtype, **network_options))
    lower = upper = None
    if domain == "box":
        lower, upper = draw(boxes(network.input_shape))
    x = draw(inputs(network.input_shape, domain, lower, upper, batch=batch, dtype=dtype))
    if positive_output:
        network = with_positive_output(network, x, dtype=dtype)
    return network, x, lower, upper


@st.composite
def torch_networks(draw, kind: str | None = None, dtype: Any = "float32", batch: int | tuple[int, int] = (1, 4),
                   domain: str = "R^n", positive_output: bool = True, **network_options: Any):
    """(torch module, input tensor): a network of :func:`networks` as a torch module (eval mode,
    :func:`lrp_num.io.torch_bridge.to_torch`) and a batch of inputs in ``domain``, both in
    ``dtype`` (float32 by default; every weight and input is exactly a number of that type).

    Parameters
    ----------
    kind, **network_options
        As :func:`networks` (``pooling="max"``, ``bias="nonpositive"``, ...).
    dtype : torch dtype or name
        torch.float32 or torch.float64.
    batch : int or (low, high)
        The batch size, or the range it is drawn from.
    domain : {"R^n", "orthant"}
        Where the inputs lie.
    positive_output : bool
        Every sample's largest output is >= 1/2 (default True: the explained output is positive,
        as deep Taylor decomposition assumes).
    """
    import torch

    from lrp_num.io.torch_bridge import to_torch

    name = dtype_name(dtype)
    size = batch if isinstance(batch, int) else draw(st.integers(*batch))
    if domain == "box":
        raise ValueError("torch_networks draws inputs in 'R^n' or 'orthant'; draw a box with networks_with_inputs")
    network, x, _, _ = draw(networks_with_inputs(domain=domain, batch=size, positive_output=positive_output,
                                                 dtype=name, kind=kind, **network_options))
    torch_dtype = getattr(torch, name)
    return to_torch(network, dtype=torch_dtype), torch.tensor(x, dtype=torch_dtype)


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


#: the norms of :func:`transformer_graphs` by name (None: no norm)
TRANSFORMER_NORMS = {"layernorm": LayerNorm, "rmsnorm": RMSNorm, None: None}
#: the MLP activations of :func:`transformer_graphs` by name
TRANSFORMER_ACTIVATIONS = {"gelu": GELU, "silu": SiLU, "tanh": Tanh, "sigmoid": Sigmoid}
#: where a block's norms sit: before each part (pre-norm, ViT) or after each skip sum (post-norm)
NORM_PLACEMENTS = ("pre", "post")


def _choices(value: Any, known: tuple, what: str) -> list:
    """``value`` as a list of allowed choices: None (all of ``known``), one choice or a tuple."""
    if value is None:
        return list(known)
    chosen = list(value) if isinstance(value, (tuple, list)) else [value]
    if not chosen or any(item not in known for item in chosen):
        raise ValueError(f"{what} must be one of {known}, a tuple of them or None, got {value!r}")
    return chosen


#: smallest non-zero magnitude of the parameters and inputs of :func:`transformer_graphs`: tame
#: values (a weight of 1e-38 makes relevance of 1e-38 next to relevance of order 1), zeros kept
TRANSFORMER_MIN_MAGNITUDE = 1e-3


def _tame(shape, limit: float, dtype: Any) -> st.SearchStrategy[np.ndarray]:
    """Arrays of 0 or values of either sign with magnitude in [TRANSFORMER_MIN_MAGNITUDE, limit]."""
    width, low = _width(dtype), TRANSFORMER_MIN_MAGNITUDE
    element = st.one_of(st.just(0.0), _floats(low, limit, width), _floats(-limit, -low, width))
    return hnp.arrays(np.float64, shape, elements=element)


def _token_dense(draw, n_in: int, n_out: int, dtype: Any) -> tuple[np.ndarray, np.ndarray]:
    """(weight (n_in, n_out), bias): weights of either sign in [-1.5, 1.5] / sqrt(n_in) in
    magnitude (zeros included), so that activations stay of order 1 over blocks."""
    limit = 1.5 / np.sqrt(n_in)
    return draw(_tame((n_in, n_out), limit, dtype)), draw(_tame((n_out,), 0.5, dtype))


def _norm_node(draw, kind: str | None, width: int, name: str, source: str, dtype: Any) -> tuple[list, str]:
    if kind is None:
        return [], source
    scale = draw(_tame((width,), 1.5, dtype))  # either sign: a scale of 0 drops a feature
    if kind == "rmsnorm":
        return [(name, RMSNorm(scale, eps=1e-6), (source,))], name
    return [(name, LayerNorm(scale, draw(_tame((width,), 0.5, dtype)), eps=1e-5), (source,))], name


@st.composite
def _transformer_block(draw, name: str, source: str, width: int, norm: str | None, placement: str,
                       activations: list, gating: list, skip: bool, dtype: Any) -> tuple[list, str]:
    """The nodes of one block and its output node (see :func:`transformer_graphs`)."""
    heads = draw(st.sampled_from([h for h in (1, 2) if width % h == 0]))
    nodes, current = [], source
    if placement == "pre":
        extra, current = _norm_node(draw, norm, width, f"{name}.norm1", current, dtype)
        nodes += extra
    attention, attended = multi_head_attention(f"{name}.attn", current, heads,
                                               *(_token_dense(draw, width, width, dtype) for _ in range(4)))
    nodes += attention
    if skip:
        nodes.append((f"{name}.skip1", Add(), (source, attended)))
        attended = f"{name}.skip1"
    if placement == "post":
        extra, attended = _norm_node(draw, norm, width, f"{name}.norm1", attended, dtype)
        nodes += extra
    current = attended
    if placement == "pre":
        extra, current = _norm_node(draw, norm, width, f"{name}.norm2", current, dtype)
        nodes += extra
    hidden = draw(st.integers(2, 8))
    activation = TRANSFORMER_ACTIVATIONS[draw(st.sampled_from(activations))]
    nodes += [(f"{name}.mlp.fc1", TokenDense(*_token_dense(draw, width, hidden, dtype)), (current,)),
              (f"{name}.mlp.act", activation(), (f"{name}.mlp.fc1",))]
    inner = f"{name}.mlp.act"
    if draw(st.sampled_from(gating)):  # GLU-style: act(x W_1) * (x W_g)
        nodes += [(f"{name}.mlp.gate", TokenDense(*_token_dense(draw, width, hidden, dtype)), (current,)),
                  (f"{name}.mlp.gated", Multiply(), (inner, f"{name}.mlp.gate"))]
        inner = f"{name}.mlp.gated"
    nodes.append((f"{name}.mlp.fc2", TokenDense(*_token_dense(draw, hidden, width, dtype)), (inner,)))
    out = f"{name}.mlp.fc2"
    if skip:
        nodes.append((f"{name}.skip2", Add(), (attended, out)))
        out = f"{name}.skip2"
    if placement == "post":
        extra, out = _norm_node(draw, norm, width, f"{name}.norm2", out, dtype)
        nodes += extra
    return nodes, out


def transformer_graphs(norm: Any = "any", placement: Any = None, activation: Any = None,
                       gating: bool | None = None, skip: bool | None = True, max_tokens: int = 5,
                       max_width: int = 8, max_depth: int = 2, dtype: Any = "float64",
                       with_inputs: bool = False,
                       batch: int | tuple[int, int] = (1, 2)) -> st.SearchStrategy:
    """Small random transformers as a :class:`~lrp_num.engine.graph.Graph` on tokens (T, D).

    Each of 1 to ``max_depth`` blocks is multi-head self-attention
    (:func:`~lrp_num.layers.attention.multi_head_attention`: softmax(Q_h K_h^T / sqrt(d)) V_h,
    1 or 2 heads dividing D) and a token-wise MLP W_2 g(x W_1) (GELU, SiLU, Tanh or Sigmoid
    g; gated: W_2 (g(x W_1) * x W_g), a Multiply node), each part with a skip connection (an
    Add node) and a norm (LayerNorm or RMSNorm with a scale of either sign, or none) before it
    (pre-norm, ViT) or after the skip sum (post-norm, the original transformer, Vaswani et al.
    2017). The head flattens the tokens and applies a Dense layer (1 to 3 outputs).

    Weights of either sign lie in [-1.5, 1.5] / sqrt(n_in) and biases in [-0.5, 0.5], zeros
    included and other magnitudes at least :data:`TRANSFORMER_MIN_MAGNITUDE`, so that every
    value stays of order 1 (the float64 reference well-conditioned) while negative logits,
    negative attention scores, cancelling skip sums and zero activations still occur; values
    are numbers of ``dtype``.

    Parameters
    ----------
    norm : {"any", "layernorm", "rmsnorm", None} or a tuple of them
        The norm of every block (None: no norm); "any" (the default) draws one of the three per
        block, a tuple one of those.
    placement : {"pre", "post"} or a tuple, optional
        Where the norms sit (:data:`NORM_PLACEMENTS`); default: either.
    activation : {"gelu", "silu", "tanh", "sigmoid"} or a tuple, optional
        The MLP's nonlinearity (:data:`TRANSFORMER_ACTIVATIONS`); default: any.
    gating : bool, optional
        Always (True) or never (False) a gated MLP; default: either.
    skip : bool, optional
        Skip connections around both parts (default True); None draws it, False never.
    max_tokens, max_width, max_depth : int
        T in [2, max_tokens], D in [2, max_width], 1 to max_depth blocks.
    dtype : "float64", "float32" or a torch dtype
        Every parameter (and input) is a number of this type (kept as float64 in the graph).
    with_inputs : bool
        Draw (graph, x) instead: x a batch (batch, T, D) with entries in [-2, 2], zeros included.
    batch : int or (low, high)
        With ``with_inputs``: the batch size, or the range it is drawn from.

    Returns
    -------
    Graph, or (Graph, ndarray) with ``with_inputs``
        ``graph.input_shape`` is (T, D); node names follow ``block{k}.attn.q``, ``block{k}.norm1``,
        ``block{k}.mlp.fc1``, ``head``.
    """
    norms = _choices(None if norm == "any" else (norm,) if norm is None else norm, tuple(TRANSFORMER_NORMS),
                     "norm")
    placements = _choices(placement, NORM_PLACEMENTS, "placement")
    activations = _choices(activation, tuple(TRANSFORMER_ACTIVATIONS), "activation")
    gatings = [False, True] if gating is None else [bool(gating)]
    skips = [False, True] if skip is None else [bool(skip)]
    dtype_name(dtype)
    return _transformer_graphs(norms, placements, activations, gatings, skips, max_tokens, max_width, max_depth,
                               dtype, with_inputs, batch)


@st.composite
def _transformer_graphs(draw, norms: list, placements: list, activations: list, gatings: list, skips: list,
                        max_tokens: int, max_width: int, max_depth: int, dtype: Any, with_inputs: bool, batch):
    tokens, width = draw(st.integers(2, max(2, max_tokens))), draw(st.integers(2, max(2, max_width)))
    nodes, current = [], "input"
    for k in range(draw(st.integers(1, max(1, max_depth)))):
        block, current = draw(_transformer_block(f"block{k}", current, width, draw(st.sampled_from(norms)),
                                                 draw(st.sampled_from(placements)), activations, gatings,
                                                 draw(st.sampled_from(skips)), dtype))
        nodes += block
    n_out = draw(st.integers(1, 3))
    head = Dense(*_token_dense(draw, tokens * width, n_out, dtype))
    nodes += [("flatten", Flatten(), (current,)), ("head", head, ("flatten",))]
    graph = Graph(nodes, input_shape=(tokens, width))
    if not with_inputs:
        return graph
    size = batch if isinstance(batch, int) else draw(st.integers(*batch))
    return graph, draw(_tame((size, tokens, width), 2.0, dtype))


def transformer_graphs_with_inputs(**options: Any) -> st.SearchStrategy:
    """(graph, x): :func:`transformer_graphs` with ``with_inputs=True`` (same options)."""
    return transformer_graphs(with_inputs=True, **options)


__all__ = ["BIAS_KINDS", "DOMAINS", "DTYPES", "MIN_MAGNITUDE", "NORM_PLACEMENTS", "POOLING", "TINY",
           "TRANSFORMER_ACTIVATIONS", "TRANSFORMER_MIN_MAGNITUDE", "TRANSFORMER_NORMS", "biases", "boxes",
           "dense_layers", "dtype_name",
           "inputs", "min_magnitude", "near_zero_layers", "networks", "networks_with_inputs", "residual_networks",
           "torch_networks", "transformer_graphs", "transformer_graphs_with_inputs", "with_positive_output"]
