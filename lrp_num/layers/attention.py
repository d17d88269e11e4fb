"""Operations of attention: softmax, products of two activations, head split/merge, token-wise dense.

* :class:`Softmax` s = softmax(x) along a non-batch axis;
* :class:`Multiply` y = a * b of two tensors of one shape (gating);
* :class:`MatMul` C = scale * A B (or scale * A B^T with ``transpose_b``, for Q K^T / sqrt(d))
  on the last two axes, batched over the leading ones;
* :class:`SplitHeads` (N, T, H*d) -> (N, H, T, d) and :class:`MergeHeads` (N, H, T, d) ->
  (N, T, H*d): they only move values, so relevance is moved back;
* :class:`TokenDense` z = x W + b applied to every token of (N, T, n_in): a :class:`Dense` whose
  operator acts on the last axis (so every rule of a Dense layer applies).

Their relevance rules (AttnLRP, Achtibat et al. 2024, ICML: softmax Prop. 3.1, products
Prop. 3.3) are derived in ``derivations/softmax.py``, ``product_uniform.py`` and
``matmul_epsilon.py``; the engine applies the generated kernels. :func:`multi_head_attention`
builds a self-attention block as graph nodes.
"""

from __future__ import annotations

import math

import numpy as np

from lrp_num.checks import as_float_array, batch_input, is_float_batch, require_finite
from lrp_num.errors import ShapeError
from lrp_num.layers.dense import Dense


def _checked_arrays(layer: object, inputs: tuple, check_finite: bool, count: int) -> list[np.ndarray]:
    if len(inputs) != count:
        raise ShapeError(f"{layer!r} takes {count} input(s), got {len(inputs)}")
    arrays = [as_float_array(a, f"input of {layer!r}") for a in inputs]
    if any(a.ndim < 2 for a in arrays):
        raise ShapeError(f"{layer!r} expects batches (N, ...), got shapes {[a.shape for a in arrays]}")
    if check_finite:
        for a in arrays:
            require_finite(a, f"input of {layer!r}")
    if len({a.shape[0] for a in arrays}) != 1:
        raise ShapeError(f"{layer!r}: inputs have different batch sizes {[a.shape[0] for a in arrays]}")
    layer.output_shape(*(a.shape[1:] for a in arrays))
    dtype = np.result_type(*arrays)
    return [a.astype(dtype, copy=False) for a in arrays]


class Softmax:
    """s_i = exp(x_i) / sum_k exp(x_k) along ``axis`` (a non-batch axis; -1 the last).

    Parameters
    ----------
    axis : int
        >= 1, or negative counted from the end (the batch axis 0 is refused).
    """

    n_parameters = 0

    def __init__(self, axis: int = -1) -> None:
        if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)) or axis == 0:
            raise ShapeError(f"Softmax axis must be a non-zero int (axis 0 is the batch), got {axis!r}")
        self.axis = int(axis)

    def __repr__(self) -> str:
        return f"Softmax(axis={self.axis})"

    def sample_axis(self, ndim: int) -> int:
        """The softmax axis within one sample of rank ``ndim``."""
        axis = self.axis - 1 if self.axis > 0 else ndim + self.axis
        if not 0 <= axis < ndim:
            raise ShapeError(f"{self!r} does not fit inputs of rank {ndim} per sample")
        return axis

    def batch_axis(self, ndim: int) -> int:
        """The softmax axis of a batch whose samples have rank ``ndim``."""
        return self.sample_axis(ndim) + 1

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        self.sample_axis(len(input_shape))
        return tuple(input_shape)

    def __call__(self, x: np.ndarray, check_finite: bool = True) -> np.ndarray:
        (x,) = _checked_arrays(self, (x,), check_finite, 1)
        axis = self.batch_axis(x.ndim - 1)
        shifted = np.exp(x - x.max(axis=axis, keepdims=True))
        return shifted / shifted.sum(axis=axis, keepdims=True)


