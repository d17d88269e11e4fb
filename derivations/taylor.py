"""Taylor decomposition of the whole one-layer ReLU network at the steepest-descent root point
x~ = x - t grad f with f(x~) = 0: R_p = (df/dx_p at x~)(x_p - x~_p), exact while the active set
does not change on [x~, x].

Bach et al. (2015), PLOS ONE 10(7), e0130140, Sec. 3 (Taylor-type decomposition); Montavon et al.
(2017), Pattern Recognition 65, Sec. 2; Montavon et al. (2018), DSP 73, Sec. 3.2.
"""

from lrp_sym.networks import TaylorDecomposition

RULE = TaylorDecomposition(
    name="taylor",
    title="simple Taylor decomposition (whole network)",
    paper="Bach et al. 2015, PLOS ONE 10(7); Montavon et al. 2017, Pattern Recognition 65, Sec. 2",
)
