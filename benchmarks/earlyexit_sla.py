"""Early-exit serving under bursts.

One replica of the early-exit server on 127.0.0.1, open-loop Poisson
arrivals (a multi-process generator; latency from the scheduled send time)
in phases low (0.3x), 1x, 3x, 5x, recover (1x) of the rate a full-depth
replica sustains within the SLA, for the conditions full (no exits), static
(calibrated thresholds) and adaptive (load-aware thresholds + deadline-forced
exits), each with at least --min-requests requests. The replica runs on an
EMULATED device (mixfleet.earlyexit.serve.device: real answers, emulated stage
times) unless --real; the overhead bar (plain backbone vs early-exit path at
low load) is always measured on the real CPU. The load generator shares the
2-core host with Serve; see the Markdown for the machine's state.

    python benchmarks/earlyexit_sla.py [--sla-ms 200] [--min-requests 30000] [--device-ms 30] [--real]
"""

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mixfleet.platform.output import atomic_write_text, to_json  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"


def _bars(res: dict) -> list[str]:
    c = res["conditions"]
    full_low = c["full"]["phases"]["low"]["accuracy"]
    full_burst = c["full"]["phases"]["3x"]["accuracy"]
    a = c["adaptive"]["phases"]
    ov = res["low_load_p50_overhead_ms"]
    met = lambda ok: "met" if ok else "MISSED"  # noqa: E731
    att3 = a["3x"]["sla_attainment"]
    burst_acc = min(a["3x"]["accuracy"] or 0, a["5x"]["accuracy"] or 0)
    below = all(c[k]["phases"]["3x"]["sla_attainment"] < att3 for k in ("full", "static"))
    counts = ", ".join(f"{k} {v['requests']}" for k, v in c.items())
    return [
        f"- adaptive SLA attainment in the 3x burst: {100 * att3:.3f}% ({a['3x']['sla_misses']} misses of "
        f"{a['3x']['requests']}); bar >= 99.99%: {met(att3 >= 0.9999)}. At 5x: {100 * a['5x']['sla_attainment']:.3f}%.",
        f"- full / static in the 3x burst: {100 * c['full']['phases']['3x']['sla_attainment']:.3f}% / "
        f"{100 * c['static']['phases']['3x']['sla_attainment']:.3f}%; visibly below adaptive: {met(below)}.",
        f"- accuracy in the bursts (adaptive, worst of 3x/5x): {100 * burst_acc:.2f}% vs full's {100 * full_burst:.2f}% "
        f"in its 3x phase; bar >= full - 2 points: {met(burst_acc >= full_burst - 0.02)}.",
        f"- accuracy at low load: adaptive {100 * a['low']['accuracy']:.2f}% vs full {100 * full_low:.2f}%; "
        f"bar >= full - 1 point: {met(a['low']['accuracy'] >= full_low - 0.01)}.",
        f"- early-exit path p50 minus plain backbone p50 at low load (real CPU): {ov:+.2f} ms; bar <= +1.5 ms: "
        f"{met(ov <= 1.5)}.",
        f"- requests per condition: {counts}; bar >= 30,000: "
        f"{met(all(v['requests'] >= 30000 for v in c.values()))}.",
    ]


def headline(res: dict) -> str:
    """One line for the README's results at a glance."""
    c = res["conditions"]
    att = {k: 100 * c[k]["phases"]["3x"]["sla_attainment"] for k in ("adaptive", "static", "full")}
    return (f"SLA attainment in 3x bursts: adaptive {att['adaptive']:.2f}%, static {att['static']:.2f}%, full "
            f"{att['full']:.2f}% (bar 99.99%; EMULATED device)")


