"""z^B rule: search inside the box l <= x <= h, towards the corner that minimises z_j.

Excitatory inputs move towards l_i, inhibitory ones towards h_i, and inputs without a connection
(w_ij = 0) stay where they are, so the whole segment from x to the corner lies in the box.

Montavon et al. (2017), Pattern Recognition 65, 211-222, Sec. 4.3.
"""

from lrp_sym import BOX, RootPointRule, h_i, indicator_negative, indicator_positive, l_i, w_ij, x_i

RULE = RootPointRule(
    name="zbox",
    title="z^B rule (box-constrained inputs)",
    paper="Montavon et al. 2017, Pattern Recognition 65, Sec. 4.3",
    direction=(x_i - l_i) * indicator_positive(w_ij) + (x_i - h_i) * indicator_negative(w_ij),
    domain=BOX,
)
