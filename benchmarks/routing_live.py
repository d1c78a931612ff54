"""Fidelity of the live router against the simulator: the same trace slice, fleet and policy, both ways.

    python benchmarks/routing_live.py [--requests 200] [--load 0.5] [--policy ilp] [--policy least_work_left]

Live side: an EMULATED multi-node Ray cluster (one node per GPU type), the
mixfleet Serve application (ingress running the policy + one emulated
engine replica per fleet replica), and a client on loopback that replays
the first ``--requests`` requests of the Azure conversation trace, time-scaled
to ``--load`` x the fleet's capacity, as streaming OpenAI completions (prompt
as token ids of the trace's length, ``max_tokens`` = the trace's output).
TTFT is the first SSE chunk, end-to-end the last, both from the request's
scheduled arrival time.

Simulator side: :class:`mixfleet.routing.simulator.Simulation` over the same
rows with a policy built by the same function the ingress uses.

Bar: live P50 and P99 (end-to-end) within 15% of the simulator's.
Results: ``benchmarks/results/routing_live.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

import numpy as np

from mixfleet.platform.bootstrap import free_port
from mixfleet.routing.serve.replay import percentile as _pct
from mixfleet.routing.serve.replay import replay

FLEET = {"model": "llama-3.2-3b", "pools": [{"gpu": "A100-80GB", "count": 1}, {"gpu": "V100-32GB", "count": 1},
                                            {"gpu": "T4", "count": 2}]}
RESULTS = Path(__file__).resolve().parent / "results"
BAR = 0.15




def workload(fleet, n: int, load: float):
    from mixfleet.routing.runner import prepare

    wl = prepare(fleet, "azure-conv", load, n)
    max_ctx = fleet.book.models[fleet.model].max_context
    rows = []
    for r in wl.trace:  # the simulator's clipping rule, applied up front so both sides see the same sizes
        p, o = r.prompt, r.output
        if p + o > max_ctx:
            o = min(o, max_ctx // 2)
            p = max(1, max_ctx - o)
        rows.append(type(r)(r.arrival_s, p, o))
    return wl, rows


def simulate(fleet, rows, ropts) -> dict:
    from mixfleet.routing.serve.router import make_live_policy
    from mixfleet.routing.simulator import Simulation

    policy = make_live_policy(fleet, ropts)
    t0 = time.perf_counter()
    res = Simulation(fleet, policy, rows, telemetry_interval_s=ropts.telemetry_interval_s).run()
    m = res.metrics
    e2e, ttft = np.asarray(m.e2e), np.asarray(m.ttft)  # same percentile method as the live side
    gpu_of = [r.gpu for r in fleet.replicas]
    by_gpu: dict[str, int] = {}
    for i in m.replica:
        by_gpu[gpu_of[i]] = by_gpu.get(gpu_of[i], 0) + 1
    return {"p50_e2e_s": _pct(e2e, 50), "p99_e2e_s": _pct(e2e, 99), "p50_ttft_s": _pct(ttft, 50),
            "p99_ttft_s": _pct(ttft, 99), "mean_e2e_s": float(e2e.mean()), "requests": len(e2e), "by_gpu": by_gpu,
            "wall_s": time.perf_counter() - t0,
            "per_request": {int(k): {"e2e": float(x), "replica": fleet.replicas[i].replica_id}
                            for k, x, i in zip(m.request, m.e2e, m.replica, strict=True)}}


def diagnose(sim: dict, live: dict) -> dict:
    """Where live and simulated latencies part: transport overhead vs engine time vs routing."""
    common = [k for k in live if k in sim and live[k]["engine_e2e"] is not None]
    overhead = [live[k]["e2e"] - live[k]["engine_e2e"] for k in common]  # client-seen minus engine-seen
    engine_vs_sim = [live[k]["engine_e2e"] - sim[k]["e2e"] for k in common]
    same = [k for k in common if live[k]["replica"] == sim[k]["replica"]]
    parts = {}
    for part in ("to_engine", "engine_late", "to_ingress", "to_client"):
        xs = [live[k][part] for k in common if part in live[k]]
        if xs:
            parts[part] = {"p50": _pct(xs, 50), "p99": _pct(xs, 99)}
    return {"requests_compared": len(common),
            "transport_overhead_s": {"p50": _pct(overhead, 50), "p99": _pct(overhead, 99)},
            "engine_minus_sim_e2e_s": {"p50": _pct(engine_vs_sim, 50), "p99": _pct(engine_vs_sim, 99)},
            "same_replica_fraction": len(same) / max(1, len(common)), "overhead_parts_s": parts,
            "engine_p50_e2e_s": _pct([live[k]["engine_e2e"] for k in common], 50),
            "engine_p99_e2e_s": _pct([live[k]["engine_e2e"] for k in common], 99)}


def headline(out: dict) -> str:
    """One line for the README's results at a glance."""
    ok = sum(abs(r["live_over_sim"][k] - 1) <= BAR for r in out["runs"] for k in ("p50_e2e_s", "p99_e2e_s"))
    return f"live/simulated P50 and P99 within {BAR:.0%}: {ok} of {2 * len(out['runs'])} figures (EMULATED engines)"


