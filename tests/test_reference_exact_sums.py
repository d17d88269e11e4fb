"""The reference's linear sums are exact, rounded once: no term is lost to an exponent spread.

Issue 16: with w = (1, 1e-100, -1) and x = (1, 1, 1) the forward pass at dps + 10 digits gave 0
where the exact value is 1e-100. float64 data are rationals, so :class:`fractions.Fraction`
gives the exact value that the reference must reproduce to its ``dps`` digits.
"""

from __future__ import annotations

from fractions import Fraction

import mpmath
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from lrp_num import reference
from lrp_num.engine.network import Sequential
from lrp_num.layers import Dense, ReLU

DPS = 30


def close(value, exact: Fraction, dps: int = DPS) -> bool:
    """``value`` (an mpf rounded to dps digits) within 10^(2 - dps) relative of ``exact``."""
    if exact == 0:
        return value == 0
    with mpmath.workdps(dps + 20):
        reference_value = mpmath.mpf(exact.numerator) / exact.denominator
        return abs(value - reference_value) <= abs(reference_value) * mpmath.mpf(10) ** (2 - dps)


def test_the_issues_example_is_1e_100_not_0():
    network = Sequential([Dense(np.array([[1.0], [1e-100], [-1.0]]), np.zeros(1))], input_shape=(3,))
    x = np.ones((1, 3))
    (value,) = reference.forward(network, x, dps=DPS)[0]
    assert close(value, Fraction(1e-100)) and value != 0
    relevance = reference.explain(network, x, rule="epsilon", epsilon=0.0, dps=DPS)[0]
    assert close(relevance[1], Fraction(1e-100))  # x_1 w_1 / z * z: the tiny input keeps its share


#: float64 values of very different magnitudes: m 2^e with a 20-bit mantissa, |e| up to 600
spread = st.builds(lambda m, e, s: s * m * 2.0 ** e, st.integers(1, 2 ** 20), st.integers(-600, 600),
                   st.sampled_from([1.0, -1.0]))


def exact_forward(weights, biases, x):
    """Dense - ReLU - Dense in Fractions."""
    a = [Fraction(v) for v in x]
    for k, (w, b) in enumerate(zip(weights, biases)):
        a = [sum((a[i] * Fraction(w[i][j]) for i in range(len(a))), Fraction(b[j])) for j in range(len(b))]
        if k == 0:
            a = [max(v, Fraction(0)) for v in a]
    return a


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_extreme_exponent_spreads_match_exact_fractions(data):
    n_in, n_hidden = data.draw(st.integers(2, 4)), data.draw(st.integers(1, 3))
    w1 = data.draw(st.lists(st.lists(spread, min_size=n_hidden, max_size=n_hidden), min_size=n_in, max_size=n_in))
    b1 = data.draw(st.lists(spread | st.just(0.0), min_size=n_hidden, max_size=n_hidden))
    w2 = data.draw(st.lists(st.lists(spread, min_size=1, max_size=1), min_size=n_hidden, max_size=n_hidden))
    b2 = [data.draw(spread | st.just(0.0))]
    x = data.draw(st.lists(spread, min_size=n_in, max_size=n_in))
    # cancellation on purpose: the first input's contribution again with the opposite sign, last,
    # so that whatever the second input adds sits between two terms that cancel
    if n_in >= 3:
        x[-1], w1[-1] = x[0], [-v for v in w1[0]]
    network = Sequential([Dense(np.array(w1), np.array(b1)), ReLU(), Dense(np.array(w2), np.array(b2))],
                         input_shape=(n_in,))
    exact = exact_forward([w1, w2], [b1, b2], x)
    (value,) = reference.forward(network, np.array([x]), dps=DPS)[0]
    assert close(value, exact[0]), (value, float(exact[0]))
    # LRP-0 on the output layer alone: R_i = a_i w_i / z * z = a_i w_i where z != 0 (bias kept)
    one = Sequential([Dense(np.array(w1), np.array(b1))], input_shape=(n_in,))
    target = 0
    z0 = sum((Fraction(x[i]) * Fraction(w1[i][target]) for i in range(n_in)), Fraction(b1[target]))
    if z0 != 0:
        relevance = reference.explain(one, np.array([x]), rule="epsilon", epsilon=0.0, target=target, dps=DPS)[0]
        for i in range(n_in):
            assert close(relevance[i], Fraction(x[i]) * Fraction(w1[i][target])), (i, relevance[i])


def test_an_add_node_of_three_addends_is_exact():
    """1 + 1e-100 - 1 through an Add node: 1e-100, not 0."""
    from lrp_num.engine.graph import Graph, Node
    from lrp_num.layers import Add

    graph = Graph([Node("a", Dense(np.array([[1.0]]), np.zeros(1)), "input"),
                   Node("b", Dense(np.array([[1e-100]]), np.zeros(1)), "input"),
                   Node("c", Dense(np.array([[-1.0]]), np.zeros(1)), "input"),
                   Node("sum", Add(), ("a", "b", "c"))], input_shape=(1,))
    (value,) = reference.forward(graph, np.ones((1, 1)), dps=DPS)[0]
    assert close(value, Fraction(1e-100)) and value != 0
