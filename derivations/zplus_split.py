"""z+ with the input split by sign: q_ij = x_i^+ w_ij^+ + x_i^- w_ij^- = max(0, x_i w_ij).

The z+ rule as zennit implements it (zennit 0.5.1 and 1.0, ``zennit/rules.py``, class ``ZPlus``:
inputs clamped to x^+ and x^-, weights to w^+ and w^-, the two products summed; the bias enters
only through the first group, as b^+, which the "zennit" bias convention supplies). On
non-negative inputs it is the z+ rule of Montavon et al. (2017); on inputs of both signs it is
LRP-alpha-beta with alpha = 1, beta = 0 (Bach et al. 2015), not a root-point step of a search
direction in the orthant.
"""

from sympy import S

from lrp_sym import REAL_SPACE, RatioRule, RatioTerm, positive_part, w_ij, x_i

RULE = RatioRule(
    name="zplus_split",
    title="z+ with input sign split (zennit's ZPlus)",
    paper="Montavon et al. 2017, Pattern Recognition 65; as implemented in zennit 0.5.1 rules.ZPlus",
    terms=[RatioTerm(S.One, positive_part(x_i * w_ij))],
    domain=REAL_SPACE,
)
