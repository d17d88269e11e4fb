"""Sensitivity analysis R_p = (df/dx_p)^2 for f(x) = sum_j max(0, z_j): the relevances sum to
||grad f||^2, not to f(x), so they are no decomposition.

Simonyan, Vedaldi, Zisserman (2014), "Deep inside convolutional networks", ICLR workshop;
Montavon, Samek, Mueller (2018), Digital Signal Processing 73, Sec. 3.1.
"""

from lrp_sym.networks import SensitivityAnalysis

RULE = SensitivityAnalysis(
    name="sensitivity",
    title="sensitivity analysis (squared gradient)",
    paper="Simonyan et al. 2014, ICLR workshop; Montavon et al. 2018, DSP 73, Sec. 3.1",
)
