"""Small models the audit tests share: mixed-sign weights, biases and inputs, seeded."""

import numpy as np

from lrp_num.engine.network import Sequential
from lrp_num.layers import AvgPool2d, BatchNorm, Conv2d, Dense, Flatten, MaxPool2d, ReLU, SumPool2d

POOLS = {"max": MaxPool2d, "avg": AvgPool2d, "sum": SumPool2d}


def dense_model(seed=0):
    """A 6-5-4-3 ReLU net with biases of both signs; inputs of both signs (a batch of 3)."""
    rng = np.random.default_rng(seed)
    layers = [Dense(rng.normal(size=(6, 5)), rng.normal(size=5)), ReLU(),
              Dense(rng.normal(size=(5, 4)), rng.normal(size=4)), ReLU(),
              Dense(rng.normal(size=(4, 3)), rng.normal(size=3) + 2.0)]
    return Sequential(layers, input_shape=(6,)), rng.normal(size=(3, 6))


def conv_model(seed=1, batch_norm=True, pool="max"):
    """Conv (+BatchNorm) - ReLU - pool - Conv - ReLU - Flatten - Dense, mixed-sign biases and
    inputs (a batch of 2); ``pool`` is "max", "avg" or "sum"."""
    rng = np.random.default_rng(seed)
    layers = [Conv2d(rng.normal(size=(3, 2, 3, 3)), rng.normal(size=3), padding=1)]
    if batch_norm:
        layers.append(BatchNorm(rng.uniform(0.5, 1.5, 3), rng.normal(size=3), rng.normal(size=3),
                                rng.uniform(0.5, 2.0, 3)))
    layers += [ReLU(), POOLS[pool](2), Conv2d(rng.normal(size=(4, 3, 2, 2)), rng.normal(size=4)), ReLU(),
               Flatten(), Dense(rng.normal(size=(4 * 2 * 2, 3)), rng.normal(size=3) + 2.0)]
    return Sequential(layers, input_shape=(2, 6, 6)), rng.normal(size=(2, 2, 6, 6))
