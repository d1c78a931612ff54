"""Training exits: jointly with the backbone, or heads only on a frozen backbone.

- :func:`train_joint`: one optimiser over every parameter; the loss is the
  weighted sum of the cross-entropies of every exit and the final exit
  (``weights[k]`` for exit ``k``, the last weight for the final exit).
- :func:`train_heads`: the backbone is frozen (no gradients, eval-mode
  batch norm); each exit's input features are computed *once* and cached,
  then only the heads are trained on them, which costs a small fraction of a
  backbone epoch. This is how exits are added to an already-trained model.

Randomness (shuffling, augmentation, head init) comes from the ``seed``
passed in; nothing reads global RNG state.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from mixfleet.errors import InputError


def _batches(n: int, batch_size: int, gen: torch.Generator):
    perm = torch.randperm(n, generator=gen)
    for s in range(0, n, batch_size):
        yield perm[s:s + batch_size]


def augment(x: torch.Tensor, gen: torch.Generator, shift: float = 0.1, rotate_deg: float = 10.0,
            noise: float = 0.0) -> torch.Tensor:
    """Random rotations (up to ``rotate_deg``) and shifts of ``[B, C, H, W]`` images (per sample); with
    ``noise`` > 0 each sample also gets Gaussian pixel noise of a standard deviation drawn uniformly
    from ``[0, noise]``, clipped to ``[0, 1]`` (the drift stream's corruption, at lower strength)."""
    b = x.shape[0]
    ang = (torch.rand(b, generator=gen) * 2 - 1) * math.radians(rotate_deg)
    t = (torch.rand(b, 2, generator=gen) * 2 - 1) * shift * 2  # grid units span 2
    cos, sin = torch.cos(ang), torch.sin(ang)
    theta = torch.stack([torch.stack([cos, -sin, t[:, 0]], 1), torch.stack([sin, cos, t[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, align_corners=False, padding_mode="zeros")
    if noise > 0:
        sigma = torch.rand(b, 1, 1, 1, generator=gen) * noise
        out = (out + sigma * torch.randn(out.shape, generator=gen)).clamp_(0.0, 1.0)
    return out


def _weights(model, weights: Sequence[float] | None) -> list[float]:
    n = model.n_exits + 1
    w = [1.0] * n if weights is None else [float(v) for v in weights]
    if len(w) != n or any(v < 0 or not math.isfinite(v) for v in w) or sum(w) <= 0:
        raise InputError(f"loss weights {list(weights or [])} do not fit {n} exits (incl. the final one)",
                         f"pass {n} non-negative weights, e.g. {[1.0] * n}")
    return w


def train_joint(model, x: np.ndarray, y: np.ndarray, *, epochs: int = 10, lr: float = 3e-3,
                batch_size: int = 64, weights: Sequence[float] | None = None, seed: int = 0,
                augment_images: bool = True, rotate_deg: float = 10.0, noise: float = 0.0,
                progress: Callable[[int, float], None] | None = None) -> dict:
    """Train backbone and heads together; returns ``{"loss": [per epoch], "seconds": s}``.

    ``rotate_deg`` / ``noise``: the augmentation's largest rotation and pixel-noise level (see :func:`augment`)."""
    w = _weights(model, weights)
    gen = torch.Generator().manual_seed(seed)
    xt, yt = torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y, dtype=torch.long)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * math.ceil(len(yt) / batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=max(steps, 1))
    model.train()
    losses, t0 = [], time.perf_counter()
    for epoch in range(epochs):
        total = 0.0
        for idx in _batches(len(yt), batch_size, gen):
            xb = augment(xt[idx], gen, rotate_deg=rotate_deg, noise=noise) if augment_images and xt.ndim == 4 \
                else xt[idx]
            outs = model.forward_all(xb)
            loss = sum(wk * F.cross_entropy(o, yt[idx]) for wk, o in zip(w, outs, strict=True)) / sum(w)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        losses.append(total / len(yt))
        if progress:
            progress(epoch, losses[-1])
    model.eval()
    return {"loss": losses, "seconds": time.perf_counter() - t0}


@torch.no_grad()
def exit_features(model, x: torch.Tensor, batch_size: int = 256) -> list[torch.Tensor]:
    """The input of every exit head for all of ``x`` (frozen backbone, eval mode)."""
    model.eval()
    idx = set(model.exit_stage_indices())
    feats: dict[int, list[torch.Tensor]] = {i: [] for i in idx}
    last = max(idx)
    for s in range(0, len(x), batch_size):
        h = x[s:s + batch_size]
        for i, stage in enumerate(model.stages[:last + 1]):
            h = stage(h)
            if i in idx:
                feats[i].append(h)
    return [torch.cat(feats[i]) for i in sorted(idx)]


def train_heads(model, x: np.ndarray, y: np.ndarray, *, epochs: int = 20, lr: float = 3e-3,
                batch_size: int = 128, seed: int = 0, progress: Callable[[int, float], None] | None = None) -> dict:
    """Train only the exit heads on cached features of a frozen backbone."""
    gen = torch.Generator().manual_seed(seed)
    for p in model.stages.parameters():
        p.requires_grad_(False)
    try:
        feats = exit_features(model, torch.as_tensor(x, dtype=torch.float32))
        yt = torch.as_tensor(y, dtype=torch.long)
        heads = [model.heads[str(i)] for i in model.exit_stage_indices()]
        opt = torch.optim.AdamW([p for h in heads for p in h.parameters()], lr=lr, weight_decay=1e-4)
        losses, t0 = [], time.perf_counter()
        for epoch in range(epochs):
            for h in heads:
                h.train()
            total = 0.0
            for idx in _batches(len(yt), batch_size, gen):
                loss = sum(F.cross_entropy(h(f[idx]), yt[idx]) for h, f in zip(heads, feats, strict=True)) / len(heads)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += loss.item() * len(idx)
            losses.append(total / len(yt))
            if progress:
                progress(epoch, losses[-1])
    finally:
        for p in model.stages.parameters():
            p.requires_grad_(True)
    model.eval()
    return {"loss": losses, "seconds": time.perf_counter() - t0, "cached_features": [tuple(f.shape) for f in feats]}


@torch.no_grad()
def exit_logits(model, x, batch_size: int = 256) -> list[torch.Tensor]:
    """Logits of every exit and the final one over all of ``x`` (eval mode)."""
    model.eval()
    xt = torch.as_tensor(x, dtype=torch.float32)
    parts = [model.forward_all(xt[s:s + batch_size]) for s in range(0, len(xt), batch_size)]
    return [torch.cat([p[k] for p in parts]) for k in range(model.n_exits + 1)]


def exit_accuracy(model, x, y) -> list[float]:
    """Accuracy of every exit used alone, final exit last."""
    yt = torch.as_tensor(y)
    return [(lg.argmax(1) == yt).float().mean().item() for lg in exit_logits(model, x)]
