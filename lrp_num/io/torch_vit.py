"""A small vision transformer as a PyTorch module (torch imported lazily): digits-vit and ViT-Tiny.

The architecture is the pre-norm ViT of Dosovitskiy et al. (2021), "An image is worth 16x16
words", ICLR, with the attention written out operation by operation, so that an LRP library
(LXT) or the audit can reach every softmax, product and norm:

* ``patch_embed``: ``nn.Conv2d(C, D, p, stride=p)`` cuts the image into p x p patches and maps
  each to D features; the (D, H/p, W/p) map becomes T = HW/p^2 tokens of width D, and a learned
  position embedding ``pos_embed`` (1, T, D) is added;
* ``blocks[k]`` (pre-norm): x = x + proj(attention(norm1(x))); x = x + fc2(GELU(fc1(norm2(x))))
  with multi-head self-attention of ``heads`` heads: q, k, v = x W_q + b_q, x W_k + b_k,
  x W_v + b_v (three ``nn.Linear``), per head A = softmax(q k^T / sqrt(d)) over the keys, out = A v;
* ``norm`` (a final LayerNorm), mean pooling over the tokens, ``head`` (``nn.Linear(D, classes)``).

Every operation a relevance rule sees goes through :class:`TorchOps` (``module.ops``): ``softmax``,
``matmul`` (the two products of attention), ``layer_norm``, ``gelu``, ``add`` (the skip
connections and the position embedding), ``mean`` (the pooling), ``scale`` (q / sqrt(d)) and
``linear``; reshapes and transposes go through ``rearrange``. An LRP library swaps the ops object for its
own functions (:mod:`lrp_num.audit.lxt_adapter`) without touching the weights; every op also
reports its output to ``ops.observe(name, tensor)``, which the audit uses to hook the tensors.

``digits-vit`` (:data:`DIGITS_VIT`): the 8x8 digits as 2x2 patches (16 tokens), width 32, 4 heads
of 8, MLP width 64, two blocks, 10 classes. ViT-Tiny (:data:`VIT_TINY`): 3x224x224, patch 16
(196 tokens), width 192, 3 heads, MLP width 768, 12 blocks, 1000 classes (mean pooling instead of
ViT's class token).
"""

from __future__ import annotations

import json
import math
import zipfile
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from lrp_num.errors import ModelFileError
from lrp_num.io.torch_bridge import require_torch

if TYPE_CHECKING:
    from lrp_num.engine.graph import Graph


