"""Early-exit serving under bursts and drift, side by side with its baselines.

The 64x64 serving model (mnist64_resnet) on the real CPU by default (an
EMULATED device only with --device-ms), open-loop Poisson arrivals from a
multi-process generator on the same 2-core host. Rates are multiples of the
measured capacity of the static calibrated mode (mu_static): phases low (0.3x),
1x, 1.5x, 2x, 3x, recover (1x). Conditions: full (no exits), static
(calibrated thresholds), apparate (Apparate-style: thresholds tuned from
accuracy feedback, load ignored), adaptive (ours: load-aware thresholds,
deadline-forced exits, drift guard), full-autoscale (full model, Serve's
autoscaler on the replica budget the cores allow). Then a drift stream
(rotation and noise rising, then falling) for full, static and adaptive;
and the overhead of the early-exit path with no exit taken vs the plain
backbone. See mixfleet/earlyexit/serve/slabench.py.

    python benchmarks/earlyexit_sla.py [--requests 30000] [--sla-ms 200] [--coarse] [--drift-s 150]
    python benchmarks/earlyexit_sla.py --overhead-only   # part 1 alone, into the committed results
"""

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mixfleet.platform.output import atomic_write_text, to_json  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
BURSTS = ("2x", "3x")


ADMISSION = {
    "deadline": "Admission (every condition): a replica answers 429 at once to a request that the requests in "
                "flight ahead of it would hold past the SLA at its measured drain time per request, and past the "
                "queue bound of {bound}; refused requests count as misses.",
    "bound": "Admission (every condition): the queue bound of {bound} requests alone; refused requests count as "
             "misses.",
}


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.3f}%"


def _burst(r: dict, key: str):
    """A figure over the 2x and 3x phases together (weighted by requests)."""
    ph = [r["phases"][k] for k in BURSTS]
    n = sum(p["requests"] for p in ph)
    if key == "sla_attainment":
        return 1 - sum(p["sla_misses"] for p in ph) / n if n else None
    ok = [(p[key], p["requests"] - p["shed"]) for p in ph if p[key] is not None]
    m = sum(w for _, w in ok)
    return sum(v * w for v, w in ok) / m if m else None


def _answered_in_time(r: dict):
    """Over the 2x and 3x phases: requests within the SLA / requests answered (not refused)."""
    ph = [r["phases"][k] for k in BURSTS]
    answered = sum(p["requests"] - p["shed"] for p in ph)
    return sum(p["requests"] - p["sla_misses"] for p in ph) / answered if answered else None


