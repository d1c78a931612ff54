"""Routing simulator speed and memory.

Bars: the whole Azure conv trace (19,366 requests) on a 16-replica fleet in
<= 10 s; 1 M synthetic requests in <= 5 min; memory proportional to the
requests in flight, not to the trace.

Memory method: tracemalloc peaks for runs of 50 k and 200 k requests at the
same load, minus the per-request result arrays the metrics keep by design
(``RunMetrics``, 10 numbers per finished request); what is left is the
simulator's own state, which must not grow with the trace.

    python benchmarks/routing_sim_speed.py [--quick]
"""

from __future__ import annotations

import json
import sys
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mixfleet.platform.output import atomic_write_text  # noqa: E402
from mixfleet.routing.fleet import fleet_from_dict  # noqa: E402
from mixfleet.routing.runner import prepare, simulate  # noqa: E402

FLEET16 = {"model": "llama-3.2-3b", "pools": [{"gpu": "A100-80GB", "count": 4}, {"gpu": "V100-32GB", "count": 4},
                                              {"gpu": "T4", "count": 8}]}
COMMAND = "python benchmarks/routing_sim_speed.py"


def timed(fleet, trace, policy, load):
    t0 = time.perf_counter()
    wl = prepare(fleet, trace, load)
    res = simulate(fleet, wl.trace, policy, load=load, workload=wl)
    return time.perf_counter() - t0, res


def headline(out: dict) -> str:
    """One line for the README's results at a glance."""
    runs = out["runs"]
    return (f"{runs[0]['requests']:,} requests in {min(r['wall_s'] for r in runs[:-1]):.1f}-"
            f"{max(r['wall_s'] for r in runs[:-1]):.1f} s; {runs[-1]['requests']:,} in {runs[-1]['wall_s']:.0f} s")


def markdown(out: dict) -> str:
    """The results tables, rendered from the JSON this script writes."""
    md = ["# Routing simulator speed (simulated fleet, GPUs emulated)", "", f"Command: `{out['command']}`", "",
          "| case | policy | requests | wall s | bar s | meets |", "|---|---|---:|---:|---:|---|"]
    md += [f"| {r['case']} | {r['policy']} | {r['requests']:,} | {r['wall_s']:.2f} | {r['bar_s']:.0f} | "
           f"{'yes' if r['meets_bar'] else 'NO'} |" for r in out["runs"]]
    md += ["", "| requests | peak traced MB | result arrays MB | simulator state MB |", "|---:|---:|---:|---:|"]
    md += [f"| {m['requests']:,} | {m['peak_traced_mb']:.1f} | {m['result_arrays_mb']:.1f} | "
           f"{m['simulator_state_mb']:.1f} |" for m in out["memory"]["runs"]]
    md += ["", f"Simulator state grows {out['memory']['state_growth_for_4x_requests']:.2f}x for 4x the requests (bar: flat, < 1.5x)."]
    return "\n".join(md) + "\n"


def main(quick: bool = False) -> dict:
    fleet = fleet_from_dict(FLEET16)
    rows = []
    out: dict = {"fleet": "4xA100-80GB + 4xV100-32GB + 8xT4 (llama-3.2-3b), simulated", "runs": []}
    for policy in ("least_work_left", "pow2", "ilp"):
        secs, res = timed(fleet, "azure-conv", policy, 0.7)
        rec = {"case": "azure-conv (19,366 req), load 0.7", "policy": policy, "requests": len(res.metrics),
               "wall_s": secs, "events": res.events, "bar_s": 10.0, "meets_bar": secs <= 10.0}
        out["runs"].append(rec)
        rows.append(rec)
        print(f"{rec['case']:<36} {policy:<16} {secs:6.2f} s  ({res.events} events)", flush=True)
    n = 200_000 if quick else 1_000_000
    spec = f"poisson:n={n},rate=10,seed=1,prompt_mean=1000,output_mean=200"
    secs, res = timed(fleet, spec, "least_work_left", 0.7)
    rec = {"case": f"{n:,} synthetic Poisson req, load 0.7", "policy": "least_work_left", "requests": len(res.metrics),
           "wall_s": secs, "events": res.events, "bar_s": 300.0, "meets_bar": secs <= 300.0,
           "per_request_us": secs / n * 1e6}
    out["runs"].append(rec)
    rows.append(rec)
    print(f"{rec['case']:<36} least_work_left  {secs:6.2f} s  ({secs / n * 1e6:.1f} us/request)", flush=True)

    mem = []
    for m in (50_000, 200_000):
        spec = f"poisson:n={m},rate=10,seed=2"
        wl = prepare(fleet, spec, 0.7)
        tracemalloc.start()
        res = simulate(fleet, wl.trace, "least_work_left", load=0.7, workload=wl)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        kept = sum(getattr(res.metrics, f).buffer_info()[1] * getattr(res.metrics, f).itemsize
                   for f in ("request", "arrival", "finish", "ttft", "e2e", "tpot", "output", "replica", "iso_ttft",
                             "iso_e2e"))
        mem.append({"requests": m, "peak_traced_mb": peak / 1e6, "result_arrays_mb": kept / 1e6,
                    "simulator_state_mb": (peak - kept) / 1e6})
        print(f"memory {m:>7,} req: peak {peak / 1e6:6.1f} MB, result arrays {kept / 1e6:5.1f} MB, "
              f"simulator state {(peak - kept) / 1e6:5.1f} MB", flush=True)
    growth = mem[1]["simulator_state_mb"] / max(mem[0]["simulator_state_mb"], 1e-9)
    out["memory"] = {"runs": mem, "state_growth_for_4x_requests": growth, "meets_bar": growth < 1.5}
    out["command"] = COMMAND + (" --quick" if quick else "")
    res_dir = ROOT / "benchmarks" / "results"
    atomic_write_text(res_dir / "routing_sim_speed.json", json.dumps(out, indent=2))
    atomic_write_text(res_dir / "routing_sim_speed.md", markdown(out))
    print(f"\nwrote benchmarks/results/routing_sim_speed.{{json,md}}; reproduce with: {out['command']}")
    return out


if __name__ == "__main__":
    main(quick="--quick" in sys.argv)
