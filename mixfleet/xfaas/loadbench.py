"""``mixfleet xfaas bench``: every strategy under one XFaaS workload shape, in the EMULATED world.

Plans come from a benchmark (XFaaS's ``dag-benchmark.json`` where the DAG ships one, else a
``profile`` run against the world with another seed); each strategy then serves the same
arrivals against its own replica of the world (:mod:`mixfleet.xfaas.load`), and its measured
p50/p95 latency and cost per run are reported next to the planner's prediction for its plan.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from mixfleet.errors import InputError
from mixfleet.xfaas.model import Profile

DAG_DIR = Path(__file__).with_name("data") / "dags"
DAGS = {"smart_grid": "smart_grid", "math": "math", "text": "text"}
STRATEGIES = ("aws", "azure", "gcp", "xfaas_cut", "ilp", "xfaas_fusion", "ilp_fusion", "adaptive")


def load_dag(name_or_path: str):
    """A packaged XFaaS DAG by name (``smart_grid``, ``math``, ``text``), nodes unpinned so the
    planner may place them (XFaaS pinned Smart Grid to Azure: that is the ``azure`` baseline),
    or any workflow file."""
    import json

    from mixfleet.xfaas.spec import load_workflow
    from mixfleet.xfaas.xfaas_json import workflow_from_xfaas

    if name_or_path in DAGS:
        path = DAG_DIR / DAGS[name_or_path] / "dag.json"
        data = json.loads(path.read_text())
        for n in data["Nodes"]:
            n["CSP"] = "NA"
        return workflow_from_xfaas(data, path)
    return load_workflow(name_or_path)


def planner_profile(wf, clouds, *, benchmark: str | dict | None = None, seed: int = 0) -> tuple[Profile, str]:
    """The planner's view: a given benchmark, XFaaS's own timings, or a profile run of the world."""
    import json

    prof = Profile(wf, clouds)
    if isinstance(benchmark, dict):
        return prof.apply_benchmark(benchmark), "given benchmark"
    if benchmark:
        p = Path(benchmark)
        if not p.is_file():
            raise InputError(f"--benchmark '{benchmark}' is not a file", "pass the JSON `mixfleet xfaas profile` wrote")
        return prof.apply_benchmark(json.loads(p.read_text())), f"benchmark file {p.name}"
    if all(n.exec_ms for n in wf.nodes.values()):
        return prof, "XFaaS dag-benchmark.json (+ clouds.yaml hop model)"
    from mixfleet.xfaas.profiling import profile_world
    from mixfleet.xfaas.world import load_world

    bench = profile_world(wf, load_world(clouds=clouds, seed=seed + 1000), runs=5)
    return prof.apply_benchmark(bench), "profile run against the world (5 samples, another seed)"


def make_arms(wf, profile: Profile, strategies, controller_kw: dict | None = None, cache: dict | None = None):
    """One :class:`Arm` per strategy (``cache``, if given, keeps plans across calls for the same DAG and planned load)."""
    import copy

    from mixfleet.xfaas.adaptive import DriftController
    from mixfleet.xfaas.load import Arm
    from mixfleet.xfaas.planner import make_plan

    cache = {} if cache is None else cache
    arms = []
    for s in strategies:
        strategy, _, subset = s.partition("@")  # "ilp@aws+azure": plan over a subset of the clouds
        prof = profile
        if subset:
            prof = profile.derive(profile.clouds.restrict(subset.split("+")))
        if strategy == "adaptive":
            key = ("ilp_fusion" + s[len("adaptive"):], prof.load_rps)
            ctl = DriftController(wf, prof, "ilp_fusion", plan=cache.get(key), **(controller_kw or {}))
            cache.setdefault(key, ctl.plan)
            arms.append(Arm(s, ctl.plan, ctl))
        else:
            key = (s, prof.load_rps)  # plans differ with the load they are fitted to
            if key not in cache:
                cache[key] = make_plan(wf, strategy, profile=prof)
                cache[key].strategy = s
            arms.append(Arm(s, copy.deepcopy(cache[key])))
    return arms


def bench_load(wf, clouds, workload: str, *, strategies=STRATEGIES, time_scale: float = 0.05, seed: int = 0,
               rate_scale: float = 1.0, duration: float = 1.0, max_rps: float = 1.0, events=None,
               benchmark=None, world_file=None, settle_s: float = 30.0, controller_kw: dict | None = None,
               plan_cache: dict | None = None, max_requests: int | None = None,
               profile_seed: int | None = None, plan_rps: float | None = None) -> dict:
    """Run ``strategies`` side by side under ``workload``; figures per strategy (and per window).

    ``seed`` seeds the world; the planner's profile run (where the DAG ships no timings) uses
    ``profile_seed`` (default ``seed``), so repeats over world seeds can keep one planner input.
    ``plan_rps``: the load (runs/s) the planners fit to the clouds' published concurrency quotas
    (None or 0: quotas ignored, XFaaS's planner does not model them)."""
    from mixfleet.xfaas.load import run_load, summarize
    from mixfleet.xfaas.workloads import arrivals, read_shape, total_s

    rows = read_shape(workload, duration=duration, max_rps=max_rps)
    arr = arrivals(rows, rate_scale)[:max_requests]
    if not arr:
        raise InputError(f"workload '{workload}' at rate scale {rate_scale} has no requests", "raise --rate-scale")
    profile, source = planner_profile(wf, clouds, benchmark=benchmark,
                                      seed=seed if profile_seed is None else profile_seed)
    if plan_rps is not None and plan_rps < 0:
        raise InputError(f"--plan-rate {plan_rps} is negative", "give runs per second >= 0 (0: ignore the quotas)")
    profile.load_rps = plan_rps or None
    arms = make_arms(wf, profile, strategies, controller_kw, plan_cache)
    plans = {a.name: a.plan for a in arms}
    out = run_load(wf, arms, arr, time_scale=time_scale, seed=seed, events=events, world_file=world_file)
    res: dict = {"workflow": wf.spec.name, "workload": workload, "rows": rows, "requests": len(arr),
                 "duration_s": total_s(rows), "time_scale": time_scale, "rate_scale": rate_scale, "seed": seed,
                 "planned_load_rps": profile.load_rps,
                 "planner_input": source, "emulated": True,
                 "events": [e.to_json() for e in (events or [])], "strategies": {}}
    for name, o in out.items():
        s = summarize(o, plans[name])
        s["plan"] = plans[name].to_json()
        s["versions"] = [{"t": v["t"], "version": v["version"], "clouds": sorted(set(v["placement"].values())),
                          "fused_units": sum(len(g) > 1 for g in v["groups"])} for v in o["versions"]]
        s["series"] = _series(o["records"], res["duration_s"])
        for e in events or []:
            s["degraded"] = summarize(o, plans[name], (e.start_s, e.end_s))
            s["before"] = summarize(o, plans[name], (0.0, e.start_s))
            s["after"] = summarize(o, plans[name], (e.end_s + settle_s, math.inf))
            s["changes_in_degradation"] = sum(e.start_s <= v["t"] < e.end_s + settle_s for v in o["versions"][1:])
        res["strategies"][name] = s
    return res


def _series(records: list[dict], total: float, bins: int = 30) -> dict:
    """p50/p95 latency per time bin of arrival (for the plots)."""
    edges = np.linspace(0, max(total, 1.0), bins + 1)
    t = np.array([r["t"] for r in records])
    lat = np.array([r["latency_s"] for r in records])
    p50, p95 = [], []
    for a, b in zip(edges, edges[1:], strict=False):
        sel = lat[(t >= a) & (t < b)] if len(t) else np.array([])
        p50.append(float(np.percentile(sel, 50)) if len(sel) else None)
        p95.append(float(np.percentile(sel, 95)) if len(sel) else None)
    return {"t": [float((a + b) / 2) for a, b in zip(edges, edges[1:], strict=False)], "p50": p50, "p95": p95}


def plot_load(results: list[dict], path: str | Path) -> Path:
    """One row per result: p95 latency over time per strategy (request rate shaded, degraded window
    red) and measured p50 next to the planner's prediction per strategy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mixfleet.platform.output import save_figure

    fig, axes = plt.subplots(len(results), 2, figsize=(12, 3.6 * len(results)), squeeze=False)
    for (ax, bx), res in zip(axes, results, strict=True):
        for name, s in res["strategies"].items():
            ser = s["series"]
            ax.plot(ser["t"], [math.nan if v is None else v for v in ser["p95"]], label=name, lw=1.2)
            for v in s["versions"][1:]:
                ax.axvline(v["t"], color="black", ls=":", lw=0.8)
        rate, t0 = ax.twinx(), 0.0
        for d, r in res["rows"]:
            rate.fill_between([t0, t0 + d], 0, [r * res["rate_scale"]] * 2, color="grey", alpha=0.12)
            t0 += d
        rate.set_ylabel("requests/s (shaded)", fontsize=8)
        for e in res["events"]:
            ax.axvspan(e["start_s"], e["end_s"], color="red", alpha=0.08)
        ax.set_yscale("log")
        ax.set_xlabel("arrival time (emulated s)")
        ax.set_ylabel("p95 latency (emulated s)")
        ax.set_title(f"{res['workflow']} under '{res['workload']}' (EMULATED clouds)", fontsize=9)
        ax.legend(fontsize=7, ncol=2)
        names = list(res["strategies"])
        x = np.arange(len(names))
        bx.bar(x - 0.2, [res["strategies"][n]["p50_latency_s"] for n in names], 0.4, label="measured p50 (world)")
        bx.bar(x + 0.2, [res["strategies"][n]["predicted_latency_s"] for n in names], 0.4,
               label="planner's prediction")
        bx.set_xticks(x, names, rotation=30, ha="right", fontsize=7)
        bx.set_ylabel("latency (emulated s)")
        bx.legend(fontsize=7)
    fig.tight_layout()
    out = save_figure(fig, path)
    plt.close(fig)
    return out
