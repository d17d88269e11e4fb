"""Train the built-in digits models with plain NumPy and save them as lrp-toolkit model files.

Data: scikit-learn's 8x8 handwritten digits (``sklearn.datasets.load_digits``, shipped inside
scikit-learn, no download), pixel values scaled from 0..16 to [0, 1]; input domain l = 0, h = 1.
A fixed permutation (seed 0) holds out 20 % of the images for testing.

Models:

* ``digits-mlp``: Dense 64-32 - ReLU - Dense 32-16 - ReLU - Dense 16-10.
* ``digits-cnn``: Conv 1->8 3x3 pad 1 - BatchNorm - ReLU - Conv 8->16 3x3 pad 1 - ReLU -
  MaxPool 2 - Flatten - Dense 256-10. The BatchNorm is trained with batch statistics and stored
  unfolded, so loading the model exercises BatchNorm folding.
* ``digits-resnet``, a :class:`~lrp_num.engine.graph.Graph` with C = 8: stem Conv 1->C 3x3 pad 1 - BN -
  ReLU; block 1: Conv C->C 3x3 - BN - ReLU - Conv C->C 3x3 - BN, plus the identity shortcut,
  ReLU; block 2: Conv C->2C 3x3 stride 2 - BN - ReLU - Conv 2C->2C 3x3 - BN, plus a 1x1 stride-2
  projection Conv C->2C - BN on the shortcut, ReLU; GlobalAvgPool - Flatten - Dense 2C-10. The
  convolutions have no bias (each is followed by a BatchNorm); the six BatchNorms are trained
  with batch statistics and stored unfolded, and each folds into its convolution on loading.
  Training walks the nodes with one forward and one backward function per node type: a tensor
  read by several nodes sums their gradients, an Add copies its gradient to every addend.
* ``digits-paths``: Conv 1->8 3x3 stride 2 pad 1 without bias - ReLU - Conv 8->4 3x3 pad 1 -
  BatchNorm - ReLU - AvgPool 2 - Flatten - Dense 16-10, for the layer paths the others leave
  out (a padded stride-2 convolution, a narrowing one, average pooling). Its first two stored
  images are chosen for ``lrp verify``'s default 2 samples (:func:`paths_samples`): a held-out
  image whose true class has a logit <= -0.25, and a held-out image with the pixels under the
  negative kernel entries of one conv0 window set to 0, which puts that neuron exactly on the
  boundary of its z+ domain condition (:func:`boundary_image`).

Training is mini-batch Adam on the softmax cross-entropy, with gradients backpropagated by hand
through the layers' own ``transpose`` (the adjoint of their linear part); float64, fixed seeds,
deterministic: two runs on one machine write byte-identical files. (The last bits of the weights
depend on the NumPy/BLAS build, so another platform may write files that differ in their bytes.)
Each file also stores 8 held-out test images and labels (``extra.test_images``,
``extra.test_labels``) and the accuracy on the whole held-out set (``extra.test_accuracy``).

Regenerate (needs scikit-learn)::

    python scripts/train_digits.py                  # writes lrp_num/models/digits_{mlp,cnn,resnet,paths}.npz
    python scripts/train_digits.py --models resnet  # only digits_resnet.npz
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout's lrp_num, not an installed one
from lrp_num.engine.graph import INPUT, Graph, Node
from lrp_num.layers import Add, AvgPool2d, BatchNorm, Conv2d, Dense, Flatten, GlobalAvgPool, MaxPool2d, ReLU
from lrp_num.io.model_io import save_npz
from lrp_num.engine.network import Sequential

MODELS_DIR = Path(__file__).resolve().parents[1] / "lrp_num" / "models"
N_STORED_TEST_IMAGES = 8
MODEL_SHAPES = {"mlp": (64,), "cnn": (1, 8, 8), "resnet": (1, 8, 8), "paths": (1, 8, 8)}  # per-sample input shapes
BN_MOMENTUM = 0.1


def load_digits_split(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Return (x_train, y_train, x_test, y_test), x in [0, 1] of shape (N, 64)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x, y = digits.data / 16.0, digits.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(y))
    n_test = len(y) // 5
    test, train = order[:n_test], order[n_test:]
    return x[train], y[train], x[test], y[test]


# ---- parameters and the layers built from them -------------------------------------------------

def he_normal(rng: np.random.Generator, shape: tuple[int, ...], fan_in: int) -> np.ndarray:
    return rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)


def mlp_parameters(rng: np.random.Generator) -> dict[str, np.ndarray]:
    sizes = [64, 32, 16, 10]
    params = {}
    for k, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        params[f"W{k}"] = he_normal(rng, (n_in, n_out), n_in)
        params[f"b{k}"] = np.zeros(n_out)
    return params


def cnn_parameters(rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {
        "K0": he_normal(rng, (8, 1, 3, 3), 9), "c0": np.zeros(8),
        "gamma": np.ones(8), "beta": np.zeros(8),
        "K1": he_normal(rng, (16, 8, 3, 3), 72), "c1": np.zeros(16),
        "W": he_normal(rng, (256, 10), 256), "b": np.zeros(10),
    }


# ---- forward and backward passes ---------------------------------------------------------------

def softmax_cross_entropy(logits: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean cross-entropy and its gradient with respect to the logits."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(shifted)
    p /= p.sum(axis=1, keepdims=True)
    n = len(labels)
    loss = -np.log(p[np.arange(n), labels]).mean()
    p[np.arange(n), labels] -= 1
    return float(loss), p / n


def mlp_gradients(params: dict, x: np.ndarray, y: np.ndarray) -> tuple[float, dict]:
    layers = [Dense(params[f"W{k}"], params[f"b{k}"]) for k in range(3)]
    activations = [x]
    for k, layer in enumerate(layers):
        z = layer(activations[-1])
        activations.append(np.maximum(z, 0) if k < 2 else z)
    loss, delta = softmax_cross_entropy(activations[-1], y)
    grads = {}
    for k in reversed(range(3)):
        grads[f"W{k}"] = activations[k].T @ delta
        grads[f"b{k}"] = delta.sum(axis=0)
        delta = layers[k].transpose(delta) * (activations[k] > 0)
    return loss, grads


def conv_weight_gradient(conv: Conv2d, a: np.ndarray, delta: np.ndarray) -> np.ndarray:
    """dL/dK[o, c, u, v] = sum_{n, p, q} delta[n, o, p, q] a_pad[n, c, p sh + u, q sw + v]."""
    (ph, pw), (sh, sw) = conv.padding, conv.stride
    windows = sliding_window_view(np.pad(a, ((0, 0), (0, 0), (ph, ph), (pw, pw))), conv.kernel_size, axis=(2, 3))
    return np.einsum("nopq,ncpquv->ocuv", delta, windows[:, :, ::sh, ::sw], optimize=True)


def batchnorm_train(z: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float):
    """Batch statistics over (N, H, W): return y, the cache for backward, mean and variance."""
    mean, var = z.mean(axis=(0, 2, 3)), z.var(axis=(0, 2, 3))
    xhat = (z - mean[:, None, None]) / np.sqrt(var + eps)[:, None, None]
    return xhat * gamma[:, None, None] + beta[:, None, None], (xhat, var), mean, var


def batchnorm_backward(dy: np.ndarray, gamma: np.ndarray, cache, eps: float):
    """Gradients of the batch-statistics normalisation: (dz, dgamma, dbeta)."""
    xhat, var = cache
    m = dy.shape[0] * dy.shape[2] * dy.shape[3]
    dgamma, dbeta = (dy * xhat).sum(axis=(0, 2, 3)), dy.sum(axis=(0, 2, 3))
    scale = (gamma / np.sqrt(var + eps))[:, None, None]
    dz = scale / m * (m * dy - dbeta[:, None, None] - xhat * dgamma[:, None, None])
    return dz, dgamma, dbeta


def cnn_gradients(params: dict, x: np.ndarray, y: np.ndarray, eps: float) -> tuple[float, dict, tuple]:
    conv0, conv1 = Conv2d(params["K0"], params["c0"], 1, 1), Conv2d(params["K1"], params["c1"], 1, 1)
    pool, dense = MaxPool2d(2), Dense(params["W"], params["b"])
    z0 = conv0(x)
    y0, bn_cache, mean, var = batchnorm_train(z0, params["gamma"], params["beta"], eps)
    a1 = np.maximum(y0, 0)
    z1 = conv1(a1)
    a2 = np.maximum(z1, 0)
    a3 = pool(a2)
    logits = dense(a3.reshape(len(x), -1))
    loss, delta = softmax_cross_entropy(logits, y)
    grads = {"W": a3.reshape(len(x), -1).T @ delta, "b": delta.sum(axis=0)}
    delta = dense.transpose(delta).reshape(a3.shape)
    # max pooling: the gradient goes to the first maximum of each window
    patches = pool.patches(a2)
    winner = np.zeros(patches.shape)
    np.put_along_axis(winner, patches.argmax(axis=-1)[..., None], 1.0, axis=-1)
    delta = pool.unpatch(winner * delta[..., None], a2.shape) * (z1 > 0)
    grads["K1"], grads["c1"] = conv_weight_gradient(conv1, a1, delta), delta.sum(axis=(0, 2, 3))
    delta = conv1.transpose(delta) * (y0 > 0)
    delta, grads["gamma"], grads["beta"] = batchnorm_backward(delta, params["gamma"], bn_cache, eps)
    grads["K0"], grads["c0"] = conv_weight_gradient(conv0, x, delta), delta.sum(axis=(0, 2, 3))
    return loss, grads, (mean, var)


# ---- digits-resnet: a graph trained node by node -----------------------------------------------

RESNET_WIDTH = 8  # C: channels of the stem and block 1; block 2 has 2C

# convolution node -> (C_in, C_out, kernel, stride, padding); no bias, each is followed by a BatchNorm
RESNET_CONVS = {
    "stem": (1, RESNET_WIDTH, 3, 1, 1),
    "block1.conv1": (RESNET_WIDTH, RESNET_WIDTH, 3, 1, 1),
    "block1.conv2": (RESNET_WIDTH, RESNET_WIDTH, 3, 1, 1),
    "block2.conv1": (RESNET_WIDTH, 2 * RESNET_WIDTH, 3, 2, 1),
    "block2.conv2": (2 * RESNET_WIDTH, 2 * RESNET_WIDTH, 3, 1, 1),
    "block2.shortcut": (RESNET_WIDTH, 2 * RESNET_WIDTH, 1, 2, 0),
}
# BatchNorm node -> the convolution it normalises
RESNET_BATCHNORMS = {
    "stem.bn": "stem", "block1.bn1": "block1.conv1", "block1.bn2": "block1.conv2",
    "block2.bn1": "block2.conv1", "block2.bn2": "block2.conv2", "block2.shortcut_bn": "block2.shortcut",
}


def resnet_parameters(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """He-normal kernels, BatchNorm gamma = 1 and beta = 0, a He-normal classifier."""
    params = {}
    for name, (c_in, c_out, k, _, _) in RESNET_CONVS.items():
        params[f"{name}.weight"] = he_normal(rng, (c_out, c_in, k, k), c_in * k * k)
    for name, conv in RESNET_BATCHNORMS.items():
        params[f"{name}.gamma"] = np.ones(RESNET_CONVS[conv][1])
        params[f"{name}.beta"] = np.zeros(RESNET_CONVS[conv][1])
    params["fc.weight"] = he_normal(rng, (2 * RESNET_WIDTH, 10), 2 * RESNET_WIDTH)
    params["fc.bias"] = np.zeros(10)
    return params


def resnet_nodes(params: dict[str, np.ndarray], statistics: dict[str, tuple[np.ndarray, np.ndarray]],
                 bn_eps: float) -> list[Node]:
    """The digits-resnet graph, in topological order, built from the parameters and the
    BatchNorms' (mean, var) statistics (training ignores the statistics and uses the batch's)."""
    def conv(name: str, source: str) -> Node:
        _, c_out, _, stride, padding = RESNET_CONVS[name]
        return Node(name, Conv2d(params[f"{name}.weight"], np.zeros(c_out), stride, padding), source)

    def batchnorm(name: str) -> Node:
        layer = BatchNorm(params[f"{name}.gamma"], params[f"{name}.beta"], *statistics[name], bn_eps)
        return Node(name, layer, RESNET_BATCHNORMS[name])

    return [
        conv("stem", INPUT), batchnorm("stem.bn"), Node("stem.relu", ReLU(), "stem.bn"),
        # block 1: identity shortcut
        conv("block1.conv1", "stem.relu"), batchnorm("block1.bn1"), Node("block1.relu1", ReLU(), "block1.bn1"),
        conv("block1.conv2", "block1.relu1"), batchnorm("block1.bn2"),
        Node("block1.add", Add(), ("block1.bn2", "stem.relu")), Node("block1.relu", ReLU(), "block1.add"),
        # block 2: stride 2, 1x1 projection shortcut with its BatchNorm
        conv("block2.conv1", "block1.relu"), batchnorm("block2.bn1"), Node("block2.relu1", ReLU(), "block2.bn1"),
        conv("block2.conv2", "block2.relu1"), batchnorm("block2.bn2"),
        conv("block2.shortcut", "block1.relu"), batchnorm("block2.shortcut_bn"),
        Node("block2.add", Add(), ("block2.bn2", "block2.shortcut_bn")), Node("block2.relu", ReLU(), "block2.add"),
        Node("pool", GlobalAvgPool(), "block2.relu"), Node("flatten", Flatten(), "pool"),
        Node("fc", Dense(params["fc.weight"], params["fc.bias"]), "flatten"),
    ]


def graph_forward_train(nodes: list[Node], x: np.ndarray, bn_eps: float) -> tuple[dict, dict, dict]:
    """Every node's output in training mode: BatchNorms normalise with the batch's statistics.

    Returns the outputs (with the input under ``"input"``), the BatchNorms' caches for backward
    and their batch (mean, var).
    """
    values, caches, statistics = {INPUT: x}, {}, {}
    for node in nodes:
        inputs = [values[name] for name in node.inputs]
        if isinstance(node.operation, BatchNorm):
            layer = node.operation
            values[node.name], caches[node.name], mean, var = batchnorm_train(inputs[0], layer.gamma, layer.beta, bn_eps)
            statistics[node.name] = (mean, var)
        else:
            values[node.name] = node.operation(*inputs)
    return values, caches, statistics


def graph_backward(nodes: list[Node], values: dict, caches: dict, delta_output: np.ndarray,
                   bn_eps: float) -> dict[str, np.ndarray]:
    """Backpropagate dL/d(output) through the nodes in reverse order; the parameters' gradients.

    A tensor read by several nodes sums their gradients; an Add copies its gradient to every
    addend; linear nodes go back through their own ``transpose``.
    """
    deltas, grads = {nodes[-1].name: delta_output}, {}
    for node in reversed(nodes):
        delta, layer, name = deltas.pop(node.name), node.operation, node.name
        inputs = [values[source] for source in node.inputs]
        if isinstance(layer, Dense):
            grads[f"{name}.weight"], grads[f"{name}.bias"] = inputs[0].T @ delta, delta.sum(axis=0)
            backward = [layer.transpose(delta)]
        elif isinstance(layer, Conv2d):
            grads[f"{name}.weight"] = conv_weight_gradient(layer, inputs[0], delta)
            backward = [layer.transpose_to(delta, inputs[0].shape[2:])]
        elif isinstance(layer, BatchNorm):
            dz, grads[f"{name}.gamma"], grads[f"{name}.beta"] = batchnorm_backward(delta, layer.gamma, caches[name], bn_eps)
            backward = [dz]
        elif isinstance(layer, ReLU):
            backward = [delta * (inputs[0] > 0)]
        elif isinstance(layer, Add):
            backward = [delta] * len(inputs)
        elif isinstance(layer, GlobalAvgPool):
            backward = [layer.transpose(delta, input_hw=inputs[0].shape[2:])]
        elif isinstance(layer, AvgPool2d):
            backward = [layer.transpose(delta)]
        elif isinstance(layer, Flatten):
            backward = [delta.reshape(inputs[0].shape)]
        else:
            raise TypeError(f"no backward pass for node {name!r} ({layer!r})")
        for source, gradient in zip(node.inputs, backward):
            if source != INPUT:
                deltas[source] = deltas[source] + gradient if source in deltas else gradient
    return grads


# ---- digits-paths: a tiny chain that reaches the engine's other layer paths -------------------

# (C_in, C_out, kernel, stride, padding): a padded stride-2 convolution without bias (so that a
# neuron can sit exactly on its z+ domain boundary), then a narrowing one (C_out < C_in: the
# transpose's flipped-kernel path) followed by a BatchNorm
PATHS_CONVS = {"conv0": (1, 8, 3, 2, 1), "conv1": (8, 4, 3, 1, 1)}
PATHS_LOGIT_MARGIN = 0.25  # the stored sample's target logit is at most -margin: clearly <= 0


def paths_parameters(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """He-normal kernels (no conv bias), BatchNorm gamma = 1 and beta = 0, a He-normal classifier."""
    params = {f"{name}.weight": he_normal(rng, (c_out, c_in, k, k), c_in * k * k)
              for name, (c_in, c_out, k, _, _) in PATHS_CONVS.items()}
    params["bn1.gamma"], params["bn1.beta"] = np.ones(4), np.zeros(4)
    params["fc.weight"] = he_normal(rng, (16, 10), 16)
    params["fc.bias"] = np.zeros(10)
    return params


def paths_nodes(params: dict[str, np.ndarray], statistics: dict[str, tuple[np.ndarray, np.ndarray]],
                bn_eps: float) -> list[Node]:
    """digits-paths as a chain of nodes: conv0 (stride 2, pad 1) - ReLU - conv1 (8 -> 4, pad 1) -
    BatchNorm - ReLU - AvgPool 2 - Flatten - Dense 16-10."""
    def conv(name: str, source: str) -> Node:
        _, c_out, _, stride, padding = PATHS_CONVS[name]
        return Node(name, Conv2d(params[f"{name}.weight"], np.zeros(c_out), stride, padding), source)

    bn = BatchNorm(params["bn1.gamma"], params["bn1.beta"], *statistics["bn1"], bn_eps)
    return [
        conv("conv0", INPUT), Node("relu0", ReLU(), "conv0"), conv("conv1", "relu0"),
        Node("bn1", bn, "conv1"), Node("relu1", ReLU(), "bn1"), Node("pool", AvgPool2d(2), "relu1"),
        Node("flatten", Flatten(), "pool"), Node("fc", Dense(params["fc.weight"], params["fc.bias"]), "flatten"),
    ]


def train_paths(x: np.ndarray, y: np.ndarray, epochs: int, seed: int) -> Sequential:
    """digits-paths, trained as digits-resnet (Adam, batches of 32, batch statistics with running
    statistics kept), stored as a Sequential whose BatchNorm folds into conv1 on loading."""
    rng = np.random.default_rng(seed)
    bn_eps = 1e-5
    params = paths_parameters(rng)
    running = {"bn1": (np.zeros(4), np.ones(4))}
    optimiser = Adam(params, lr=3e-3)
    batch = 32
    for epoch in range(epochs):
        order = rng.permutation(len(y))
        losses = []
        for start in range(0, len(y), batch):
            idx = order[start : start + batch]
            nodes = paths_nodes(params, running, bn_eps)
            values, caches, statistics = graph_forward_train(nodes, x[idx], bn_eps)
            loss, delta = softmax_cross_entropy(values[nodes[-1].name], y[idx])
            grads = graph_backward(nodes, values, caches, delta, bn_eps)
            mean, var = statistics["bn1"]
            running_mean, running_var = running["bn1"]
            running["bn1"] = ((1 - BN_MOMENTUM) * running_mean + BN_MOMENTUM * mean,
                              (1 - BN_MOMENTUM) * running_var + BN_MOMENTUM * var)
            optimiser.step(params, grads)
            losses.append(loss)
        if epoch % 10 == 9 or epoch == epochs - 1:
            print(f"  paths epoch {epoch + 1:3d}: mean loss {np.mean(losses):.4f}")
    return Sequential([node.operation for node in paths_nodes(params, running, bn_eps)], input_shape=(1, 8, 8))


def non_positive_logit_index(network: Sequential, x_test: np.ndarray, y_test: np.ndarray) -> int:
    """The first held-out image whose true class has a logit f_c(x) <= -PATHS_LOGIT_MARGIN and
    whose logit without the bias, f_c(x) - b_c, is too: explaining it, the top relevance is
    negative and every denominator of the top layer (with or without the bias) is negative."""
    logits = network.forward(x_test)[np.arange(len(y_test)), y_test]
    bias = network.layers[-1].bias[y_test]
    hits = np.flatnonzero((logits <= -PATHS_LOGIT_MARGIN) & (logits - bias <= -PATHS_LOGIT_MARGIN))
    if not len(hits):
        raise RuntimeError("no held-out image has a true-class logit <= -margin; change the seed")
    return int(hits[0])


def boundary_image(conv0: Conv2d, image: np.ndarray) -> np.ndarray:
    """``image`` (1, 8, 8) with the fewest pixels set to 0 such that one neuron of conv0 lies
    exactly on the boundary of its z+ domain condition, b_j + sum_i x_i w_ij^- <= 0.

    conv0 has no bias, so the condition reads sum_i x_i w_ij^- <= 0 and holds with equality
    (exactly, in every precision) when every pixel under a negative kernel entry is 0; the neuron
    stays active (z_j = sum_i x_i w_ij^+ > 0) when some pixel under a positive entry is not.
    The root point then has t* = 1 and lies on the orthant's boundary (x~_i = 0 where w_ij > 0).
    Among all channels and positions, the one that needs the fewest pixels zeroed and keeps
    z_j >= 0.5 is taken (first in (channel, row, column) order on ties).
    """
    (kh, kw), (sh, sw), (ph, pw) = conv0.kernel_size, conv0.stride, conv0.padding
    padded = np.pad(image[0], ((ph, ph), (pw, pw)))
    best = None
    for o in range(conv0.out_channels):
        kernel = conv0.weight[o, 0]
        for p in range(conv0.output_shape(image.shape)[1]):
            for q in range(conv0.output_shape(image.shape)[2]):
                window = padded[p * sh : p * sh + kh, q * sw : q * sw + kw]
                zeroed = int(np.count_nonzero((kernel < 0) & (window != 0)))
                active = float((np.where(kernel > 0, kernel, 0) * window).sum())
                if active >= 0.5 and (best is None or zeroed < best[0]):
                    best = (zeroed, p, q, kernel)
    if best is None:
        raise RuntimeError("no conv0 neuron can be put on its boundary for this image")
    _, p, q, kernel = best
    padded[p * sh : p * sh + kh, q * sw : q * sw + kw][kernel < 0] = 0.0
    return padded[ph : ph + image.shape[1], pw : pw + image.shape[2]][None].copy()


def paths_samples(network: Sequential, x_test: np.ndarray, y_test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The 8 stored images of digits-paths and their labels, the first two chosen for ``lrp verify``
    (2 samples by default): 0, the first held-out image with a true-class logit <= -margin;
    1, the first other held-out image with the pixels under one conv0 neuron's negative kernel
    entries set to 0 (:func:`boundary_image`); then six of the first held-out images of the
    digits 0..7 (:func:`stored_test_indices`), those not taken already."""
    first = non_positive_logit_index(network, x_test, y_test)
    second = 0 if first != 0 else 1
    rest = [i for i in stored_test_indices(y_test) if i not in (first, second)][:6]
    images = np.concatenate([x_test[[first]], boundary_image(network.layers[0], x_test[second])[None],
                             x_test[rest]])
    return images, y_test[[first, second, *rest]]


