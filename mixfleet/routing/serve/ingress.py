"""The ingress deployment: OpenAI-compatible HTTP, the gRPC ``Generate`` RPCs, and the router.

One replica of :class:`Ingress` owns the one :class:`~mixfleet.routing.serve.router.LiveRouter`
(why an ingress and not a Serve ``RequestRouter``: see that module). It
dispatches to the per-replica engine deployments through Serve handles and
runs the slow loop: every ``telemetry_interval_s`` it reads each engine's
counters (the same counters the simulator turns into telemetry: tokens,
busy and profiled seconds, queue, KV use), the TelemetryHub's GPU readings
for the GPUs those replicas sit on (NVML on real GPUs, emulated otherwise:
``speed_factor`` under throttling, staleness), probes replicas marked down,
and hands one :class:`~mixfleet.routing.policy.Telemetry` sample to the
policy (``observe``), exactly as the simulator does.

Every HTTP response carries ``x-mixfleet-accelerator`` (the GPU type that
served it, ``none`` when no replica was involved) and
``x-mixfleet-engine`` (the engine of the replica that served it: ``emulated``,
or ``torch`` for the REAL engine: real compute, random weights). A fleet may
mix both; when it has real-engine replicas, prompts are tokenised byte-level
(:mod:`mixfleet.routing.serve.openai_api`) for every replica, and the prompt
ids and a trace's hidden true length travel to the engine next to the
policy's :class:`~mixfleet.routing.policy.Request` (the policy never sees them).
Errors use OpenAI's shape: 400 for bad input, 429 + ``Retry-After`` when
too much is in flight, 503 + ``Retry-After`` when no replica can take the
request; gRPC gets INVALID_ARGUMENT, RESOURCE_EXHAUSTED and UNAVAILABLE
(the mapping is :data:`mixfleet.errors.WIRE`, shared with early exit).
"""

import asyncio
import logging
import time
from dataclasses import dataclass

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from ray import serve

from mixfleet.errors import (
    InputError,
    Overloaded,
    ServingError,
    Unavailable,
    error_text,
    grpc_error,
    http_error,
)
from mixfleet.routing.policy import ReplicaTelemetry, Telemetry
from mixfleet.routing.policy import Request as RoutedRequest
from mixfleet.routing.serve import openai_api as oa
from mixfleet.routing.serve.app import ServeOptions, engine_of
from mixfleet.routing.serve.router import LiveRouter, ReplicaDown, make_live_policy

log = logging.getLogger("mixfleet.routing.serve")

api = FastAPI(title="mixfleet live router (OpenAI-compatible)", docs_url=None, redoc_url=None)

ACCEL_HEADER = "x-mixfleet-accelerator"


@dataclass(slots=True)
class LiveRequest(RoutedRequest):
    """The policy's request plus what only the engine reads: the prompt's tokens and the hidden true length."""

    prompt_ids: tuple[int, ...] | None = None
    true_output: int | None = None


@api.middleware("http")
async def _default_headers(request, call_next):
    response = await call_next(request)
    response.headers.setdefault(ACCEL_HEADER, "none")
    return response


def _error(exc: Exception) -> JSONResponse:
    """An OpenAI-shaped error; status and Retry-After from :data:`mixfleet.errors.WIRE`."""
    kinds = {400: "invalid_request_error", 429: "rate_limit_error", 503: "service_unavailable"}
    status, headers = http_error(exc)
    return JSONResponse(oa.error_body(error_text(exc), kind=kinds.get(status, "server_error")), status_code=status,
                        headers=headers)


def _is_replica_down(exc: BaseException) -> bool:
    import ray.exceptions as rex

    return isinstance(exc, (rex.RayActorError, rex.ActorUnavailableError, rex.ActorDiedError, rex.NodeDiedError,
                            rex.WorkerCrashedError))


def _grpc_fail(ctx, exc: BaseException) -> None:
    if isinstance(exc, (InputError, ServingError)):
        grpc_error(ctx, exc)


