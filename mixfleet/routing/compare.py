"""Run several policies x loads x seeds side by side, and plot them.

Seeds: seed 0 is the trace as recorded; seed ``s > 0`` shuffles request
sizes among the requests of each ``window_s`` window (the arrival process
and the per-window size mix are kept, which request lands when changes),
and also seeds the policies' RNGs. Every policy sees the same seeded trace.

:func:`compare` returns the ``compare --json`` object (docs/routing.md)::

    {"capacity_req_s": ..., "runs": [{"load", "seed",
      "policies": {NAME: {"p50_e2e_s", "p99_e2e_s", "p99_ttft_s", "p99_tpot_s",
                          "slo_attainment", "throughput_tok_s", "cost_usd"}},
      "oracle_floor": {"p50_e2e_s", "p99_e2e_s", "p99_ttft_s"}}]}

and keeps the per-request e2e arrays (``SimResult``) for plots and CIs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

from mixfleet.routing.policies import check_policy_name
from mixfleet.routing.runner import Workload, prepare, simulate
from mixfleet.routing.simulator import SimResult
from mixfleet.routing.traces import Trace, TraceRow

KEYS = ("p50_e2e_s", "p99_e2e_s", "p99_ttft_s", "p99_tpot_s", "slo_attainment", "throughput_tok_s", "cost_usd")
ORACLE_KEYS = ("p50_e2e_s", "p99_e2e_s", "p99_ttft_s")


def seeded(trace: Trace, seed: int, window_s: float = 60.0) -> Trace:
    """The trace with request sizes shuffled within ``window_s`` windows (seed 0: unchanged)."""
    if seed == 0:
        return trace

    def gen() -> Iterator[TraceRow]:
        rng = np.random.default_rng(seed)
        buf: list[TraceRow] = []
        end = None
        for row in trace:
            if end is None:
                end = row.arrival_s + window_s
            if row.arrival_s >= end:
                yield from _shuffled(buf, rng)
                buf = []
                while row.arrival_s >= end:
                    end += window_s
            buf.append(row)
        yield from _shuffled(buf, rng)

    return Trace(f"{trace.name}#seed{seed}", gen)


def _shuffled(rows: list[TraceRow], rng: np.random.Generator) -> list[TraceRow]:
    order = rng.permutation(len(rows))
    return [TraceRow(rows[i].arrival_s, rows[j].prompt, rows[j].output) for i, j in enumerate(order)]


@dataclass
class Comparison:
    capacity_req_s: float
    runs: list[dict] = field(default_factory=list)
    results: dict[tuple[float, int, str], SimResult] = field(default_factory=dict)
    model: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"capacity_req_s": self.capacity_req_s, "runs": self.runs, "model": self.model}


def compare(fleet, trace: str, policies: list[str], loads: list[float], seeds: list[int], *,
            limit: int | None = None, policy_options: dict[str, dict] | None = None,
            progress: Callable[[str], None] | None = None, keep_results: bool = True, cap_rule: str = "app",
            chunked: bool = True, reserve: str = "prompt") -> Comparison:
    """Every policy on the same workloads; see the module doc for seeds and the output.

    ``cap_rule``/``chunked``/``reserve``: the information and engine model (see
    :class:`~mixfleet.routing.simulator.Simulation`); the JSON records them under ``"model"``.
    """
    names = [check_policy_name(p) for p in policies]
    policy_options = policy_options or {}
    base = prepare(fleet, trace, None, limit)
    out = Comparison(base.capacity_req_s, model={"cap_rule": cap_rule, "chunked_prefill": chunked,
                                                 "kv_reserve": reserve})
    for load in loads:
        scaled = prepare(fleet, base.trace, load)
        for seed in seeds:
            wl = Workload(seeded(scaled.trace, seed), scaled.stats, scaled.capacity_req_s, load, scaled.time_scale)
            run = {"load": load, "seed": seed, "policies": {}, "oracle_floor": {}}
            for name in names:
                if progress:
                    progress(f"load {load:g} seed {seed} {name}")
                res = simulate(fleet, wl.trace, name, load=load, seed=seed, workload=wl, cap_rule=cap_rule,
                               chunked=chunked, reserve=reserve, **policy_options.get(name, {}))
                run["policies"][name] = {k: res.summary[k] for k in KEYS}
                run["oracle_floor"] = {k: res.oracle[k] for k in ORACLE_KEYS}
                if keep_results:
                    out.results[(load, seed, name)] = res
            out.runs.append(run)
    return out


def plot(comparison: Comparison, path, title: str = "") -> None:
    """Two panels: e2e latency CDFs at the highest load (seed of the first run), P99 against load."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mixfleet.platform.output import save_figure

    runs = comparison.runs
    loads = sorted({r["load"] for r in runs})
    names = list(runs[0]["policies"]) if runs else []
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    top, seed0 = loads[-1], runs[0]["seed"]
    for name in names:
        res = comparison.results.get((top, seed0, name))
        if res is None:
            continue
        v = np.sort(res.metrics.np("e2e"))
        ax1.plot(v, np.arange(1, v.size + 1) / v.size, label=name)
    if comparison.results:
        any_res = next(iter(comparison.results.values()))
        v = np.sort(any_res.metrics.np("iso_e2e"))
        ax1.plot(v, np.arange(1, v.size + 1) / v.size, "k--", label="oracle floor")
    ax1.set_xscale("log")
    ax1.set_xlabel("end-to-end latency (s)")
    ax1.set_ylabel("CDF")
    ax1.set_title(f"latency CDF at load {top:g}")
    ax1.legend(fontsize=8)
    for name in names:
        ys = [np.mean([r["policies"][name]["p99_e2e_s"] for r in runs if r["load"] == ld]) for ld in loads]
        ax2.plot(loads, ys, marker="o", label=name)
    floor = [np.mean([r["oracle_floor"]["p99_e2e_s"] for r in runs if r["load"] == ld]) for ld in loads]
    ax2.plot(loads, floor, "k--", label="oracle floor")
    ax2.set_yscale("log")
    ax2.set_xlabel("load (fraction of capacity)")
    ax2.set_ylabel("P99 end-to-end latency (s, mean over seeds)")
    ax2.set_title("P99 against load")
    ax2.legend(fontsize=8)
    fig.suptitle((title + " " if title else "") + "(simulated; GPUs emulated from calibrated profiles)", fontsize=9)
    save_figure(fig, path)
    plt.close(fig)
