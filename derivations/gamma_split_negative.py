"""LRP-gamma with the input split by sign, for neurons with z_j < 0 (zennit's Gamma, negative side).

zennit's Gamma (zennit 0.5.1 and 1.0, ``zennit/rules.py``, class ``Gamma``; Montavon et al. 2019
Sec. 10.2.3, Andeol et al. 2021) chooses its group by the sign of z_j: for z_j > 0 it is
``gamma_split``; for z_j < 0 the weight parts swap, so gamma amplifies the contributions of the
neuron's own (negative) sign:

    q_ij = x_i^+ (w_ij + gamma w_ij^-) + x_i^- (w_ij + gamma w_ij^+),
    d_j  = sum_i q_ij + b_j + gamma b_j^-,

and z_j = 0 passes no relevance (the selection is the convention ``by_sign`` of
lrp_num.engine.conventions). The bias share b_j + gamma b_j^- is part of the rule (zennit modifies
the bias with the weights), so it applies under every bias convention.
"""

from lrp_sym import (REAL_SPACE, RatioRule, RatioTerm, Status, b, gamma, j, negative_part,
                     positive_part, w_ij, x_i)

RULE = RatioRule(
    name="gamma_split_negative",
    title="LRP-gamma with input sign split and gamma on the bias (zennit's Gamma, z_j < 0)",
    paper="Montavon et al. 2019, LNCS 11700, Sec. 10.2.3; as implemented in zennit 0.5.1 rules.Gamma",
    terms=[RatioTerm(1, positive_part(x_i) * (w_ij + gamma * negative_part(w_ij))
                     + negative_part(x_i) * (w_ij + gamma * positive_part(w_ij)),
                     bias_share=b[j] + gamma * negative_part(b[j]))],
    domain=REAL_SPACE,
    parameters=(gamma,),
    defaults={gamma: 0.25},
    expected={"conservation": Status.REFUTED, "positivity": Status.REFUTED},
    z_sign="negative",
)
