"""XFaaS plans fitted to the clouds' concurrency quotas at a planned load, in the EMULATED world.

The planners (``ilp``, ``ilp_fusion``) are given the workload's peak rate and the clouds' published
concurrency quotas (``clouds.yaml``: aws 1,000, azure 200 instances x 10, gcp 100) and keep
rate x busy seconds per run under 80 % of each quota (``mixfleet xfaas plan --rate``, ``bench
--plan-rate``). Side by side with the same planners blind to load (XFaaS's planner does not model
it) and with every single cloud, under XFaaS's step (peak 8 rps) and alibaba (peak 17 rps) shapes.
Each variant is one run of ``bench_load`` with the same world seed and arrivals, one after the
other. How fast a cloud scales out towards its quota (Azure: one instance per 30 s) is in the world,
not in the planner.

Writes benchmarks/results/xfaas_quota.{json,md}. Run (about 15 min on 2 cores):
  .venv/bin/python benchmarks/xfaas_quota.py
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
DAGS = ("smart_grid", "math", "text")
WORKLOADS = {"step": 0.2, "alibaba": 0.4}  # shape -> time scale (as benchmarks/xfaas_world.py)
SINGLE = ("aws", "azure", "gcp")
PLANNED = ("ilp", "ilp_fusion")
KEEP = ("p50_latency_s", "p95_latency_s", "cost_usd", "predicted_latency_s", "cold_starts_per_run")


def run(dags, workloads) -> dict:
    from mixfleet.xfaas.clouds import load_clouds
    from mixfleet.xfaas.loadbench import bench_load, load_dag
    from mixfleet.xfaas.workloads import read_shape

    clouds = load_clouds()
    out: dict = {"benchmark": "xfaas_quota", "emulated": True, "dags": {},
                 "quotas": {c: clouds.get(c).concurrency_quota for c in clouds.general()},
                 "command": f".venv/bin/python benchmarks/xfaas_quota.py --dags {','.join(dags)} "
                            f"--workloads {','.join(workloads)}"}
    for name in dags:
        entry = out["dags"].setdefault(name, {})
        for w in workloads:
            peak = max(r for _, r in read_shape(w))
            row: dict = {"peak_rps": peak, "time_scale": WORKLOADS[w]}
            for label, rate, strategies in (("blind", None, (*SINGLE, *PLANNED)), ("quota", peak, PLANNED)):
                print(f"[{name}] {w}: {label}", file=sys.stderr, flush=True)
                res = bench_load(load_dag(name), clouds, w, strategies=strategies, time_scale=WORKLOADS[w],
                                 plan_rps=rate)
                for s, v in res["strategies"].items():
                    key = s if label == "blind" or s in SINGLE else f"{s}+quota"
                    row[key] = {k: v[k] for k in KEEP}
                    row[key]["clouds"] = sorted(set(v["plan"]["placement"].values()))
                    row[key]["overload_executions"] = v["plan"].get("overload_executions", 0.0)
            entry[w] = row
    return out


def markdown(o: dict) -> str:
    q = ", ".join(f"{c} {v}" for c, v in o["quotas"].items())
    lines = ["# XFaaS plans fitted to concurrency quotas (EMULATED world)", "",
             f"Published quotas the planner reads: {q}; a plan keeps peak rate x busy seconds per run under 80 % "
             "of each. `+quota`: planned for the shape's peak; without: blind to load (as XFaaS). p50 / p95 s "
             "measured in the world; the clouds each plan uses in brackets.", "",
             "| DAG | shape (peak rps) | best single cloud | ilp | ilp+quota | ilp_fusion | ilp_fusion+quota "
             "| ilp+quota vs best single | ilp_fusion+quota vs ilp_fusion |",
             "| --- | --- | --- | --- | --- | --- | --- | ---: | ---: |"]

    def cell(v):
        return f"{v['p50_latency_s']:.1f} / {v['p95_latency_s']:.1f} ({'+'.join(v['clouds'])})"

    for name, entry in o["dags"].items():
        for w, row in entry.items():
            singles = {c: row[c] for c in ("aws", "azure", "gcp") if c in row}
            best = min(singles, key=lambda c: singles[c]["p50_latency_s"])
            b = singles[best]["p50_latency_s"]
            vs_single = 1 - row["ilp+quota"]["p50_latency_s"] / b
            vs_blind = 1 - row["ilp_fusion+quota"]["p50_latency_s"] / row["ilp_fusion"]["p50_latency_s"]
            lines.append(f"| {name} | {w} ({row['peak_rps']:g}) | {best} {cell(singles[best])} | {cell(row['ilp'])} "
                         f"| {cell(row['ilp+quota'])} | {cell(row['ilp_fusion'])} | {cell(row['ilp_fusion+quota'])} "
                         f"| {vs_single:+.0%} | {vs_blind:+.0%} |")
    lines += ["", "Positive: lower p50 than the column named (ilp+quota against the best single cloud measured "
              "in the same run; ilp_fusion+quota against the same planner blind to load).", "",
              f"Reproduce: `{o['command']}`"]
    return "\n".join(lines)


def headline(o: dict) -> str:
    sg = o["dags"].get("smart_grid", {})
    cut = [f"{1 - r['ilp+quota']['p50_latency_s'] / min(r[c]['p50_latency_s'] for c in ('aws', 'azure', 'gcp')):.0%} "
           f"under {w}" for w, r in sg.items()]
    return f"Smart Grid, placement fitted to the quotas vs the best single cloud: {', '.join(cut)} (emulated)" \
        if cut else "see the doc"


def main(argv: list[str] | None = None) -> int:
    from mixfleet.platform.bootstrap import connect
    from mixfleet.platform.output import atomic_write_text, to_json

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dags", default=",".join(DAGS))
    ap.add_argument("--workloads", default=",".join(WORKLOADS))
    args = ap.parse_args(argv)
    dags = [d for d in args.dags.split(",") if d]
    workloads = [w for w in args.workloads.split(",") if w]
    for w in workloads:
        if w not in WORKLOADS:
            print(f"error: --workloads: '{w}' is not one of {', '.join(WORKLOADS)}", file=sys.stderr)
            return 2
    connect(None)
    out = run(dags, workloads)
    RESULTS.mkdir(parents=True, exist_ok=True)
    atomic_write_text(RESULTS / "xfaas_quota.json", to_json(out, indent=1) + "\n")
    md = markdown(out)
    atomic_write_text(RESULTS / "xfaas_quota.md", md + "\n")
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
