"""Addition y = sum_k a_k, split on the positive parts: R_k = a_k^+ / sum_k' a_k'^+ R.

Searching for the root point along v_k = a_k^+ (only the positive addends move) gives
t* = y / sum_k a_k^+ and the z+-like split (the z+ direction of Montavon et al. 2017, Pattern
Recognition 65, Sec. 4.2, on unit weights). Conservative for any number K of addends and either
sign of y while some addend is positive; R_k >= 0 whenever R >= 0.
"""

from lrp_sym import positive_part, x_i
from lrp_sym.graph_layers import Addition

RULE = Addition(
    name="add_zplus",
    title="addition, split on the positive parts (z+-like)",
    paper="Montavon et al. 2017, Pattern Recognition 65, Sec. 4.2 (direction on unit weights)",
    direction=positive_part(x_i),
    notes=(
        "Where no addend is positive (sum_k a_k^+ = 0) there is no root point along this "
        "direction: the kernel passes no relevance there (its denominator 0 becomes +eps and "
        "every numerator a_k^+ is 0), and conservation holds everywhere else, for either sign "
        "of y. Where every addend is positive it is the proportional z-rule (add_z).",
    ),
)