class Multiply:
    """y = a * b, element by element, of two tensors of one shape (gating)."""

    n_parameters = 0

    def __repr__(self) -> str:
        return "Multiply()"

    def output_shape(self, *input_shapes: tuple[int, ...]) -> tuple[int, ...]:
        if len(input_shapes) != 2:
            raise ShapeError(f"Multiply takes two inputs, got {len(input_shapes)}")
        if tuple(input_shapes[0]) != tuple(input_shapes[1]):
            raise ShapeError(f"Multiply needs inputs of one shape, got {tuple(input_shapes[0])} "
                             f"and {tuple(input_shapes[1])}")
        return tuple(input_shapes[0])

    def __call__(self, a: np.ndarray, b: np.ndarray, check_finite: bool = True) -> np.ndarray:
        a, b = _checked_arrays(self, (a, b), check_finite, 2)
        return a * b


class MatMul:
    """C = scale * A B on the last two axes (A B^T with ``transpose_b``), batched over the rest.

    Parameters
    ----------
    transpose_b : bool
        Multiply by B^T (Q K^T: both inputs are (..., tokens, d)).
    scale : float
        A constant factor, e.g. 1 / sqrt(d) for attention scores; finite and non-zero.
    """

    n_parameters = 0

    def __init__(self, transpose_b: bool = False, scale: float = 1.0) -> None:
        if not isinstance(transpose_b, (bool, np.bool_)):
            raise ShapeError(f"MatMul transpose_b must be a bool, got {transpose_b!r}")
        try:
            scale = float(scale)
        except (TypeError, ValueError):
            raise ShapeError(f"MatMul scale must be a number, got {scale!r}") from None
        if not math.isfinite(scale) or scale == 0:
            raise ShapeError(f"MatMul scale must be finite and non-zero, got {scale!r}")
        self.transpose_b, self.scale = bool(transpose_b), scale

    def __repr__(self) -> str:
        extra = ", transpose_b=True" if self.transpose_b else ""
        extra += f", scale={self.scale!r}" if self.scale != 1.0 else ""
        return f"MatMul({extra[2:]})"

    def output_shape(self, *input_shapes: tuple[int, ...]) -> tuple[int, ...]:
        if len(input_shapes) != 2:
            raise ShapeError(f"MatMul takes two inputs, got {len(input_shapes)}")
        a, b = (tuple(s) for s in input_shapes)
        if len(a) < 2 or len(a) != len(b) or a[:-2] != b[:-2]:
            raise ShapeError(f"{self!r} needs two inputs of one rank >= 2 per sample with the same "
                             f"leading axes, got {a} and {b}")
        inner, columns = (b[-1], b[-2]) if self.transpose_b else (b[-2], b[-1])
        if a[-1] != inner:
            raise ShapeError(f"{self!r}: inner sizes differ, {a} and {b}")
        return a[:-1] + (columns,)

    def __call__(self, a: np.ndarray, b: np.ndarray, check_finite: bool = True) -> np.ndarray:
        a, b = _checked_arrays(self, (a, b), check_finite, 2)
        right = np.swapaxes(b, -1, -2) if self.transpose_b else b
        return self.scaled_first(a) @ right

    def scaled_first(self, a):
        """scale * A, the first factor the product is taken of: C = (scale A) B, in this order,
        is what the forward pass computes and what the matrix-product rule is given (so that
        the C it may take from the forward pass is the C it would compute)."""
        return a if self.scale == 1.0 else a * self.scale


