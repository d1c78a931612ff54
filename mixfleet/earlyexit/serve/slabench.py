"""The SLA load test behind ``earlyexit bench-sla`` and ``benchmarks/earlyexit_sla.py``.

One replica of the early-exit server on 127.0.0.1, driven by the open-loop
generator of :mod:`mixfleet.earlyexit.serve.loadtest` (Poisson arrivals, latency
from the scheduled send time). Two parts, in one run:

1. **SLA under bursts**, on an EMULATED device by default
   (:mod:`mixfleet.earlyexit.serve.device`: the replica computes every answer
   with the real model, and each stage takes the emulated accelerator
   time), because on this CPU host the model's real compute is far below
   the HTTP path's cost per request, so without it no exit policy could
   matter. ``mu`` is the highest Poisson rate at which the replica in
   ``full`` mode answers >= 99% within the SLA (measured by bisection).
   Phases: low (0.3 mu), 1x, 3x, 5x, recover (1x) of ``phase_s`` each; the
   bursts (3x, 5x) are lengthened until a condition gets at least
   ``min_requests``. Conditions one after the other on
   the same replica, switched by ``user_config``: ``full`` (no exits),
   ``static`` (calibrated thresholds), ``adaptive`` (the load-aware policy
   with deadline-forced exits).
2. **Overhead of the early-exit path**, on the real CPU (no emulation):
   ``plain`` (the backbone alone) vs ``adaptive`` at low load, p50.
"""

import math

import numpy as np

APP = "earlyexit-bench"
PREFIX = "/eebench"
MULTIPLIERS = (("low", 0.3), ("1x", 1.0), ("3x", 3.0), ("5x", 5.0), ("recover", 1.0))
BURSTS = ("3x", "5x")
DEFAULT_DEVICE = {"full_ms_per_sample": 30.0, "launch_ms": 0.5}  # emulated; see mixfleet.earlyexit.serve.device


def run_sla_bench(sla_ms: float = 200.0, phase_s: float = 4.0, seed: int = 0, queue_bound: int = 64,
                  model_path=None, port: int | None = None, device: dict | None = DEFAULT_DEVICE,
                  min_requests: int = 0, procs: int = 2, overhead_s: float = 15.0, progress=print) -> dict:
    from mixfleet.earlyexit.data import load_dataset
    from mixfleet.earlyexit.serve.app import deploy
    from mixfleet.earlyexit.serve.device import EmulatedDevice
    from mixfleet.earlyexit.serve.loadtest import measure_capacity, run_condition
    from mixfleet.errors import InputError
    from mixfleet.platform.bootstrap import connect
    from mixfleet.platform.config import parse_model
    from mixfleet.platform.serving import serving

    if sla_ms <= 0 or phase_s <= 0:
        raise InputError(f"--sla-ms {sla_ms} and --phase-s {phase_s} must be > 0", "use e.g. --sla-ms 100")
    if device is not None:
        parse_model(device, EmulatedDevice, source="emulated device")
    connect(num_cpus=2)
    test = load_dataset("mnist", seed=0).test
    images, labels = test.x[:, 0], test.y
    common = {"app_name": APP, "route_prefix": PREFIX, "model_path": model_path, "sla_ms": sla_ms,
              "queue_bound": queue_bound}
    out: dict = {"sla_ms": sla_ms, "queue_bound": queue_bound, "device": device, "conditions": {},
                 "emulated": device is not None}
    with serving(http_port=port) as srv:
        srv.own(APP)
        # part 2 first (real CPU, low load): the early-exit path's overhead over the plain backbone
        url = deploy(mode="plain", **common)
        run_condition(url, images, labels, [("warm-up", 20.0, 2.0)], sla_ms, seed=seed, procs=1)
        out["overhead"] = {}
        for cond in ("plain", "adaptive"):
            deploy(mode=cond, **common)
            r = run_condition(url, images, labels, [("low", 20.0, overhead_s)], sla_ms, seed=seed, procs=1)
            out["overhead"][cond] = {k: r[k] for k in ("requests", "p50_ms", "p99_ms", "accuracy")}
        out["low_load_p50_overhead_ms"] = out["overhead"]["adaptive"]["p50_ms"] - out["overhead"]["plain"]["p50_ms"]
        progress(f"overhead (real CPU, 20 req/s): plain p50 {out['overhead']['plain']['p50_ms']:.2f} ms, "
                 f"early exit p50 {out['overhead']['adaptive']['p50_ms']:.2f} ms")
        # part 1: the SLA under bursts
        common["device"] = device
        deploy(mode="full", **common)
        mu = measure_capacity(url, images, labels, sla_ms, procs=procs)
        # the burst phases (3x, 5x) are lengthened until a condition gets min_requests
        calm = sum(m for n, m in MULTIPLIERS if n not in BURSTS) * mu * phase_s
        burst_s = max(phase_s, math.ceil((min_requests - calm) / (mu * sum(m for n, m in MULTIPLIERS if n in BURSTS))))
        phases = [(n, m * mu, burst_s if n in BURSTS else phase_s) for n, m in MULTIPLIERS]
        progress(f"full-depth capacity within the SLA: {mu:.1f} req/s ({'EMULATED device' if device else 'real CPU'}"
                 f"); phases of {phase_s:g} s, bursts of {burst_s:g} s")
        out.update(capacity_rps=mu, phase_s=phase_s, burst_s=burst_s,
                   phases=[{"name": n, "rate": r, "seconds": s} for n, r, s in phases])
        for i, cond in enumerate(("full", "static", "adaptive")):
            deploy(mode=cond, **common)
            res = run_condition(url, images, labels, phases, sla_ms, seed=seed + i + 1, procs=procs)
            out["conditions"][cond] = res
            burst = res["phases"]["3x"]
            progress(f"{cond:<9} {res['requests']} requests, SLA attainment {100 * res['sla_attainment']:.3f}% "
                     f"(3x: {100 * burst['sla_attainment']:.3f}%), p99 {res['p99_ms'] or float('nan'):.1f} ms, "
                     f"accuracy {100 * (res['accuracy'] or 0):.2f}%")
    return out


