"""Softmax s = softmax(x): the tangent of the relevance model sum_j c_j s_j(x) at x, with a bias.

R_i = x_i (R_i - s_i sum_j R_j) (Achtibat et al. 2024, AttnLRP, ICML, Prop. 3.1), derived here
as x_i df/dx_i(x) for f = sum_j c_j s_j with c_j = R_j / s_j held constant; the tangent plane's
intercept is a bias that absorbs sum_j R_j (1 - x_j + sum_k s_k x_k). Not conservative; the
expansion at the root x~ = 0 gives another rule (refuted identity).
"""

from lrp_sym import Status
from lrp_sym.attention import SoftmaxTaylor

RULE = SoftmaxTaylor(
    name="softmax",
    title="softmax, Taylor at x with bias (AttnLRP)",
    paper="Achtibat et al. 2024, AttnLRP, ICML, Prop. 3.1",
    expected={"root_zero_is_closed_form": Status.REFUTED, "conservation": Status.REFUTED},
)
