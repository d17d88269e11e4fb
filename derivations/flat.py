"""Flat rule: the w^2 rule for a neuron whose weights are all 1 (only connectivity counts).

Lapuschkin, Waeldchen, Binder, Montavon, Samek, Mueller (2019), "Unmasking Clever Hans
predictors and assessing what machines really learn", Nature Communications 10, 1096.
"""

from lrp_sym import REAL_SPACE, RootPointRule, w_ij

RULE = RootPointRule(
    name="flat",
    title="flat rule",
    paper="Lapuschkin et al. 2019, Nature Communications 10, 1096",
    direction=w_ij,
    domain=REAL_SPACE,
    unit_weights=True,
)
