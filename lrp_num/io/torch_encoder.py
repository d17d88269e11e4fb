"""A plain PyTorch transformer encoder classifier, built from torch's own modules (torch imported lazily).

The pre-norm encoder of Vaswani et al. (2017), "Attention is all you need", NeurIPS, as torch
users write it, with nothing hand-written inside the attention: on tokens x of shape (T, D),
``depth`` blocks of

    x = x + attn(norm1(x), norm1(x), norm1(x))     (nn.MultiheadAttention, batch_first, ``heads`` heads)
    x = x + fc2(act(fc1(norm2(x))))                (nn.Linear, nn.GELU, nn.Linear; hidden ``mlp_width``)

(``blocks.k.norm1``, ``blocks.k.attn``, ``blocks.k.norm2``, ``blocks.k.fc1``, ``blocks.k.act``,
``blocks.k.fc2``), then ``norm`` (nn.LayerNorm) and ``head`` (nn.Linear(T D, classes)) on the
flattened tokens. Saved as a state dict (``torch.save(model.state_dict(), path)``) and described
by a JSON architecture (:data:`ENCODER_HELP`), it is read without pickle
(:func:`load_encoder`: ``torch.load(weights_only=True)``); ``lrp audit --library lxt --rule
cplrp --model W.pt --architecture ARCH.json`` audits LXT's CP-LRP on it
(:mod:`lrp_num.audit.lxt_module`).
"""

from __future__ import annotations

import json
import pickle
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from lrp_num.errors import ModelFileError
from lrp_num.io.torch_bridge import require_torch

ENCODER_HELP = """\
A JSON file {"type": "encoder", "tokens": T, "width": D, "heads": H, "mlp_width": M, "depth": L,
"classes": C, "norm_eps": 1e-5 (optional)}: the pre-norm transformer encoder of
lrp_num.io.torch_encoder (nn.MultiheadAttention, nn.LayerNorm, nn.GELU, nn.Linear) on inputs of
shape (T, D), with a linear head on the flattened tokens."""


@dataclass(frozen=True)
class EncoderConfig:
    """Shape of an :func:`build_encoder` model: tokens T, width D, heads, MLP width, depth, classes."""

    tokens: int
    width: int
    heads: int
    mlp_width: int
    depth: int
    classes: int
    norm_eps: float = 1e-5

    @property
    def input_shape(self) -> tuple[int, int]:
        return (self.tokens, self.width)


def encoder_config(data: Any, source: str = "the architecture") -> EncoderConfig:
    """The :class:`EncoderConfig` of a JSON architecture (already parsed; see :data:`ENCODER_HELP`).

    Raises
    ------
    ModelFileError
        Not an object of type "encoder", an unknown or missing field, a size that is not a
        positive integer, heads that do not divide the width, or a non-positive ``norm_eps``.
    """
    if not isinstance(data, dict) or data.get("type") != "encoder":
        raise ModelFileError(f"{source} is not a transformer encoder: --library lxt takes "
                             '{"type": "encoder", ...} (see lrp_num.io.torch_encoder.ENCODER_HELP)')
    data = {key: value for key, value in data.items() if key != "type"}
    from lrp_num.io.torch_vit import sizes_config

    config = sizes_config(EncoderConfig, data, source, "an encoder")
    if config.width % config.heads:
        raise ModelFileError(f"{source}: the {config.heads} heads do not divide the width {config.width}")
    return config


_CLASSES: dict[str, type] = {}


