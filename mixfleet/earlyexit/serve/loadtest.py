"""Open-loop load test of the early-exit server: Poisson arrivals in phases, per condition.

Arrivals are scheduled up front from a seeded ``numpy.random.Generator``
(exponential gaps at each phase's rate) and fired on time by
:func:`mixfleet.platform.loadgen.run_open_loop` (worker processes speaking
minimal HTTP/1.1), whether or not earlier requests have answered, so
queueing shows up as latency, as it would for real clients. Latency runs
from a request's *scheduled* send time to the end of its response. A
request meets the SLA when it is answered 200 within ``sla_ms``; shed
requests (429/503) and transport errors count as misses. Conditions
(``full``, ``static``, ``adaptive``, ``plain``) are switched on the same
replica through ``user_config`` (no restart).
"""

from __future__ import annotations

import json
import threading
import time
from urllib.parse import urlsplit

import numpy as np

MODEL = "mnist"
POOL = 1000  # distinct images encoded per run (drawn at random per request)


def _stats(lat_ms: np.ndarray, ok: np.ndarray, correct: np.ndarray, sla_ms: float) -> dict:
    n = len(lat_ms)
    met = ok & (lat_ms <= sla_ms)
    good = lat_ms[ok]
    pct = (lambda q: float(np.percentile(good, q))) if len(good) else (lambda q: None)
    return {"requests": int(n), "sla_attainment": float(met.mean()) if n else None, "sla_misses": int(n - met.sum()),
            "shed": int((~ok).sum()), "p50_ms": pct(50), "p99_ms": pct(99), "p99_99_ms": pct(99.99),
            "accuracy": float(correct[ok].mean()) if ok.any() else None}


def encode_bodies(images: np.ndarray) -> list[bytes]:
    """V1 request bodies, one instance each (pixels rounded to 4 decimals: MNIST pixels are k/255)."""
    return [json.dumps({"instances": [np.round(img, 4).tolist()]}, separators=(",", ":")).encode()
            for img in images]


def _get_stats(client, url: str) -> dict | None:
    import httpx

    try:
        return client.get(f"{url}/v1/models/{MODEL}/stats").json()
    except (httpx.HTTPError, ValueError):
        return None


def _poll_stats(url: str, stop: threading.Event, every_s: float, into: list) -> None:
    import httpx

    with httpx.Client(timeout=5.0) as client:
        while not stop.is_set():
            st = _get_stats(client, url)
            if st and "thresholds" in st:
                into.append({"wall": time.time(), "thresholds": st["thresholds"], "pressure": st["pressure"],
                             "forced": st["forced"], "backoff": st.get("backoff", 0.0),
                             "drift_samples": st.get("drift_samples", 0), "busy_share": st.get("busy_share", 0.0)})
            stop.wait(every_s)


def fire(url: str, bodies: list[bytes], body_labels: np.ndarray, schedule: np.ndarray, pick: np.ndarray,
         procs: int = 2, poll_s: float = 0.25, timeout_s: float = 30.0, grpc: tuple[int, str] | None = None) -> dict:
    """POST ``bodies[pick[i]]`` at ``schedule[i]`` (open loop); per request: latency, status, answer, correctness.

    Also the replica's CPU milliseconds per answered sample over the run (its ``/stats`` before and after;
    ``None`` when the two reads come from different replicas). With ``grpc=(port, application)`` the
    bodies are serialised ``PredictRequest`` messages sent through Serve's gRPC proxy instead.
    """
    import httpx

    from mixfleet.platform.loadgen import run_open_loop

    n = len(schedule)
    parts = urlsplit(url)
    path = f"{parts.path.rstrip('/')}/v1/models/{MODEL}:predict"
    timeline: list[dict] = []
    stop = threading.Event()
    with httpx.Client(timeout=5.0) as client:
        before = _get_stats(client, url)
    poller = threading.Thread(target=_poll_stats, args=(url, stop, poll_s, timeline), daemon=True)
    poller.start()
    try:
        if grpc is None:
            res = run_open_loop(parts.hostname, parts.port, path, bodies, schedule, pick, procs=procs,
                                timeout_s=timeout_s)
        else:
            from mixfleet.earlyexit.serve.grpcload import run_grpc_open_loop

            res = run_grpc_open_loop(grpc[0], grpc[1], bodies, schedule, pick, procs=procs, timeout_s=timeout_s)
    finally:
        stop.set()
        poller.join()
    with httpx.Client(timeout=5.0) as client:
        after = _get_stats(client, url)
    ok = res.status == 200
    pred, exits = np.full(n, -1), np.full(n, -1)
    for i in np.flatnonzero(ok):
        p = json.loads(res.bodies[i])["predictions"][0]
        pred[i], exits[i] = p["label"], p["exit"]
    cpu_ms = None
    if before and after and "cpu_s" in before and before.get("pid") == after.get("pid") and \
            after["served"] > before["served"]:
        cpu_ms = 1e3 * (after["cpu_s"] - before["cpu_s"]) / (after["served"] - before["served"])
    same = bool(before and after and before.get("pid") == after.get("pid"))
    replica = {k: after[k] - before[k] for k in ("forced", "drift_samples", "sla_misses") if same and k in after}
    return {"ok": ok, "latency_ms": res.latency_s * 1e3, "correct": pred == body_labels[pick], "exits": exits,
            "max_lag_s": res.max_lag_s, "start_wall": res.start_wall, "cpu_ms_per_request": cpu_ms, "replica": replica,
            "timeline": [{"t": p.pop("wall") - res.start_wall, **p} for p in timeline]}


