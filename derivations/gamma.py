"""LRP-gamma: favour excitatory inputs by a factor 1 + gamma along the direction.

Montavon, Binder, Lapuschkin, Samek, Mueller (2019), "Layer-wise relevance propagation: an
overview", LNCS 11700, Sec. 10.2.3 and 10.2.
"""

from lrp_sym import ORTHANT, RootPointRule, Status, gamma, indicator_positive, w_ij, x_i

RULE = RootPointRule(
    name="gamma",
    title="LRP-gamma",
    paper="Montavon et al. 2019, LNCS 11700, Sec. 10.2.3",
    direction=x_i * (1 + gamma * indicator_positive(w_ij)),
    domain=ORTHANT,
    parameters=(gamma,),
    defaults={gamma: 0.25},
    expected={"positivity": Status.REFUTED},
)