def bars(res: dict) -> list[str]:
    c = res["conditions"]
    met = lambda ok: "met" if ok else "MISSED"  # noqa: E731
    out = []
    if "adaptive" in c and "full" in c:
        a = c["adaptive"]["phases"]
        worst = min(a[k]["sla_attainment"] for k in BURSTS)
        misses = sum(a[k]["sla_misses"] for k in BURSTS)
        n = sum(a[k]["requests"] for k in BURSTS)
        out.append(f"- adaptive within the SLA in the 2x / 3x mu_static bursts: {_pct(a['2x']['sla_attainment'])} / "
                   f"{_pct(a['3x']['sla_attainment'])} ({misses} misses of {n}); bar >= 99.99% in each: "
                   f"{met(worst >= 0.9999)}" + (" (COARSE run: cannot show 99.99%)" if res.get("coarse_warning") else "")
                   + ".")
        cap = res["capacity_rps"]
        if "static" in c:  # the rates are only meaningful if static holds the capacity it was measured at
            held = c["static"]["phases"]["1x"]["sla_attainment"]
            out.append(f"- check: static within the SLA in its own 1x phase (mu_static = {cap['static']:.1f} req/s): "
                       f"{_pct(held)}; " + ("the capacity holds." if held >= 0.99 else
                                            "BELOW 99%: mu_static did not hold in the run (the probes overestimated "
                                            "it or the host slowed down), so every phase is overloaded; rerun on a "
                                            "quiet host."))
        if "first-exit" in cap:
            ceiling = cap["first-exit"] / cap["static"]
            out.append(f"- ceiling: with every sample at the first exit (the cheapest path any threshold controller "
                       f"can take) one replica holds {cap['first-exit']:.1f} req/s = {ceiling:.2f}x mu_static; the "
                       f"bursts offer 2x and 3x, so {'no threshold policy can hold them on this host' if ceiling < 2 else 'the 3x burst is beyond any threshold policy on this host' if ceiling < 3 else 'both fit under the ceiling'}.")
        acc, full_acc = _burst(c["adaptive"], "accuracy"), c["full"]["accuracy"]
        out.append(f"- adaptive accuracy over the bursts {100 * acc:.2f}% vs full's {100 * full_acc:.2f}% (all its "
                   f"answers); bar >= full - 1.5 points: {met(acc >= full_acc - 0.015)}.")
        others = {k: _burst(v, "sla_attainment") for k, v in c.items() if k != "adaptive"}
        mine = _burst(c["adaptive"], "sla_attainment")
        below = [k for k, v in others.items() if v >= mine]
        out.append("- baselines in the bursts (SLA attainment): " + ", ".join(f"{k} {_pct(v)}" for k, v in others.items())
                   + ("; each below adaptive." if not below else f"; NOT below adaptive: {', '.join(below)}."))
        out.append("- answered in time: of the burst requests each condition admitted and answered, the share within "
                   "the SLA (the rest of its misses were refused at once): "
                   + ", ".join(f"{k} {_pct(_answered_in_time(v))}" for k, v in c.items()) + ".")
    d = res.get("drift") or {}
    if "adaptive" in d and "full" in d:
        gaps = [(wa["accuracy"] or 0) - (wf["accuracy"] or 0) for wa, wf in
                zip(d["adaptive"]["windows"], d["full"]["windows"], strict=False)]
        out.append(f"- drift: adaptive minus full per 30 s window: {', '.join(f'{100 * g:+.1f}' for g in gaps)} points; "
                   f"bar >= -1 point in every window: {met(min(gaps) >= -0.01)}.")
        if "static" in d:
            sw = min(d["static"]["windows"], key=lambda w: w["accuracy"] or 0)
            out.append(f"- drift: static's worst window {100 * (sw['accuracy'] or 0):.1f}% (from {sw['start_s']:g} s).")
    ov, o = res["no_exit_p50_overhead_ms"], res["overhead"]
    rounds = res.get("no_exit_round_diffs_ms")
    out.append(f"- early-exit path with every threshold at 1.0 (no exit taken) minus plain backbone, p50 at low load: "
               f"{ov:+.2f} ms" + (f" (per {'slice' if 'method' in o else 'round'}: {', '.join(f'{d:+.1f}' for d in rounds)} ms)"
                                 if rounds else "")
               + f"; bar <= +1.5 ms: {met(ov <= 1.5)}."
               + (f" In-process batch-1 pass: {o['in_process_ms']['no-exit'] - o['in_process_ms']['plain']:+.2f} ms."
                  if "in_process_ms" in o else ""))
    counts = ", ".join(f"{k} {v['requests']}" for k, v in c.items())
    out.append(f"- requests per condition: {counts}; bar >= 30,000: {met(all(v['requests'] >= 30000 for v in c.values()))}.")
    return out


def headline(res: dict) -> str:
    """One line for the README's results at a glance."""
    c = res["conditions"]
    att = ", ".join(f"{k} {100 * _burst(v, 'sla_attainment'):.2f}%" for k, v in c.items())
    dev = "EMULATED device" if res.get("emulated") else "real CPU"
    cap = res.get("capacity_rps") or {}
    ceiling = (f"; every sample at the first exit holds {cap['first-exit'] / cap['static']:.2f}x mu_static, the "
               "ceiling of any exit policy on one replica" if "first-exit" in cap else "")
    return f"SLA attainment in 2x-3x mu_static bursts: {att} ({dev}; bar 99.99% for adaptive{ceiling})"


