"""Demo step: a short open-loop burst against the early-exit server on Ray Serve.

One replica of the committed MNIST model on 127.0.0.1 (Serve is started on
a free loopback port if it is not running, and shut down again only if this
step started it). The same replica serves the three conditions one after
the other, switched through ``user_config`` without a restart: ``full`` (no
exits), ``static`` (calibrated thresholds) and ``adaptive`` (load-aware
thresholds and deadline-forced exits). The replica runs on the benchmark's
EMULATED device (:mod:`mixfleet.earlyexit.serve.device`: real answers, emulated
stage times), whose nominal full-depth rate is 75% of ``1000 /
full_ms_per_sample`` req/s (close to what the benchmark measures). Each condition gets a short open-loop Poisson
load of 1x then 3x that rate (1.5 s each); the step prints the
per-condition table. It is a glimpse, not the benchmark, and it keeps the
small model so that the demo stays fast (``benchmarks/earlyexit_sla.py`` runs
the 64x64 serving model on the real CPU, at rates from static's measured
capacity, with its baselines and a drift stream).
"""

from __future__ import annotations

APP = "earlyexit-demo"
PREFIX = "/eedemo"


def step(ctx) -> dict:
    from mixfleet.earlyexit.data import load_dataset
    from mixfleet.earlyexit.serve.app import deploy
    from mixfleet.earlyexit.serve.loadtest import run_condition
    from mixfleet.earlyexit.serve.slabench import DEFAULT_DEVICE
    from mixfleet.platform.bootstrap import connect
    from mixfleet.platform.output import print_table
    from mixfleet.platform.serving import serving

    connect(ctx.address)
    sla_ms = 200.0
    test = load_dataset("mnist", seed=0).test
    images, labels = test.x[:, 0], test.y
    common = {"app_name": APP, "route_prefix": PREFIX, "num_cpus": 0.5, "sla_ms": sla_ms, "queue_bound": 64,
              "device": DEFAULT_DEVICE}
    out: dict = {"sla_ms": sla_ms, "conditions": {}}
    with serving() as srv:
        srv.own(APP)
        mu = 0.75 * 1000.0 / DEFAULT_DEVICE["full_ms_per_sample"]
        out["nominal_rate_rps"] = mu
        out["emulated_device"] = DEFAULT_DEVICE
        phases = [("1x", mu, 1.5), ("3x", 3 * mu, 1.5)]
        for i, cond in enumerate(("full", "static", "adaptive")):
            url = deploy(mode=cond, **common)
            r = run_condition(url, images, labels, phases, sla_ms, seed=i)
            out["conditions"][cond] = {k: r[k] for k in ("requests", "sla_attainment", "p50_ms", "p99_ms",
                                                         "accuracy", "shed", "exit_counts")}
    if not ctx.json_mode:
        print_table(f"earlyexit_serve: EMULATED device, 1.5 s at 1x then 3x of {mu:.0f} req/s, SLA {sla_ms:g} ms",
                    ["condition", "requests", "SLA met", "p50 ms", "p99 ms", "shed", "accuracy", "per exit"],
                    [(c, r["requests"], f"{100 * (r['sla_attainment'] or 0):.1f}%", r["p50_ms"], r["p99_ms"],
                      r["shed"], f"{100 * (r['accuracy'] or 0):.1f}%", "/".join(map(str, r["exit_counts"])))
                     for c, r in out["conditions"].items()])
    return out
