"""LRP-0 with the bias as an extra input neuron: the denominator is z_j and the bias keeps
b_j / z_j R_j.

Montavon et al. (2019), "Layer-wise relevance propagation: an overview", LNCS 11700, Sec. 10.2.1
(the convention of counting the bias as a neuron).
"""

from lrp_sym import REAL_SPACE, R, RatioRule, RatioTerm, Status, b, j, w_ij, x_i

RULE = RatioRule(
    name="bias_neuron",
    title="LRP-0, bias as a neuron",
    paper="Montavon et al. 2019, LNCS 11700, Sec. 10.2.1",
    terms=[RatioTerm(1, x_i * w_ij, bias_share=b[j])],
    domain=REAL_SPACE,
    expected={"conservation": Status.REFUTED, "positivity": Status.REFUTED},
)
RULE.identities["conservation_with_bias"] = (
    "sum_i R_ij + b_j / z_j R_j = R_j (the bias neuron keeps b_j / z_j R_j)",
    lambda passed, z: passed + b[j] / z * R[j] - R[j],
)
