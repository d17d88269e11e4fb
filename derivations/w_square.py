"""w^2 rule: the root point nearest to x in R^n, reached along the weight vector.

Montavon, Lapuschkin, Binder, Samek, Mueller (2017), "Explaining nonlinear classification
decisions with deep Taylor decomposition", Pattern Recognition 65, 211-222, Sec. 4.1.
"""

from lrp_sym import REAL_SPACE, RootPointRule, w_ij

RULE = RootPointRule(
    name="w2",
    title="w^2 rule (unconstrained input space)",
    paper="Montavon et al. 2017, Pattern Recognition 65, Sec. 4.1",
    direction=w_ij,
    domain=REAL_SPACE,
)