@serve.ingress(api)
class Ingress:
    """Serve ingress deployment class (see module doc)."""

    def __init__(self, fleet, engines: dict, options: ServeOptions) -> None:
        self.fleet = fleet
        self.options = options
        self.handles = [engines[r.replica_id] for r in fleet.replicas]
        self.model = fleet.model
        self.max_context = fleet.book.models[fleet.model].max_context
        policy = make_live_policy(fleet, options)
        # with an EMULATION time dilation D the router's clock runs in model seconds too (wall / D), so the
        # policy sees the same rates and intervals as in the simulator
        self.dilation = dilation = options.time_dilation
        self.router = LiveRouter(fleet, policy, self._send, options, clock=lambda: time.monotonic() / dilation)
        self.interval_s = options.telemetry_interval_s * dilation
        self.kinds = {r.replica_id: engine_of(r, options) for r in fleet.replicas}
        kinds = sorted(set(self.kinds.values()))
        self.engine_kind = kinds[0] if len(kinds) == 1 else "mixed (" + ", ".join(kinds) + ")"
        self.byte_tokens = "torch" in kinds
        self._placement: dict[int, dict] = {}
        self._last: dict[int, dict] = {}
        self._loop: asyncio.Task | None = None
        self.samples = 0

    # -- transport ------------------------------------------------------------------------
    async def _send(self, i: int, req: RoutedRequest):
        from ray.serve.exceptions import BackPressureError

        extra = {}
        if isinstance(req, LiveRequest):
            if req.prompt_ids is not None:
                extra["prompt_ids"] = list(req.prompt_ids)
            if req.true_output is not None:
                extra["output_tokens"] = req.true_output
        gen = self.handles[i].options(stream=True).generate.remote(req.prompt_tokens, req.max_tokens, **extra)
        finished = False
        try:
            async for chunk in gen:
                yield chunk
            finished = True
        except BackPressureError as exc:  # Serve's own queue bound for that replica: the same as a full queue
            raise Overloaded(f"replica {self.fleet.replicas[i].replica_id}: {exc}", retry_after_s=1.0) from None
        except Exception as exc:
            if _is_replica_down(exc):
                raise ReplicaDown(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from None
            raise
        finally:
            if not finished:
                gen.cancel()  # no-op for a finished or failed request; frees the handle for an abandoned one

    # -- slow loop --------------------------------------------------------------------------
    def _ensure_loop(self) -> None:
        if self._loop is None or self._loop.done():
            self._loop = asyncio.get_running_loop().create_task(self._slow_loop())

    async def check_health(self) -> None:
        self._ensure_loop()

    async def _slow_loop(self) -> None:
        while True:
            try:
                await self.sample()
            except Exception:
                log.exception("slow loop sample failed; trying again next interval")
            await asyncio.sleep(self.interval_s)

    async def _call(self, i: int, method: str, timeout: float):
        return await asyncio.wait_for(getattr(self.handles[i], method).remote(), timeout=timeout)

    async def sample(self) -> dict:
        """One slow-loop step: engine counters + hub GPU readings -> Telemetry -> policy.observe."""
        router, st = self.router, self.router.state
        n = len(st)
        stats = await asyncio.gather(*(self._call(i, "stats", 5.0) for i in range(n)), return_exceptions=True)
        missing = [i for i in range(n) if i not in self._placement]
        if missing:
            infos = await asyncio.gather(*(self._call(i, "info", 5.0) for i in missing), return_exceptions=True)
            for i, info in zip(missing, infos, strict=True):
                if isinstance(info, dict):
                    self._placement[i] = info
        gpus = {}
        try:
            from mixfleet.platform.telemetry import get_hub

            snap = await asyncio.wait_for(get_hub().snapshot.remote(), timeout=3.0)
            gpus = {(g.get("node_id"), g.get("gpu_index")): g for g in snap.get("gpus", ()) if not g.get("stale")}
        except Exception as exc:  # no hub: engine counters alone still drive the loop
            log.debug("no telemetry hub snapshot: %r", exc)
        reps = []
        for i, s in enumerate(stats):
            rid = st.ids[i]
            if isinstance(s, BaseException):
                if _is_replica_down(s):
                    router.mark_down(i, f"stats call failed: {type(s).__name__}")
                reps.append(ReplicaTelemetry(rid, healthy=st.healthy[i] and i not in router.down_reason))
                continue
            if i in router.down_reason:
                router.mark_up(i)  # it answered: back in rotation
                self._placement.pop(i, None)  # a restarted replica may sit on another GPU
            prev = self._last.get(i)
            self._last[i] = s
            obs = exp = None
            if prev is not None and s["tokens"] >= prev["tokens"]:
                tok, busy, prof = (s["tokens"] - prev["tokens"], s["busy_s"] - prev["busy_s"],
                                   s["profile_s"] - prev["profile_s"])
                obs = tok / busy if busy > 0 else None
                exp = tok / prof if prof > 0 else None
            where = self._placement.get(i, {})
            g = gpus.get((where.get("node_id"), where.get("gpu_index")), {})
            reps.append(ReplicaTelemetry(rid, observed_tok_s=obs, expected_tok_s=exp,
                                         clock_ratio=g.get("speed_factor"), throttled=bool(g.get("throttle_reasons")),
                                         power_w=g.get("power_w"), queue_len=int(s["queue_len"]),
                                         kv_frac=s["kv_frac"], healthy=True))
        router.observe(Telemetry(router.clock(), tuple(reps)))
        self.samples += 1
        return {"samples": self.samples}

    # -- shared request path ---------------------------------------------------------------
    async def _route(self, gen: oa.GenRequest) -> tuple:
        self._ensure_loop()
        req = LiveRequest(oa.new_id(gen.kind), gen.prompt_tokens, gen.max_tokens, time.monotonic(),
                          gen.prompt_ids, gen.true_output)
        return req.request_id, await self.router.route(req)

    def _headers(self, routed) -> dict:
        return {ACCEL_HEADER: routed.gpu, "x-mixfleet-replica": routed.replica_id,
                "x-mixfleet-attempts": str(routed.attempts), "x-mixfleet-engine": self.kinds[routed.replica_id]}

    def _text(self, routed, ids: list[int]) -> str:
        """Token ids as text: one character per id on the real engine, placeholder words when emulated."""
        if self.kinds[routed.replica_id] == "torch":
            from mixfleet.routing.torch_model import decode_ids

            return decode_ids(ids)
        return oa.detokenize(ids)

    async def _collect(self, gen: oa.GenRequest, routed) -> tuple:
        """All tokens of a unary request; if its replica dies mid-way, run it again elsewhere once."""
        for attempt in (1, 2):
            ids = list(routed.first.tokens)
            try:
                async for chunk in routed.rest:
                    ids.extend(chunk.tokens)
                return routed, ids
            except Unavailable:
                if attempt == 2:
                    raise
                self.router.retried += 1
            finally:
                await routed.rest.aclose()
            _rid, routed = await self._route(gen)  # the dead replica is marked down: the policy avoids it
        raise AssertionError("unreachable")

    async def _http_generate(self, request: Request, kind: str):
        try:
            body = oa.parse_body(await request.body())
            gen = oa.parse_request(body, kind, models=[self.model], max_context=self.max_context,
                                   byte_tokens=self.byte_tokens)
            rid, routed = await self._route(gen)
            if not gen.stream:
                routed, ids = await self._collect(gen, routed)
        except (InputError, ServingError) as exc:
            return _error(exc)
        headers = self._headers(routed)
        if not gen.stream:
            engine = self.kinds[routed.replica_id]
            info = {"replica_id": routed.replica_id, "gpu": routed.gpu, "accelerator": routed.accelerator,
                    "engine": engine}
            if engine == "torch":
                from mixfleet.routing.torch_model import REAL_NOTE

                info.update(note=REAL_NOTE, token_ids=ids)
            return JSONResponse(oa.full_response(gen, rid, self._text(routed, ids), len(ids), info), headers=headers)
        return StreamingResponse(self._sse(gen, rid, routed), media_type="text/event-stream", headers=headers)

    async def _sse(self, gen: oa.GenRequest, rid: str, routed):
        n = len(routed.first.tokens)
        engine = self.kinds[routed.replica_id]
        try:
            yield oa.sse(oa.stream_chunk(gen, rid, self._text(routed, routed.first.tokens), first=True, engine=engine))
            last = routed.first
            async for chunk in routed.rest:
                n += len(chunk.tokens)
                last = chunk
                if chunk.tokens:
                    yield oa.sse(oa.stream_chunk(gen, rid, self._text(routed, chunk.tokens), engine=engine))
            end = oa.stream_chunk(gen, rid, "", finish=True, engine=engine, reason=oa.finish_reason(gen, n))
            # engine-side timing (model seconds from arrival at the replica) for fidelity checks
            end["mixfleet"] = {"replica_id": routed.replica_id, "gpu": routed.gpu, "engine": engine,
                               "engine_ttft_s": last.ttft_s, "engine_e2e_s": last.e2e_s,
                               "t_submit": last.t_submit, "t_end": last.t_end,
                               "t_emit": last.t_emit, "t_ingress": time.monotonic()}
            yield oa.sse(end)
            if gen.include_usage:
                yield oa.sse(oa.usage_chunk(gen, rid, n))
            yield oa.sse("[DONE]")
        except Unavailable as exc:  # headers are gone: report in-band, then end the stream
            yield oa.sse(oa.error_body(str(exc), kind="service_unavailable"))
        finally:
            await routed.rest.aclose()

    # -- HTTP routes --------------------------------------------------------------------------
    @api.post("/v1/completions")
    async def completions(self, request: Request):
        return await self._http_generate(request, "completion")

    @api.post("/v1/chat/completions")
    async def chat_completions(self, request: Request):
        return await self._http_generate(request, "chat")

    @api.get("/v1/models")
    async def models(self):
        return {"object": "list", "data": [{"id": self.model, "object": "model", "created": 0,
                                            "owned_by": f"mixfleet ({self.engine_kind} engine)"}]}

    @api.get("/health")
    async def health(self):
        self._ensure_loop()
        st = self.router.state
        up = sum(st.healthy)
        body = {"status": "ok" if up else "unavailable", "healthy_replicas": up, "replicas": len(st),
                "engine": self.engine_kind, "emulated": self.engine_kind == "emulated"}
        return JSONResponse(body, status_code=200 if up else 503)

    @api.get("/v1/mixfleet/stats")
    async def stats(self):
        """Router view: traffic per replica and GPU type, health, outstanding work, the policy's plan."""
        return self.describe()

    def describe(self) -> dict:
        r, st = self.router, self.router.state
        pol = r.policy
        plan = getattr(pol, "plan", None)
        return {"policy": pol.describe(), "counts": r.counts(), "rejected": r.rejected, "retried": r.retried,
                "healthy": dict(zip(st.ids, st.healthy, strict=True)),
                "outstanding": dict(zip(st.ids, st.outstanding, strict=True)),
                "speed": dict(zip(st.ids, st.speed, strict=True)),
                "down_reason": {st.ids[i]: w for i, w in r.down_reason.items()}, "samples": self.samples,
                "plan": plan.to_dict() if plan is not None else None, "engine": self.engine_kind,
                "placement": {st.ids[i]: p for i, p in self._placement.items()}}

    # -- gRPC (through Serve's gRPC proxy) -------------------------------------------------------
    def _grpc_request(self, request) -> oa.GenRequest:
        if isinstance(request, (bytes, bytearray)):  # registered raw (mixfleet.platform.grpcraw)
            from google.protobuf.message import DecodeError

            from mixfleet.routing.serve.proto import llm_pb2

            try:
                request = llm_pb2.GenerateRequest.FromString(bytes(request))
            except DecodeError:
                raise InputError("the request is not a valid GenerateRequest message",
                                 "send a mixfleet.serve.GenerateRequest (llm.proto)") from None
        body = {"model": request.model, "max_tokens": request.max_tokens or None}
        body["prompt"] = list(request.prompt_token_ids) if len(request.prompt_token_ids) else request.prompt
        if body["prompt"] == "":
            raise InputError("empty prompt", "set prompt or prompt_token_ids")
        return oa.parse_request(body, "completion", models=[self.model], max_context=self.max_context,
                                byte_tokens=self.byte_tokens)

    async def _grpc_route(self, request, grpc_context):
        try:
            gen = self._grpc_request(request)
            return gen, await self._route(gen)
        except Exception as exc:
            _grpc_fail(grpc_context, exc)
            raise

    async def Generate(self, request, grpc_context=None):
        from mixfleet.routing.serve.proto import llm_pb2

        gen, (_rid, routed) = await self._grpc_route(request, grpc_context)
        try:
            routed, ids = await self._collect(gen, routed)
        except Exception as exc:
            _grpc_fail(grpc_context, exc)
            raise
        return llm_pb2.GenerateReply(text=self._text(routed, ids), prompt_tokens=gen.prompt_tokens,
                                     completion_tokens=len(ids), accelerator=routed.gpu,
                                     replica_id=routed.replica_id, finish_reason=oa.finish_reason(gen, len(ids)))

    async def GenerateStream(self, request, grpc_context=None):
        from mixfleet.routing.serve.proto import llm_pb2

        gen, (_rid, routed) = await self._grpc_route(request, grpc_context)
        n = len(routed.first.tokens)
        try:
            yield llm_pb2.GenerateChunk(text=self._text(routed, routed.first.tokens),
                                        completion_tokens=len(routed.first.tokens), accelerator=routed.gpu,
                                        replica_id=routed.replica_id)
            async for chunk in routed.rest:
                n += len(chunk.tokens)
                yield llm_pb2.GenerateChunk(text=self._text(routed, chunk.tokens), completion_tokens=len(chunk.tokens),
                                            accelerator=routed.gpu, replica_id=routed.replica_id, done=chunk.done,
                                            finish_reason=oa.finish_reason(gen, n) if chunk.done else "")
        except Exception as exc:
            _grpc_fail(grpc_context, exc)
            raise
        finally:
            await routed.rest.aclose()
