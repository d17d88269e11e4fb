"""Element-wise nonlinearity y = g(x) (GELU, SiLU, tanh, sigmoid), the identity rule:
R_in = R_out.

One file for every g: the derivation uses an undefined g (its secant through the root point
makes each neuron a one-input affine neuron, whose root-point step passes R whole), so the rule
and its conservation do not depend on the activation. AttnLRP (Achtibat et al. 2024, ICML,
Sec. 3.3); one-input root points: Montavon et al. 2017, Pattern Recognition 65.
"""

from lrp_sym.pointwise import IdentityNonlinear

RULE = IdentityNonlinear(
    name="identity_nonlinear",
    title="element-wise nonlinearity, identity rule",
    paper="Achtibat et al. 2024, ICML (AttnLRP), Sec. 3.3; Montavon et al. 2017, "
          "Pattern Recognition 65",
)
