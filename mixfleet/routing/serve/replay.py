"""Replay a trace against a running mixfleet LLM endpoint, as a load generator would.

Each row becomes one streaming OpenAI completion (``POST /v1/completions``,
``max_tokens`` = the row's output length, a prompt of the row's length in byte
token ids) sent at its arrival time, all concurrently over one HTTP client.
Latencies are from the request's *scheduled* arrival (so a client that falls
behind shows up as latency, not as a lower rate): TTFT to the first streamed
chunk, E2E to the end of the stream.

The replicas' last chunk carries the engine's own view (``mixfleet``: engine
TTFT/E2E, replica, and the engine's, ingress's and emission's monotonic stamps).
On one host these share the client's clock, so each request's overhead is split
into *to_engine* (client to engine), *engine_late* (last token to its emission),
*to_ingress* and *to_client*. The benchmarks compare these with the simulator.

:func:`served_profile_points` profiles the REAL engine as served: the profiler's burst
and trickle sent through the deployed application while each real-engine replica times
its own iterations. :func:`served_engines` finds a running application's real-engine
replicas and their settings (``mixfleet routing profile --served``).
"""

from __future__ import annotations

import asyncio
import json
import time

import numpy as np


def percentile(xs, q) -> float:
    return float(np.percentile(np.asarray(xs, dtype=float), q)) if len(xs) else float("nan")


def summary(ttft, e2e) -> dict:
    return {"p50_ttft_s": percentile(ttft, 50), "p99_ttft_s": percentile(ttft, 99),
            "p50_e2e_s": percentile(e2e, 50), "p99_e2e_s": percentile(e2e, 99), "requests": len(e2e)}


async def replay(base: str, model: str, rows, timeout_s: float, dilation: float = 1.0) -> dict:
    """Replay ``rows`` (``arrival_s``, ``prompt``, ``output``) against ``base``; arrivals are stretched by
    ``dilation`` and latencies divided by it (model seconds of a time-dilated emulated fleet).

    Returns the P50/P99 summary, ``mean_e2e_s``, ``failed`` (status codes or exception names),
    ``by_gpu`` (answers per accelerator header), ``wall_s`` and ``per_request`` keyed by row index.
    """
    import httpx

    t_start = time.monotonic() + 0.5
    failed: list = []
    by_gpu: dict[str, int] = {}
    per: dict[int, dict] = {}

    async def one(client, k, r):
        sched = t_start + r.arrival_s * dilation
        await asyncio.sleep(max(0.0, sched - time.monotonic()))
        first, engine = None, {}
        body = {"model": model, "prompt": [65 + (j % 26) for j in range(r.prompt)], "max_tokens": r.output,
                "stream": True}
        try:
            async with client.stream("POST", base + "/v1/completions", json=body) as resp:
                if resp.status_code != 200:
                    failed.append(resp.status_code)
                    return
                gpu = resp.headers.get("x-mixfleet-accelerator", "")
                async for line in resp.aiter_lines():
                    if line.startswith("data: {"):
                        first = first or time.monotonic()
                        if '"mixfleet"' in line:
                            engine = json.loads(line[6:])["mixfleet"]
            done = time.monotonic()
        except Exception as exc:  # counted and reported
            failed.append(type(exc).__name__)
            return
        d = dilation
        by_gpu[gpu] = by_gpu.get(gpu, 0) + 1
        per[k] = {"ttft": (first - sched) / d, "e2e": (done - sched) / d, "engine_ttft": engine.get("engine_ttft_s"),
                  "engine_e2e": engine.get("engine_e2e_s"), "replica": engine.get("replica_id")}
        if engine.get("t_submit") is not None:  # one monotonic clock on this host
            per[k].update(to_engine=(engine["t_submit"] - sched) / d, engine_late=(engine["t_emit"] - engine["t_end"]) / d,
                          to_ingress=(engine["t_ingress"] - engine["t_emit"]) / d, to_client=(done - engine["t_ingress"]) / d)

    limits = httpx.Limits(max_connections=1000, max_keepalive_connections=1000)
    async with httpx.AsyncClient(timeout=timeout_s, limits=limits) as client:
        t0 = time.monotonic()
        await asyncio.wait_for(asyncio.gather(*(one(client, k, r) for k, r in enumerate(rows))), timeout=timeout_s)
        wall = time.monotonic() - t0
    ks = sorted(per)
    e2e = [per[k]["e2e"] for k in ks]
    return {**summary([per[k]["ttft"] for k in ks], e2e), "mean_e2e_s": float(np.mean(e2e)) if e2e else float("nan"),
            "failed": failed, "by_gpu": by_gpu, "wall_s": wall, "per_request": per}


