"""The symbols of one dense neuron j with a symbolic number n of inputs.

Indices run over i = 1..n (inputs) for a fixed output neuron j. Every sum is a SymPy ``Sum`` over
``(i, 1, n)`` with symbolic ``n``, so what is derived holds for every layer width.
"""

from __future__ import annotations

from sympy import IndexedBase, Symbol

#: input index, output index, and a second input index used for differentiation
i = Symbol("i", integer=True)
j = Symbol("j", integer=True)
k = Symbol("k", integer=True)
#: number of inputs of the neuron
n = Symbol("n", integer=True, positive=True)

#: layer input x_i, weights w_ij, bias b_j, box bounds l_i <= x_i <= h_i
x = IndexedBase("x", real=True)
w = IndexedBase("w", real=True)
b = IndexedBase("b", real=True)
l = IndexedBase("l", real=True)  # noqa: E741 - the field's name for the lower bound
h = IndexedBase("h", real=True)
#: relevance model R_j = c_j x_j with c_j >= 0 locally constant; R_j itself
c = IndexedBase("c", nonnegative=True)
R = IndexedBase("R", real=True)
#: step length along the search direction
t = Symbol("t", real=True)

#: rule parameters
gamma = Symbol("gamma", nonnegative=True)
eps = Symbol("epsilon", positive=True)
alpha = Symbol("alpha", nonnegative=True)
beta = Symbol("beta", nonnegative=True)
p = Symbol("p", positive=True)

#: the per-connection quantities that a search direction or q_ij may contain
COORDINATE_BASES = (x, l, h)

#: batch normalisation after a linear layer: scale, shift, running mean and variance, epsilon
bn_gamma = Symbol("gamma_bn", real=True)
bn_beta = Symbol("beta_bn", real=True)
bn_mean = Symbol("mu_bn", real=True)
bn_var = Symbol("sigma2_bn", nonnegative=True)
bn_eps = Symbol("epsilon_bn", positive=True)