def markdown(out: dict) -> str:
    """The results table, rendered from the JSON this script writes."""
    lines = ["# Live router vs simulator (EMULATED GPUs and engines)", "",
             f"{out['fleet']}; Azure conv, first {out['requests']} requests at {out['load']:.0%} of capacity "
             f"({out['rate_req_s']:.1f} req/s); loopback, streaming OpenAI completions.", "",
             "| policy | time dilation | metric | simulator s | live s | live / sim | bar |",
             "|---|---|---|---|---|---|---|"]
    for run in out["runs"]:
        for k in ("p50_e2e_s", "p99_e2e_s", "p50_ttft_s", "p99_ttft_s"):
            bar = ("ok" if abs(run["live_over_sim"][k] - 1) <= BAR else "MISSED") if "e2e" in k else "(info)"
            lines.append(f"| {run['policy']} | {run['time_dilation']:g} | {k} | {run['simulator'][k]:.3f} | "
                         f"{run['live'][k]:.3f} | "
                         f"{run['live_over_sim'][k]:.3f} | {bar} |")
    for run in out["runs"]:
        d = run["live"]["diagnosis"]
        lines += ["", f"Diagnosis ({run['policy']}, dilation {run['time_dilation']:g}): transport overhead (client e2e - engine e2e) p50 "
                  f"{d['transport_overhead_s']['p50']:.3f} s, p99 {d['transport_overhead_s']['p99']:.3f} s; engine-side "
                  f"p50/p99 e2e {d['engine_p50_e2e_s']:.3f}/{d['engine_p99_e2e_s']:.3f} s; same replica as the "
                  f"simulator for {d['same_replica_fraction']:.0%} of requests; per-GPU counts sim "
                  f"{run['simulator']['by_gpu']} live {run['live']['by_gpu']}.",
                  "Overhead parts (p50 / p99 s): " + ", ".join(f"{k} {v['p50']:.3f} / {v['p99']:.3f}"
                                                               for k, v in d["overhead_parts_s"].items())]
    lines += ["", f"Reproduce: `{out['command']}`", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--load", type=float, default=0.5)
    ap.add_argument("--policy", action="append", default=[])
    ap.add_argument("--flush", type=float, default=1.0, help="engine token-chunk interval in seconds (TTFT and "
                    "the last token are exact regardless)")
    ap.add_argument("--dilation", type=float, action="append", default=[],
                    help="EMULATION time dilation D (engines and arrivals D x slower; latencies reported in model "
                    "seconds); repeatable; default: 1 and 4")
    ap.add_argument("--timeout", type=float, default=240.0, help="bound on each live replay (s)")
    args = ap.parse_args(argv)
    policies = args.policy or ["ilp"]
    args.dilation = args.dilation or [1.0, 4.0]

    from mixfleet.platform.bootstrap import connect, shutdown
    from mixfleet.platform.local_cluster import EmulatedCluster, EmulatedNode
    from mixfleet.platform.serving import delete_app, start_serve
    from mixfleet.routing.fleet import fleet_from_dict
    from mixfleet.routing.serve import APP_NAME, ServeOptions, deploy
    from mixfleet.routing.serve.app import gpu_count_for, resolve_options

    fleet = fleet_from_dict(FLEET)
    wl, rows = workload(fleet, args.requests, args.load)
    print(f"fleet {fleet.describe()}; azure-conv first {len(rows)} requests at load {args.load} "
          f"({wl.rate_req_s:.2f} req/s of capacity {wl.capacity_req_s:.2f}); span {rows[-1].arrival_s:.1f} s",
          file=sys.stderr)
    nodes = [EmulatedNode(f"gpu_{a.lower()}", cpus=1, gpus=n, accelerator_type=a)
             for a, n in gpu_count_for(fleet, 1.0).items()]
    cluster = EmulatedCluster(nodes, head_cpus=2).start()
    runs = []
    try:
        connect(cluster.address)
        port = free_port()
        start_serve(http_port=port)
        for name in policies:
            sim = None
            for dil in args.dilation:
                opts = ServeOptions(policy=name, plan_load=args.load, plan_limit=args.requests, flush_s=args.flush,
                                    time_dilation=dil)
                ropts = resolve_options(fleet, opts)
                if sim is None:
                    sim = simulate(fleet, rows, ropts)
                    sim_per_request = sim.pop("per_request")
                t0 = time.perf_counter()
                deploy(fleet, opts)
                deploy_s = time.perf_counter() - t0
                live = asyncio.run(replay(f"http://127.0.0.1:{port}", fleet.model, rows,
                                          args.timeout + rows[-1].arrival_s * dil, dil))
                delete_app(APP_NAME)
                ratio = {k: live[k] / sim[k] for k in ("p50_e2e_s", "p99_e2e_s", "p50_ttft_s", "p99_ttft_s")}
                live["diagnosis"] = diagnose(sim_per_request, live.pop("per_request"))
                ok = all(abs(ratio[k] - 1) <= BAR for k in ("p50_e2e_s", "p99_e2e_s")) and not live["failed"]
                runs.append({"policy": name, "time_dilation": dil, "simulator": sim, "live": live,
                             "live_over_sim": ratio, "within_bar": ok, "deploy_s": deploy_s})
                print(f"{name} dilation {dil:g}: live/sim p50 {ratio['p50_e2e_s']:.3f} p99 {ratio['p99_e2e_s']:.3f} "
                      f"(ttft p50 {ratio['p50_ttft_s']:.3f} p99 {ratio['p99_ttft_s']:.3f})", file=sys.stderr)
    finally:
        shutdown()
        cluster.shutdown()
    cmd = "python benchmarks/routing_live.py " + " ".join(
        [f"--requests {args.requests}", f"--load {args.load}", f"--flush {args.flush}"] + [f"--policy {p}" for p in policies]
        + [f"--dilation {d:g}" for d in args.dilation])
    out = {"benchmark": "routing_live", "emulated": True, "fleet": fleet.describe(), "trace": "azure-conv",
           "requests": len(rows), "load": args.load, "rate_req_s": wl.rate_req_s,
           "capacity_req_s": wl.capacity_req_s, "bar": f"live P50 and P99 e2e within {BAR:.0%} of the simulator",
           "runs": runs, "command": cmd}
    RESULTS.mkdir(parents=True, exist_ok=True)
    from mixfleet.platform.output import atomic_write_text

    atomic_write_text(RESULTS / "routing_live.json", json.dumps(out, indent=2) + "\n")
    md = markdown(out)
    atomic_write_text(RESULTS / "routing_live.md", md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
