"""Serving an early-exit model on Ray Serve, KServe/TF-Serving V1 style.

``POST /v1/models/<name>:predict`` with ``{"instances": [...]}`` (one
instance: a 28x28 or 1x28x28 array of floats in [0, 1]) returns
``{"predictions": [{"label", "confidence", "exit", "exit_name", "forced"}]}``;
``label`` and ``confidence`` are what a plain deployment of the backbone
returns, so existing clients need no change. ``GET /v1/models/<name>`` is
the V1 status call; ``GET /v1/models/<name>/stats`` shows the controller.

The replica batches requests with ``@serve.batch`` (knobs changed at run
time through ``user_config``), chooses thresholds with
:class:`~mixfleet.earlyexit.serve.policy.AdaptiveThresholds` (``mode="adaptive"``;
``"static"`` keeps the calibrated ones, ``"full"`` never exits early,
``"apparate"`` is the accuracy-feedback baseline that ignores load),
forces exits when a deadline would be missed (adaptive only), and samples
full passes when idle (drift guard: such a batch is answered from the final exit). Past ``queue_bound`` requests it answers 429 with
``Retry-After``, and (``admission="deadline"``, the default) when the requests ahead would hold a
new one past its SLA (:class:`~mixfleet.earlyexit.serve.policy.DrainTime`): an overload sheds at
the door instead of answering late. Bad input is a 4xx with a one-line message, never a crash.
Metrics go through ``ray.serve.metrics`` (Ray's Prometheus endpoint);
``record_autoscaling_stats()`` feeds Serve's autoscaler the queue length and
forced-exit rate (policy: :mod:`mixfleet.earlyexit.serve.autoscale`). Binding
and deploying the replica: :mod:`mixfleet.earlyexit.serve.app`.
"""


import asyncio
import contextlib
import os
import time
from dataclasses import dataclass

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from ray import serve

from mixfleet.earlyexit.inputs import parse_instances, parse_pixel_rows
from mixfleet.earlyexit.serve.answers import EarlyAnswers
from mixfleet.earlyexit.serve.device import DeviceClock
from mixfleet.earlyexit.serve.options import ServeOptions
from mixfleet.errors import (
    InputError,
    MixfleetError,
    NotFound,
    Overloaded,
    PayloadTooLarge,
    error_text,
    grpc_error,
    http_error,
)
from mixfleet.platform.config import parse_model
from mixfleet.platform.jsonbody import loads_body

api = FastAPI(title="mixfleet early-exit (KServe V1)", docs_url=None, redoc_url=None)


@dataclass
class _Item:
    x: object  # torch.Tensor [n, 1, 28, 28]
    arrival: float
    future: asyncio.Future | None = None  # resolved as soon as every sample of the request has left


def _error(exc: MixfleetError) -> JSONResponse:
    """``{"error": message}``; status and Retry-After from :data:`mixfleet.errors.WIRE`."""
    status, headers = http_error(exc)
    return JSONResponse({"error": error_text(exc)}, status_code=status, headers=headers)