class SplitHeads:
    """(N, T, H*d) -> (N, H, T, d): the heads of multi-head attention (values moved, not changed).

    Parameters
    ----------
    heads : int
        H >= 1; the feature size must be a multiple of it.
    """

    n_parameters = 0

    def __init__(self, heads: int) -> None:
        if isinstance(heads, bool) or not isinstance(heads, (int, np.integer)) or heads < 1:
            raise ShapeError(f"SplitHeads heads must be an int >= 1, got {heads!r}")
        self.heads = int(heads)

    def __repr__(self) -> str:
        return f"SplitHeads({self.heads})"

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        if len(input_shape) != 2 or input_shape[1] % self.heads:
            raise ShapeError(f"{self!r} needs (tokens, features) with features a multiple of "
                             f"{self.heads}, got {tuple(input_shape)}")
        tokens, features = input_shape
        return (self.heads, tokens, features // self.heads)

    def __call__(self, x: np.ndarray, check_finite: bool = True) -> np.ndarray:
        (x,) = _checked_arrays(self, (x,), check_finite, 1)
        return self.apply(x)

    def apply(self, x):
        """The split on any array library's batch (N, T, H*d)."""
        n, tokens, features = x.shape
        return _permute(_reshape(x, (n, tokens, self.heads, features // self.heads)), (0, 2, 1, 3))

    def back(self, r):
        """Relevance (N, H, T, d) moved back to (N, T, H*d) (the inverse of :meth:`apply`)."""
        n, heads, tokens, d = r.shape
        return _reshape(_permute(r, (0, 2, 1, 3)), (n, tokens, heads * d))


class MergeHeads:
    """(N, H, T, d) -> (N, T, H*d): the heads concatenated again, per token."""

    n_parameters = 0

    def __repr__(self) -> str:
        return "MergeHeads()"

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        if len(input_shape) != 3:
            raise ShapeError(f"MergeHeads needs (heads, tokens, d), got {tuple(input_shape)}")
        heads, tokens, d = input_shape
        return (tokens, heads * d)

    def __call__(self, x: np.ndarray, check_finite: bool = True) -> np.ndarray:
        (x,) = _checked_arrays(self, (x,), check_finite, 1)
        return self.apply(x)

    def apply(self, x):
        n, heads, tokens, d = x.shape
        return _reshape(_permute(x, (0, 2, 1, 3)), (n, tokens, heads * d))

    def back(self, r, heads: int):
        """Relevance (N, T, H*d) moved back to (N, H, T, d) (the inverse of :meth:`apply`)."""
        n, tokens, features = r.shape
        return _permute(_reshape(r, (n, tokens, heads, features // heads)), (0, 2, 1, 3))


def _reshape(x, shape):
    if isinstance(x, np.ndarray):
        return x.reshape(shape)
    import array_api_compat

    return array_api_compat.array_namespace(x).reshape(x, shape)


def _permute(x, axes):
    if isinstance(x, np.ndarray):
        return np.ascontiguousarray(np.transpose(x, axes))
    import array_api_compat

    return array_api_compat.array_namespace(x).permute_dims(x, axes)


class TokenDense(Dense):
    """z = x W + b on every token of (N, T, n_in) -> (N, T, n_out) (a ``torch.nn.Linear`` on a
    sequence). Its operator acts on the last axis, so every rule of a Dense layer applies,
    token by token.

    Parameters
    ----------
    weight : array_like, shape (n_in, n_out)
    bias : array_like, shape (n_out,), optional
    """

    def __repr__(self) -> str:
        return f"TokenDense({self.n_in} -> {self.n_out})"

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        if len(input_shape) != 2 or input_shape[1] != self.n_in:
            raise ShapeError(f"{self!r} expects inputs of shape (tokens, {self.n_in}), got "
                             f"{tuple(input_shape)}")
        return (input_shape[0], self.n_out)

    def transpose(self, s: np.ndarray, g: str = "identity") -> np.ndarray:
        if not is_float_batch(s, 3):
            s = batch_input(s, f"{self!r} transpose", ndim=3, check_finite=False)
        if s.shape[2] != self.n_out:
            raise ShapeError(f"{self!r} transpose expects (N, T, {self.n_out}), got {s.shape}")
        return s @ self._weights.get(g, s.dtype).T

    def _checked(self, x: object, check_finite: bool) -> np.ndarray:
        if check_finite or not is_float_batch(x, 3):
            x = batch_input(x, repr(self), ndim=3, check_finite=check_finite)
        if x.shape[2] != self.n_in:
            raise ShapeError(f"{self!r} expects inputs of shape (N, T, {self.n_in}), got {x.shape}")
        return x


def multi_head_attention(name: str, source: str, heads: int, query: tuple, key: tuple,
                         value: tuple, out: tuple) -> tuple[list[tuple], str]:
    """The graph nodes of multi-head self-attention on tokens (N, T, D), and its output node.

    softmax(Q_h K_h^T / sqrt(d)) V_h per head h, the heads merged and projected:
    ``{name}.q/.k/.v`` (TokenDense), ``.q_heads/.k_heads/.v_heads`` (SplitHeads), ``.scores``
    (MatMul with transpose_b and scale 1/sqrt(d)), ``.attention`` (Softmax over keys),
    ``.context`` (MatMul), ``.merged`` (MergeHeads), ``.out`` (TokenDense).

    Parameters
    ----------
    name : str
        Prefix of the node names.
    source : str
        The node (or graph input) holding the tokens (N, T, D).
    heads : int
        Number of heads H; D_model = query weight's n_out must be a multiple of it.
    query, key, value, out : (weight, bias)
        Weights in the w_ij layout (n_in, n_out) and biases (n_out,) or None
        (:meth:`Dense.from_torch_layout` converts torch's (n_out, n_in)).

    Returns
    -------
    nodes : list of (name, operation, inputs)
        To pass to :class:`~lrp_num.engine.graph.Graph` with the rest of a model.
    output : str
        The name of the block's output node.
    """
    q, k, v, o = (TokenDense(*pair) for pair in (query, key, value, out))
    if q.n_out != k.n_out or q.n_out % heads:
        raise ShapeError(f"multi_head_attention: query and key widths {q.n_out}, {k.n_out} must agree "
                         f"and be a multiple of heads = {heads}")
    d = q.n_out // heads
    nodes = [
        (f"{name}.q", q, (source,)), (f"{name}.k", k, (source,)), (f"{name}.v", v, (source,)),
        (f"{name}.q_heads", SplitHeads(heads), (f"{name}.q",)),
        (f"{name}.k_heads", SplitHeads(heads), (f"{name}.k",)),
        (f"{name}.v_heads", SplitHeads(heads), (f"{name}.v",)),
        (f"{name}.scores", MatMul(transpose_b=True, scale=1.0 / math.sqrt(d)),
         (f"{name}.q_heads", f"{name}.k_heads")),
        (f"{name}.attention", Softmax(axis=-1), (f"{name}.scores",)),
        (f"{name}.context", MatMul(), (f"{name}.attention", f"{name}.v_heads")),
        (f"{name}.merged", MergeHeads(), (f"{name}.context",)),
        (f"{name}.out", o, (f"{name}.merged",)),
    ]
    return nodes, f"{name}.out"


def transformer_block(name: str, source: str, heads: int, attention: dict, norms: tuple, mlp: tuple,
                      eps: float = 1e-5) -> tuple[list[tuple], str]:
    """The graph nodes of a pre-norm transformer block on tokens (N, T, D), and its output node.

    y = x + MHA(LN_1(x)),  out = y + W_2 GELU(W_1 LN_2(y))  (the ViT block; skip connections are
    Add nodes, the norms LayerNorm over the features, GELU the exact form).

    Parameters
    ----------
    name, source, heads
        As in :func:`multi_head_attention`.
    attention : dict
        ``query``, ``key``, ``value``, ``out``: (weight (n_in, n_out), bias) pairs.
    norms : ((weight, bias), (weight, bias))
        The two LayerNorms' scale and shift, (D,) each.
    mlp : ((weight, bias), (weight, bias))
        The MLP's two token-wise layers, w_ij layout.
    eps : float
        The LayerNorms' epsilon.
    """
    from lrp_num.layers.branching import Add
    from lrp_num.layers.nonlinear import GELU
    from lrp_num.layers.normalization import LayerNorm

    (w1, b1), (w2, b2) = norms
    nodes = [(f"{name}.norm1", LayerNorm(w1, b1, eps), (source,))]
    block, attended = multi_head_attention(f"{name}.attn", f"{name}.norm1", heads, attention["query"],
                                           attention["key"], attention["value"], attention["out"])
    nodes += block
    (m1, c1), (m2, c2) = mlp
    nodes += [
        (f"{name}.skip1", Add(), (source, attended)),
        (f"{name}.norm2", LayerNorm(w2, b2, eps), (f"{name}.skip1",)),
        (f"{name}.mlp.fc1", TokenDense(m1, c1), (f"{name}.norm2",)),
        (f"{name}.mlp.gelu", GELU(), (f"{name}.mlp.fc1",)),
        (f"{name}.mlp.fc2", TokenDense(m2, c2), (f"{name}.mlp.gelu",)),
        (f"{name}.skip2", Add(), (f"{name}.skip1", f"{name}.mlp.fc2")),
    ]
    return nodes, f"{name}.skip2"
