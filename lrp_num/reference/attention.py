"""The reference for attention nodes: softmax, products, head split/merge, in mpmath by definition.

Shares no code with the generated kernels (:mod:`lrp_num._generated`): every value is an mpf
computed from the definitions, on one sample's flattened values (C order):

* Softmax: s_j = exp(x_j) / sum_k exp(x_k) (mpmath.exp, no shift); relevance by the tangent of
  the relevance model f = sum_j c_j s_j, c_j = R_j / s_j, at x: R_i = x_i df/dx_i, the
  gradient formed from the Jacobian ds_j/dx_i = s_j (delta_ij - s_i) entry by entry; the
  bias beta = f(x) - sum_i x_i df/dx_i is recorded as absorbed (AttnLRP, Prop. 3.1);
* Multiply: the Shapley values of f(a, b) = a b with baseline 0, phi_a = ((f(a,0) - f(0,0)) +
  (f(a,b) - f(0,b))) / 2, times c = R / y (R / 2 each where y = 0, the limit);
* MatMul C = scale A B: for every entry C_ij and every k, R_k = z_k / (C_ij + eps sign C_ij) R_ij
  with z_k = scale A_ik B_kj (LRP-epsilon on the sum over k), then the Shapley split of the
  product z_k between its two factors; the stabiliser's share is recorded as absorbed;
* MatMul under ``matmul_cp`` (CP-LRP, Ali et al. 2022, Sec. 3): the input a Softmax node produces
  (the attention weights) is a constant; R_k as above, and the product z_k, a function f(u) of
  the free factor u alone, is expanded to first order at its root u = 0: the free factor
  receives c f'(0) u (c = R_k / z_k, f'(0) by mpmath.diff), the constant one nothing. Where no
  relevance arrives at the node, both inputs receive nothing whichever is constant;
* SplitHeads / MergeHeads move values and relevance by index.
"""

from __future__ import annotations

import itertools

import mpmath
import numpy as np

from lrp_num.errors import GraphError, UnknownRuleError, ZeroDenominatorError
from lrp_num.layers import MatMul, MergeHeads, Multiply, Softmax, SplitHeads

#: rule name -> (node type, its parameters' defaults) of the attention rules the reference knows
ATTENTION_RULES = {"softmax": (Softmax, {}), "product_uniform": (Multiply, {}),
                   "matmul_epsilon": (MatMul, {"epsilon": 1e-6}), "matmul_cp": (MatMul, {"epsilon": 1e-6})}
#: node types the reference evaluates here
OPERATIONS = (Softmax, Multiply, MatMul, SplitHeads, MergeHeads)


def _zeros(shape) -> np.ndarray:
    out = np.empty(shape, dtype=object)
    out[...] = mpmath.mpf(0)
    return out


def _sign(value) -> int:
    return 1 if value >= 0 else -1


