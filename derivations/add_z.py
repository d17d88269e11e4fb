"""Addition y = sum_k a_k, proportional z-rule: R_k = a_k / sum_k' a_k' R.

The addition is a neuron without activation (unit weights, no bias); searching for its root
point along v_k = a_k gives t* = 1, the root point 0 and the z-rule (Montavon et al. 2017,
Pattern Recognition 65, Sec. 3-4; LRP-0 of Bach et al. 2015, PLOS ONE 10(7) e0130140, on unit
weights). zennit's Sum module with its Norm rule computes this split, with a stabiliser only.
Conservation holds for any number K of addends and either sign of y; positivity only where every
addend has the sign of the sum.
"""

from lrp_sym import Status, x_i
from lrp_sym.graph_layers import Addition

RULE = Addition(
    name="add_z",
    title="addition, proportional z-rule",
    paper="Montavon et al. 2017, Pattern Recognition 65, Sec. 3-4; Bach et al. 2015, PLOS ONE 10(7)",
    direction=x_i,
    positive_when_same_sign=True,
    expected={"positivity": Status.REFUTED},
    notes=(
        "t* = 1 for either sign of y: the root point is the origin, a~ = 0. Where y = 0 the "
        "split is undefined; the kernel's stabiliser convention (lrp_num.engine.kernel_runtime) "
        "applies. An addend of the other sign than the sum receives relevance of the other "
        "sign than R (refuted positivity below); with every addend of the sum's sign, R_k has "
        "the sign of R.",
    ),
)