def summary(out: dict) -> dict:
    """The ``bench-sla --json`` object: per condition, the headline figures (timelines dropped)."""
    keep = ("requests", "sla_attainment", "sla_misses", "p50_ms", "p99_ms", "p99_99_ms", "accuracy", "shed",
            "offered_rate", "max_generator_lag_ms", "exit_counts", "phases")
    conds = {c: {k: v for k, v in r.items() if k in keep} for c, r in out["conditions"].items()}
    return {k: v for k, v in out.items() if k != "conditions"} | {"conditions": conds}


def plot(out: dict, path) -> None:
    """Latency over time per condition, with the adaptive thresholds on a second axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mixfleet.platform.output import save_figure

    conds = [c for c in ("full", "static", "adaptive") if c in out["conditions"]]
    fig, axes = plt.subplots(len(conds), 1, figsize=(9, 2.6 * len(conds)), sharex=True)
    for ax, c in zip(np.atleast_1d(axes), conds, strict=True):
        r = out["conditions"][c]
        t = np.asarray(r["send_times"])
        lat = np.asarray([np.nan if v is None else v for v in r["latencies_ms"]], dtype=float)
        ax.scatter(t, lat, s=2, alpha=0.4)
        ax.axhline(out["sla_ms"], color="r", lw=1, ls="--", label="SLA")
        ax.set_yscale("log")
        ax.set_ylabel(f"{c}\nlatency (ms)")
        edge = 0.0
        for ph in out["phases"]:
            edge += ph["seconds"]
            ax.axvline(edge, color="grey", lw=0.5)
        if r["timeline"]:
            tw = ax.twinx()
            tl = r["timeline"]
            for k in range(len(tl[0]["thresholds"])):
                tw.plot([p["t"] for p in tl], [p["thresholds"][k] for p in tl], lw=1, label=f"threshold exit {k}")
            tw.set_ylim(0, 1.05)
            tw.set_ylabel("threshold")
            tw.legend(loc="upper right", fontsize=7)
        ax.legend(loc="upper left", fontsize=7)
    np.atleast_1d(axes)[-1].set_xlabel("time (s); phases: " + ", ".join(p["name"] for p in out["phases"]))
    dev = "EMULATED device" if out.get("emulated") else "real CPU"
    fig.suptitle(f"early-exit serving under bursts (SLA {out['sla_ms']:g} ms, one replica on 127.0.0.1, {dev})")
    save_figure(fig, path)
    plt.close(fig)