def run_condition(url: str, images: np.ndarray, labels: np.ndarray, phases: list[tuple[str, float, float]],
                  sla_ms: float, seed: int = 0, procs: int = 2, poll_s: float = 0.25, timeout_s: float = 30.0,
                  grpc: tuple[int, str] | None = None) -> dict:
    """Fire the phases (name, rate req/s, seconds) at ``url``; returns overall, per-phase and timeline stats.

    ``grpc=(port, application)``: the same requests through Serve's gRPC proxy (``url`` still serves /stats).
    """
    from mixfleet.platform.loadgen import poisson_schedule

    rng = np.random.default_rng(seed)
    schedule, phase_of = poisson_schedule([(rate, secs) for _, rate, secs in phases], rng)
    pool = min(len(images), POOL)
    pick = rng.integers(0, pool, size=len(schedule))
    if grpc is None:
        bodies = encode_bodies(images[:pool])
    else:
        from mixfleet.earlyexit.serve.grpcload import encode_requests

        bodies = encode_requests(images[:pool])
    f = fire(url, bodies, labels[:pool], schedule, pick, procs, poll_s, timeout_s, grpc=grpc)
    lat, ok, correct, exits = f["latency_ms"], f["ok"], f["correct"], f["exits"]
    out = _stats(lat, ok, correct, sla_ms)
    duration = sum(secs for _, _, secs in phases)
    out["offered_rate"] = len(schedule) / duration if duration else 0.0
    out["max_generator_lag_ms"] = f["max_lag_s"] * 1e3
    out["phases"] = {}
    for i, (name, rate, _) in enumerate(phases):
        m = phase_of == i
        out["phases"][name] = {"rate": rate, **_stats(lat[m], ok[m], correct[m], sla_ms)}
    out["exit_counts"] = np.bincount(exits[exits >= 0], minlength=3).tolist()
    out["cpu_ms_per_request"] = f["cpu_ms_per_request"]
    out["replica"] = f["replica"]  # what the replica counted over the run: forced exits, monitoring samples, misses
    out["timeline"] = f["timeline"]
    out["send_times"] = schedule.tolist()
    out["latencies_ms"] = [float(v) if np.isfinite(v) else None for v in lat]
    return out


def drain(url: str, timeout_s: float = 60.0) -> None:
    """Wait until the replica has nothing in flight, so that one run's backlog never starts the next."""
    import httpx

    end = time.monotonic() + timeout_s
    with httpx.Client(timeout=10.0) as client:
        while time.monotonic() < end:
            st = _get_stats(client, url)
            if st is not None and st.get("inflight", 0) == 0:
                return
            time.sleep(0.5)


def measure_capacity(url: str, images: np.ndarray, labels: np.ndarray, sla_ms: float, probe_s: float = 4.0,
                     lo: float = 2.0, hi: float = 400.0, steps: int = 7, target: float = 0.99,
                     min_probe_requests: int = 100, procs: int = 2, confirm_s: float = 0.0,
                     confirm_step: float = 0.95, confirm_tries: int = 4) -> float:
    """The highest Poisson rate (req/s) at which >= ``target`` of requests meet the SLA (bisection, open loop).

    Run it with the replica in the mode whose capacity you want (``full``
    for the load test's 1x). A warm-up at ``lo`` comes first; each probe
    lasts ``probe_s`` or long enough for ``min_probe_requests``; the server
    is drained between probes. Returns ``lo`` when even
    ``lo`` does not hold. With ``confirm_s`` > 0 the bisection's answer must
    then hold one probe of ``confirm_s`` seconds; each failure lowers it by
    ``confirm_step`` (at most ``confirm_tries`` times). A short probe starts
    empty and passes a rate whose backlog grows slowly: one SLA run passed
    128 req/s by bisection, and static then held 0% of a 27 s phase at it.
    """
    def probe(rate: float, seed: int, secs: float | None = None) -> bool:
        secs = secs or max(probe_s, min_probe_requests / rate)
        r = run_condition(url, images, labels, [("probe", rate, secs)], sla_ms, seed=seed, procs=procs, poll_s=secs)
        drain(url)
        return (r["sla_attainment"] or 0.0) >= target

    def holds(rate: float, seed: int) -> bool:  # a rate fails only if it fails twice (one hiccup is not capacity)
        return probe(rate, seed) or probe(rate, seed + 1000)

    run_condition(url, images, labels, [("warm-up", max(lo, 10.0), 2.0)], sla_ms, seed=0, procs=procs, poll_s=2.0)
    time.sleep(1.0)
    for k in range(steps):
        mid = (lo * hi) ** 0.5  # geometric bisection: the range spans orders of magnitude
        if holds(mid, k + 1):
            lo = mid
        else:
            hi = mid
    if confirm_s > 0:
        for k in range(confirm_tries):
            if probe(lo, 500 + k, confirm_s):
                break
            lo *= confirm_step
    return lo