# ---- optimiser and training loop ---------------------------------------------------------------

class Adam:
    """Adam (Kingma and Ba 2015) with the usual defaults."""

    def __init__(self, params: dict, lr: float, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8):
        self.lr, self.beta1, self.beta2, self.eps = lr, beta1, beta2, eps
        self.m = {k: np.zeros_like(v) for k, v in params.items()}
        self.v = {k: np.zeros_like(v) for k, v in params.items()}
        self.t = 0

    def step(self, params: dict, grads: dict) -> None:
        self.t += 1
        for k, g in grads.items():
            self.m[k] = self.beta1 * self.m[k] + (1 - self.beta1) * g
            self.v[k] = self.beta2 * self.v[k] + (1 - self.beta2) * g * g
            m_hat = self.m[k] / (1 - self.beta1 ** self.t)
            v_hat = self.v[k] / (1 - self.beta2 ** self.t)
            params[k] = params[k] - self.lr * m_hat / (np.sqrt(v_hat) + self.eps)


def train(kind: str, x: np.ndarray, y: np.ndarray, epochs: int, seed: int) -> Sequential:
    rng = np.random.default_rng(seed)
    bn_eps = 1e-5
    params = mlp_parameters(rng) if kind == "mlp" else cnn_parameters(rng)
    running_mean, running_var = np.zeros(8), np.ones(8)
    optimiser = Adam(params, lr=3e-3)
    batch = 32
    for epoch in range(epochs):
        order = rng.permutation(len(y))
        losses = []
        for start in range(0, len(y), batch):
            idx = order[start : start + batch]
            if kind == "mlp":
                loss, grads = mlp_gradients(params, x[idx], y[idx])
            else:
                loss, grads, (mean, var) = cnn_gradients(params, x[idx], y[idx], bn_eps)
                running_mean = (1 - BN_MOMENTUM) * running_mean + BN_MOMENTUM * mean
                running_var = (1 - BN_MOMENTUM) * running_var + BN_MOMENTUM * var
            optimiser.step(params, grads)
            losses.append(loss)
        if epoch % 10 == 9 or epoch == epochs - 1:
            print(f"  {kind} epoch {epoch + 1:3d}: mean loss {np.mean(losses):.4f}")
    if kind == "mlp":
        layers = [Dense(params["W0"], params["b0"]), ReLU(), Dense(params["W1"], params["b1"]), ReLU(),
                  Dense(params["W2"], params["b2"])]
        return Sequential(layers, input_shape=(64,))
    layers = [
        Conv2d(params["K0"], params["c0"], 1, 1),
        BatchNorm(params["gamma"], params["beta"], running_mean, running_var, bn_eps),
        ReLU(), Conv2d(params["K1"], params["c1"], 1, 1), ReLU(), MaxPool2d(2), Flatten(),
        Dense(params["W"], params["b"]),
    ]
    return Sequential(layers, input_shape=(1, 8, 8))


