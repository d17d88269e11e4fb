"""Batch normalisation after a dense layer folds into it:
w'_ij = gamma w_ij / sqrt(var + eps), b'_j = gamma (b_j - mu) / sqrt(var + eps) + beta.

Ioffe and Szegedy (2015), "Batch normalization", ICML; folding for LRP: Montavon et al. (2019),
LNCS 11700, Sec. 10.3.
"""

from lrp_sym.layers import BatchNormFolding

RULE = BatchNormFolding(
    name="batchnorm",
    title="batch normalisation folded into the dense layer",
    paper="Ioffe & Szegedy 2015, ICML; Montavon et al. 2019, LNCS 11700, Sec. 10.3",
)