def markdown(res: dict) -> str:
    """The results tables, rendered from the JSON this script writes."""
    device = res.get("device")
    dev = (f"an EMULATED device (full pass {device['full_ms_per_sample']:g} ms per sample)" if device
           else "the real CPU (no emulation)")
    cap = res["capacity_rps"]
    lines = [f"# Early-exit serving under bursts and drift (SLA {res['sla_ms']:g} ms, 127.0.0.1)", "",
             f"Model `{res['model']}` on {dev}. Capacity within the SLA (>= 99% of requests, bisection with 8 s probes, then a 20 s confirmation): "
             f"static {cap['static']:.1f} req/s (mu_static), full {cap['full']:.1f} req/s"
             + (f", every sample at the first exit {cap['first-exit']:.1f} req/s" if "first-exit" in cap else "")
             + ". Phases of "
             f"{res['phase_s']:.1f} s at " + ", ".join(f"{p['name']} ({p['rate']:.0f} req/s)" for p in res["phases"])
             + f"; open-loop Poisson load from {res.get('procs', 2)} generator processes on the same 2-core host; "
             f"1-minute load average at the end: {res['load_average_1m']:.1f}. "
             + ADMISSION[res.get("admission", "bound")].format(bound=res["queue_bound"]), ""]
    if res.get("coarse_warning"):
        lines += [f"**{res['coarse_warning']}.**", ""]
    for name, err in (res.get("errors") or {}).items():
        lines += [f"**{name} FAILED in this run: {err}**", ""]
    lines += ["| condition | requests | SLA 2x | SLA 3x | SLA all | p50 ms | p99 ms | p99.99 ms | accuracy (bursts) | "
              "accuracy (all) | shed | MFLOPs/req | replica CPU ms/req |",
              "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    fmt = lambda v: "-" if v is None else f"{v:.1f}"  # noqa: E731
    for c, r in res["conditions"].items():
        ph = r["phases"]
        lines.append(f"| {c} | {r['requests']} | {_pct(ph['2x']['sla_attainment'])} | {_pct(ph['3x']['sla_attainment'])} | "
                     f"{_pct(r['sla_attainment'])} | {fmt(r['p50_ms'])} | {fmt(r['p99_ms'])} | {fmt(r['p99_99_ms'])} | "
                     f"{100 * (_burst(r, 'accuracy') or 0):.2f}% | {100 * (r['accuracy'] or 0):.2f}% | {r['shed']} | "
                     f"{r['mflops_per_request']:.0f} | {fmt(r.get('cpu_ms_per_request'))} |")
    lines += ["", "Per phase (SLA attainment / accuracy):", "",
              "| condition | " + " | ".join(p["name"] for p in res["phases"]) + " |",
              "| --- |" + " ---: |" * len(res["phases"])]
    for c, r in res["conditions"].items():
        lines.append(f"| {c} | " + " | ".join(f"{_pct(r['phases'][p['name']]['sla_attainment'])} / "
                                              f"{100 * (r['phases'][p['name']]['accuracy'] or 0):.1f}%"
                                              for p in res["phases"]) + " |")
    d = res.get("drift") or {}
    if d:
        first = next(iter(d.values()))
        lines += ["", f"Drift stream at {first['rate']:.0f} req/s (half of full's capacity), rotation up to 60 degrees "
                  "and noise up to 0.4, rising to mid-run and back; accuracy per 30 s window"
                  + (f" (measured in a separate run: `{res['drift_command']}`; the plot's drift panel is from the "
                     "main run)" if res.get("drift_command") else "") + ":", "",
                  "| condition | " + " | ".join(f"{w['start_s']:g}-{w['start_s'] + 30:g} s (level "
                                              f"{w['mean_level'] or 0:.2f})" for w in first["windows"]) + " | all |",
                  "| --- |" + " ---: |" * (len(first["windows"]) + 1)]
        for c, r in d.items():
            lines.append(f"| {c} | " + " | ".join(f"{100 * (w['accuracy'] or 0):.1f}%" for w in r["windows"])
                         + f" | {100 * (r['accuracy'] or 0):.2f}% |")
    prof = res.get("profile") or {}
    rows = [(c, proc, v) for c, procs in prof.items() for proc, v in procs.items() if isinstance(v, dict)]
    if rows:
        lines += ["", "Where the time goes in the 3x phase (py-spy, `--idle`, share of samples; replica and Serve "
                  "proxy processes):", "", "| condition | process | samples | by category | top leaf functions |",
                  "| --- | --- | ---: | --- | --- |"]
        for c, proc, v in rows:
            cats = ", ".join(f"{k} {100 * x:.0f}%" for k, x in (v.get("by_category") or {}).items())
            leaves = ", ".join(f"`{k.split(' (')[0]}` {100 * x:.0f}%" for k, x in
                               list((v.get("top_leaf_functions") or {}).items())[:4])
            lines.append(f"| {c} | {proc} | {v.get('samples', 0)} | {cats or v.get('error', '-')} | {leaves} |")
    o = res["overhead"]
    if "method" in o:
        how = f"both at once, each on its own replica, {o['method']}; the differences are per {o['round_s']:g} s slice"
    elif "rounds" in o:
        how = f"{len(o['rounds'])} alternating rounds of {o['round_s']:g} s per condition"
    else:
        how = "one block per condition"
    lines += ["", f"Overhead run (real CPU, 10 req/s per condition, {how}): plain backbone p50 {o['plain']['p50_ms']:.2f} ms "
              f"({o['plain']['requests']} requests), early-exit path with thresholds pinned at 1.0 p50 "
              f"{o['no-exit']['p50_ms']:.2f} ms ({o['no-exit']['requests']} requests, exits taken "
              f"{sum(o['no-exit']['exit_counts'][:-1])})"
              + (f"; in this process, one thread, batch 1: plain {o['in_process_ms']['plain']:.2f} ms, no-exit "
                 f"{o['in_process_ms']['no-exit']:.2f} ms (the two heads and the exit bookkeeping)"
                 if "in_process_ms" in o else "") + "."
              + (f" Measured in a separate run: `{res['overhead_command']}`." if res.get("overhead_command") else ""),
              "", "Bars:", "", *bars(res), "",
              "![latency, thresholds and drift accuracy](earlyexit_sla.png)", "",
              f"Reproduce: `{res['command']}`; the acceptance size: `python benchmarks/earlyexit_sla.py --requests 30000`.",
              ""]
    return "\n".join(lines)


def _rerun_part(flag: str, run_kwargs: Callable[[dict], dict]) -> tuple[dict, dict]:
    """The committed results and a fresh run of one part of the benchmark, with the ``run_sla_bench``
    arguments ``run_kwargs`` gives for those results (``flag`` names the part in the error when there
    are no committed results to update)."""
    import json

    from mixfleet.earlyexit.serve import slabench
    from mixfleet.errors import InputError
    from mixfleet.platform.bootstrap import shutdown

    path = RESULTS / "earlyexit_sla.json"
    if not path.is_file():
        raise InputError(f"{flag} updates '{path}', which does not exist",
                         "run the whole benchmark first: python benchmarks/earlyexit_sla.py --requests 30000")
    res = json.loads(path.read_text())
    try:
        part = slabench.run_sla_bench(**run_kwargs(res))
    finally:
        shutdown()
    return res, part


def _write(res: dict) -> None:
    atomic_write_text(RESULTS / "earlyexit_sla.json", to_json(res, indent=2))
    atomic_write_text(RESULTS / "earlyexit_sla.md", markdown(res))


def overhead_only(sla_ms: float) -> dict:
    """Rerun part 1 alone and replace the overhead section of the committed results (labelled as such)."""
    res, part = _rerun_part("--overhead-only", lambda _res: {"sla_ms": sla_ms, "only_overhead": True})
    res.update({k: part[k] for k in ("overhead", "no_exit_p50_overhead_ms", "no_exit_round_diffs_ms")})
    res["overhead_command"] = f"python benchmarks/earlyexit_sla.py --overhead-only --sla-ms {sla_ms:g}"
    res["overhead_load_average_1m"] = os.getloadavg()[0]
    _write(res)
    print(next(b for b in bars(res) if "no exit taken" in b))
    return res


def drift_only(sla_ms: float, drift_s: float, procs: int) -> dict:
    """Rerun part 4 alone at the committed run's drift rate (half of its measured full capacity) and replace
    the drift section of the committed results (labelled as such)."""
    from mixfleet.earlyexit.serve import slabench

    res, part = _rerun_part("--drift-only", lambda res: {"sla_ms": sla_ms, "drift_s": drift_s, "procs": procs,
                                                         "drift_rate": 0.5 * res["capacity_rps"]["full"]})
    res["drift"] = slabench.summary(part)["drift"]
    res["drift_command"] = f"python benchmarks/earlyexit_sla.py --drift-only --sla-ms {sla_ms:g} --drift-s {drift_s:g}"
    res["drift_load_average_1m"] = os.getloadavg()[0]
    _write(res)
    print("\n".join(b for b in bars(res) if b.startswith("- drift")))
    return res


def main(sla_ms: float, requests: int, coarse: bool, drift_s: float, device: dict | None, procs: int,
         budget_s: float | None = None, admission: str = "deadline") -> dict:
    from mixfleet.earlyexit.serve import slabench
    from mixfleet.platform.bootstrap import shutdown

    slabench.check_requests(requests, coarse)
    command = (f"python benchmarks/earlyexit_sla.py --requests {requests} --sla-ms {sla_ms:g} --drift-s {drift_s:g}"
               + (" --coarse" if coarse else "") + (f" --budget-s {budget_s:g}" if budget_s else "")
               + (f" --device-ms {device['full_ms_per_sample']:g}" if device else "")
               + (f" --admission {admission}" if admission != "deadline" else ""))
    try:
        out = slabench.run_sla_bench(sla_ms=sla_ms, requests=requests, coarse=coarse, drift_s=drift_s,
                                     device=device, procs=procs, budget_s=budget_s, admission=admission)
    finally:
        shutdown()
    slabench.plot(out, RESULTS / "earlyexit_sla.png")
    res = slabench.summary(out)
    res["command"] = command
    res["load_average_1m"] = os.getloadavg()[0]
    res["procs"] = procs
    atomic_write_text(RESULTS / "earlyexit_sla.json", to_json(res, indent=2))
    atomic_write_text(RESULTS / "earlyexit_sla.md", markdown(res))
    print("\n".join(bars(res)))
    print(f"wrote {RESULTS / 'earlyexit_sla.md'}; reproduce with: {command}")
    return res


if __name__ == "__main__":
    from mixfleet.errors import MixfleetError, error_text

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sla-ms", type=float, default=200.0)
    ap.add_argument("--requests", type=int, default=30000, help="requests per condition in the burst run")
    ap.add_argument("--coarse", action="store_true", help="run with too few requests to read 99.99% (labelled)")
    ap.add_argument("--drift-s", type=float, default=150.0, help="seconds of the drift stream per condition")
    ap.add_argument("--device-ms", type=float, default=0.0, help="EMULATED device: full-pass ms per sample (0: real)")
    ap.add_argument("--procs", type=int, default=2, help="load-generator processes")
    ap.add_argument("--budget-s", type=float, default=None, help="skip conditions not started after this many s")
    ap.add_argument("--admission", choices=("deadline", "bound"), default="deadline",
                    help="replica admission for every condition: deadline (refuse what the queue would make late) "
                         "or bound (the queue bound alone)")
    ap.add_argument("--overhead-only", action="store_true",
                    help="rerun only the no-exit overhead part and update it in the committed results")
    ap.add_argument("--drift-only", action="store_true",
                    help="rerun only the drift stream (at the committed run's rate) and update it in the committed results")
    a = ap.parse_args()
    try:
        if a.overhead_only:
            overhead_only(a.sla_ms)
            sys.exit(0)
        if a.drift_only:
            drift_only(a.sla_ms, a.drift_s, a.procs)
            sys.exit(0)
        main(a.sla_ms, a.requests, a.coarse, a.drift_s,
             {"full_ms_per_sample": a.device_ms, "launch_ms": 0.5} if a.device_ms > 0 else None, a.procs, a.budget_s,
             a.admission)
    except MixfleetError as exc:
        print(f"error: {error_text(exc)}", file=sys.stderr)
        sys.exit(2)