def train_resnet(x: np.ndarray, y: np.ndarray, epochs: int, seed: int) -> Graph:
    """digits-resnet, trained as the CNN: Adam, batches of 32, BatchNorms on batch statistics
    with running statistics (momentum ``BN_MOMENTUM``) kept for the stored model."""
    rng = np.random.default_rng(seed)
    bn_eps = 1e-5
    params = resnet_parameters(rng)
    running = {name: (np.zeros(RESNET_CONVS[conv][1]), np.ones(RESNET_CONVS[conv][1]))
               for name, conv in RESNET_BATCHNORMS.items()}
    optimiser = Adam(params, lr=3e-3)
    batch = 32
    for epoch in range(epochs):
        order = rng.permutation(len(y))
        losses = []
        for start in range(0, len(y), batch):
            idx = order[start : start + batch]
            nodes = resnet_nodes(params, running, bn_eps)
            values, caches, statistics = graph_forward_train(nodes, x[idx], bn_eps)
            loss, delta = softmax_cross_entropy(values[nodes[-1].name], y[idx])
            grads = graph_backward(nodes, values, caches, delta, bn_eps)
            for name, (mean, var) in statistics.items():
                running_mean, running_var = running[name]
                running[name] = ((1 - BN_MOMENTUM) * running_mean + BN_MOMENTUM * mean,
                                 (1 - BN_MOMENTUM) * running_var + BN_MOMENTUM * var)
            optimiser.step(params, grads)
            losses.append(loss)
        if epoch % 10 == 9 or epoch == epochs - 1:
            print(f"  resnet epoch {epoch + 1:3d}: mean loss {np.mean(losses):.4f}")
    return Graph(resnet_nodes(params, running, bn_eps), input_shape=(1, 8, 8))


