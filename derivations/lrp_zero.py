"""LRP-0: the search direction is the input itself, x~ = (1 - t) x.

Bach, Binder, Montavon, Klauschen, Mueller, Samek (2015), "On pixel-wise explanations for
non-linear classifier decisions by layer-wise relevance propagation", PLOS ONE 10(7), e0130140;
as a root-point step: Montavon et al. (2019), "Layer-wise relevance propagation: an overview",
LNCS 11700, Sec. 10.2.
"""

from lrp_sym import REAL_SPACE, RootPointRule, Status, x_i

RULE = RootPointRule(
    name="lrp0",
    title="LRP-0 (z-rule)",
    paper="Bach et al. 2015, PLOS ONE 10(7) e0130140; Montavon et al. 2019, LNCS 11700",
    direction=x_i,
    domain=REAL_SPACE,
    expected={"positivity": Status.REFUTED},
)
