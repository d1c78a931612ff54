"""The discrete-event routing simulator (EMULATED GPUs; see profiles.py).

Events sit in one heap ordered by ``(time, priority, seq)``: at equal times
engine iterations end first (priority 0), then injected faults (1), then
arrivals (2), then telemetry ticks (3); ``seq`` breaks the remaining ties in
insertion order, so a run is a pure function of its inputs and seed. There
is no global state: the policy carries its own RNG, the clock is the event
time.

The trace is streamed: only the next arrival is in the heap, and an engine
holds only its own requests, so memory grows with the requests in flight,
not with the trace (the finished requests' latencies are kept as compact
arrays for the metrics).

The policy is driven exactly as the live router drives it: ``choose``,
then :meth:`RouterState.on_dispatch`, and :meth:`RouterState.on_complete`
when the request finishes; every ``telemetry_interval_s`` of simulated time
the engines' counters become a :class:`Telemetry` sample that is applied to
the state and handed to ``policy.observe`` (the slow loop).

Information (see :mod:`mixfleet.routing.lengths`): each trace row's output
length is the request's hidden true length, handed to the engine only; the
policy's :class:`Request` carries the prompt and the client's cap from
``cap_rule`` (``app`` by default; ``oracle`` is the old cap = true length
ablation). A finished request teaches the router state's shared output
predictor its generated length, as a streamed response would.

Engine (see :mod:`mixfleet.routing.engine`): chunked prefill and vLLM's
grow-and-preempt KV cache by default (``chunked``, ``reserve``).

Requests longer than the model's context are clipped to fit (counted in
``clipped``); a client cap never exceeds the context left after the prompt.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import dataclass, field

from mixfleet.errors import InputError
from mixfleet.routing.engine import ReplicaEngine, SimRequest
from mixfleet.routing.lengths import CapRule, OutputPredictor
from mixfleet.routing.metrics import RunMetrics, oracle_floor, summarize
from mixfleet.routing.policy import Policy, ReplicaTelemetry, Request, RouterState, Telemetry
from mixfleet.routing.traces import Trace, TraceRow

ENGINE, FAULT, ARRIVAL, TELEMETRY = 0, 1, 2, 3


@dataclass(frozen=True)
class SpeedChange:
    """At ``time_s``, replica ``replica`` runs at ``speed`` x its profile (e.g. thermal throttle 0.5)."""

    time_s: float
    replica: str
    speed: float


@dataclass
class SimResult:
    policy: str
    metrics: RunMetrics
    summary: dict
    oracle: dict
    clipped: int
    events: int
    telemetry_samples: int
    extra: dict = field(default_factory=dict)


class Simulation:
    """One policy on one fleet over one trace."""

    def __init__(self, fleet, policy: Policy, trace: Trace | Iterable[TraceRow], *,
                 telemetry_interval_s: float = 2.0, faults: Iterable[SpeedChange] = (),
                 state: RouterState | None = None, cap_rule: str | CapRule = "app", chunked: bool = True,
                 reserve: str = "prompt") -> None:
        self.fleet = fleet
        self.policy = policy
        self.trace = trace
        self.telemetry_interval_s = telemetry_interval_s
        self.faults = sorted(faults, key=lambda f: f.time_s)
        name = getattr(trace, "name", "trace")
        self.cap_rule = cap_rule if isinstance(cap_rule, CapRule) else CapRule.for_trace(cap_rule, name)
        self.chunked, self.reserve = chunked, reserve
        self.state = state or RouterState.from_fleet(fleet, OutputPredictor(oracle=self.cap_rule.oracle))
        ids = self.state.ids
        for f in self.faults:
            if f.replica not in ids:
                self.state.index(f.replica)  # raises with the valid ids
            if not f.speed > 0:
                raise InputError(f"speed {f.speed} for replica '{f.replica}' must be > 0", "use e.g. 0.5")

    def run(self) -> SimResult:
        fleet, policy, state = self.fleet, self.policy, self.state
        cfg = fleet.config
        engines = [ReplicaEngine(i, r.perf, r.kv_tokens, r.max_batch, cfg.max_batched_tokens,
                                 chunked=self.chunked, reserve=self.reserve) for i, r in enumerate(fleet.replicas)]
        cap_of = self.cap_rule.apply
        max_ctx = fleet.book.models[fleet.model].max_context
        fastest = fleet.fastest().perf
        metrics = RunMetrics()
        heap: list = []
        seq = 0
        push = heapq.heappush
        pop = heapq.heappop
        rows = iter(self.trace)
        row = next(rows, None)
        if row is None:
            raise InputError("the trace is empty", "give a trace with at least one request")
        push(heap, (row.arrival_s, ARRIVAL, seq, row, 0))
        seq += 1
        for f in self.faults:
            push(heap, (f.time_s, FAULT, seq, f, 0))
            seq += 1
        if self.telemetry_interval_s > 0:
            push(heap, (row.arrival_s + self.telemetry_interval_s, TELEMETRY, seq, None, 0))
            seq += 1
        inflight = 0
        clipped = 0
        n_events = 0
        n_tel = 0
        arrivals_left = True
        finished: list[SimRequest] = []
        last_tokens = [0] * len(engines)
        last_busy = [0.0] * len(engines)
        last_prof = [0.0] * len(engines)
        req_seq = 0
        on_dispatch, on_complete, choose = state.on_dispatch, state.on_complete, policy.choose

        def dispatch(r: SimRequest, i: int, now: float, seq: int) -> int:
            on_dispatch(i, r.req)
            r.replica = i
            eng = engines[i]
            end = eng.enqueue(r, now)
            if end is not None:
                push(heap, (end, ENGINE, seq, i, eng.version))
                seq += 1
            return seq
        while heap:
            t, kind, _, a, b = pop(heap)
            n_events += 1
            if kind == ENGINE:
                eng = engines[a]
                if b != eng.version:
                    continue  # superseded by a cut-short run
                nxt = eng.finish_iteration(t, finished)
                if nxt is not None:
                    push(heap, (nxt, ENGINE, seq, a, eng.version))
                    seq += 1
                if finished:
                    state.now = t
                    for r in finished:
                        it, ie = fastest.isolated_latency(r.prompt, r.output)
                        metrics.add(r.seq, r.arrival, r.first_token, r.finish, r.output, a, it, ie)
                        on_complete(a, r.req, r.output)
                    inflight -= len(finished)
                    finished.clear()
            elif kind == ARRIVAL:
                prompt, output = a.prompt, a.output
                if prompt + output > max_ctx:
                    clipped += 1
                    output = min(output, max_ctx // 2)
                    prompt = max(1, max_ctx - output)
                cap, output = cap_of(output)
                if prompt + cap > max_ctx:
                    cap = max_ctx - prompt
                    output = min(output, cap)
                req = Request(req_seq, prompt, cap, t)  # the policy sees the cap, never ``output``
                r = SimRequest(req_seq, t, prompt, output, req, cap)
                req_seq += 1
                state.now = t
                inflight += 1
                seq = dispatch(r, choose(req, state), t, seq)
                row = next(rows, None)
                if row is None:
                    arrivals_left = False
                else:
                    if row.arrival_s < t:
                        raise InputError(f"trace '{getattr(self.trace, 'name', 'trace')}' is not sorted by "
                                         f"arrival (request {req_seq} at {row.arrival_s:.3f} s)", "sort it")
                    push(heap, (row.arrival_s, ARRIVAL, seq, row, 0))
                    seq += 1
            elif kind == FAULT:
                i = state.index(a.replica)
                eng = engines[i]
                end = eng.set_speed(a.speed, t)
                if end is not None:
                    push(heap, (end, ENGINE, seq, i, eng.version))
                    seq += 1
            else:  # TELEMETRY: what an emulated engine / NVML source would report
                reps = []
                for i, eng in enumerate(engines):
                    busy, prof, tok = eng.busy_s - last_busy[i], eng.profile_s - last_prof[i], eng.tokens - last_tokens[i]
                    last_busy[i], last_prof[i], last_tokens[i] = eng.busy_s, eng.profile_s, eng.tokens
                    obs = tok / busy if busy > 0 else None
                    exp = tok / prof if prof > 0 else None
                    reps.append(ReplicaTelemetry(state.ids[i], observed_tok_s=obs, expected_tok_s=exp,
                                                 queue_len=len(eng.waiting), kv_frac=eng.kv_frac()))
                tel = Telemetry(t, tuple(reps))
                state.now = t
                state.apply_telemetry(tel)
                policy.observe(tel, state)
                n_tel += 1
                if arrivals_left or inflight > 0:
                    push(heap, (t + self.telemetry_interval_s, TELEMETRY, seq, None, 0))
                    seq += 1
        assert inflight == 0 and all(e.in_system() == 0 for e in engines), "requests left in the system"
        gpu_of = [r.gpu for r in fleet.replicas]
        counts: dict[str, int] = {}
        for g in gpu_of:
            counts[g] = counts.get(g, 0) + 1
        summary = summarize(metrics, cfg.slo, price_per_hour=fleet.price_per_hour(), gpu_of=gpu_of,
                            busy_s=[e.busy_s for e in engines], gpu_counts=counts)
        extra = policy.describe()
        extra.update(cap_rule=self.cap_rule.kind, chunked_prefill=self.chunked, kv_reserve=self.reserve,
                     preemptions=sum(e.preemptions for e in engines), busy_s=[e.busy_s for e in engines],
                     iterations=[e.iterations for e in engines])
        return SimResult(policy.name, metrics, summary, oracle_floor(metrics), clipped, n_events, n_tel,
                         extra=extra)
