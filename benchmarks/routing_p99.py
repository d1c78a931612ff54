"""Routing P99 benchmark: ilp against the baselines on Azure traces.

Everything runs in the discrete-event simulator (GPUs EMULATED from
calibrated roofline profiles) on examples/routing/fleet.yaml
(2xA100-80GB + 4xV100-32GB + 8xT4, Llama-3.2-3B):

1. P99 end-to-end latency per policy on Azure code and conv at 50/70/85/95%
   of capacity, 5 seeds each, with 95% bootstrap CIs on the pooled P99 and on
   the ratio ilp / baseline;
2. the feedback scenario: at 40% of the trace, replica A100-80GB-0 halves
   its speed (thermal throttling, seen through telemetry); ilp with feedback
   vs the same plan frozen (a static LP split without telemetry);
3. ILP solve time at 32 classes x 16 replicas and 64 x 256 (persistent
   re-solve after a telemetry change included);
4. the fast path's decision time in-process.

    python benchmarks/routing_p99.py [--quick]
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mixfleet.platform.output import atomic_write_text, save_figure  # noqa: E402
from mixfleet.routing.compare import seeded  # noqa: E402
from mixfleet.routing.fleet import fleet_from_dict, load_fleet  # noqa: E402
from mixfleet.routing.ilp import PlanSolver  # noqa: E402
from mixfleet.routing.ilp_policy import full_mix  # noqa: E402
from mixfleet.routing.metrics import windowed_p99  # noqa: E402
from mixfleet.routing.plan import ClassGrid, ClassMix, build_problem  # noqa: E402
from mixfleet.routing.policies import make_policy  # noqa: E402
from mixfleet.routing.policy import Request, RouterState  # noqa: E402
from mixfleet.routing.runner import Workload, prepare, simulate  # noqa: E402
from mixfleet.routing.simulator import Simulation, SpeedChange  # noqa: E402
from mixfleet.routing.traces import open_trace  # noqa: E402

POLICIES = ["round_robin", "pow2", "least_outstanding", "least_work_left", "ilp"]
COMMAND = "python benchmarks/routing_p99.py"
RESULTS = ROOT / "benchmarks" / "results"


def boot_p99(a: np.ndarray, b: np.ndarray | None, rng, n_boot: int = 200) -> tuple:
    """95% CI of P99(a), and of P99(a) / P99(b) when b is given (requests resampled)."""
    pa, ratios = [], []
    for _ in range(n_boot):
        sa = np.percentile(a[rng.integers(0, a.size, a.size)], 99)
        pa.append(sa)
        if b is not None:
            ratios.append(sa / np.percentile(b[rng.integers(0, b.size, b.size)], 99))
    ci = (float(np.percentile(pa, 2.5)), float(np.percentile(pa, 97.5)))
    rci = (float(np.percentile(ratios, 2.5)), float(np.percentile(ratios, 97.5))) if ratios else None
    return ci, rci


def main_comparison(fleet, traces, loads, seeds) -> dict:
    rng = np.random.default_rng(0)
    out: dict = {}
    for trace in traces:
        base = prepare(fleet, trace, None)
        out[trace] = {"capacity_req_s": base.capacity_req_s, "loads": {}}
        for load in loads:
            scaled = prepare(fleet, base.trace, load)
            pooled: dict[str, list] = {p: [] for p in POLICIES}
            per_seed: dict[str, list] = {p: [] for p in POLICIES}
            oracle = []
            for seed in seeds:
                wl = Workload(seeded(scaled.trace, seed), scaled.stats, scaled.capacity_req_s, load, scaled.time_scale)
                for name in POLICIES:
                    res = simulate(fleet, wl.trace, name, load=load, seed=seed, workload=wl)
                    e2e = res.metrics.np("e2e").copy()
                    pooled[name].append(e2e)
                    per_seed[name].append(float(np.percentile(e2e, 99)))
                oracle.append(res.metrics.np("iso_e2e").copy())
            cell: dict = {"policies": {}}
            ilp = np.concatenate(pooled["ilp"])
            for name in POLICIES:
                arr = np.concatenate(pooled[name])
                ci, _ = boot_p99(arr, None, rng)
                cell["policies"][name] = {"p99_e2e_s": float(np.percentile(arr, 99)), "p99_ci95": ci,
                                          "p99_per_seed": per_seed[name], "p50_e2e_s": float(np.percentile(arr, 50))}
                if name != "ilp":
                    _, rci = boot_p99(ilp, arr, rng)
                    cell["policies"][name]["ilp_ratio"] = float(np.percentile(ilp, 99) / np.percentile(arr, 99))
                    cell["policies"][name]["ilp_ratio_ci95"] = rci
            orc = np.concatenate(oracle)
            cell["oracle_p99_e2e_s"] = float(np.percentile(orc, 99))
            cell["ilp_over_oracle"] = cell["policies"]["ilp"]["p99_e2e_s"] / cell["oracle_p99_e2e_s"]
            out[trace]["loads"][str(load)] = cell
            line = " ".join(f"{n}={cell['policies'][n]['p99_e2e_s']:.2f}" for n in POLICIES)
            print(f"{trace:<11} load {load:<5} P99 e2e s: {line} oracle={cell['oracle_p99_e2e_s']:.2f}", flush=True)
    return out


def feedback_scenario(fleet, seeds, load=0.7, trace="azure-conv", window_s=30.0) -> dict:
    base = prepare(fleet, trace, load)
    span = base.stats.duration_s * base.time_scale
    t_fault = 0.4 * span
    fault = SpeedChange(t_fault, "A100-80GB-0", 0.5)
    variants = {"ilp (feedback)": ("ilp", {}), "ilp (frozen plan)": ("ilp", {"feedback": False}),
                "least_work_left": ("least_work_left", {}), "pow2": ("pow2", {}),
                "reference: ilp, throttled from t=0": ("ilp", {})}
    out: dict = {"trace": trace, "load": load, "fault": {"time_s": t_fault, "replica": fault.replica, "speed": 0.5},
                 "variants": {}}
    timelines = {}
    for label, (name, opts) in variants.items():
        before, after, solves = [], [], []
        for seed in seeds:
            wl = Workload(seeded(base.trace, seed), base.stats, base.capacity_req_s, load, base.time_scale)
            pol = make_policy(name, fleet, seed=seed, workload=wl, **opts)
            # the reference: the same capacity loss known from the start (the best "after" level)
            faults = [SpeedChange(0.0, fault.replica, 0.5)] if label.startswith("reference") else [fault]
            res = Simulation(fleet, pol, wl.trace, faults=faults).run()
            arr, e2e = res.metrics.np("arrival"), res.metrics.np("e2e")
            before.append(e2e[arr < t_fault])
            after.append(e2e[arr > t_fault + 60.0])
            solves.append(getattr(pol, "solves", 0))
            if seed == seeds[0]:
                timelines[label] = windowed_p99(res.metrics, window_s)
        b, a = np.concatenate(before), np.concatenate(after)
        out["variants"][label] = {"p99_before_s": float(np.percentile(b, 99)), "p99_after_s": float(np.percentile(a, 99)),
                                  "after_over_before": float(np.percentile(a, 99) / np.percentile(b, 99)),
                                  "plan_solves": solves}
        print(f"feedback {label:<18} P99 before {np.percentile(b, 99):6.2f} s, after {np.percentile(a, 99):6.2f} s",
              flush=True)
    return out, timelines, t_fault


def solve_times() -> dict:
    conv = [(r.prompt, r.output) for r in open_trace("azure-conv")]
    cases = {
        "32x16": (ClassGrid((64, 128, 256, 512, 1024, 2048, 4096), (32, 128, 512)),
                  [("A100-80GB", 4), ("V100-32GB", 4), ("T4", 8)], 0.2),
        "64x256": (ClassGrid((64, 128, 256, 512, 1024, 2048, 4096), (16, 32, 64, 128, 256, 512, 1024)),
                   [("A100-80GB", 32), ("A100-40GB", 32), ("V100-32GB", 64), ("T4", 128)], 3.0),
    }
    out = {}
    for name, (grid, pools, bar) in cases.items():
        fleet = fleet_from_dict({"model": "llama-3.2-3b", "pools": [{"gpu": g, "count": n} for g, n in pools]})
        mix = full_mix(grid, ClassMix.from_rows(conv, grid, 3500.0), 0)
        scale = 0.7 * len(fleet.replicas) / 14 * 65 / max(mix.total_rate(), 1e-9)
        mix = ClassMix(grid, mix.classes, tuple(r * scale for r in mix.rate), mix.prompt, mix.output)
        t0 = time.perf_counter()
        solver = PlanSolver(build_problem(fleet, mix, group_by="replica"))  # Pyomo model + load into HiGHS
        build = time.perf_counter() - t0
        first = solver.solve()
        speed = [0.5 if i == 0 else 1.0 for i in range(len(fleet.replicas))]
        again = solver.resolve(speed=speed)
        out[name] = {"classes": len(mix.classes), "replicas": len(fleet.replicas), "build_and_load_s": build,
                     "total_s": build + first.solve_time_s,
                     "solve_s": first.solve_time_s, "resolve_s": again.solve_time_s, "status": first.status,
                     "bar_s": bar, "meets_bar": first.solve_time_s <= bar}
        print(f"solve {name}: build + load into HiGHS {build:.2f} s, solve {first.solve_time_s * 1e3:.0f} ms, "
              f"persistent re-solve {again.solve_time_s * 1e3:.0f} ms (bar {bar * 1e3:.0f} ms)", flush=True)
    return out


def decision_times(fleet) -> dict:
    wl = prepare(fleet, "azure-conv", 0.7)
    rows = list(open_trace("poisson:n=20000,rate=50,seed=3"))
    out = {}
    for name in ("ilp", "least_work_left", "pow2"):
        pol = make_policy(name, fleet, workload=wl)
        state = RouterState.from_fleet(fleet)
        ns = np.empty(len(rows))
        inflight = []
        for k, row in enumerate(rows):
            req = Request(k, row.prompt, row.output)
            t0 = time.perf_counter_ns()
            i = pol.choose(req, state)
            ns[k] = time.perf_counter_ns() - t0
            state.on_dispatch(i, req)
            inflight.append((i, req))
            if len(inflight) > 200:  # keep a realistic number in flight
                j, old = inflight.pop(0)
                state.on_complete(j, old)
        out[name] = {"p50_us": float(np.percentile(ns, 50) / 1e3), "p99_us": float(np.percentile(ns, 99) / 1e3)}
        print(f"decision {name:<16} p50 {out[name]['p50_us']:.1f} us, p99 {out[name]['p99_us']:.1f} us", flush=True)
    out["meets_bar"] = out["ilp"]["p99_us"] <= 100
    return out


def plots(main: dict, timelines: dict, t_fault: float) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(main), figsize=(5.5 * len(main), 4.2))
    for ax, (trace, data) in zip(np.atleast_1d(axes), main.items(), strict=True):
        loads = sorted(float(x) for x in data["loads"])
        for name in POLICIES:
            ax.plot(loads, [data["loads"][str(ld)]["policies"][name]["p99_e2e_s"] for ld in loads], marker="o",
                    label=name)
        ax.plot(loads, [data["loads"][str(ld)]["oracle_p99_e2e_s"] for ld in loads], "k--", label="oracle floor")
        ax.set_yscale("log")
        ax.set_xlabel("load (fraction of capacity)")
        ax.set_ylabel("P99 end-to-end latency (s), 5 seeds pooled")
        ax.set_title(trace)
        ax.legend(fontsize=8)
    fig.suptitle("P99 against load (simulated; GPUs emulated from calibrated profiles)", fontsize=9)
    p1 = RESULTS / "routing_p99_vs_load.png"
    save_figure(fig, p1)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(8, 4))
    for label, (t, p99) in timelines.items():
        ax.plot(t, p99, label=label)
    ax.axvline(t_fault, color="k", ls=":", label="A100-80GB-0 at half speed")
    ax.set_yscale("log")
    ax.set_xlabel("simulated time (s)")
    ax.set_ylabel("P99 e2e of requests arriving in each 30 s window (s)")
    ax.set_title("feedback scenario: azure-conv at 70% load (simulated)")
    ax.legend(fontsize=8)
    p2 = RESULTS / "routing_feedback.png"
    save_figure(fig, p2)
    plt.close(fig)
    return [str(p1.relative_to(ROOT)), str(p2.relative_to(ROOT))]


def markdown(out: dict) -> str:
    md = ["# Routing P99: ilp against the baselines (simulated; GPUs emulated)", "",
          f"Command: `{COMMAND}`. Fleet: {out['fleet']}. Seeds: {out['seeds']}; P99 pooled over seeds, "
          "95% bootstrap CIs over requests.", ""]
    for trace, data in out["main"].items():
        md += [f"## {trace} (capacity {data['capacity_req_s']:.1f} req/s)", "",
               "| load | " + " | ".join(POLICIES) + " | oracle | ilp/pow2 | ilp/round_robin | ilp/least_work_left "
               "| ilp/oracle |", "|---" * (len(POLICIES) + 6) + "|"]
        for load, cell in data["loads"].items():
            pol = cell["policies"]
            vals = " | ".join(f"{pol[n]['p99_e2e_s']:.2f} [{pol[n]['p99_ci95'][0]:.1f}, {pol[n]['p99_ci95'][1]:.1f}]"
                              for n in POLICIES)
            ratios = " | ".join(f"{pol[n]['ilp_ratio']:.2f} [{pol[n]['ilp_ratio_ci95'][0]:.2f}, "
                                f"{pol[n]['ilp_ratio_ci95'][1]:.2f}]" for n in ("pow2", "round_robin", "least_work_left"))
            md.append(f"| {load} | {vals} | {cell['oracle_p99_e2e_s']:.2f} | {ratios} | {cell['ilp_over_oracle']:.2f} |")
        md.append("")
    fb = out["feedback"]
    md += ["## Feedback scenario", "", f"azure-conv at {fb['load']:.0%} load; at t = {fb['fault']['time_s']:.0f} s "
           f"{fb['fault']['replica']} runs at half speed.", "", "| router | P99 before (s) | P99 after (s) | after/before |",
           "|---|---:|---:|---:|"]
    md += [f"| {k} | {v['p99_before_s']:.2f} | {v['p99_after_s']:.2f} | {v['after_over_before']:.2f} |"
           for k, v in fb["variants"].items()]
    md += ["", "The reference row runs the same replica at half speed from t = 0 with the ilp policy: its "
           "'after' P99 is the level a router can recover to once the fleet has lost that capacity."]
    md += ["", "## ILP solve time (HiGHS via Pyomo appsi, persistent)", "",
           "| size | build + load s | solve ms | re-solve ms | bar ms | solve meets | total s |",
           "|---|---:|---:|---:|---:|---|---:|"]
    md += [f"| {k} | {v['build_and_load_s']:.2f} | {v['solve_s'] * 1e3:.0f} | {v['resolve_s'] * 1e3:.0f} | {v['bar_s'] * 1e3:.0f} | "
           f"{'yes' if v['meets_bar'] else 'NO'} | {v['total_s']:.2f} |" for k, v in out["solve"].items()]
    d = out["decision"]
    md += ["", "## Fast-path decision time (in-process)", "", "| policy | p50 us | p99 us |", "|---|---:|---:|"]
    md += [f"| {k} | {v['p50_us']:.1f} | {v['p99_us']:.1f} |" for k, v in d.items() if isinstance(v, dict)]
    md += ["", "Plots: " + ", ".join(f"`{p}`" for p in out["plots"])]
    return "\n".join(md) + "\n"


def main(quick: bool = False) -> dict:
    fleet = load_fleet(ROOT / "examples" / "routing" / "fleet.yaml")
    seeds = [0, 1] if quick else [0, 1, 2, 3, 4]
    loads = [0.5, 0.85] if quick else [0.5, 0.7, 0.85, 0.95]
    out = {"fleet": fleet.describe(), "emulated": True, "seeds": seeds, "command": COMMAND}
    out["solve"] = solve_times()
    out["decision"] = decision_times(fleet)
    out["main"] = main_comparison(fleet, ["azure-code", "azure-conv"], loads, seeds)
    out["feedback"], timelines, t_fault = feedback_scenario(fleet, seeds)
    out["plots"] = plots(out["main"], timelines, t_fault)
    atomic_write_text(RESULTS / "routing_p99.json", json.dumps(out, indent=2))
    atomic_write_text(RESULTS / "routing_p99.md", markdown(out))
    print(f"\nwrote benchmarks/results/routing_p99.{{json,md}} and plots; reproduce with: {COMMAND}")
    return out


if __name__ == "__main__":
    main(quick="--quick" in sys.argv)