@dataclass(frozen=True)
class ViTConfig:
    """Shape of a :class:`ViT`: image (channels, size), patch size, width D, depth, heads, MLP width."""

    channels: int
    image_size: int
    patch: int
    width: int
    depth: int
    heads: int
    mlp_width: int
    classes: int
    norm_eps: float = 1e-5

    @property
    def tokens(self) -> int:
        return (self.image_size // self.patch) ** 2

    @property
    def head_width(self) -> int:
        return self.width // self.heads


DIGITS_VIT = ViTConfig(channels=1, image_size=8, patch=2, width=32, depth=2, heads=4, mlp_width=64, classes=10)
VIT_TINY = ViTConfig(channels=3, image_size=224, patch=16, width=192, depth=12, heads=3, mlp_width=768,
                     classes=1000, norm_eps=1e-6)


class TorchOps:
    """The operations of :class:`ViT` as plain torch functions (what the forward pass computes).

    ``observe(name, tensor)`` is called with every op's output under its place in the model
    (``blocks.0.attn.softmax``, ...); it does nothing here. Subclasses replace ops by an LRP
    library's functions; their forward values must stay the same.
    """

    def observe(self, name: str, tensor):
        return tensor

    def linear(self, name: str, module, x):
        return self.observe(name, module(x))

    def layer_norm(self, name: str, module, x):
        return self.observe(name, module(x))

    def gelu(self, name: str, x):
        torch = require_torch()
        return self.observe(name, torch.nn.functional.gelu(x))

    def softmax(self, name: str, x):
        return self.observe(name, x.softmax(dim=-1))

    def matmul(self, name: str, a, b):
        torch = require_torch()
        return self.observe(name, torch.matmul(a, b))

    def rearrange(self, x, reshape: Callable):
        """``reshape(x)``: a view, transpose or reshape, which moves relevance unchanged."""
        return reshape(x)

    def scale(self, name: str, x, factor: float):
        return self.observe(name, x * factor)

    def add(self, name: str, a, b):
        return self.observe(name, a + b)

    def mean(self, name: str, x):
        return self.observe(name, x.mean(dim=1))


_CLASSES: dict[str, type] = {}


def _classes() -> dict[str, type]:
    """The module classes, created on first use so that torch is imported lazily."""
    if _CLASSES:
        return _CLASSES
    torch = require_torch()
    nn = torch.nn

    class Attention(nn.Module):
        """Multi-head self-attention, softmax(q k^T / sqrt(d)) v per head, then ``proj``."""

        def __init__(self, width: int, heads: int) -> None:
            super().__init__()
            self.heads, self.scale = heads, 1.0 / math.sqrt(width // heads)
            self.q, self.k, self.v = nn.Linear(width, width), nn.Linear(width, width), nn.Linear(width, width)
            self.proj = nn.Linear(width, width)

        def forward(self, x, ops: TorchOps, name: str):
            n, t, d = x.shape

            def split(z):  # (n, t, d) -> (n, heads, t, d / heads)
                return ops.rearrange(z, lambda z: z.reshape(n, t, self.heads, d // self.heads).transpose(1, 2))

            q = ops.scale(f"{name}.q_scaled", split(ops.linear(f"{name}.q", self.q, x)), self.scale)
            k = split(ops.linear(f"{name}.k", self.k, x))
            v = split(ops.linear(f"{name}.v", self.v, x))
            scores = ops.matmul(f"{name}.scores", q, ops.rearrange(k, lambda k: k.transpose(-2, -1)))
            weights = ops.softmax(f"{name}.softmax", scores)
            mixed = ops.matmul(f"{name}.mix", weights, v)
            merged = ops.rearrange(mixed, lambda z: z.transpose(1, 2).reshape(n, t, d))
            return ops.linear(f"{name}.proj", self.proj, merged)

    class MLP(nn.Module):
        """fc2(GELU(fc1(x))), hidden width ``mlp_width``."""

        def __init__(self, width: int, hidden: int) -> None:
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(width, hidden), nn.Linear(hidden, width)

        def forward(self, x, ops: TorchOps, name: str):
            hidden = ops.gelu(f"{name}.act", ops.linear(f"{name}.fc1", self.fc1, x))
            return ops.linear(f"{name}.fc2", self.fc2, hidden)

    class Block(nn.Module):
        """Pre-norm transformer block with two skip connections."""

        def __init__(self, config: ViTConfig) -> None:
            super().__init__()
            self.norm1 = nn.LayerNorm(config.width, eps=config.norm_eps)
            self.attn = Attention(config.width, config.heads)
            self.norm2 = nn.LayerNorm(config.width, eps=config.norm_eps)
            self.mlp = MLP(config.width, config.mlp_width)

        def forward(self, x, ops: TorchOps, name: str):
            x = ops.add(f"{name}.add1", x, self.attn(ops.layer_norm(f"{name}.norm1", self.norm1, x), ops, f"{name}.attn"))
            return ops.add(f"{name}.add2", x, self.mlp(ops.layer_norm(f"{name}.norm2", self.norm2, x), ops, f"{name}.mlp"))

    class ViT(nn.Module):
        """Patch embedding, position embedding, pre-norm blocks, final norm, mean pooling, head."""

        def __init__(self, config: ViTConfig) -> None:
            super().__init__()
            self.config = config
            self.ops: TorchOps = TorchOps()
            self.patch_embed = nn.Conv2d(config.channels, config.width, config.patch, stride=config.patch)
            self.pos_embed = nn.Parameter(torch.zeros(1, config.tokens, config.width))
            self.blocks = nn.ModuleList(Block(config) for _ in range(config.depth))
            self.norm = nn.LayerNorm(config.width, eps=config.norm_eps)
            self.head = nn.Linear(config.width, config.classes)

        def tokens(self, x):
            """(n, C, H, W) images -> (n, T, D) patch tokens with the position embedding added."""
            ops = self.ops
            patches = ops.linear("patch_embed", self.patch_embed, x)
            tokens = ops.rearrange(patches, lambda z: z.flatten(2).transpose(1, 2))
            return ops.add("pos_add", tokens, self.pos_embed)

        def forward(self, x):
            ops = self.ops
            x = self.tokens(x)
            for k, block in enumerate(self.blocks):
                x = block(x, ops, f"blocks.{k}")
            pooled = ops.mean("pool", ops.layer_norm("norm", self.norm, x))
            return ops.linear("head", self.head, pooled)

    _CLASSES.update(ViT=ViT, Block=Block, Attention=Attention, MLP=MLP)
    return _CLASSES


def build_vit(config: ViTConfig = DIGITS_VIT, seed: int | None = 0, dtype: Any = None):
    """A :class:`ViT` with torch's default initialisation (seeded by ``seed``) and a position
    embedding drawn from N(0, 0.02^2); ``dtype`` defaults to torch.float64."""
    torch = require_torch()
    dtype = torch.float64 if dtype is None else dtype
    if seed is not None:
        torch.manual_seed(seed)
    model = _classes()["ViT"](config)
    with torch.no_grad():
        model.pos_embed.normal_(0.0, 0.02)
    return model.to(dtype).eval()


def vit_arrays(model) -> dict[str, np.ndarray]:
    """The model's parameters as plain float64 arrays under their state-dict names."""
    return {name: tensor.detach().cpu().double().numpy().copy() for name, tensor in model.state_dict().items()}


def vit_from_arrays(arrays: dict[str, np.ndarray], config: ViTConfig = DIGITS_VIT, dtype: Any = None):
    """A :class:`ViT` of ``config`` with the given parameters.

    Raises
    ------
    ModelFileError
        A parameter is missing or unexpected, not a real number array, not finite, or of another
        shape than ``config`` gives it (the message names the array).
    """
    torch = require_torch()
    dtype = torch.float64 if dtype is None else dtype
    with torch.device("meta"):  # the shapes only: nothing allocated before the arrays are checked against them
        expected = _classes()["ViT"](config).state_dict()
    missing, extra = sorted(set(expected) - set(arrays)), sorted(set(arrays) - set(expected))
    if missing or extra:
        raise ModelFileError(f"ViT parameters do not match the architecture {config_json(config)}: "
                             f"missing {missing}, unexpected {extra}")
    for name, tensor in expected.items():
        value = np.asarray(arrays[name])
        if tuple(value.shape) != tuple(tensor.shape):
            raise ModelFileError(f"ViT parameter {name!r} has shape {value.shape}, expected {tuple(tensor.shape)} "
                                 f"by the architecture {config_json(config)}")
        if value.dtype.kind not in "biuf":
            raise ModelFileError(f"ViT parameter {name!r} has dtype {value.dtype}, not real numbers")
        if not np.all(np.isfinite(value)):
            raise ModelFileError(f"ViT parameter {name!r} holds NaN or infinite values")
    model = build_vit(config, seed=None, dtype=dtype)
    model.load_state_dict({name: torch.tensor(np.asarray(arrays[name], dtype=np.float64), dtype=dtype)
                           for name in expected})
    return model.eval()


#: the digits-vit parameters as trained by scripts/train_digits_vit.py (plain arrays, no pickle)
DIGITS_VIT_WEIGHTS = Path(__file__).resolve().parents[1] / "models" / "digits_vit_weights.npz"
WEIGHT_PREFIX = "param."
#: the array of a ViT weights file holding its :class:`ViTConfig` as a JSON string (0-d unicode array)
CONFIG_KEY = "config"


def config_json(config: ViTConfig) -> str:
    """``config`` as the JSON text stored under :data:`CONFIG_KEY` (keys sorted)."""
    return json.dumps(asdict(config), sort_keys=True)


def sizes_config(config_type: type, data: dict, source: str, noun: str):
    """``config_type(**data)`` for a dataclass of positive integer sizes and a last field
    ``norm_eps`` (optional, default 1e-5), checked field by field (ModelFileError naming
    ``source`` and the field; ``noun`` names the type in the message)."""
    names = [f.name for f in fields(config_type)]
    unknown = sorted(set(data) - set(names))
    missing = [name for name in names if name != "norm_eps" and name not in data]
    if unknown or missing:
        raise ModelFileError(f"{source}: unknown fields {unknown}, missing fields {missing} ({noun} has "
                             f"{', '.join(names)})")
    for name in names[:-1]:
        value = data[name]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ModelFileError(f"{source}: {name} must be a positive integer, got {value!r}")
    eps = data.get("norm_eps", 1e-5)
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not math.isfinite(eps) or eps <= 0:
        raise ModelFileError(f"{source}: norm_eps must be a positive finite number, got {eps!r}")
    return config_type(**{**data, "norm_eps": float(eps)})


def config_from_json(text: str, source: str = "the ViT config") -> ViTConfig:
    """The :class:`ViTConfig` a JSON object describes (``norm_eps`` optional, default 1e-5).

    Raises
    ------
    ModelFileError
        Not a JSON object, an unknown or missing field, a size that is not a positive integer,
        an image size that the patch size does not divide, a width that the heads do not divide,
        or a ``norm_eps`` that is not a positive finite number.
    """
    try:
        data = json.loads(text)
    except ValueError as error:
        raise ModelFileError(f"{source} is not JSON: {error}") from None
    if not isinstance(data, dict):
        raise ModelFileError(f"{source} is not a JSON object of ViT sizes")
    config = sizes_config(ViTConfig, data, source, "a ViTConfig")
    if config.image_size % config.patch:
        raise ModelFileError(f"{source}: the patch size {config.patch} does not divide the image size "
                             f"{config.image_size}")
    if config.width % config.heads:
        raise ModelFileError(f"{source}: the {config.heads} heads do not divide the width {config.width}")
    return config


def save_vit_weights(model, path: str | Path, test_images: np.ndarray | None = None,
                     test_labels: np.ndarray | None = None) -> Path:
    """Write the torch :class:`ViT` ``model`` as a weights file that :func:`load_vit_torch` reads.

    The .npz (plain arrays, no pickle; fixed timestamps, so equal models give equal bytes) holds
    every parameter as ``param.<state-dict name>`` (float64), the model's :class:`ViTConfig` as
    JSON under ``config``, and optionally ``test_images`` (N, C, H, W) with their ``test_labels``
    (N,), the samples ``lrp audit --library lxt --model FILE --sample k`` explains.

    Raises
    ------
    ShapeError
        ``test_images`` are not a non-empty batch of the model's input shape, or ``test_labels``
        are given without images or are not one integer per image.
    OutputPathError
        ``path`` cannot be written.
    """
    from lrp_num.errors import ShapeError
    from lrp_num.io.files import check_output_path, write_atomic
    from lrp_num.io.model_io import _write_archive

    config: ViTConfig = model.config
    arrays: dict[str, np.ndarray] = {CONFIG_KEY: np.asarray(config_json(config))}
    arrays.update({f"{WEIGHT_PREFIX}{name}": value for name, value in sorted(vit_arrays(model).items())})
    shape = (config.channels, config.image_size, config.image_size)
    if test_images is not None:
        images = np.asarray(test_images, dtype=np.float64)
        if images.ndim != 4 or tuple(images.shape[1:]) != shape or len(images) == 0:
            raise ShapeError(f"test_images have shape {images.shape}; the ViT takes a batch of shape (N, "
                             f"{', '.join(map(str, shape))})")
        arrays["test_images"] = images
    if test_labels is not None:
        labels = np.asarray(test_labels)
        if test_images is None or labels.shape != (len(arrays["test_images"]),) or labels.dtype.kind not in "iu":
            raise ShapeError("test_labels must be one integer per test image (and need test_images)")
        arrays["test_labels"] = labels.astype(np.int64)
    path = check_output_path(path, "the ViT weights")
    write_atomic(path, lambda stream: _write_archive(stream, arrays))
    return path


def load_vit_torch(path: str | Path = DIGITS_VIT_WEIGHTS, dtype: Any = None):
    """(model, extras): the torch :class:`ViT` a weights .npz describes and the file's other arrays.

    The shape comes from the file's ``config`` (:func:`save_vit_weights`); a file without one is
    digits-vit's shape (:data:`DIGITS_VIT`: the file ``scripts/train_digits_vit.py`` writes).
    ``extras`` holds ``test_images`` (N, C, H, W), ``test_labels`` and ``test_accuracy`` where
    the file has them. Read with ``allow_pickle=False``.

    Raises
    ------
    ModelFileError
        The file is missing or not an .npz, holds no ``param.*`` arrays (not a ViT weights file),
        has a malformed config, parameters that do not match it (named), or test images of
        another shape than the config's input.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"cannot read ViT weights {path}: no such file")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise ModelFileError(f"cannot read ViT weights {path}: {error}") from None
    params = {key[len(WEIGHT_PREFIX):]: value for key, value in arrays.items() if key.startswith(WEIGHT_PREFIX)}
    if not params:
        raise ModelFileError(f"{path} is not a ViT weights file: it holds no {WEIGHT_PREFIX}<name> arrays "
                             f"(write one with lrp_num.io.torch_vit.save_vit_weights)")
    config = DIGITS_VIT
    if CONFIG_KEY in arrays:
        text = arrays[CONFIG_KEY]
        if text.dtype.kind != "U" or text.ndim != 0:
            raise ModelFileError(f"{path}: its {CONFIG_KEY!r} array must be one JSON string, got "
                                 f"{text.dtype} of shape {text.shape}")
        config = config_from_json(str(text), f"{path}: {CONFIG_KEY!r}")
    extras = {key: value for key, value in arrays.items() if not key.startswith(WEIGHT_PREFIX) and key != CONFIG_KEY}
    images = extras.get("test_images")
    shape = (config.channels, config.image_size, config.image_size)
    if images is not None and (images.ndim != 4 or tuple(images.shape[1:]) != shape or images.dtype.kind not in "biuf"):
        raise ModelFileError(f"{path}: test_images have shape {images.shape} and dtype {images.dtype}; the ViT "
                             f"takes real samples of shape {shape}")
    try:
        model = vit_from_arrays(params, config, dtype)
    except ModelFileError as error:
        raise ModelFileError(f"{path}: {error}") from None
    return model, extras


def load_digits_vit_torch(path: str | Path = DIGITS_VIT_WEIGHTS, dtype: Any = None):
    """(model, extras): the trained digits-vit as a torch :class:`ViT` and the file's other arrays
    (``test_images`` (8, 1, 8, 8), ``test_labels``, ``test_accuracy``): :func:`load_vit_torch`
    of the shipped file."""
    return load_vit_torch(path, dtype)


def config_dict(config: ViTConfig) -> dict:
    return asdict(config)


# ---- the same model as a Graph of the engine's layers ------------------------------------------

def patch_embedding_matrix(conv_weight: np.ndarray, conv_bias: np.ndarray, pos_embed: np.ndarray,
                           config: ViTConfig) -> tuple[np.ndarray, np.ndarray]:
    """The patch convolution and the position embedding as one Dense on the flattened image.

    Token t = (p, q) (row-major over the (H/P, W/P) patch grid), feature j:
    z[t D + j] = sum_{c, u, v} K[j, c, u, v] x[c, p P + u, q P + v] + b_j + pos[t, j]. Returns the
    weight (C H W, T D) in the w_ij layout and the bias (T D,).
    """
    c_in, size, p = config.channels, config.image_size, config.patch
    grid, width = size // p, config.width
    weight = np.zeros((c_in, size, size, grid * grid, width))
    for row in range(grid):
        for col in range(grid):
            token = row * grid + col
            # K[j, c, u, v] -> (c, u, v, j) at the patch's pixels
            weight[:, row * p:(row + 1) * p, col * p:(col + 1) * p, token, :] = np.transpose(conv_weight, (1, 2, 3, 0))
    bias = (np.asarray(conv_bias)[None, :] + np.asarray(pos_embed).reshape(grid * grid, width)).reshape(-1)
    return weight.reshape(c_in * size * size, grid * grid * width), bias


#: largest patch-embedding Dense (C H W x T D entries) :func:`vit_graph` builds; above, the convolution
DENSE_EMBEDDING_LIMIT = 4_000_000


def vit_graph(model) -> "Graph":
    """The engine's :class:`~lrp_num.engine.graph.Graph` computing what the torch :class:`ViT` computes.

    Nodes: the patch embedding (below), ``tokens`` (T, D); per block ``blocks.k.norm1`` (LayerNorm),
    the attention nodes of :func:`lrp_num.layers.attention.multi_head_attention` under
    ``blocks.k.attn``, ``blocks.k.add1``, ``blocks.k.norm2``, ``blocks.k.mlp.fc1`` (TokenDense),
    ``blocks.k.mlp.act`` (GELU), ``blocks.k.mlp.fc2``, ``blocks.k.add2``; then ``norm`` (LayerNorm),
    ``pooled`` (Flatten of the tokens) and ``head``: mean pooling and the classifier as one Dense,
    w[t D + j, c] = W_head[c, j] / T (the mean over tokens is linear, so
    head(mean_t x_t) = sum_t x_t W_head^T / T + b).

    The patch embedding is ``flatten`` and one Dense ``patch_embed`` on the flattened image (the
    patch convolution and the position embedding, :func:`patch_embedding_matrix`) when that matrix
    has at most :data:`DENSE_EMBEDDING_LIMIT` entries (digits-vit); otherwise (ViT-Tiny) the
    convolution ``patch_embed``, ``patch_flat`` (Flatten, (D, T) order), ``patch_rows`` (Reshape to
    (D, T)) and ``patch_tokens`` (SplitHeads(T): (D, T) -> (T, D, 1), a transpose), which needs a
    zero position embedding (the graph has no node adding a constant): UnsupportedLayerError otherwise.
    """
    from lrp_num.engine.graph import INPUT, Graph
    from lrp_num.errors import UnsupportedLayerError
    from lrp_num.layers import GELU, Add, Conv2d, Dense, Flatten, LayerNorm, Reshape, SplitHeads, TokenDense
    from lrp_num.layers.attention import multi_head_attention

    config: ViTConfig = model.config
    p = vit_arrays(model)
    tokens, width = config.tokens, config.width

    def linear(prefix: str) -> tuple[np.ndarray, np.ndarray]:
        return p[f"{prefix}.weight"].T.copy(), p[f"{prefix}.bias"]

    def norm(prefix: str):
        return LayerNorm(p[f"{prefix}.weight"], p[f"{prefix}.bias"], config.norm_eps)

    pixels = config.channels * config.image_size ** 2
    if pixels * tokens * width <= DENSE_EMBEDDING_LIMIT:
        embed_weight, embed_bias = patch_embedding_matrix(p["patch_embed.weight"], p["patch_embed.bias"],
                                                          p["pos_embed"], config)
        nodes: list[tuple] = [("flatten", Flatten(), (INPUT,)),
                              ("patch_embed", Dense(embed_weight, embed_bias), ("flatten",)),
                              ("tokens", Reshape((tokens, width)), ("patch_embed",))]
    else:
        if np.any(p["pos_embed"] != 0):
            raise UnsupportedLayerError(f"vit_graph: a {pixels} x {tokens * width} patch-embedding matrix is too "
                                        "large, and the convolution route needs a zero position embedding")
        conv = Conv2d(p["patch_embed.weight"], p["patch_embed.bias"], config.patch, 0)
        nodes = [("patch_embed", conv, (INPUT,)), ("patch_flat", Flatten(), ("patch_embed",)),
                 ("patch_rows", Reshape((width, tokens)), ("patch_flat",)),
                 ("patch_tokens", SplitHeads(tokens), ("patch_rows",)),
                 ("tokens", Reshape((tokens, width)), ("patch_tokens",))]
    stream = "tokens"
    for k in range(config.depth):
        b = f"blocks.{k}"
        nodes.append((f"{b}.norm1", norm(f"{b}.norm1"), (stream,)))
        attention, out = multi_head_attention(f"{b}.attn", f"{b}.norm1", config.heads, linear(f"{b}.attn.q"),
                                              linear(f"{b}.attn.k"), linear(f"{b}.attn.v"), linear(f"{b}.attn.proj"))
        nodes += attention
        nodes += [(f"{b}.add1", Add(), (stream, out)), (f"{b}.norm2", norm(f"{b}.norm2"), (f"{b}.add1",)),
                  (f"{b}.mlp.fc1", TokenDense(*linear(f"{b}.mlp.fc1")), (f"{b}.norm2",)),
                  (f"{b}.mlp.act", GELU("none"), (f"{b}.mlp.fc1",)),
                  (f"{b}.mlp.fc2", TokenDense(*linear(f"{b}.mlp.fc2")), (f"{b}.mlp.act",)),
                  (f"{b}.add2", Add(), (f"{b}.add1", f"{b}.mlp.fc2"))]
        stream = f"{b}.add2"
    head_weight = np.tile(p["head.weight"].T / tokens, (tokens, 1))  # (T D, classes)
    nodes += [("norm", norm("norm"), (stream,)), ("pooled", Flatten(), ("norm",)),
              ("head", Dense(head_weight, p["head.bias"]), ("pooled",))]
    return Graph(nodes, input_shape=(config.channels, config.image_size, config.image_size))


__all__ = ["CONFIG_KEY", "DIGITS_VIT", "DIGITS_VIT_WEIGHTS", "TorchOps", "VIT_TINY", "ViTConfig", "build_vit",
           "config_from_json", "config_json", "load_digits_vit_torch", "load_vit_torch", "patch_embedding_matrix",
           "save_vit_weights", "vit_arrays", "vit_from_arrays", "vit_graph"]
