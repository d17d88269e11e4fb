"""Max-pooling ties: split equally (derived) or all to the first maximum (torch's convention).

derivations/max_pool.py derives winner-take-all with m tied maxima sharing R_j equally; PyTorch's
max-pooling gradient, and so zennit and captum, give it all to the first maximum in row-major
window order. ``Conventions(maxpool_ties="first")`` states that convention in the engine, the
mpmath reference and the certified path, and the zennit and captum profiles use it (issue 16).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from lrp_num import explain
from lrp_num import reference
from lrp_num.engine.conventions import Conventions
from lrp_num.engine.network import Sequential
from lrp_num.errors import KernelArgumentError, UnknownRuleError
from lrp_num.layers import Dense, Flatten, MaxPool2d

FIRST = Conventions(maxpool_ties="first")
#: one 2x2 window whose maxima 3 sit at (0, 1) and (1, 0): the first in row-major order is (0, 1)
TIED = np.array([[[[1.0, 3.0], [3.0, 0.0]]]])


def pool_network(kernel=2, stride=None, padding=0, size=4, channels=1):
    """MaxPool2d - Flatten - Dense with positive weights (R_j > 0 at every window)."""
    pooled = MaxPool2d(kernel, stride=stride, padding=padding)
    out = pooled.output_shape((channels, size, size))
    n = int(np.prod(out))
    weight = np.linspace(0.5, 1.5, n).reshape(n, 1)
    return Sequential([pooled, Flatten(), Dense(weight, np.zeros(1))], input_shape=(channels, size, size))


def test_a_tie_is_split_by_default_and_given_to_the_first_maximum_in_row_major_order():
    network = Sequential([MaxPool2d(2), Flatten(), Dense(np.ones((1, 1)), np.zeros(1))], input_shape=(1, 2, 2))
    split = explain(network, TIED, rule="epsilon", epsilon=0.0)
    first = explain(network, TIED, rule="epsilon", epsilon=0.0, conventions=FIRST)
    np.testing.assert_array_equal(split[0, 0], [[0.0, 1.5], [1.5, 0.0]])
    np.testing.assert_array_equal(first[0, 0], [[0.0, 3.0], [0.0, 0.0]])


def test_the_reference_and_the_certified_path_follow_the_convention():
    pytest.importorskip("flint")
    from lrp_num.certified import explain_balls

    network = pool_network()
    x = np.array([[[[2, 2, 0, 1], [2, 1, 1, 1], [0, 0, 5, 4], [0, 0, 5, 5]]]], dtype=float)
    for conventions in (Conventions(), FIRST):
        engine = explain(network, x, rule="epsilon", conventions=conventions)
        exact = np.asarray(reference.explain(network, x, rule="epsilon", conventions=conventions, dps=30), dtype=float)
        balls = explain_balls(network, x, rule="epsilon", conventions=conventions, dps=30)[0]
        certified = np.array([float(ball.mid()) for ball in balls.relevance]).reshape(x.shape)
        np.testing.assert_allclose(engine, exact, rtol=1e-14, atol=0)
        np.testing.assert_allclose(certified, exact, rtol=1e-14, atol=0)
    # windows [[2,2],[2,1]], [[0,1],[1,1]], [[0,0],[0,0]] (R_j = 0), [[5,4],[5,5]]: first maxima
    for relevance in (explain(network, x, rule="epsilon", conventions=FIRST),
                      reference.explain(network, x, rule="epsilon", conventions={"maxpool_ties": "first"}, dps=30)):
        winners = np.nonzero(np.asarray(relevance, dtype=float)[0, 0])
        assert list(zip(*winners)) == [(0, 0), (0, 3), (2, 2)]


@settings(max_examples=40, deadline=None)
@given(data=st.data(), kernel=st.sampled_from([2, 3]), stride=st.sampled_from([None, 1, 2]),
       padding=st.sampled_from([0, 1]))
def test_first_is_where_torchs_max_pool_gradient_goes(data, kernel, stride, padding):
    """Small integers make exact ties common; torch's gradient of the pooled sum marks the winners."""
    torch = pytest.importorskip("torch")
    x = data.draw(arrays(np.float64, (1, 2, 5, 5), elements=st.integers(0, 2).map(float)))
    layer = MaxPool2d(kernel, stride=stride, padding=min(padding, kernel // 2))
    network = Sequential([layer, Flatten(), Dense(np.ones((int(np.prod(layer.output_shape((2, 5, 5)))), 1)),
                                                   np.zeros(1))], input_shape=(2, 5, 5))
    ours = explain(network, x, rule="lrp0", conventions=FIRST)
    inputs = torch.tensor(x, requires_grad=True)
    pooled = torch.nn.functional.max_pool2d(inputs, kernel, stride=stride or kernel, padding=layer.padding)
    (counts,) = torch.autograd.grad(pooled.sum(), inputs)
    # lrp0 through a Dense of ones sends each window's max to its winner: R = x * (wins of that cell)
    np.testing.assert_allclose(ours, x * counts.numpy(), rtol=1e-12, atol=1e-12)


def test_the_torch_backend_follows_the_convention():
    torch = pytest.importorskip("torch")
    network = pool_network()
    x = np.array([[[[2, 2, 0, 1], [2, 1, 1, 1], [0, 0, 5, 4], [0, 0, 5, 5]]]], dtype=float)
    ours = explain(network, torch.tensor(x), rule="epsilon", conventions=FIRST)
    np.testing.assert_allclose(ours.numpy(), explain(network, x, rule="epsilon", conventions=FIRST), rtol=1e-14)


def test_an_unknown_tie_rule_is_refused():
    with pytest.raises(UnknownRuleError, match="max-pool tie rule"):
        Conventions(maxpool_ties="last")
    from lrp_num.engine.kernel_runtime import max_pool_ties
    with pytest.raises(KernelArgumentError, match="max-pool tie rule"):
        max_pool_ties(np.array([[True, True]]), "random")