def served_profile_points(base: str, model: str, replica_ids: list[str], max_batched_tokens: int, max_context: int,
                          timeout_s: float, app_name: str | None = None, grid=None) -> list[dict]:
    """The profiler's burst and trickle (same shapes, same seeds), sent through the deployed application
    while each real-engine replica times its own iterations: the engine's iterations as served (in the
    replica's process, beside its event loop and Serve's threads), as fit points. [] without the hook.
    ``grid``: the :class:`~mixfleet.routing.profiler.Grid` whose ``burst``, ``trickle`` and ``trickle_rate``
    to send (the default grid's)."""
    from mixfleet.routing import profiler
    from mixfleet.routing.serve.app import engine_handle
    from mixfleet.routing.traces import TraceRow

    handles = [engine_handle(r, app_name) for r in replica_ids]
    if not all([h.time_iterations.remote(True).result() for h in handles]):
        return []
    g = grid or profiler.Grid()
    burst = [TraceRow(0.0, n_in, n_out) for n_in, n_out in profiler.burst_requests(g.burst, max_batched_tokens,
                                                                                     max_context)]
    trickle = [TraceRow(at, n_in, n_out)
               for at, n_in, n_out in profiler.trickle_requests(g.trickle, g.trickle_rate, max_batched_tokens,
                                                                 max_context)]
    try:
        for rows in (burst, trickle):
            asyncio.run(replay(base, model, rows, timeout_s + rows[-1].arrival_s))  # not from an event loop
    finally:
        points = [p for h in handles for p in h.time_iterations.remote(False).result()]
    return points


def served_engines(base: str, replicas: list[str] | None = None, app_name: str | None = None,
                   address: str | None = None) -> tuple[str, list[dict]]:
    """The model and the real-engine replicas (each replica's ``info``) of the mixfleet router answering at
    ``base`` (``http://HOST:PORT``), joining the router's Ray cluster at ``address`` once the router has
    answered (if not connected yet). ``replicas``: only these (default: every real-engine replica). They must
    share one engine configuration (one profile fits one)."""
    import httpx

    from mixfleet.errors import InputError, first_line
    from mixfleet.platform.bootstrap import connect
    from mixfleet.routing.serve.app import engine_handle

    try:
        with httpx.Client(timeout=10.0) as client:
            stats = client.get(base + "/v1/mixfleet/stats")
            stats.raise_for_status()
            model = client.get(base + "/v1/models").json()["data"][0]["id"]
            healthy = stats.json()["healthy"]
    except (httpx.HTTPError, ValueError, KeyError, IndexError) as exc:
        raise InputError(f"no mixfleet router answers at '{base}': {first_line(exc)}",
                         "start `mixfleet routing serve` and pass its base URL (http://127.0.0.1:PORT)") from None
    ids = list(healthy)
    unknown = sorted(set(replicas or ()) - set(ids))
    if unknown:
        raise InputError(f"no replica {', '.join(unknown)} in the application at '{base}'",
                         f"its replicas are {', '.join(ids)}")
    down = sorted(r for r in (replicas or ()) if not healthy[r])
    if down:
        raise InputError(f"replica {', '.join(down)} at '{base}' is not healthy now",
                         "wait until /health counts it again, or profile the others")
    if not any(healthy[r] for r in (replicas or ids)):
        raise InputError(f"no replica of the application at '{base}' is healthy now",
                         "wait until /health counts them again")
    connect(address)  # joins (or stays in) the router's cluster: leaving it later stops nothing there
    import ray.serve  # noqa: F401  (before quieting: its import resets its logger to INFO)

    from mixfleet.platform.logs import quiet_driver

    quiet_driver()
    infos = [engine_handle(r, app_name).info.remote().result(timeout_s=60)
             for r in (replicas or [r for r in ids if healthy[r]])]
    real = [i for i in infos if i["engine"] == "torch"]
    if not real:
        raise InputError(f"the application at '{base}' has no real-engine replica (engines: "
                         f"{', '.join(sorted({i['engine'] for i in infos}))})",
                         "a served profile times the real engine: deploy a fleet pool with `engine: torch`")
    kinds = {json.dumps({**i["settings"], "gpu": i["gpu"]}, sort_keys=True) for i in real}
    if len(kinds) > 1:
        raise InputError(f"the real-engine replicas {', '.join(i['replica_id'] for i in real)} differ in GPU type "
                         "or engine settings", "profile one kind at a time: pass --replica for each of them")
    return model, real