def _classes() -> dict[str, type]:
    """The module classes (``EncoderBlock``, ``Encoder``), created on first use so that torch is
    imported lazily; module-level names, so a model can be pickled by whoever wants to."""
    if _CLASSES:
        return _CLASSES
    torch = require_torch()
    nn = torch.nn

    class EncoderBlock(nn.Module):
        """x + attn(norm1(x)), then + fc2(GELU(fc1(norm2(x))))."""

        def __init__(self, config: EncoderConfig) -> None:
            super().__init__()
            self.norm1 = nn.LayerNorm(config.width, eps=config.norm_eps)
            self.attn = nn.MultiheadAttention(config.width, config.heads, batch_first=True)
            self.norm2 = nn.LayerNorm(config.width, eps=config.norm_eps)
            self.fc1, self.act = nn.Linear(config.width, config.mlp_width), nn.GELU()
            self.fc2 = nn.Linear(config.mlp_width, config.width)

        def forward(self, x):
            h = self.norm1(x)
            x = x + self.attn(h, h, h, need_weights=False)[0]
            return x + self.fc2(self.act(self.fc1(self.norm2(x))))

    class Encoder(nn.Module):
        """``depth`` blocks, a final LayerNorm, a linear head on the flattened tokens."""

        def __init__(self, config: EncoderConfig) -> None:
            super().__init__()
            self.config = config
            self.blocks = nn.ModuleList(EncoderBlock(config) for _ in range(config.depth))
            self.norm = nn.LayerNorm(config.width, eps=config.norm_eps)
            self.head = nn.Linear(config.tokens * config.width, config.classes)

        def forward(self, x):
            for block in self.blocks:
                x = block(x)
            return self.head(self.norm(x).flatten(1))

    for cls in (EncoderBlock, Encoder):
        cls.__module__, cls.__qualname__ = __name__, cls.__name__
    _CLASSES.update(EncoderBlock=EncoderBlock, Encoder=Encoder)
    return _CLASSES


def __getattr__(name: str) -> type:
    if name in ("Encoder", "EncoderBlock"):
        return _classes()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def build_encoder(config: EncoderConfig, seed: int | None = 0, dtype: Any = None):
    """The encoder of ``config`` (see the module docstring) with torch's default initialisation
    (seeded by ``seed``), in eval mode; ``dtype`` defaults to torch.float64."""
    torch = require_torch()
    dtype = torch.float64 if dtype is None else dtype
    if seed is not None:
        torch.manual_seed(seed)
    return _classes()["Encoder"](config).to(dtype).eval()


def load_encoder(weights: str | Path, architecture: str | Path, dtype: Any = None):
    """The encoder an architecture JSON describes, with the state dict ``weights`` (read with
    ``torch.load(weights_only=True)``: tensors only, no pickled code).

    Raises
    ------
    ModelFileError
        An unreadable architecture or state dict, or a state dict that does not fit the
        architecture (missing, unexpected or misshapen tensors, named) or holds non-finite values.
    """
    torch = require_torch()
    try:
        data = json.loads(Path(architecture).read_text())
    except (OSError, ValueError) as error:
        raise ModelFileError(f"cannot read architecture {architecture}: {error}") from None
    config = encoder_config(data, str(architecture))
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # what weights_only raises for anything but tensors and containers
        raise ModelFileError(f"cannot read state dict {weights}: it holds pickled objects other than tensors "
                             "(save model.state_dict(), read here with torch.load(weights_only=True))") from None
    except Exception as error:  # torch raises several types for foreign or corrupt files
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise ModelFileError(f"cannot read state dict {weights}: {first}") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelFileError(f"{weights} is not a state dict of tensors")
    with torch.device("meta"):  # the shapes only: nothing allocated before the tensors are checked against them
        expected = _classes()["Encoder"](config).state_dict()
    missing, extra = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or extra:
        raise ModelFileError(f"state dict {weights} does not fit the architecture {architecture}: "
                             f"missing {missing}, unexpected {extra}")
    for name, tensor in expected.items():
        value = state[name]
        if tuple(value.shape) != tuple(tensor.shape):
            raise ModelFileError(f"state dict {weights}: {name!r} has shape {tuple(value.shape)}, expected "
                                 f"{tuple(tensor.shape)} by the architecture {architecture}")
        if not value.is_floating_point() or not bool(torch.isfinite(value).all()):
            raise ModelFileError(f"state dict {weights}: {name!r} is not a finite floating-point tensor")
    model = build_encoder(config, seed=None, dtype=dtype)
    model.load_state_dict({name: state[name].to(next(model.parameters()).dtype) for name in expected})
    return model.eval()


def architecture_json(config: EncoderConfig) -> str:
    """The JSON architecture of ``config`` (what :func:`load_encoder` reads)."""
    return json.dumps({"type": "encoder", **asdict(config)}, sort_keys=True)


__all__ = ["ENCODER_HELP", "EncoderConfig", "architecture_json", "build_encoder", "encoder_config", "load_encoder"]
