"""Strategy comparison and the adaptive scenario, shared by ``mixfleet xfaas bench`` and benchmarks/.

Every strategy's plan is executed for real on Ray (``runs`` warm runs after
one cold run, same seed); latency and cost are charged on the emulated
clock (clouds EMULATED). ``adaptive`` re-plans from each run's telemetry.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mixfleet.xfaas.model import Profile

ORDER = ("xfaas_cut", "ilp", "ilp_fusion", "adaptive")


def _pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs), q))


def compare_strategies(workflow, clouds, payload, *, runs: int = 20, seed: int = 0) -> dict:
    """``{"strategies": {name: {p50_latency_s, p95_latency_s, cost_usd, ...}}}`` in one run."""
    from mixfleet.xfaas.adaptive import AdaptivePlacer
    from mixfleet.xfaas.executor import Executor
    from mixfleet.xfaas.planner import make_plan

    prior = Profile(workflow, clouds)
    out: dict[str, dict] = {}
    for name in (*clouds.general(), *ORDER):
        ex = Executor(workflow, clouds=clouds, profile=Profile(workflow, clouds),
                      rng=np.random.default_rng(seed), telemetry=True)
        placer = AdaptivePlacer(workflow, prior) if name == "adaptive" else None
        plan = placer.plan if placer else make_plan(workflow, name, profile=prior)
        ex.run(payload, plan)  # cold run, not counted
        lat, cost, wall = [], [], []
        for _ in range(runs):
            plan = placer.plan if placer else plan
            r = ex.run(payload, plan)
            lat.append(r.latency_s)
            cost.append(r.cost_usd)
            wall.append(r.wall_s)
            if placer:
                placer.observe(r)
        out[name] = {"p50_latency_s": _pct(lat, 50), "p95_latency_s": _pct(lat, 95),
                     "cost_usd": float(np.mean(cost)), "predicted_latency_s": plan.predicted_latency_s,
                     "fusion_groups": [g for g in plan.groups if len(g) > 1],
                     "clouds_used": sorted(set(plan.placement.values())), "wall_p50_s": _pct(wall, 50)}
    return {"strategies": out}


def adaptive_scenario(workflow, clouds, payload, *, degrade: str, factor: float = 3.0, before: int = 10,
                      after: int = 20, seed: int = 0, window: int = 5) -> dict:
    """One cloud's latency (exec and hops) multiplies by ``factor`` after ``before`` runs.

    Returns per-run latencies of the static ILP plan, the adaptive placer and the
    new optimum (the ILP solved knowing the degradation), plus when adaptive got
    within 10 % of that optimum.
    """
    from mixfleet.xfaas.adaptive import AdaptivePlacer
    from mixfleet.xfaas.executor import Executor
    from mixfleet.xfaas.planner import make_plan

    prior = Profile(workflow, clouds)
    static_plan = make_plan(workflow, "ilp", profile=prior)
    placer = AdaptivePlacer(workflow, prior, window=window)
    truth = Profile(workflow, clouds)
    degraded = Profile(workflow, clouds)
    degraded.slowdown[degrade] = factor
    optimum = make_plan(workflow, "ilp", profile=degraded)
    ex_s = Executor(workflow, clouds=clouds, profile=truth, rng=np.random.default_rng(seed), telemetry=False)
    ex_a = Executor(workflow, clouds=clouds, profile=truth, rng=np.random.default_rng(seed), telemetry=True)
    ex_o = Executor(workflow, clouds=clouds, profile=truth, rng=np.random.default_rng(seed), telemetry=False)
    for ex, plan in ((ex_s, static_plan), (ex_a, placer.plan), (ex_o, optimum)):
        ex.run(payload, plan)  # cold
    series = {"static": [], "adaptive": [], "optimum": []}
    for k in range(before + after):
        if k == before:
            truth.slowdown[degrade] = factor
        series["static"].append(ex_s.run(payload, static_plan).latency_s)
        r = ex_a.run(payload, placer.plan)
        series["adaptive"].append(r.latency_s)
        placer.observe(r)
        series["optimum"].append(ex_o.run(payload, optimum).latency_s if k >= before else float("nan"))
    opt = float(np.nanmedian(series["optimum"]))
    recovered = next((k - before + 1 for k in range(before, before + after)
                      if series["adaptive"][k] <= 1.10 * opt and all(
                          x <= 1.10 * opt for x in series["adaptive"][k:])), None)
    tail = series["adaptive"][-5:]
    return {"degraded_cloud": degrade, "factor": factor, "before": before, "after": after, "series": series,
            "new_optimum_p50_s": opt, "adaptive_runs_to_within_10pct": recovered,
            "adaptive_last5_p50_s": float(np.median(tail)),
            "static_last5_p50_s": float(np.median(series["static"][-5:])), "replans": placer.replans,
            "static_placement": static_plan.placement, "adaptive_placement": placer.plan.placement}


def plot_plane(result: dict, path: str | Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mixfleet.platform.output import save_figure

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    labels: dict[tuple, list[str]] = {}  # strategies that land on the same point share one label
    for name, v in result["strategies"].items():
        ax.scatter(v["cost_usd"] * 1e6, v["p50_latency_s"], s=40)
        ax.errorbar(v["cost_usd"] * 1e6, v["p50_latency_s"], yerr=[[0], [v["p95_latency_s"] - v["p50_latency_s"]]],
                    fmt="none", ecolor="grey", capsize=3)
        labels.setdefault((round(v["cost_usd"] * 1e6, 1), round(v["p50_latency_s"], 2)), []).append(name)
    for (x, y), names in labels.items():
        ax.annotate(" = ".join(names), (x, y), textcoords="offset points", xytext=(5, 4))
    ax.set_xlabel("cost per run (micro-USD, emulated prices)")
    ax.set_ylabel("p50 latency (s, emulated clock; bar to p95)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    out = save_figure(fig, path)
    plt.close(fig)
    return out


def plot_adaptive(scn: dict, path: str | Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mixfleet.platform.output import save_figure

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    xs = list(range(1, scn["before"] + scn["after"] + 1))
    for name, style in (("static", "-o"), ("adaptive", "-s"), ("optimum", "--")):
        ax.plot(xs, scn["series"][name], style, label=name, markersize=3)
    ax.axvline(scn["before"] + 0.5, color="red", alpha=0.5, label=f"{scn['degraded_cloud']} x{scn['factor']:g}")
    ax.set_xlabel("workflow run")
    ax.set_ylabel("latency (s, emulated clock)")
    ax.set_title(title, fontsize=9)
    ax.legend()
    ax.grid(alpha=0.3)
    out = save_figure(fig, path)
    plt.close(fig)
    return out
