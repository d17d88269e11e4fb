# TEMPORARY stand-in: replaced by the generator (lrp regenerate)
"""Fold an inference batch normalisation into the preceding linear layer."""

import numpy as np


def fold_batchnorm(weight, bias, gamma, beta, mean, var, eps):
    """Return (weight * gamma / sqrt(var + eps), (bias - mean) * gamma / sqrt(var + eps) + beta)."""
    scale = gamma / np.sqrt(var + eps)
    return weight * scale, (bias - mean) * scale + beta