@serve.deployment(name="EarlyExitServer")
@serve.ingress(api)
class EarlyExitServer:
    """One replica: an early-exit model behind the V1 predict API (see module doc)."""

    def __init__(self, model_bytes: bytes, name: str = "mnist"):
        import torch

        from mixfleet.earlyexit.batch import spill_model
        from mixfleet.earlyexit.persist import load

        torch.set_num_threads(1)
        from pathlib import Path

        path = Path(spill_model(model_bytes))
        try:
            self.model = load(path)
        finally:
            path.unlink(missing_ok=True)
        self.name = name
        self.calibrated = list(self.model.thresholds)
        curve = (self.model.calibration or {}).get("curve") or []
        zero = [p for p in curve if p.get("eps") == 0.0]
        self.conservative = zero[0]["thresholds"] if zero else [1.0] * self.model.n_exits
        self.inflight = 0
        self.counts = np.zeros(self.model.n_exits + 1, dtype=np.int64)
        self.forced = 0
        self.sla_misses = 0
        self.served = 0
        self._last_busy = 0.0
        from mixfleet.earlyexit.serve.policy import DrainTime

        self.drain = DrainTime()  # wall time per request to clear: what deadline admission works from
        self._metrics()
        self.reconfigure({})

    # -- configuration ---------------------------------------------------------------------
    def reconfigure(self, user_config: dict) -> None:
        from mixfleet.earlyexit.inputs import check_thresholds
        from mixfleet.earlyexit.serve.policy import (
            AccuracyTuner,
            AdaptiveThresholds,
            BusyShare,
            DeadlinePlanner,
            DriftGuard,
        )

        opts = parse_model(user_config or {}, ServeOptions, source="user_config")
        self.calibrated = list(self.model.thresholds) if opts.thresholds is None else \
            check_thresholds(opts.thresholds, self.model.n_exits, self.model.exit_names)
        self.opts = opts
        self.drain.reset()  # new options (mode, device, batch size) may change the speed: measured afresh
        self.policy = AdaptiveThresholds(self.calibrated, self.conservative, opts.sla_ms / 1e3,
                                         queue_ref=max(2.0, opts.max_batch_size / 4))
        self.clock = DeviceClock.for_model(opts.device, self.model)
        if not hasattr(self, "planner") or opts.device != self.planner_device:  # stage times learnt on another device
            self.planner = DeadlinePlanner(len(self.model.stages), self.model.exit_stage_indices())
            self.planner_device = opts.device
            if self.clock is not None:  # a prior until the first batch is timed
                self.planner.stage_s[:] = [self.clock.target_s(t, 1) for t in self.clock.stage_s]
        self.guard = DriftGuard(floor=opts.drift_floor, sample_rate=opts.drift_sample_rate)
        self.busy = BusyShare(tau_s=1.0)  # every batch, monitoring included: gates the monitoring passes
        self.load_busy = BusyShare(tau_s=1.0)  # the load's batches only: the controller's utilisation
        self.tuner = AccuracyTuner(self.calibrated, eps=float((self.model.calibration or {}).get("eps", 0.01)))
        self.rng = np.random.default_rng(opts.seed)
        self._infer.set_max_batch_size(opts.max_batch_size)
        self._infer.set_batch_wait_timeout_s(opts.batch_wait_timeout_s)

    def _metrics(self) -> None:
        from ray.serve import metrics

        self.m_exits = metrics.Counter("earlyexit_exits", description="answers per exit head", tag_keys=("exit",))
        self.m_forced = metrics.Counter("earlyexit_forced_exits", description="deadline-forced exits")
        self.m_threshold = metrics.Gauge("earlyexit_threshold", description="current threshold", tag_keys=("exit",))
        self.m_agreement = metrics.Gauge("earlyexit_agreement", description="early vs final agreement (sampled)")
        self.m_misses = metrics.Counter("earlyexit_sla_misses", description="requests answered after the SLA")

    def thresholds_now(self) -> list[float]:
        if self.opts.mode in ("full", "plain"):
            return [1.0] * self.model.n_exits
        if self.opts.mode == "static":
            return list(self.calibrated)
        if self.opts.mode == "apparate":
            return self.tuner.thresholds()
        self.policy.backoff = self.guard.backoff_at(time.monotonic())
        return self.policy.thresholds()

    def record_autoscaling_stats(self) -> dict[str, float]:
        """Serve's custom-metrics hook: queue length and, since the last call, forced-exit and SLA-miss rates.

        :class:`~mixfleet.earlyexit.serve.autoscale.EarlyExitAutoscaling` scales on these.
        """
        served, forced, misses = self.served, self.forced, self.sla_misses
        s0, f0, m0 = getattr(self, "_reported", (0, 0, 0))
        self._reported = (served, forced, misses)
        n = served - s0
        return {"queue_len": float(self.inflight), "forced_exit_rate": (forced - f0) / n if n else 0.0,
                "sla_miss_rate": (misses - m0) / n if n else 0.0}

    # -- HTTP ------------------------------------------------------------------------------
    @api.get("/v1/models/{name}")
    async def status(self, name: str):
        if name != self.name:
            return _error(NotFound(f"model '{name}' is not served here; this server serves '{self.name}'"))
        return {"name": self.name, "ready": True, "exits": self.model.exit_names}

    @api.get("/v1/models/{name}/stats")
    async def stats(self, name: str):
        return {"served": self.served, "exit_counts": self.counts.tolist(), "forced": self.forced,
                "sla_misses": self.sla_misses, "thresholds": self.thresholds_now(),
                "pressure": self.policy.pressure, "busy_share": self.busy.value, "agreement": self.guard.agreement,
                "drift_samples": self.guard.samples, "backoff": self.guard.backoff_at(time.monotonic()), "options": self.opts.model_dump(),
                "device": "emulated" if self.clock is not None else "real",
                "cpu_s": time.process_time(),  # the replica process's CPU time (every thread): cost per request
                "pid": os.getpid(), "inflight": self.inflight,
                "drain_ms": None if self.drain.value is None else 1e3 * self.drain.value}  # what admission uses

    @api.post("/v1/models/{name}:predict")
    async def predict(self, name: str, request: Request):
        arrival = time.monotonic()
        if name != self.name:
            return _error(NotFound(f"model '{name}' is not served here; this server serves '{self.name}'"))
        refused = self._refusal()
        if refused is not None:
            return _error(refused)
        with self._admitted():
            return await self._predict_admitted(request, arrival)

    async def _predict_admitted(self, request: Request, arrival: float):
        length = request.headers.get("content-length") or "0"
        size = int(length) if length.isdigit() else 0  # a bad header: the body's own length is checked below
        if size > self.opts.max_body_bytes:
            return _error(PayloadTooLarge(f"request body of {size} bytes exceeds {self.opts.max_body_bytes}"))
        body = await request.body()
        if len(body) > self.opts.max_body_bytes:
            return _error(PayloadTooLarge(f"request body of {len(body)} bytes exceeds {self.opts.max_body_bytes}"))
        try:
            payload = loads_body(body, example='{"instances": [...]}')
            x = parse_instances(payload, self.model.input_shape, self.opts.max_instances)
        except InputError as exc:
            return _error(exc)
        import torch

        preds = await self._answer(_Item(torch.from_numpy(x), arrival))
        return {"predictions": preds}

    # -- gRPC (through Serve's gRPC proxy; metadata "application" selects the app) --------------
    async def Predict(self, request, grpc_context=None):
        """``EarlyExitService.Predict``: same schema as the HTTP API; errors map to gRPC codes."""
        from mixfleet.earlyexit.serve.proto import earlyexit_pb2 as pb

        def fail(exc: MixfleetError):
            grpc_error(grpc_context, exc)
            return pb.PredictResponse()

        arrival = time.monotonic()
        if isinstance(request, (bytes, bytearray)):  # registered raw (mixfleet.platform.grpcraw)
            from google.protobuf.message import DecodeError

            try:
                request = pb.PredictRequest.FromString(bytes(request))
            except DecodeError:
                return fail(InputError("the request is not a valid PredictRequest message"))
        if request.model and request.model != self.name:
            return fail(NotFound(f"model '{request.model}' is not served here ('{self.name}')"))
        refused = self._refusal()
        if refused is not None:
            return fail(refused)
        with self._admitted():
            return await self._predict_grpc_admitted(request, arrival, fail)

    async def _predict_grpc_admitted(self, request, arrival: float, fail):
        import torch

        from mixfleet.earlyexit.serve.proto import earlyexit_pb2 as pb

        try:
            x = parse_pixel_rows([list(i.pixels) for i in request.instances], self.model.input_shape,
                                 self.opts.max_instances)
        except InputError as exc:
            return fail(exc)
        preds = await self._answer(_Item(torch.from_numpy(x), arrival))
        return pb.PredictResponse(predictions=[pb.Prediction(**p) for p in preds])

    @contextlib.contextmanager
    def _admitted(self):
        """Count a request in flight from its admission (before its body is read), so that requests
        admitted together cannot pass the queue bound: the check and the count are one step of the event loop."""
        self.inflight += 1
        try:
            yield
        finally:
            self.inflight -= 1

    def _refusal(self) -> Overloaded | None:
        """Why a request arriving now is refused (429), or None to admit it: the queue bound, then (admission
        "deadline") the wait behind the requests in flight at the measured drain time, against the SLA budget.
        An empty replica always admits: a lone request whose full pass cannot fit is the forced exit's job."""
        if self.inflight >= self.opts.queue_bound:
            wait = (self.inflight * self.drain.value if self.drain.value is not None else  # else a batch-time prior
                    self.inflight / max(self.opts.max_batch_size, 1) * max(self.planner.stage_s.sum(), 1e-3))
            return Overloaded(f"server is at its queue bound ({self.opts.queue_bound} requests)", retry_after_s=wait)
        late = self.drain.late_wait_s(self.inflight, (self.opts.sla_ms - self.opts.path_ms) / 1e3)
        if self.opts.admission == "deadline" and late is not None:
            return Overloaded(f"the {self.inflight} requests in flight would hold this one {1e3 * late:.0f} ms, "
                              f"past its {self.opts.sla_ms:g} ms SLA", retry_after_s=late)
        return None

    # -- batched inference -----------------------------------------------------------------
    async def _answer(self, item: _Item) -> list[dict]:
        """The request's predictions as soon as its samples have exited (the batch may still be running)."""
        item.future = asyncio.get_running_loop().create_future()
        batch = asyncio.ensure_future(self._infer(item))
        await asyncio.wait({item.future, batch}, return_when=asyncio.FIRST_COMPLETED)
        return item.future.result() if item.future.done() else batch.result()

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.002)
    async def _infer(self, items: list[_Item]) -> list[list[dict]]:
        import torch

        from mixfleet.earlyexit.inference import ExitResult, run_exits

        x = torch.cat([it.x for it in items])
        deadline = min(it.arrival for it in items) + (self.opts.sla_ms - self.opts.path_ms) / 1e3
        th = self.thresholds_now()
        mode = self.opts.mode
        # idle: no other request is waiting, so the monitoring full pass delays nobody else. Not gated on the load
        # pressure: that is an average of utilisation, above 0.05 from about 20% busy, so the guard went blind at
        # moderate load (the SLA benchmark's drift stream runs at ~25% utilisation: no sample was ever taken)
        idle = self.inflight <= len(items)
        # the monitoring full pass delays the batch's answers: only when it still fits before the earliest deadline
        fits = time.monotonic() + float(self.planner.stage_s.sum()) <= deadline
        # and only from spare capacity: at the static mode's capacity a run of monitoring full passes (every idle
        # batch while the guard is suspicious) started a backlog that the replica, busy from then on, never drained
        spare = self.busy.value < self.opts.monitor_busy_cap
        sample = mode == "adaptive" and self.guard.should_sample(idle and fits and spare, float(self.rng.random()))
        if sample:  # measure the thresholds the load asks for; answer from the final exit (the pass runs anyway)
            th = self.policy.load_thresholds().tolist()
        names = self.model.exit_names + ["final"]
        answers = EarlyAnswers([it.x.shape[0] for it in items], [it.future for it in items],
                               [it.arrival for it in items], names, asyncio.get_running_loop())

        def force(k: int) -> bool:
            hit = mode == "adaptive" and self.planner.must_exit(k, time.monotonic(), deadline)
            if hit and answers.forced_exit is None:
                answers.forced_exit = k
            return hit

        stages = [self._timed(i, s) for i, s in enumerate(self.model.stages)]
        heads = {int(k): self._timed_head(int(k), h) for k, h in self.model.heads.items()}
        def compute():
            with torch.no_grad():
                if mode == "plain":  # the baseline: a plain deployment of the backbone
                    return ExitResult(self.model(x), torch.full((len(x),), self.model.n_exits), self.model.n_exits)
                # apparate: every sample runs to the end (feedback), early answers released at once
                release = sample or mode == "apparate"
                return run_exits(x, stages, heads, th, self.model.criterion, mode="release" if release else "stop",
                                 on_exit=None if sample else answers.on_exit, force_exit=force)

        # off the event loop, so the replica keeps admitting (or shedding) requests while it computes;
        # serve.batch runs one batch at a time, so the controller state is never touched concurrently
        began = time.monotonic()
        r = await asyncio.to_thread(compute)
        ended = time.monotonic()
        self.busy.update(ended - began, ended - self._last_busy)
        if not sample:
            self.load_busy.update(ended - began, ended - self._last_busy)
            self.policy.observe_service(ended - began, len(x))
        self._last_busy = ended
        self.drain.record(min(it.arrival for it in items), ended, len(items))
        if sample and r.final_logits is not None:
            self.guard.record(r.agreement(), len(x), ended)
            self.m_agreement.set(self.guard.agreement)
            r = ExitResult(r.final_logits, torch.full((len(x),), self.model.n_exits), self.model.n_exits)
        elif mode == "apparate":
            self.tuner.record(r.agreement())
        ex = r.exit_index.tolist()
        out = answers.finish(r.labels.tolist(), r.confidence.tolist(), ex)
        # a monitoring pass is not the load's work: it gives the controller no utilisation reading
        self._account(ex, answers.forced_exit, answers.latency, th, None if sample else self.load_busy.value)
        return out

    def _timed(self, i: int, stage):
        clock = self.clock

        def run(h):
            t0 = time.perf_counter()
            out = stage(h)
            if clock is not None:
                clock.pad(t0, clock.stage_s[i], h.shape[0])
            self.planner.record(i, time.perf_counter() - t0)
            return out

        return run

    def _timed_head(self, i: int, head):
        clock = self.clock
        if clock is None:
            return head

        def run(h):
            t0 = time.perf_counter()
            out = head(h)
            clock.pad(t0, clock.head_s[i], h.shape[0])
            return out

        return run

    def _account(self, ex: list[int], forced: int | None, latencies: list[float], th: list[float],
                 utilisation: float | None) -> None:
        counts = np.bincount(ex, minlength=len(self.counts))
        self.counts += counts
        self.served += len(ex)
        for k, c in enumerate(counts):
            if c:
                self.m_exits.inc(int(c), tags={"exit": str(k)})
        if forced is not None:
            n = int(counts[forced])
            self.forced += n
            self.m_forced.inc(n)
        misses = sum(1 for v in latencies if v > self.opts.sla_ms / 1e3)
        if misses:
            self.sla_misses += misses
            self.m_misses.inc(misses)
        self.policy.observe(self.inflight, latencies, utilisation)
        for k, t in enumerate(th):
            self.m_threshold.set(t, tags={"exit": str(k)})


GRPC_SERVICER = "mixfleet.platform.grpcraw.add_earlyexit_servicer"  # requests arrive as bytes: see Predict
