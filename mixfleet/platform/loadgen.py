"""An open-loop HTTP load generator that stays out of the server's way.

Requests are fired at scheduled times whether or not earlier ones have
answered (open loop), and each latency is measured from the request's
*scheduled* send time to the end of its response, so a generator that falls
behind shows up as latency (no coordinated omission) and its lag is reported
apart.

To leave CPU for the server on small hosts it avoids general-purpose HTTP
clients: each worker process speaks minimal HTTP/1.1 over asyncio streams
on a pool of keep-alive connections, with every request pre-encoded. The
schedule is split round-robin over ``procs`` worker processes (``spawn``,
so they never inherit a Ray driver), which share one wall-clock start.

Invariants: every scheduled request gets exactly one outcome (HTTP status,
or 0 for a transport error/timeout); the result arrays are in schedule order.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import time
from dataclasses import dataclass

import numpy as np


@dataclass
class LoadResult:
    """Outcome of each scheduled request, in schedule order."""

    status: np.ndarray  # int: HTTP status, 0 = transport error or timeout
    latency_s: np.ndarray  # from scheduled send to end of response (inf when status == 0)
    lag_s: np.ndarray  # actual send minus scheduled send (the generator's own delay)
    bodies: list[bytes | None]  # response bodies
    start_wall: float  # time.time() of schedule offset 0

    @property
    def max_lag_s(self) -> float:
        return float(self.lag_s.max()) if len(self.lag_s) else 0.0


def poisson_schedule(phases: list[tuple[float, float]], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Send offsets (s) for phases of ``(rate req/s, seconds)`` back to back, and each request's phase index."""
    times, phase_of, t0 = [], [], 0.0
    for i, (rate, secs) in enumerate(phases):
        if rate > 0:
            gaps = rng.exponential(1.0 / rate, size=int(rate * secs * 1.5) + 16)
            t = t0 + np.cumsum(gaps)
            t = t[t < t0 + secs]
            times.append(t)
            phase_of.append(np.full(len(t), i))
        t0 += secs
    if not times:
        return np.zeros(0), np.zeros(0, dtype=int)
    return np.concatenate(times), np.concatenate(phase_of)


def run_open_loop(host: str, port: int, path: str | list[str], bodies: list[bytes], schedule: np.ndarray,
                  body_index: np.ndarray, procs: int = 2, max_conns: int = 256, timeout_s: float = 30.0,
                  content_type: str = "application/json") -> LoadResult:
    """POST ``bodies[body_index[i]]`` to ``http://host:port/path`` at ``start + schedule[i]``.

    ``path`` may be a list of paths (several applications behind one proxy, loaded side by side): then
    ``body_index[i] = k * len(bodies) + b`` sends body ``b`` to ``path[k]``."""
    n = len(schedule)
    procs = max(1, min(procs, n or 1))
    paths = [path] if isinstance(path, str) else list(path)
    heads = [_request(host, port, p, b, content_type) for p in paths for b in bodies]
    return run_sharded(_worker, lambda idx: (host, port, heads, schedule[idx], body_index[idx],
                                             max(1, max_conns // procs), timeout_s), n, procs)


def run_sharded(target, shard_args, n: int, procs: int) -> LoadResult:
    """Run ``target(conn, *shard_args(idx))`` in ``procs`` spawned processes, request ``i`` in shard ``i % procs``.

    The protocol every worker follows (as :func:`_worker` does): send ``"ready"`` once warm, receive the shared
    wall-clock start, then send ``(status, latency_s, lag_s, bodies)`` for its shard, in shard order.
    """
    ctx = mp.get_context("spawn")
    pipes, workers = [], []
    for w in range(procs):
        idx = np.arange(w, n, procs)
        parent, child = ctx.Pipe()
        p = ctx.Process(target=target, args=(child, *shard_args(idx)), daemon=True)
        p.start()
        pipes.append((idx, parent))
        workers.append(p)
    try:
        for _, conn in pipes:
            if not conn.poll(60):
                raise RuntimeError("a load-generator process did not start within 60 s")
            conn.recv()  # "ready": interpreter up, connections warm
        start = time.time() + 0.2
        for _, conn in pipes:
            conn.send(start)
        status = np.zeros(n, dtype=np.int32)
        latency = np.full(n, np.inf)
        lag = np.zeros(n)
        out: list[bytes | None] = [None] * n
        for idx, conn in pipes:
            s, lat, lg, bod = conn.recv()
            status[idx], latency[idx], lag[idx] = s, lat, lg
            for j, b in zip(idx, bod, strict=True):
                out[j] = b
    finally:
        for p in workers:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
    return LoadResult(status, latency, lag, out, start)


def _request(host: str, port: int, path: str, body: bytes, content_type: str) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


def _worker(conn, host, port, heads, schedule, body_index, max_conns, timeout_s) -> None:
    result = asyncio.run(_shard(conn, host, port, heads, schedule, body_index, max_conns, timeout_s))
    conn.send(result)
    conn.close()


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        parts = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            parts.append(await reader.readexactly(size + 2))
            if size == 0:
                break
        body = b"".join(p[:-2] for p in parts)
    else:
        body = await reader.readexactly(int(headers.get("content-length", "0")))
    return status, body, headers.get("connection", "").lower() != "close"


async def _shard(conn, host, port, heads, schedule, body_index, max_conns, timeout_s):
    n = len(schedule)
    status = np.zeros(n, dtype=np.int32)
    latency = np.full(n, np.inf)
    lag = np.zeros(n)
    bodies: list[bytes | None] = [None] * n
    idle: list[tuple] = []
    slots = asyncio.Semaphore(max_conns)
    for _ in range(min(8, max_conns, n)):  # warm connections before the clock starts
        try:
            idle.append(await asyncio.wait_for(asyncio.open_connection(host, port), 2.0))
        except (OSError, asyncio.TimeoutError):
            break
    conn.send("ready")
    start = await asyncio.get_running_loop().run_in_executor(None, conn.recv)

    async def one(i: int) -> None:
        due = start + schedule[i]
        async with slots:
            pair = idle.pop() if idle else None
            try:
                if pair is None:
                    pair = await asyncio.wait_for(asyncio.open_connection(host, port), timeout_s)
                reader, writer = pair
                lag[i] = time.time() - due
                writer.write(heads[body_index[i]])
                code, body, keep = await asyncio.wait_for(_read_response(reader), timeout_s)
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError, IndexError):
                if pair is not None:
                    pair[1].close()
                return
            latency[i] = time.time() - due
            status[i], bodies[i] = code, body
            if keep:
                idle.append(pair)
            else:
                writer.close()

    await fire_on_schedule(start, schedule, one)
    for _, w in idle:
        w.close()
    return status, latency, lag, bodies


async def fire_on_schedule(start: float, schedule: np.ndarray, one) -> None:
    """Start ``one(i)`` at wall-clock ``start + schedule[i]`` for every ``i`` (open loop) and wait for all."""
    tasks = []
    for i in range(len(schedule)):
        delay = start + schedule[i] - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i)))
    await asyncio.gather(*tasks)