def output_shape(operation, shapes: list[tuple[int, ...]]) -> tuple[int, ...]:
    """The per-sample output shape (the definitions' own arithmetic)."""
    shape = shapes[0]
    if isinstance(operation, Softmax):
        return shape
    if isinstance(operation, Multiply):
        if len(shapes) != 2 or shapes[0] != shapes[1]:
            from lrp_num.errors import ShapeError
            raise ShapeError(f"Multiply needs two inputs of one shape, got {shapes}")
        return shape
    if isinstance(operation, MatMul):
        a, b = shapes
        return a[:-1] + ((b[-2],) if operation.transpose_b else (b[-1],))
    if isinstance(operation, SplitHeads):
        return (operation.heads, shape[0], shape[1] // operation.heads)
    if isinstance(operation, MergeHeads):
        return (shape[1], shape[0] * shape[2])
    raise TypeError(f"{operation!r}")  # pragma: no cover


def _index_map(operation, shape: tuple[int, ...]) -> np.ndarray:
    """For SplitHeads / MergeHeads: output position -> input position (flattened)."""
    positions = np.arange(int(np.prod(shape))).reshape(shape)
    if isinstance(operation, SplitHeads):
        tokens, features = shape
        d = features // operation.heads
        return positions.reshape(tokens, operation.heads, d).transpose(1, 0, 2).ravel()
    heads, tokens, d = shape
    return positions.transpose(1, 0, 2).ravel()


def _rows(values: np.ndarray, shape: tuple[int, ...], axis: int) -> np.ndarray:
    """Flattened values as rows along ``axis`` (the softmax's), shape (rows, n)."""
    return np.moveaxis(values.reshape(shape), axis, -1).reshape(-1, shape[axis])


def _unrows(rows: np.ndarray, shape: tuple[int, ...], axis: int) -> np.ndarray:
    moved = list(shape)
    moved.append(moved.pop(axis))
    return np.moveaxis(rows.reshape(moved), -1, axis).ravel()


def _softmax_rows(rows: np.ndarray) -> np.ndarray:
    out = np.empty(rows.shape, dtype=object)
    for r, row in enumerate(rows):
        exps = [mpmath.exp(v) for v in row]
        total = mpmath.fsum(exps)
        out[r] = [e / total for e in exps]
    return out


def _matrices(values: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    return values.reshape((-1,) + tuple(shape[-2:]))


def forward(operation, inputs: list[np.ndarray], shapes: list[tuple[int, ...]]) -> np.ndarray:
    """The node's output for one sample, flattened, in mpmath."""
    if isinstance(operation, Softmax):
        axis = operation.sample_axis(len(shapes[0]))
        return _unrows(_softmax_rows(_rows(inputs[0], shapes[0], axis)), shapes[0], axis)
    if isinstance(operation, Multiply):
        return inputs[0] * inputs[1]
    if isinstance(operation, MatMul):
        a, b = _matrices(inputs[0], shapes[0]), _matrices(inputs[1], shapes[1])
        scale = mpmath.mpf(operation.scale)
        out = []
        for am, bm in zip(a, b):
            right = bm.T if operation.transpose_b else bm
            out.append([[scale * mpmath.fsum(am[i, k] * right[k, j] for k in range(am.shape[1]))
                         for j in range(right.shape[1])] for i in range(am.shape[0])])
        return np.array(out, dtype=object).ravel()
    return inputs[0][_index_map(operation, shapes[0])]


def gradient(operation, inputs: list[np.ndarray], shapes: list[tuple[int, ...]], g: np.ndarray) -> list[np.ndarray]:
    """The gradient of sum(g * output) with respect to each input (one sample, flattened)."""
    if isinstance(operation, Softmax):
        axis = operation.sample_axis(len(shapes[0]))
        s = _softmax_rows(_rows(inputs[0], shapes[0], axis))
        gr = _rows(g, shapes[0], axis)
        lower = np.empty(s.shape, dtype=object)
        for r in range(len(s)):
            n = s.shape[1]
            lower[r] = [mpmath.fsum(gr[r, j] * s[r, j] * ((1 if i == j else 0) - s[r, i]) for j in range(n))
                        for i in range(n)]
        return [_unrows(lower, shapes[0], axis)]
    if isinstance(operation, Multiply):
        return [g * inputs[1], g * inputs[0]]
    if isinstance(operation, MatMul):
        a, b = _matrices(inputs[0], shapes[0]), _matrices(inputs[1], shapes[1])
        out_shape = output_shape(operation, shapes)
        gm = _matrices(g, out_shape)
        scale = mpmath.mpf(operation.scale)
        ga, gb = _zeros(a.shape), _zeros(b.shape)
        for m in range(len(a)):
            right = b[m].T if operation.transpose_b else b[m]
            p, q = a[m].shape
            r = right.shape[1]
            for i, k, j in itertools.product(range(p), range(q), range(r)):
                ga[m, i, k] += scale * gm[m, i, j] * right[k, j]
                if operation.transpose_b:
                    gb[m, j, k] += scale * gm[m, i, j] * a[m, i, k]
                else:
                    gb[m, k, j] += scale * gm[m, i, j] * a[m, i, k]
        return [ga.ravel(), gb.ravel()]
    mapping = _index_map(operation, shapes[0])
    lower = _zeros(len(mapping))
    lower[mapping] = g
    return [lower]


def relevance(operation, rule: str, parameters, inputs: list[np.ndarray], shapes: list[tuple[int, ...]],
              upper: np.ndarray, trace, softmax_inputs: tuple[int, ...] = ()) -> list[np.ndarray]:
    """The relevance of each input of an attention node (one sample, flattened) by its rule's
    definition; ``trace`` (a LayerTrace) receives what the bias or the stabiliser absorbs.
    ``softmax_inputs``: the positions of the node's inputs that a Softmax node produces (the
    constant factor of ``matmul_cp``)."""
    kind, _ = ATTENTION_RULES.get(rule, (None, None))
    if kind is None or not isinstance(operation, kind):
        raise UnknownRuleError(f"the reference has no rule {rule!r} for {operation!r}; known: "
                               f"{', '.join(name for name, (k, _) in ATTENTION_RULES.items() if isinstance(operation, k))}")
    trace.parameters = dict(parameters)
    if isinstance(operation, Softmax):
        return [_softmax_relevance(operation, inputs[0], shapes[0], upper, trace)]
    if isinstance(operation, Multiply):
        return _product_relevance(inputs[0], inputs[1], upper)
    if rule == "matmul_cp":
        if all(value == 0 for value in upper):  # no entry carries relevance: nothing to split
            return [_zeros(len(inputs[0])), _zeros(len(inputs[1]))]
        if len(softmax_inputs) != 1:
            raise GraphError(f"{operation!r}: rule 'matmul_cp' holds the attention weights constant, but "
                             f"{'both inputs are' if softmax_inputs else 'neither input is'} produced by a "
                             "Softmax node, and relevance arrives at it")
        trace.parameters["held_input"] = softmax_inputs[0]
        return _matmul_constant_relevance(operation, inputs, shapes, upper, mpmath.mpf(parameters["epsilon"]),
                                          trace, softmax_inputs[0], bool(parameters.get("signed", 1.0)))
    return _matmul_relevance(operation, inputs, shapes, upper, mpmath.mpf(parameters["epsilon"]), trace,
                             bool(parameters.get("signed", 1.0)))


def _softmax_relevance(operation: Softmax, x: np.ndarray, shape, upper: np.ndarray, trace) -> np.ndarray:
    axis = operation.sample_axis(len(shape))
    xs, rs = _rows(x, shape, axis), _rows(upper, shape, axis)
    s = _softmax_rows(xs)
    lower = np.empty(xs.shape, dtype=object)
    absorbed = mpmath.mpf(0)
    n = xs.shape[1]
    for r in range(len(xs)):
        c = [rs[r, j] / s[r, j] for j in range(n)]  # the relevance model's constants
        grad = [mpmath.fsum(c[j] * s[r, j] * ((1 if i == j else 0) - s[r, i]) for j in range(n))
                for i in range(n)]
        lower[r] = [xs[r, i] * grad[i] for i in range(n)]
        model = mpmath.fsum(c[j] * s[r, j] for j in range(n))  # f(x) = sum_j R_j
        absorbed += model - mpmath.fsum(lower[r])  # the tangent's intercept, beta
    trace.absorbed_bias += absorbed
    return _unrows(lower, shape, axis)


def _shapley_share(a, b, relevance_ab):
    """c phi_a and c phi_b for f = a b, baseline 0, c = R / (a b) (R / 2 each where a b = 0)."""
    f = lambda u, v: u * v  # noqa: E731
    phi_a = ((f(a, 0) - f(0, 0)) + (f(a, b) - f(0, b))) / 2
    phi_b = ((f(0, b) - f(0, 0)) + (f(a, b) - f(a, 0))) / 2
    y = f(a, b)
    if y == 0:
        return relevance_ab / 2, relevance_ab / 2
    return relevance_ab * phi_a / y, relevance_ab * phi_b / y


def _product_relevance(a: np.ndarray, b: np.ndarray, upper: np.ndarray) -> list[np.ndarray]:
    ra, rb = _zeros(len(a)), _zeros(len(b))
    for index in range(len(a)):
        ra[index], rb[index] = _shapley_share(a[index], b[index], upper[index])
    return [ra, rb]


def _stabilised_entries(operation: MatMul, a, b, rm, epsilon, trace, signed: bool):
    """Every entry C_ij of matrix m with relevance R_ij != 0: (m, i, j, the second factor's column
    as a list over k, the products z_k = scale A_ik B_kj, the stabilised d = C_ij + eps sign C_ij),
    the stabiliser's share eps / d R_ij added to ``trace.absorbed_stabiliser``."""
    scale = mpmath.mpf(operation.scale)
    for m in range(len(a)):
        p, q = a[m].shape
        r = b[m].shape[0] if operation.transpose_b else b[m].shape[1]
        for i, j in itertools.product(range(p), range(r)):
            if rm[m, i, j] == 0:
                continue
            second = [b[m, j, k] if operation.transpose_b else b[m, k, j] for k in range(q)]
            z = [scale * a[m, i, k] * second[k] for k in range(q)]
            total = mpmath.fsum(z)
            own = epsilon * _sign(total) if signed else epsilon
            d = total + own
            if d == 0:
                raise ZeroDenominatorError(f"{operation!r}: entry ({i}, {j}) of matrix {m} is 0 with relevance "
                                           "arriving and epsilon = 0")
            trace.absorbed_stabiliser += own / d * rm[m, i, j]
            yield m, i, j, second, z, d


def _matmul_relevance(operation: MatMul, inputs, shapes, upper, epsilon, trace, signed: bool = True
                      ) -> list[np.ndarray]:
    """``signed``: the stabiliser is eps sign(C_ij) (the definition); False: + eps whatever the sign
    (LXT 2.1's ``_stabilize``, restated for the audit)."""
    out_shape = output_shape(operation, shapes)
    a, b, rm = _matrices(inputs[0], shapes[0]), _matrices(inputs[1], shapes[1]), _matrices(upper, out_shape)
    scale = mpmath.mpf(operation.scale)
    ra, rb = _zeros(a.shape), _zeros(b.shape)
    for m, i, j, second, z, d in _stabilised_entries(operation, a, b, rm, epsilon, trace, signed):
        for k in range(len(z)):
            share_a, share_b = _shapley_share(scale * a[m, i, k], second[k], z[k] / d * rm[m, i, j])
            ra[m, i, k] += share_a
            if operation.transpose_b:
                rb[m, j, k] += share_b
            else:
                rb[m, k, j] += share_b
    return [ra.ravel(), rb.ravel()]


def _matmul_constant_relevance(operation: MatMul, inputs, shapes, upper, epsilon, trace, held: int,
                               signed: bool = True) -> list[np.ndarray]:
    """C = scale A B with input ``held`` (0: A, 1: B) constant: for every entry C_ij and every k,
    R_k = z_k / (C_ij + eps sign C_ij) R_ij (z_k = scale A_ik B_kj), and the free factor u
    receives c f'(0) u, the first-order Taylor term at the root u = 0 of f(u) = z_k with u in
    place of the free factor (c = R_k / z_k; 0 where z_k = 0, where R_k is 0)."""
    out_shape = output_shape(operation, shapes)
    a, b, rm = _matrices(inputs[0], shapes[0]), _matrices(inputs[1], shapes[1]), _matrices(upper, out_shape)
    scale = mpmath.mpf(operation.scale)
    ra, rb = _zeros(a.shape), _zeros(b.shape)
    slopes: dict = {}  # f'(0) depends on the held factor only
    for m, i, j, second, z, d in _stabilised_entries(operation, a, b, rm, epsilon, trace, signed):
        for k in range(len(z)):
            if z[k] == 0:
                continue
            constant = a[m, i, k] if held == 0 else second[k]
            key = (m, i, k) if held == 0 else (m, j, k)
            if key not in slopes:
                slopes[key] = mpmath.diff(lambda u, c=constant: scale * c * u, 0)  # f(u) = z_k, u free
            free = second[k] if held == 0 else a[m, i, k]
            term = z[k] / d * rm[m, i, j] / z[k] * slopes[key] * free
            if held == 0:
                if operation.transpose_b:
                    rb[m, j, k] += term
                else:
                    rb[m, k, j] += term
            else:
                ra[m, i, k] += term
    return [ra.ravel(), rb.ravel()]


__all__ = ["ATTENTION_RULES", "OPERATIONS", "forward", "gradient", "output_shape", "relevance"]
