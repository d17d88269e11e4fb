"""Element-wise nonlinearity y = g(x), the first-order Taylor rule at the expansion point x~:
R_in = g'(x~) (x - x~) / g(x) R_out.

One file parametrised by g (GELU exact and tanh-approximated, SiLU, tanh, sigmoid): the
derivation is the same Taylor expansion for each, and the proofs per g show what differs, the
root (sigmoid has none: expanded at 0, it drops the zero-order term c g(0) = c / 2) and the sign
of the ratio. Conservation fails for every g by the second-order remainder. Deep Taylor
decomposition: Montavon et al. 2017, Pattern Recognition 65; AttnLRP, Achtibat et al. 2024.
"""

from lrp_sym import Status
from lrp_sym.pointwise import TaylorNonlinear

RULE = TaylorNonlinear(
    name="taylor_nonlinear",
    title="element-wise nonlinearity, first-order Taylor rule at the root point",
    paper="Montavon et al. 2017, Pattern Recognition 65; Achtibat et al. 2024, ICML (AttnLRP)",
    expected={"root_point_sigmoid": Status.REFUTED, "positivity_sigmoid": Status.REFUTED},
)
