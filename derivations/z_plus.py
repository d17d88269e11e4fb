"""z+ rule: search inside the non-negative orthant, shrinking only the excitatory inputs.

Montavon et al. (2017), Pattern Recognition 65, 211-222, Sec. 4.2.
"""

from lrp_sym import ORTHANT, RootPointRule, indicator_positive, w_ij, x_i

RULE = RootPointRule(
    name="zplus",
    title="z+ rule (non-negative inputs)",
    paper="Montavon et al. 2017, Pattern Recognition 65, Sec. 4.2",
    direction=x_i * indicator_positive(w_ij),
    domain=ORTHANT,
)
