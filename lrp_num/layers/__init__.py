"""All layer types of the numeric engine, in one namespace.

Every layer is callable on a batch (first axis = samples), ``layer(x, check_finite=True)``
(NaN / Inf in ``x`` raise NonFiniteError unless ``check_finite`` is False), and computes in the
input's dtype (float32 or float64; integers become float64). ``layer.output_shape(shape)`` maps
per-sample shapes. The linear layers (:class:`Dense`, :class:`Conv2d`, :class:`SumPool2d`,
:class:`AvgPool2d`, :class:`AdaptiveAvgPool2d`, :class:`GlobalAvgPool`, :class:`ChannelAffine`)
also implement :class:`~lrp_num.layers.operators.LinearOperator`, whose
``forward(a, g)`` excludes the bias.
"""

from __future__ import annotations

from typing import Union

from lrp_num.layers.adaptive_pooling import AdaptiveAvgPool2d, GlobalAvgPool
from lrp_num.layers.affine import ChannelAffine
from lrp_num.layers.attention import MatMul, MergeHeads, Multiply, Softmax, SplitHeads, TokenDense
from lrp_num.layers.batchnorm import BatchNorm
from lrp_num.layers.branching import Add, Concat
from lrp_num.layers.conv import Conv2d
from lrp_num.layers.dense import Dense
from lrp_num.layers.elementwise import Dropout, Flatten, Identity, ReLU, Reshape
from lrp_num.layers.nonlinear import GELU, SiLU, Sigmoid, Tanh
from lrp_num.layers.normalization import LayerNorm, RMSNorm
from lrp_num.layers.pooling import AvgPool2d, MaxPool2d, SumPool2d

Layer = Union[Dense, Conv2d, SumPool2d, AvgPool2d, MaxPool2d, AdaptiveAvgPool2d, GlobalAvgPool,
              ReLU, Flatten, Identity, Dropout, BatchNorm]

#: layer class name -> class, the names used in model files: the one-input layers of a chain
LAYER_TYPES: dict[str, type] = {
    cls.__name__: cls
    for cls in (Dense, Conv2d, SumPool2d, AvgPool2d, MaxPool2d, AdaptiveAvgPool2d, GlobalAvgPool,
                ReLU, Flatten, Identity, Dropout, BatchNorm, GELU, SiLU, Tanh, Sigmoid,
                LayerNorm, RMSNorm, Reshape)
}
#: operation class name -> class for the nodes of a :class:`~lrp_num.engine.graph.Graph`: every layer,
#: the per-channel affine layer, and the operations with several inputs
OPERATION_TYPES: dict[str, type] = {
    **LAYER_TYPES, **{cls.__name__: cls for cls in (ChannelAffine, Add, Concat, Softmax, Multiply,
                                                     MatMul, SplitHeads, MergeHeads, TokenDense)}}

__all__ = [
    "AdaptiveAvgPool2d", "Add", "AvgPool2d", "BatchNorm", "ChannelAffine", "Concat", "Conv2d",
    "Dense", "Dropout", "Flatten", "GELU", "GlobalAvgPool", "Identity", "LAYER_TYPES", "Layer", "LayerNorm",
    "MatMul", "MaxPool2d", "MergeHeads", "Multiply", "OPERATION_TYPES", "RMSNorm", "ReLU", "Reshape", "SiLU", "Sigmoid",
    "Softmax", "SplitHeads", "SumPool2d", "Tanh", "TokenDense",
]
