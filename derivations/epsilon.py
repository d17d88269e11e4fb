"""LRP-epsilon: LRP-0 with a stabiliser eps sign(z_j) in the denominator (bias included).

Bach et al. (2015), PLOS ONE 10(7), e0130140, Eq. (58); Montavon et al. (2019), LNCS 11700,
Sec. 10.2.2. Not a root-point step: bias and stabiliser absorb (b_j + eps) / (z_j + eps) R_j.
"""

from lrp_sym import REAL_SPACE, R, RatioRule, RatioTerm, Status, b, eps, j, w_ij, x_i

RULE = RatioRule(
    name="epsilon",
    title="LRP-epsilon",
    paper="Bach et al. 2015, PLOS ONE 10(7) e0130140; Montavon et al. 2019, LNCS 11700",
    terms=[RatioTerm(1, x_i * w_ij, bias_share=b[j])],
    domain=REAL_SPACE,
    stabilised=True,
    parameters=(eps,),
    defaults={eps: 0.25},
    expected={"conservation": Status.REFUTED, "positivity": Status.REFUTED},
)
RULE.identities["passed_down"] = (
    "sum_i R_ij = (z_j - b_j) / (z_j + eps) R_j",
    lambda passed, z: passed - (z - b[j]) / (z + eps) * R[j],
)
