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

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from lrp_num.errors import ModelFileError
from lrp_num.io.torch_bridge import require_torch


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
    """A :class:`ViT` of ``config`` with the given parameters (ModelFileError if any is missing,
    extra or of the wrong shape)."""
    torch = require_torch()
    dtype = torch.float64 if dtype is None else dtype
    model = build_vit(config, seed=None, dtype=dtype)
    expected = model.state_dict()
    missing, extra = sorted(set(expected) - set(arrays)), sorted(set(arrays) - set(expected))
    if missing or extra:
        raise ModelFileError(f"ViT parameters do not match the architecture: missing {missing}, unexpected {extra}")
    for name, tensor in expected.items():
        if tuple(arrays[name].shape) != tuple(tensor.shape):
            raise ModelFileError(f"ViT parameter {name!r} has shape {arrays[name].shape}, expected {tuple(tensor.shape)}")
    model.load_state_dict({name: torch.tensor(np.asarray(arrays[name]), dtype=dtype) for name in expected})
    return model.eval()


#: the digits-vit parameters as trained by scripts/train_digits_vit.py (plain arrays, no pickle)
DIGITS_VIT_WEIGHTS = Path(__file__).resolve().parents[1] / "models" / "digits_vit_weights.npz"
WEIGHT_PREFIX = "param."


def load_digits_vit_torch(path: str | Path = DIGITS_VIT_WEIGHTS, dtype: Any = None):
    """(model, extras): the trained digits-vit as a torch :class:`ViT` and the file's other arrays
    (``test_images`` (8, 1, 8, 8), ``test_labels``, ``test_accuracy``). Read with
    ``allow_pickle=False``."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (OSError, ValueError) as error:
        raise ModelFileError(f"cannot read digits-vit weights {path}: {error}") from None
    params = {key[len(WEIGHT_PREFIX):]: value for key, value in arrays.items() if key.startswith(WEIGHT_PREFIX)}
    extras = {key: value for key, value in arrays.items() if not key.startswith(WEIGHT_PREFIX)}
    return vit_from_arrays(params, DIGITS_VIT, dtype), extras


def config_dict(config: ViTConfig) -> dict:
    return asdict(config)


__all__ = ["DIGITS_VIT", "DIGITS_VIT_WEIGHTS", "TorchOps", "VIT_TINY", "ViTConfig", "build_vit",
           "load_digits_vit_torch", "vit_arrays", "vit_from_arrays"]
