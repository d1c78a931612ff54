"""Open-loop load test of the early-exit server: Poisson arrivals in phases, per condition.

Arrivals are scheduled up front from a seeded ``numpy.random.Generator``
(exponential gaps at each phase's rate) and fired on time whether or not
earlier requests have answered (open loop), so queueing shows up as
latency, as it would for real clients. A request meets the SLA when it is
answered 200 within ``sla_ms``; shed requests (429/503) count as misses.
Conditions (``full``, ``static``, ``adaptive``, ``plain``) are switched on the same
replica through ``user_config`` (no restart).
"""

import asyncio
import time

import numpy as np


def _stats(lat_ms: np.ndarray, ok: np.ndarray, correct: np.ndarray, sla_ms: float) -> dict:
    n = len(lat_ms)
    met = ok & (lat_ms <= sla_ms)
    good = lat_ms[ok]
    pct = (lambda q: float(np.percentile(good, q))) if len(good) else (lambda q: None)
    return {"requests": int(n), "sla_attainment": float(met.mean()) if n else None, "shed": int((~ok).sum()),
            "p50_ms": pct(50), "p99_ms": pct(99), "p99_99_ms": pct(99.99),
            "accuracy": float(correct[ok].mean()) if ok.any() else None}


async def run_condition(url: str, images: np.ndarray, labels: np.ndarray, phases: list[tuple[str, float, float]],
                        sla_ms: float, seed: int = 0, poll_s: float = 0.25) -> dict:
    """Fire the phases (name, rate req/s, seconds) at ``url``; returns overall, per-phase and timeline stats."""
    import httpx

    rng = np.random.default_rng(seed)
    times, phase_of = [], []
    t0 = 0.0
    for i, (_, rate, secs) in enumerate(phases):
        t = t0 + rng.exponential(1.0 / rate)
        while t < t0 + secs:
            times.append(t)
            phase_of.append(i)
            t += rng.exponential(1.0 / rate)
        t0 += secs
    n = len(times)
    pick = rng.integers(0, len(images), size=n)
    bodies = [{"instances": [images[j].tolist()]} for j in pick]
    lat = np.full(n, np.inf)
    ok = np.zeros(n, dtype=bool)
    pred = np.full(n, -1)
    exits = np.full(n, -1)
    timeline: list[dict] = []
    predict = url + "/v1/models/mnist:predict"
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
    async with httpx.AsyncClient(timeout=30.0, limits=limits) as client:
        loop = asyncio.get_running_loop()
        start = loop.time()
        done = asyncio.Event()

        async def one(i: int) -> None:
            s = time.perf_counter()
            try:
                r = await client.post(predict, json=bodies[i])
            except httpx.HTTPError:
                return
            lat[i] = (time.perf_counter() - s) * 1e3
            if r.status_code == 200:
                p = r.json()["predictions"][0]
                ok[i], pred[i], exits[i] = True, p["label"], p["exit"]

        async def poll() -> None:
            while not done.is_set():
                try:
                    st = (await client.get(url + "/v1/models/mnist/stats")).json()
                    timeline.append({"t": loop.time() - start, "thresholds": st["thresholds"],
                                     "pressure": st["pressure"], "forced": st["forced"]})
                except (httpx.HTTPError, ValueError, KeyError):
                    pass
                await asyncio.sleep(poll_s)

        poller = asyncio.create_task(poll())
        tasks = []
        for i, t in enumerate(times):
            delay = start + t - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i)))
        await asyncio.gather(*tasks)
        done.set()
        await poller
        offered = n / max(loop.time() - start, 1e-9)
    correct = pred == labels[pick]
    out = _stats(lat, ok, correct, sla_ms)
    out["offered_rate"] = offered
    out["phases"] = {}
    for i, (name, rate, _) in enumerate(phases):
        m = np.asarray(phase_of) == i
        out["phases"][name] = {"rate": rate, **_stats(lat[m], ok[m], correct[m], sla_ms)}
    out["exit_counts"] = np.bincount(exits[exits >= 0], minlength=3).tolist()
    out["timeline"] = timeline
    out["send_times"] = [float(t) for t in times]
    out["latencies_ms"] = [float(v) if np.isfinite(v) else None for v in lat]
    return out


def measure_capacity(url: str, images: np.ndarray, seconds: float = 3.0) -> float:
    """Requests/s one client sustains back to back (a full-depth replica, batch 1)."""
    import httpx

    n, start = 0, time.perf_counter()
    with httpx.Client(timeout=30.0) as client:
        while time.perf_counter() - start < seconds:
            client.post(url + "/v1/models/mnist:predict", json={"instances": [images[n % len(images)].tolist()]})
            n += 1
    return n / (time.perf_counter() - start)
