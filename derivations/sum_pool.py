"""Sum pooling x_j = sum_i x_i: a linear neuron with unit weights and no bias; the z-rule gives
R_i = x_i / sum_i' x_i' R_j.

Montavon et al. (2017), "Explaining nonlinear classification decisions with deep Taylor
decomposition", Pattern Recognition 65, 211-222, Sec. 5 (sum pooling layer).
"""

from sympy import S

from lrp_sym.layers import LinearPooling

RULE = LinearPooling(
    name="sumpool",
    title="sum pooling (z-rule)",
    paper="Montavon et al. 2017, Pattern Recognition 65, Sec. 5",
    weight=S.One,
)
