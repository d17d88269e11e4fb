"""All layer types of the numeric engine, in one namespace.

Every layer is callable on a batch (first axis = samples), ``layer(x, check_finite=True)``
(NaN / Inf in ``x`` raise NonFiniteError unless ``check_finite`` is False), and computes in the
input's dtype (float32 or float64; integers become float64). ``layer.output_shape(shape)`` maps
per-sample shapes. The linear layers (:class:`Dense`, :class:`Conv2d`, :class:`SumPool2d`,
:class:`AvgPool2d`) also implement :class:`~lrp_num.operators.LinearOperator`, whose
``forward(a, g)`` excludes the bias.
"""

from __future__ import annotations

from typing import Union

from lrp_num.batchnorm import BatchNorm
from lrp_num.conv import Conv2d
from lrp_num.dense import Dense
from lrp_num.elementwise import Flatten, Identity, ReLU
from lrp_num.pooling import AvgPool2d, MaxPool2d, SumPool2d

Layer = Union[Dense, Conv2d, SumPool2d, AvgPool2d, MaxPool2d, ReLU, Flatten, Identity, BatchNorm]

#: layer class name -> class, the names used in model files
LAYER_TYPES: dict[str, type] = {
    cls.__name__: cls
    for cls in (Dense, Conv2d, SumPool2d, AvgPool2d, MaxPool2d, ReLU, Flatten, Identity, BatchNorm)
}

__all__ = [
    "AvgPool2d", "BatchNorm", "Conv2d", "Dense", "Flatten", "Identity", "LAYER_TYPES", "Layer",
    "MaxPool2d", "ReLU", "SumPool2d",
]
