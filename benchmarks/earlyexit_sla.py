"""Early-exit serving under bursts (issue: early-exit serving on Ray Serve).

One replica of the early-exit server on 127.0.0.1, open-loop Poisson
arrivals in phases low (0.3x), 1x, 3x, 5x, recover (1x) of the rate a
full-depth replica sustains, for the conditions full (no exits), static
(calibrated thresholds) and adaptive (load-aware thresholds + deadline-forced
exits), plus plain (the backbone alone) at low load for the overhead bar.
Everything runs in one process pair on the same machine as the load
generator; see the Markdown for the machine's state.

    python benchmarks/earlyexit_sla.py [--sla-ms 50] [--phase-s 8]
"""

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mixfleet.earlyexit import slabench  # noqa: E402
from mixfleet.platform.bootstrap import shutdown  # noqa: E402
from mixfleet.platform.output import atomic_write_text, to_json  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"


def main(sla_ms: float, phase_s: float) -> dict:
    command = f"python benchmarks/earlyexit_sla.py --sla-ms {sla_ms:g} --phase-s {phase_s:g}"
    try:
        out = slabench.run_sla_bench(sla_ms=sla_ms, phase_s=phase_s)
    finally:
        shutdown()
    slabench.plot(out, RESULTS / "earlyexit_sla.png")
    res = slabench.summary(out)
    res["command"] = command
    res["load_average_1m"] = os.getloadavg()[0]
    atomic_write_text(RESULTS / "earlyexit_sla.json", to_json(res, indent=2))
    lines = [f"# Early-exit serving under bursts (SLA {sla_ms:g} ms, one replica, 127.0.0.1)", "",
             f"Full-depth capacity measured: {res['capacity_rps']:.1f} req/s; phases of {phase_s:g} s; "
             f"1-minute load average at the end: {res['load_average_1m']:.1f} on 2 cores.", "",
             "| condition | phase | offered req/s | requests | SLA attainment | shed | p50 ms | p99 ms | p99.99 ms | accuracy |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    fmt = lambda v: "-" if v is None else f"{v:.1f}"  # noqa: E731
    for c, r in res["conditions"].items():
        for ph, s in r["phases"].items():
            lines.append(f"| {c} | {ph} | {s['rate']:.1f} | {s['requests']} | {100 * s['sla_attainment']:.2f}% | "
                         f"{s['shed']} | {fmt(s['p50_ms'])} | {fmt(s['p99_ms'])} | {fmt(s['p99_99_ms'])} | "
                         f"{100 * (s['accuracy'] or 0):.2f}% |")
        lines.append(f"| **{c}** | all | {r['offered_rate']:.1f} | {r['requests']} | "
                     f"**{100 * r['sla_attainment']:.2f}%** | {r['shed']} | {fmt(r['p50_ms'])} | {fmt(r['p99_ms'])} | "
                     f"{fmt(r['p99_99_ms'])} | {100 * (r['accuracy'] or 0):.2f}% |")
    ov = res["low_load_p50_overhead_ms"]
    lines += ["", f"Early-exit path p50 minus plain backbone deployment p50 at low load: "
              f"{'-' if ov is None else f'{ov:+.2f} ms'} (bar: <= +1.5 ms).", "",
              "![latency and thresholds over time](earlyexit_sla.png)", "", f"Reproduce: `{command}`", ""]
    atomic_write_text(RESULTS / "earlyexit_sla.md", "\n".join(lines))
    print(f"wrote {RESULTS / 'earlyexit_sla.md'}; reproduce with: {command}")
    return res


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sla-ms", type=float, default=50.0)
    ap.add_argument("--phase-s", type=float, default=8.0)
    a = ap.parse_args()
    main(a.sla_ms, a.phase_s)