def stored_test_indices(y_test: np.ndarray) -> np.ndarray:
    """The first held-out image of each of the digits 0..7: 8 images, 8 different labels."""
    return np.array([np.flatnonzero(y_test == digit)[0] for digit in range(N_STORED_TEST_IMAGES)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=MODELS_DIR, help="output folder")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--models", nargs="+", choices=MODEL_SHAPES, default=list(MODEL_SHAPES),
                        help="models to train (default: all)")
    args = parser.parse_args()
    x_train, y_train, x_test, y_test = load_digits_split()
    keep = stored_test_indices(y_test)
    for kind in args.models:
        shape = MODEL_SHAPES[kind]
        started = time.perf_counter()
        if kind == "resnet":
            network = train_resnet(x_train.reshape(-1, *shape), y_train, args.epochs, seed=1)
        elif kind == "paths":
            network = train_paths(x_train.reshape(-1, *shape), y_train, args.epochs, seed=1)
        else:
            network = train(kind, x_train.reshape(-1, *shape), y_train, args.epochs, seed=1)
        accuracy = float((network.forward(x_test.reshape(-1, *shape)).argmax(axis=1) == y_test).mean())
        print(f"digits-{kind}: held-out accuracy {accuracy:.4f} on {len(y_test)} images, "
              f"trained in {time.perf_counter() - started:.1f} s")
        path = args.out / f"digits_{kind}.npz"
        images, labels = x_test[keep].reshape(-1, *shape), y_test[keep]
        if kind == "paths":
            images, labels = paths_samples(network, x_test.reshape(-1, *shape), y_test)
        save_npz(
            network, path,
            input_domain=(np.zeros(shape), np.ones(shape)),
            extra={"test_images": images, "test_labels": labels,
                   "test_accuracy": np.float64(accuracy)},
        )
        print(f"  wrote {path} ({path.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
