"""Side-by-side latency / FLOPs / accuracy of the plain backbone and its early exits.

Both run in the same process on the same test split, one torch thread,
interleaved batch by batch (alternating which path goes first) so machine
noise hits both alike. Latency is per call of one batch of ``batch_size`` samples,
measured after ``warmup`` calls; the reported mean and p99 are medians over
``repeats``. FLOPs are per sample from :mod:`mixfleet.earlyexit.flops`.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch

from mixfleet.earlyexit.flops import exit_costs, expected_flops
from mixfleet.errors import InputError


def _clock(fn: Callable, xb: torch.Tensor):
    t0 = time.perf_counter()
    out = fn(xb)
    return (time.perf_counter() - t0) * 1e3, out


def _interleaved(full: Callable, early: Callable, batches: list[torch.Tensor], flip: bool):
    """Time both paths batch by batch, alternating which goes first, so noise hits both alike."""
    lat_f, lat_e, out_f, out_e = [], [], [], []
    for i, xb in enumerate(batches):
        if (i % 2 == 0) ^ flip:
            (tf, of), (te, oe) = _clock(full, xb), _clock(early, xb)
        else:
            (te, oe), (tf, of) = _clock(early, xb), _clock(full, xb)
        lat_f.append(tf)
        lat_e.append(te)
        out_f.append(of)
        out_e.append(oe)
    return lat_f, lat_e, out_f, out_e


@torch.no_grad()
def compare(model, x, y, batch_size: int = 1, repeats: int = 5, warmup: int = 20, thresholds=None,
            limit: int | None = None) -> dict:
    """Measure full vs early exit on ``(x, y)``; the result matches ``earlyexit bench --json``."""
    if batch_size < 1 or repeats < 1:
        raise InputError(f"batch size {batch_size} and repeats {repeats} must be >= 1", "use e.g. --batch-size 32")
    model.eval()
    if thresholds is not None:
        model.set_thresholds(thresholds)
    xt = torch.as_tensor(np.asarray(x[:limit] if limit else x), dtype=torch.float32)
    yt = np.asarray(y[:limit] if limit else y)
    batches = [xt[s:s + batch_size] for s in range(0, len(xt), batch_size)]
    early = model.predict
    for xb in (batches * (1 + warmup // max(len(batches), 1)))[:warmup]:
        model(xb)
        early(xb)
    full_runs, ee_runs = [], []
    for rep in range(repeats):
        lat_f, lat_e, out_f, out_e = _interleaved(model, early, batches, flip=bool(rep % 2))
        full_runs.append(lat_f)
        ee_runs.append(lat_e)
    pred_f = torch.cat(out_f).argmax(1).numpy()
    pred_e = torch.cat([r.labels for r in out_e]).numpy()
    counts = np.bincount(torch.cat([r.exit_index for r in out_e]).numpy(), minlength=model.n_exits + 1)
    costs = exit_costs(model)

    def summary(runs: list[list[float]]) -> dict:
        return {"mean_latency_ms": float(np.median([np.mean(r) for r in runs])),
                "p50_latency_ms": float(np.median([np.percentile(r, 50) for r in runs])),
                "p99_latency_ms": float(np.median([np.percentile(r, 99) for r in runs]))}

    full = {"accuracy": float((pred_f == yt).mean()), **summary(full_runs), "flops": float(costs["full"])}
    ee = {"accuracy": float((pred_e == yt).mean()), **summary(ee_runs),
          "flops": float(expected_flops(costs, counts.tolist())),
          "exit_rates": (counts / counts.sum()).tolist(), "exit_names": model.exit_names + ["final"],
          "thresholds": list(model.thresholds), "criterion": model.criterion.config()}
    ratios = {"latency_reduction": 1 - ee["mean_latency_ms"] / full["mean_latency_ms"],
              "flops_reduction": 1 - ee["flops"] / full["flops"],
              "accuracy_drop_points": 100 * (full["accuracy"] - ee["accuracy"])}
    return {"full": full, "early_exit": ee, "ratios": ratios, "batch_size": batch_size, "samples": len(yt),
            "repeats": repeats, "torch_threads": torch.get_num_threads()}


@torch.no_grad()
def tradeoff_curve(model, x, y, curve: list[dict], batch_size: int = 32, repeats: int = 2) -> list[dict]:
    """Measured test accuracy and latency at each calibration-curve operating point."""
    saved = list(model.thresholds)
    points = []
    try:
        for p in curve:
            r = compare(model, x, y, batch_size=batch_size, repeats=repeats, warmup=5, thresholds=p["thresholds"])
            points.append({"eps": p["eps"], "thresholds": p["thresholds"], "accuracy": r["early_exit"]["accuracy"],
                           "mean_latency_ms": r["early_exit"]["mean_latency_ms"],
                           "relative_flops": r["early_exit"]["flops"] / r["full"]["flops"],
                           "full_accuracy": r["full"]["accuracy"], "full_latency_ms": r["full"]["mean_latency_ms"]})
    finally:
        model.set_thresholds(saved)
    return points


def plot_tradeoff(points: list[dict], path, batch_size: int):
    """PNG: test accuracy vs relative FLOPs (left) and vs measured mean latency (right), one point per eps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mixfleet.platform.output import save_figure

    pts = sorted(points, key=lambda p: p["eps"])
    acc = [100 * p["accuracy"] for p in pts]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    left.plot([p["relative_flops"] for p in pts], acc, "o-", label="early exit (calibrated per eps)")
    left.plot([1.0], [100 * pts[0]["full_accuracy"]], "s", color="k", label="full model")
    left.set_xlabel("FLOPs per sample / full model")
    left.set_ylabel("test accuracy (%)")
    right.plot([p["mean_latency_ms"] for p in pts], acc, "o", label="early exit")
    right.plot([p["full_latency_ms"] for p in pts], [100 * p["full_accuracy"] for p in pts], "s", color="k",
               label="full model")
    right.set_xlabel(f"mean latency per batch of {batch_size} (ms, 1 torch thread)")
    for p, a in zip(pts, acc, strict=True):
        left.annotate(f"{100 * p['eps']:g}pt", (p["relative_flops"], a), fontsize=7, xytext=(3, 3),
                      textcoords="offset points")
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("early-exit trade-off on the test split (labels: calibration eps)")
    out = save_figure(fig, path)
    plt.close(fig)
    return out
