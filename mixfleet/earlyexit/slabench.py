"""The SLA load test behind ``earlyexit bench-sla`` and ``benchmarks/earlyexit_sla.py``.

One replica of the early-exit server on 127.0.0.1; its full-depth capacity
``mu`` (requests/s one client gets back to back in ``full`` mode) sets the
load: phases low (0.3 mu), 1x, 3x, 5x, then 1x again. Conditions run one
after the other on the same replica, switched by ``user_config``: ``full``
(no exits), ``static`` (calibrated thresholds), ``adaptive`` (the load-aware
policy with deadline-forced exits); ``plain`` (the backbone alone) runs the
low phase only, as the baseline for the early-exit path's overhead.
"""

import asyncio
import socket

import numpy as np

APP = "earlyexit-bench"
PREFIX = "/eebench"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_sla_bench(sla_ms: float = 50.0, phase_s: float = 5.0, seed: int = 0, queue_bound: int = 64,
                  model_path=None, port: int | None = None, progress=print) -> dict:
    from ray import serve

    from mixfleet.earlyexit.data import load_dataset
    from mixfleet.earlyexit.loadtest import measure_capacity, run_condition
    from mixfleet.earlyexit.serving import deploy
    from mixfleet.errors import InputError
    from mixfleet.platform.bootstrap import connect, serve_ports, start_serve

    if sla_ms <= 0 or phase_s <= 0:
        raise InputError(f"--sla-ms {sla_ms} and --phase-s {phase_s} must be > 0", "use e.g. --sla-ms 50")
    connect(num_cpus=2)
    if serve_ports() is None:
        start_serve(http_port=port or _free_port())
    test = load_dataset("mnist", seed=0).test
    images, labels = test.x[:, 0], test.y
    common = {"app_name": APP, "route_prefix": PREFIX, "model_path": model_path, "sla_ms": sla_ms,
              "queue_bound": queue_bound}
    url = deploy(mode="full", **common)
    try:
        measure_capacity(url, images, seconds=1.0)  # warm-up
        mu = measure_capacity(url, images, seconds=3.0)
        progress(f"full-depth capacity: {mu:.1f} req/s (one client, back to back)")
        phases = [("low", 0.3 * mu, phase_s), ("1x", mu, phase_s), ("3x", 3 * mu, phase_s), ("5x", 5 * mu, phase_s),
                  ("recover", mu, phase_s)]
        out: dict = {"sla_ms": sla_ms, "capacity_rps": mu, "phase_s": phase_s, "queue_bound": queue_bound,
                     "phases": [{"name": n, "rate": r, "seconds": s} for n, r, s in phases], "conditions": {}}
        for i, cond in enumerate(("plain", "full", "static", "adaptive")):
            deploy(mode=cond, **common)
            ph = phases[:1] if cond == "plain" else phases
            res = asyncio.run(run_condition(url, images, labels, ph, sla_ms, seed=seed + i))
            out["conditions"][cond] = res
            progress(f"{cond:<9} {res['requests']} requests, SLA attainment {100 * res['sla_attainment']:.2f}%, "
                     f"p99 {res['p99_ms'] or float('nan'):.1f} ms, accuracy {100 * (res['accuracy'] or 0):.2f}%")
    finally:
        serve.delete(APP)
    plain_p50 = out["conditions"]["plain"]["phases"]["low"]["p50_ms"]
    ee_p50 = out["conditions"]["adaptive"]["phases"]["low"]["p50_ms"]
    out["low_load_p50_overhead_ms"] = None if plain_p50 is None or ee_p50 is None else ee_p50 - plain_p50
    return out


def summary(out: dict) -> dict:
    """The ``bench-sla --json`` object: per condition, the headline figures (timelines dropped)."""
    keep = ("requests", "sla_attainment", "p50_ms", "p99_ms", "p99_99_ms", "accuracy", "shed", "offered_rate",
            "exit_counts", "phases")
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
    fig.suptitle(f"early-exit serving under bursts (SLA {out['sla_ms']:g} ms, one replica, 127.0.0.1)")
    save_figure(fig, path)
    plt.close(fig)
