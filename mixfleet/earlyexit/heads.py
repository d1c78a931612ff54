"""Exit heads: small classifiers attached after a backbone stage.

A head maps one stage's output to logits ``[B, classes]``. Heads are built
from a registry keyed by lowercase name, given the per-sample shape of the
stage output (``(C, H, W)`` for conv features, ``(T, D)`` for token
sequences, ``(D,)`` for vectors), so they know their input width without
lazy layers (which would not survive ``torch.export`` or a state-dict load).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from mixfleet.errors import InputError, unknown_name


class TokenMean(nn.Module):
    """``[B, T, D] -> [B, D]``: mean over the sequence (transformer features)."""

    def forward(self, x):
        return x.mean(dim=1)


def pool_linear(shape: tuple[int, ...], num_classes: int, pool: int = 4) -> nn.Module:
    """Pooling + linear: adaptive average pool to ``pool x pool`` (conv) or token mean."""
    if len(shape) == 3:
        c = shape[0]
        p = min(pool, shape[1], shape[2])
        return nn.Sequential(nn.AdaptiveAvgPool2d(p), nn.Flatten(1), nn.Linear(c * p * p, num_classes))
    if len(shape) == 2:
        return nn.Sequential(TokenMean(), nn.Linear(shape[1], num_classes))
    if len(shape) == 1:
        return nn.Linear(shape[0], num_classes)
    raise InputError(f"cannot attach a 'pool_linear' head to a stage output of shape {shape}",
                     "heads take (C, H, W), (T, D) or (D,) features per sample")


def small_conv(shape: tuple[int, ...], num_classes: int, width: int | None = None, pool: int = 2) -> nn.Module:
    """A 3x3 stride-2 conv + BN + ReLU, then pool + linear (conv features only)."""
    if len(shape) != 3:
        raise InputError(f"the 'conv' head needs conv features (C, H, W), got a stage output of shape {shape}",
                         "use head='pool_linear' for token or vector features")
    c = shape[0]
    w = width or c
    p = min(pool, max(1, shape[1] // 2))
    return nn.Sequential(nn.Conv2d(c, w, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(w),
                         nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(p), nn.Flatten(1),
                         nn.Linear(w * p * p, num_classes))


HEADS: dict[str, Callable[..., nn.Module]] = {"pool_linear": pool_linear, "conv": small_conv}


def build_head(spec: str | dict, shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """Build a head from ``"name"`` or ``{"name": ..., **kwargs}``."""
    spec = {"name": spec} if isinstance(spec, str) else dict(spec)
    name = str(spec.pop("name", "")).lower()
    if name not in HEADS:
        raise unknown_name("exit head", name, HEADS)
    try:
        return HEADS[name](tuple(shape), num_classes, **spec)
    except TypeError as exc:
        raise InputError(f"bad options for exit head '{name}': {exc}",
                         f"see mixfleet.earlyexit.heads.{HEADS[name].__name__} for its options") from None
