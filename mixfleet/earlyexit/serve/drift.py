"""A drifting input stream: rotation and noise rise over the run, then fall back.

The stream is open-loop Poisson at one rate; a request sent at time ``t``
carries a test image transformed at drift level ``level(t)`` in [0, 1], a
triangle (0 at the start and the end, 1 at mid-run), quantised to
``LEVELS`` steps. Level ``L`` rotates the digit by ``L * max_rotate_deg``
and adds Gaussian pixel noise of standard deviation ``L * max_noise``
(clipped to [0, 1]). Early exits calibrated on clean digits grow
overconfident on such inputs (BranchyNet/DeeBERT's known failure), so fixed
thresholds lose accuracy that the full model keeps. Accuracy is reported
per window of ``window_s`` seconds of send time.
"""

from __future__ import annotations

import math

import numpy as np

LEVELS = 9
IMAGES_PER_LEVEL = 300


def drift_images(images: np.ndarray, level: float, rng: np.random.Generator, max_rotate_deg: float = 60.0,
                 max_noise: float = 0.4) -> np.ndarray:
    """``images [N, H, W]`` rotated by ``level * max_rotate_deg`` and noised with ``level * max_noise``."""
    import torch
    import torch.nn.functional as F

    x = torch.as_tensor(images, dtype=torch.float32)[:, None]
    a = math.radians(level * max_rotate_deg)
    theta = torch.tensor([[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0]]).expand(len(x), 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, align_corners=False, padding_mode="zeros")[:, 0].numpy()
    out = out + rng.normal(0.0, level * max_noise, size=out.shape)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def level_at(t: np.ndarray, seconds: float) -> np.ndarray:
    """The triangle profile: 0 -> 1 at mid-run -> 0."""
    return 1.0 - np.abs(2.0 * np.asarray(t) / seconds - 1.0)


def run_drift(url: str, images: np.ndarray, labels: np.ndarray, rate: float, seconds: float, seed: int = 0,
              window_s: float = 30.0, procs: int = 2) -> dict:
    """Fire the drifting stream at ``url``; accuracy (and exits) per ``window_s`` window and overall."""
    from mixfleet.earlyexit.serve.loadtest import encode_bodies, fire
    from mixfleet.platform.loadgen import poisson_schedule

    rng = np.random.default_rng(seed)
    schedule, _ = poisson_schedule([(rate, seconds)], rng)
    n_img = min(IMAGES_PER_LEVEL, len(images))
    bodies, body_labels = [], []
    for k in range(LEVELS):
        lvl = k / (LEVELS - 1)
        bodies += encode_bodies(drift_images(images[:n_img], lvl, np.random.default_rng(seed + k)))
        body_labels.append(labels[:n_img])
    level = np.rint(level_at(schedule, seconds) * (LEVELS - 1)).astype(int)
    pick = level * n_img + rng.integers(0, n_img, size=len(schedule))
    f = fire(url, bodies, np.concatenate(body_labels), schedule, pick, procs=procs, poll_s=1.0)
    ok, correct, exits = f["ok"], f["correct"], f["exits"]
    windows = []
    for w in range(math.ceil(seconds / window_s)):
        m = (schedule >= w * window_s) & (schedule < (w + 1) * window_s) & ok
        windows.append({"start_s": w * window_s, "requests": int(m.sum()),
                        "mean_level": float(level[m].mean() / (LEVELS - 1)) if m.any() else None,
                        "accuracy": float(correct[m].mean()) if m.any() else None,
                        "early_share": float((exits[m] < exits.max()).mean()) if m.any() else None})
    return {"rate": rate, "seconds": seconds, "requests": int(len(schedule)), "answered": int(ok.sum()),
            "accuracy": float(correct[ok].mean()) if ok.any() else None, "windows": windows,
            "exit_counts": np.bincount(exits[exits >= 0], minlength=3).tolist(), "replica": f["replica"],
            "timeline": f["timeline"]}
