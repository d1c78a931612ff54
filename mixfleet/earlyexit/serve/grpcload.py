"""The open-loop generator over gRPC: the same schedule and outcome arrays as the HTTP one.

:func:`run_grpc_open_loop` fires pre-serialised ``PredictRequest`` messages
at their scheduled times through Serve's gRPC proxy (``grpc.aio``, one
channel per worker process, raw bytes so nothing is re-encoded on the hot
path) and returns a :class:`mixfleet.platform.loadgen.LoadResult` whose
statuses are mapped to HTTP's (OK 200, RESOURCE_EXHAUSTED 429, UNAVAILABLE
503, other errors 500, transport failure or timeout 0) and whose bodies are
the answers as the HTTP API's JSON, so one analysis serves both ingresses.
"""

from __future__ import annotations

import asyncio
import json
import time

import numpy as np

METHOD = "/mixfleet.earlyexit.EarlyExitService/Predict"


def encode_requests(images: np.ndarray, model: str = "mnist") -> list[bytes]:
    """One serialised single-instance ``PredictRequest`` per image."""
    from mixfleet.earlyexit.serve.proto import earlyexit_pb2 as pb

    return [pb.PredictRequest(model=model, instances=[pb.Instance(pixels=np.round(img, 4).ravel().tolist())])
            .SerializeToString() for img in images]


def _status(code) -> int:
    import grpc

    return {grpc.StatusCode.OK: 200, grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
            grpc.StatusCode.UNAVAILABLE: 503, grpc.StatusCode.DEADLINE_EXCEEDED: 0}.get(code, 500)


async def _shard(conn, port, app, bodies, schedule, body_index, timeout_s):
    import grpc

    from mixfleet.earlyexit.serve.proto import earlyexit_pb2 as pb
    from mixfleet.platform.loadgen import fire_on_schedule

    n = len(schedule)
    status, latency, lag = np.zeros(n, dtype=np.int32), np.full(n, np.inf), np.zeros(n)
    out: list[bytes | None] = [None] * n
    meta = (("application", app),)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        call = ch.unary_unary(METHOD)  # no serializers: requests and responses stay bytes
        await ch.channel_ready()
        conn.send("ready")
        start = await asyncio.get_running_loop().run_in_executor(None, conn.recv)

        async def one(i: int) -> None:
            due = start + schedule[i]
            lag[i] = time.time() - due
            try:
                raw = await call(bodies[body_index[i]], metadata=meta, timeout=timeout_s)
            except grpc.aio.AioRpcError as exc:
                status[i] = _status(exc.code())
                return
            latency[i] = time.time() - due
            preds = pb.PredictResponse.FromString(raw).predictions
            status[i] = 200
            out[i] = json.dumps({"predictions": [{"label": p.label, "exit": p.exit} for p in preds]}).encode()

        await fire_on_schedule(start, schedule, one)
    return status, latency, lag, out


def _worker(conn, port, app, bodies, schedule, body_index, timeout_s) -> None:
    conn.send(asyncio.run(_shard(conn, port, app, bodies, schedule, body_index, timeout_s)))
    conn.close()


def run_grpc_open_loop(port: int, app: str, bodies: list[bytes], schedule: np.ndarray, body_index: np.ndarray,
                       procs: int = 2, timeout_s: float = 30.0):
    """Send ``bodies[body_index[i]]`` at ``start + schedule[i]`` to ``127.0.0.1:port`` (application ``app``)."""
    from mixfleet.platform.loadgen import run_sharded

    n = len(schedule)
    return run_sharded(_worker, lambda idx: (port, app, bodies, schedule[idx], body_index[idx], timeout_s), n,
                       max(1, min(procs, n or 1)))
