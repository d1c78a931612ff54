"""Latency metrics of a simulated (or live) run: percentiles, SLOs, cost, CIs.

:class:`RunMetrics` holds one row per finished request (arrival, finish,
TTFT, end-to-end, TPOT, output tokens, replica, and the request's isolated
latencies on the fleet's fastest GPU, which are both the oracle floor and
the reference of the Splitwise-style slowdown SLOs). Everything else is
derived from those arrays. ``tpot`` is NaN for single-token outputs and is
left out of TPOT percentiles.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field

import numpy as np

QUANTILES = {"p50": 50.0, "p90": 90.0, "p99": 99.0, "p999": 99.9}


@dataclass
class RunMetrics:
    request: array = field(default_factory=lambda: array("q"))
    arrival: array = field(default_factory=lambda: array("d"))
    finish: array = field(default_factory=lambda: array("d"))
    ttft: array = field(default_factory=lambda: array("d"))
    e2e: array = field(default_factory=lambda: array("d"))
    tpot: array = field(default_factory=lambda: array("d"))
    output: array = field(default_factory=lambda: array("q"))
    replica: array = field(default_factory=lambda: array("i"))
    iso_ttft: array = field(default_factory=lambda: array("d"))
    iso_e2e: array = field(default_factory=lambda: array("d"))

    def add(self, request, arrival, first_token, finish, output, replica, iso_ttft, iso_e2e) -> None:
        self.request.append(request)
        self.arrival.append(arrival)
        self.finish.append(finish)
        self.ttft.append(first_token - arrival)
        self.e2e.append(finish - arrival)
        self.tpot.append((finish - first_token) / (output - 1) if output > 1 else float("nan"))
        self.output.append(output)
        self.replica.append(replica)
        self.iso_ttft.append(iso_ttft)
        self.iso_e2e.append(iso_e2e)

    def __len__(self) -> int:
        return len(self.e2e)

    def np(self, name: str) -> np.ndarray:
        return np.frombuffer(getattr(self, name), dtype=getattr(self, name).typecode)


def percentiles(values: np.ndarray, prefix: str) -> dict[str, float]:
    v = values[~np.isnan(values)] if values.dtype.kind == "f" else values
    if v.size == 0:
        return {f"{q}_{prefix}_s": float("nan") for q in QUANTILES}
    qs = np.percentile(v, list(QUANTILES.values()))
    return {f"{q}_{prefix}_s": float(x) for q, x in zip(QUANTILES, qs, strict=True)}


def slo_met(m: RunMetrics, slo) -> np.ndarray:
    """Per request: both the TTFT and the end-to-end SLO are met."""
    ttft, e2e = m.np("ttft"), m.np("e2e")
    ok = (ttft <= slo.ttft_slowdown * m.np("iso_ttft") + 1e-9) & (e2e <= slo.e2e_slowdown * m.np("iso_e2e") + 1e-9)
    if slo.ttft_s is not None:
        ok &= ttft <= slo.ttft_s
    if slo.e2e_s is not None:
        ok &= e2e <= slo.e2e_s
    return ok


def summarize(m: RunMetrics, slo, *, price_per_hour: float, gpu_of: list[str],
              busy_s: list[float], gpu_counts: dict[str, int]) -> dict:
    """The per-policy figures of ``compare`` and ``simulate`` (see docs/routing.md)."""
    if len(m) == 0:
        return {"requests": 0}
    arrival, finish = m.np("arrival"), m.np("finish")
    span = max(1e-9, float(finish.max() - arrival.min()))
    out = {"requests": len(m)}
    out.update(percentiles(m.np("e2e"), "e2e"))
    out.update(percentiles(m.np("ttft"), "ttft"))
    out.update(percentiles(m.np("tpot"), "tpot"))
    out["slo_attainment"] = float(slo_met(m, slo).mean())
    out["throughput_tok_s"] = float(m.np("output").sum() / span)
    out["cost_usd"] = price_per_hour * span / 3600.0
    out["makespan_s"] = span
    util: dict[str, float] = {}
    for i, gpu in enumerate(gpu_of):
        util[gpu] = util.get(gpu, 0.0) + busy_s[i]
    out["utilisation"] = {g: min(1.0, util[g] / (gpu_counts[g] * span)) for g in util}
    counts = np.bincount(m.np("replica"), minlength=len(gpu_of))
    share: dict[str, float] = {}
    for i, gpu in enumerate(gpu_of):
        share[gpu] = share.get(gpu, 0.0) + counts[i] / len(m)
    out["request_share"] = share
    return out


def oracle_floor(m: RunMetrics) -> dict:
    """Each request alone on the fastest GPU: the latency no router can beat."""
    out = {}
    out.update(percentiles(m.np("iso_e2e"), "e2e"))
    out.update(percentiles(m.np("iso_ttft"), "ttft"))
    return out


def bootstrap_ci(values: np.ndarray, q: float = 99.0, *, n_boot: int = 200, alpha: float = 0.05,
                 rng: np.random.Generator | None = None) -> tuple[float, float]:
    """A percentile-bootstrap confidence interval for the ``q``-th percentile."""
    rng = rng or np.random.default_rng(0)
    v = np.asarray(values)
    if v.size == 0:
        return float("nan"), float("nan")
    idx = rng.integers(0, v.size, size=(n_boot, v.size))
    stats = np.percentile(v[idx], q, axis=1)
    return float(np.percentile(stats, 100 * alpha / 2)), float(np.percentile(stats, 100 * (1 - alpha / 2)))


def windowed_p99(m: RunMetrics, window_s: float) -> tuple[np.ndarray, np.ndarray]:
    """(window end times, P99 e2e of the requests that arrived in each window)."""
    arrival, e2e = m.np("arrival"), m.np("e2e")
    if arrival.size == 0:
        return np.array([]), np.array([])
    edges = np.arange(arrival.min(), arrival.max() + window_s, window_s)
    which = np.digitize(arrival, edges) - 1
    ends, p99 = [], []
    for w in range(len(edges) - 1):
        sel = e2e[which == w]
        if sel.size:
            ends.append(edges[w + 1])
            p99.append(np.percentile(sel, 99))
    return np.array(ends), np.array(p99)
