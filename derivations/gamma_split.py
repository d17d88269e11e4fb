"""LRP-gamma with the input split by sign and gamma on the bias, for neurons with z_j > 0.

The generalised gamma rule as zennit implements it (zennit 0.5.1 and 1.0, ``zennit/rules.py``,
class ``Gamma``; Montavon et al. 2019 Sec. 10.2.3, Andeol et al. 2021): for z_j > 0

    q_ij = x_i^+ (w_ij + gamma w_ij^+) + x_i^- (w_ij + gamma w_ij^-),
    d_j  = sum_i q_ij + b_j + gamma b_j^+,

and for z_j < 0 the roles of w^+ and w^- swap; z_j = 0 passes no relevance. Below a ReLU only
neurons with z_j > 0 carry relevance, so this rule is zennit's Gamma on every hidden layer and on
an output whose explained value is positive. The bias share b_j + gamma b_j^+ is part of the
rule (zennit modifies the bias with the weights), so it applies under every bias convention.
On x >= 0 without bias it is LRP-gamma (derivations/gamma.py).
"""

from lrp_sym import (REAL_SPACE, RatioRule, RatioTerm, Status, b, gamma, j, negative_part,
                     positive_part, w_ij, x_i)

RULE = RatioRule(
    name="gamma_split",
    title="LRP-gamma with input sign split and gamma on the bias (zennit's Gamma, z_j > 0)",
    paper="Montavon et al. 2019, LNCS 11700, Sec. 10.2.3; as implemented in zennit 0.5.1 rules.Gamma",
    terms=[RatioTerm(1, positive_part(x_i) * (w_ij + gamma * positive_part(w_ij))
                     + negative_part(x_i) * (w_ij + gamma * negative_part(w_ij)),
                     bias_share=b[j] + gamma * positive_part(b[j]))],
    domain=REAL_SPACE,
    parameters=(gamma,),
    defaults={gamma: 0.25},
    expected={"conservation": Status.REFUTED, "positivity": Status.REFUTED},
    z_sign="positive",
)
