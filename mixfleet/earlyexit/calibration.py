"""Calibration: per-exit thresholds chosen on a held-out split.

Goal: minimise the expected cost (FLOPs per sample) subject to
``accuracy >= final_accuracy - eps`` on the calibration split, where
``final_accuracy`` is the backbone's own accuracy there.

Notation:
    s_k(n)   criterion score of sample n at exit k (in [0, 1])
    t_k      threshold of exit k; sample n leaves at the first k with s_k(n) >= t_k
    c_k      FLOPs of a sample leaving at exit k (final exit: k = K)

"Within eps" is judged on an upper confidence bound of the accuracy loss,
mean(d) + z * sqrt(var(d) / N) <= eps, with d(n) = correct_final(n) -
correct_early(n), so a 1,000-sample split is not over-fitted.

Candidates are the score quantiles of each exit plus 1.0 ("never exit").
Two exits are searched exhaustively (every pair at once, by matrix
products); more exits by coordinate descent: each exit's threshold in turn
is set to the cheapest feasible value with the others fixed. The full trade-off
curve is the optimum over a sweep of ``eps`` and is saved with the result,
so a user can pick another operating point without recalibrating.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from statistics import NormalDist

import numpy as np
import torch

from mixfleet.earlyexit.criteria import get_criterion
from mixfleet.earlyexit.flops import exit_costs
from mixfleet.earlyexit.training import exit_logits
from mixfleet.errors import InputError
from mixfleet.platform.output import atomic_write_text

CURVE_EPS = (0.0, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2, 1.0)


@dataclass
class Calibration:
    """The chosen operating point and the trade-off curve it came from."""

    criterion: dict
    eps: float
    confidence: float
    thresholds: list[float]
    accuracy: float  # early-exit accuracy on the calibration split
    full_accuracy: float  # final-exit accuracy on the calibration split
    relative_flops: float  # expected FLOPs / backbone FLOPs
    exit_rates: list[float]  # share of samples per exit, final last
    samples: int
    curve: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    def save(self, path: str | Path) -> Path:
        return atomic_write_text(path, json.dumps(self.to_dict(), indent=2))


class _Table:
    """Scores, correctness and costs of every sample at every exit (pure numpy)."""

    def __init__(self, scores: np.ndarray, correct: np.ndarray, costs: np.ndarray, z: float):
        self.scores, self.correct, self.costs, self.z = scores, correct, costs, z  # [K, N], [K+1, N], [K+1]

    def assign(self, th: np.ndarray) -> np.ndarray:
        """Exit index per sample for thresholds ``th`` [K] (K = final)."""
        k_exits, n = self.scores.shape
        out = np.full(n, k_exits)
        for k in range(k_exits - 1, -1, -1):  # reverse so the first passing exit wins
            if th[k] < 1.0:
                out[self.scores[k] >= th[k]] = k
        return out

    def bound(self, sum_d, sum_abs_d, n: int):
        """Upper confidence bound on the accuracy loss from the paired differences d in {-1, 0, 1}."""
        mean = sum_d / n
        var = np.maximum(sum_abs_d / n - mean**2, 0.0)
        return mean + self.z * np.sqrt(var / n)

    def evaluate(self, th: np.ndarray) -> dict:
        ex = self.assign(th)
        n = len(ex)
        got = self.correct[ex, np.arange(n)]
        d = self.correct[-1] - got
        rates = np.bincount(ex, minlength=len(self.costs)) / n
        return {"accuracy": float(got.mean()), "relative_flops": float(rates @ self.costs),
                "loss_bound": float(self.bound(d.sum(), np.abs(d).sum(), n)), "exit_rates": rates.tolist()}


def _candidates(scores: np.ndarray, n: int = 200) -> np.ndarray:
    q = np.clip(np.quantile(scores, np.linspace(0, 1, n)), 0.0, 1.0)
    return np.unique(np.concatenate([q, [1.0]]))


def _grid2(t: _Table, eps: float, cands: list[np.ndarray]) -> np.ndarray:
    """Exhaustive search for two exits: every (t0, t1) pair at once, by matrix products."""
    (s0, s1), c, cost = t.scores, t.correct, t.costs
    n = s0.shape[0]
    m0 = (s0[None, :] >= cands[0][:, None]) & (cands[0][:, None] < 1.0)  # [A, N] leaves at exit 0
    m1 = ((s1[None, :] >= cands[1][:, None]) & (cands[1][:, None] < 1.0)).astype(np.float64)  # [B, N]
    m0f = m0.astype(np.float64)
    rest = 1.0 - m0f
    d0, d1 = c[2] - c[0], c[2] - c[1]
    sum_d = (m0f @ d0)[:, None] + rest @ (m1 * d1).T  # [A, B]
    sum_abs = (m0f @ np.abs(d0))[:, None] + rest @ (m1 * np.abs(d1)).T
    exits1 = rest @ m1.T  # samples leaving at exit 1
    n0 = m0f.sum(1)[:, None]
    flops = (n0 * cost[0] + exits1 * cost[1] + (n - n0 - exits1) * cost[2]) / n
    ok = t.bound(sum_d, sum_abs, n) <= eps + 1e-12
    flops = np.where(ok, flops, np.inf)
    a, b = np.unravel_index(np.argmin(flops), flops.shape)
    if not np.isfinite(flops[a, b]):
        return np.ones(2)
    return np.array([cands[0][a], cands[1][b]])


def _descend(t: _Table, eps: float, cands: list[np.ndarray], passes: int = 4) -> np.ndarray:
    """Coordinate descent for any number of exits."""
    th = np.ones(t.scores.shape[0])
    for _ in range(passes):
        changed = False
        for k in range(len(th)):
            best, best_cost = th[k], t.evaluate(th)["relative_flops"]
            for c in cands[k]:
                trial = th.copy()
                trial[k] = c
                r = t.evaluate(trial)
                if r["loss_bound"] <= eps + 1e-12 and r["relative_flops"] < best_cost - 1e-12:
                    best, best_cost = c, r["relative_flops"]
            if best != th[k]:
                th[k], changed = best, True
        if not changed:
            break
    return th


def calibrate(model, x, y, criterion=None, eps: float = 0.01, confidence: float = 0.95) -> Calibration:
    """Choose thresholds on ``(x, y)`` keeping accuracy within ``eps`` of the final exit.

    ``eps`` is a fraction (0.01 = 1 accuracy point). The loss is bounded with
    one-sided ``confidence`` (normal bound on the per-sample paired
    difference, so a small calibration split is not over-fitted);
    ``confidence=0.5`` uses the plain point estimate. The model's thresholds
    and criterion are updated in place; the result is returned too.
    """
    if not (0.0 <= float(eps) <= 1.0):
        raise InputError(f"eps {eps} is outside [0, 1]", "eps is an accuracy fraction: 0.01 = 1 point")
    if not (0.5 <= float(confidence) < 1.0):
        raise InputError(f"confidence {confidence} is outside [0.5, 1)", "use e.g. 0.95")
    if len(y) < 10:
        raise InputError(f"calibration needs at least 10 labelled samples, got {len(y)}",
                         "hold out a larger calibration split")
    crit = get_criterion(criterion if criterion is not None else model.criterion)
    logits = exit_logits(model, x)
    yt = torch.as_tensor(y)
    state: dict = {}
    scores = []
    for lg in logits[:-1]:
        s, state = crit.score(lg, state)
        scores.append(s.numpy())
    correct = np.stack([(lg.argmax(1) == yt).numpy() for lg in logits]).astype(np.float64)
    cost = exit_costs(model)
    rel = np.asarray(cost["exits"], dtype=np.float64) / cost["full"]
    table = _Table(np.stack(scores).astype(np.float64), correct, rel, NormalDist().inv_cdf(float(confidence)))
    cands = [_candidates(s) for s in table.scores]
    search = _grid2 if len(scores) == 2 else _descend

    def point(e: float) -> dict:
        th = search(table, e, cands)
        return {"eps": e, "thresholds": th.tolist(), **table.evaluate(th)}

    chosen = point(float(eps))
    curve = [point(e) for e in sorted(set(CURVE_EPS) | {float(eps)})]
    model.criterion = crit
    model.set_thresholds(chosen["thresholds"])
    return Calibration(criterion=crit.config(), eps=float(eps), confidence=float(confidence),
                       thresholds=chosen["thresholds"], accuracy=chosen["accuracy"],
                       full_accuracy=float(correct[-1].mean()), relative_flops=chosen["relative_flops"],
                       exit_rates=chosen["exit_rates"], samples=len(y), curve=curve)