def markdown(res: dict) -> str:
    """The results tables, rendered from the JSON this script writes."""
    device = res.get("device")
    dev = (f"an EMULATED device (full pass {device['full_ms_per_sample']:g} ms per sample + "
           f"{device['launch_ms']:g} ms per stage call, stage times in proportion to their FLOPs; answers computed by "
           "the real model)") if device else "the real CPU (no emulation)"
    lines = [f"# Early-exit serving under bursts (SLA {res['sla_ms']:g} ms, one replica, 127.0.0.1)", "",
             f"Replica on {dev}. Full-depth capacity within the SLA, measured: {res['capacity_rps']:.1f} req/s; "
             f"phases of {res['phase_s']:g} s, bursts (3x, 5x) of {res['burst_s']:g} s; open-loop Poisson load from "
             f"{res.get('procs', 2)} generator processes on the same 2-core host; 1-minute load average at the end: {res['load_average_1m']:.1f}.", "",
             "| condition | phase | offered req/s | requests | SLA attainment | misses | shed | p50 ms | p99 ms | "
             "p99.99 ms | accuracy |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    fmt = lambda v: "-" if v is None else f"{v:.1f}"  # noqa: E731
    for c, r in res["conditions"].items():
        for ph, s in r["phases"].items():
            lines.append(f"| {c} | {ph} | {s['rate']:.1f} | {s['requests']} | {100 * s['sla_attainment']:.3f}% | "
                         f"{s['sla_misses']} | {s['shed']} | {fmt(s['p50_ms'])} | {fmt(s['p99_ms'])} | "
                         f"{fmt(s['p99_99_ms'])} | {100 * (s['accuracy'] or 0):.2f}% |")
        lines.append(f"| **{c}** | all | {r['offered_rate']:.1f} | {r['requests']} | "
                     f"**{100 * r['sla_attainment']:.3f}%** | {r['sla_misses']} | {r['shed']} | {fmt(r['p50_ms'])} | "
                     f"{fmt(r['p99_ms'])} | {fmt(r['p99_99_ms'])} | {100 * (r['accuracy'] or 0):.2f}% |")
    o = res["overhead"]
    lines += ["", f"Overhead run (real CPU, 20 req/s): plain backbone p50 {o['plain']['p50_ms']:.2f} ms "
              f"({o['plain']['requests']} requests), early-exit path p50 {o['adaptive']['p50_ms']:.2f} ms "
              f"({o['adaptive']['requests']} requests).", "", "Bars:", "", *_bars(res), "",
              "![latency and thresholds over time](earlyexit_sla.png)", "", f"Reproduce: `{res['command']}`", ""]
    return "\n".join(lines)


def main(sla_ms: float, min_requests: int, device: dict | None, procs: int) -> dict:
    from mixfleet.earlyexit.serve import slabench
    from mixfleet.platform.bootstrap import shutdown

    dev_args = " --real" if device is None else f" --device-ms {device['full_ms_per_sample']:g}"
    command = f"python benchmarks/earlyexit_sla.py --sla-ms {sla_ms:g} --min-requests {min_requests}{dev_args}"
    try:
        out = slabench.run_sla_bench(sla_ms=sla_ms, phase_s=20.0, min_requests=min_requests, device=device, procs=procs)
    finally:
        shutdown()
    slabench.plot(out, RESULTS / "earlyexit_sla.png")
    res = slabench.summary(out)
    res["command"] = command
    res["load_average_1m"] = os.getloadavg()[0]
    res["procs"] = procs
    atomic_write_text(RESULTS / "earlyexit_sla.json", to_json(res, indent=2))
    atomic_write_text(RESULTS / "earlyexit_sla.md", markdown(res))
    print("\n".join(_bars(res)))
    print(f"wrote {RESULTS / 'earlyexit_sla.md'}; reproduce with: {command}")
    return res


if __name__ == "__main__":
    from mixfleet.earlyexit.serve import slabench

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sla-ms", type=float, default=200.0)
    ap.add_argument("--min-requests", type=int, default=30000, help="at least this many requests per condition")
    ap.add_argument("--device-ms", type=float, default=slabench.DEFAULT_DEVICE["full_ms_per_sample"],
                    help="EMULATED device: full-pass time per sample (ms)")
    ap.add_argument("--launch-ms", type=float, default=slabench.DEFAULT_DEVICE["launch_ms"],
                    help="EMULATED device: fixed time per stage call (ms)")
    ap.add_argument("--real", action="store_true", help="no emulated device: the real CPU times the model")
    ap.add_argument("--procs", type=int, default=2, help="load-generator processes")
    a = ap.parse_args()
    main(a.sla_ms, a.min_requests, None if a.real else {"full_ms_per_sample": a.device_ms, "launch_ms": a.launch_ms},
         a.procs)
