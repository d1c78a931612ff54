"""The routing policy interface shared by the simulator and the live router.

One code path: a policy object is driven identically by
:class:`~mixfleet.routing.simulator.Simulation` and by the live Ray Serve
router. Both keep a :class:`RouterState`, the router-side view of the fleet:

- static facts per replica (:class:`ReplicaInfo`: id, GPU type, profiled
  prefill rate, decode step, saturated throughput, KV capacity);
- router-side accounting, driven by :meth:`RouterState.on_dispatch` /
  :meth:`RouterState.on_complete`: outstanding requests and outstanding
  work (seconds of replica time at profiled speed);
- engine stats and telemetry, driven by :meth:`RouterState.update_engine`
  and :meth:`RouterState.apply_telemetry`: queue length, KV use, observed
  tokens/s, a speed factor (observed / profiled speed), health;
- the clock ``now`` (seconds; simulated time or ``time.monotonic()``).

A policy's fast path is :meth:`Policy.choose` ``(request, state) -> index``
(``state.ids[index]`` is the replica id); it must not block and must skip
unhealthy replicas. Its slow loop is :meth:`Policy.observe`
``(telemetry, state)``, called every few seconds with a :class:`Telemetry`.

Invariant: ``on_dispatch`` and ``on_complete`` are called exactly once per
routed request, with the same request and index, so outstanding counts
return to zero when the fleet drains.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from mixfleet.errors import ClusterError
from mixfleet.routing.lengths import OutputPredictor


@dataclass(slots=True)
class Request:
    """What the router knows about a request: the policy-facing view.

    ``max_tokens`` is the client's cap on the output (see
    :mod:`mixfleet.routing.lengths`); the true output length is *not* here:
    only the engine knows it. Policies estimate it with
    :meth:`RouterState.expected_output` (the shared online predictor).
    """

    request_id: int | str
    prompt_tokens: int
    max_tokens: int
    arrival_s: float = 0.0


@dataclass(frozen=True)
class ReplicaInfo:
    """Static, profiled facts of one replica (EMULATED GPU profiles; see profiles.py)."""

    replica_id: str
    gpu: str
    accelerator: str
    prefill_tok_s: float     # prefill throughput at a 1k-token prompt
    decode_step_s: float     # decode step at batch 1, 1k context
    throughput_tok_s: float  # saturated decode throughput (max batch the KV cache allows)
    kv_tokens: int
    max_batch: int
    # the decode-step roofline: step(b, C) = max(m0 + m1 C, cb b + c1 C) seconds for b sequences
    # holding C tokens of context (see profiles.py); zeros when unknown
    step_lines: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)


@dataclass(frozen=True)
class ReplicaTelemetry:
    """One replica's slow-loop signals. Every field but the id is optional."""

    replica_id: str
    speed_factor: float | None = None    # observed / profiled speed, if the source computes it
    observed_tok_s: float | None = None
    expected_tok_s: float | None = None  # what the profile predicts for the same work
    clock_ratio: float | None = None     # NVML SM clock / max clock (throttling)
    throttled: bool = False
    power_w: float | None = None
    queue_len: int | None = None
    kv_frac: float | None = None
    healthy: bool = True


@dataclass(frozen=True)
class Telemetry:
    """A telemetry sample for the whole fleet at ``time_s``."""

    time_s: float
    replicas: tuple[ReplicaTelemetry, ...] = ()


def speed_factor_of(t: ReplicaTelemetry) -> float | None:
    """Observed speed relative to the profile, from the best signal present."""
    if t.speed_factor is not None:
        return t.speed_factor
    if t.observed_tok_s is not None and t.expected_tok_s:
        return t.observed_tok_s / t.expected_tok_s
    if t.clock_ratio is not None:
        return t.clock_ratio
    return None


class RouterState:
    """The router-side view of the fleet that every policy reads (see module doc)."""

    def __init__(self, replicas: Sequence[ReplicaInfo], now: float = 0.0,
                 predictor: OutputPredictor | None = None):
        self.replicas = tuple(replicas)
        n = len(self.replicas)
        self.ids = [r.replica_id for r in self.replicas]
        self._index = {rid: i for i, rid in enumerate(self.ids)}
        self.inv_prefill = [1.0 / r.prefill_tok_s for r in self.replicas]
        self.inv_thr = [1.0 / r.throughput_tok_s for r in self.replicas]
        self.step_s = [r.decode_step_s for r in self.replicas]
        self.speed = [1.0] * n
        self.outstanding = [0] * n
        self.work_s = [0.0] * n
        self.tokens = [0.0] * n  # prompt + expected output tokens of the outstanding requests
        self.queue_len = [0] * n
        self.kv_frac = [0.0] * n
        self.observed_tok_s = [0.0] * n
        self.healthy = [True] * n
        self.now = now
        self.predictor = predictor or OutputPredictor()
        self._booked: dict = {}  # request id -> (replica, work seconds, tokens) booked at dispatch

    @classmethod
    def from_fleet(cls, fleet, predictor: OutputPredictor | None = None) -> RouterState:
        return cls(replica_infos(fleet), predictor=predictor)

    def __len__(self) -> int:
        return len(self.replicas)

    def index(self, replica_id: str) -> int:
        try:
            return self._index[replica_id]
        except KeyError:
            from mixfleet.errors import unknown_name

            raise unknown_name("replica", replica_id, self.ids) from None

    # -- cost model shared by policies ----------------------------------------
    def expected_output(self, req: Request) -> float:
        """The shared prediction of a request's output tokens (never above its cap)."""
        return self.predictor.predict(req.prompt_tokens, req.max_tokens)

    def cost_s(self, i: int, req: Request, output: float | None = None) -> float:
        """Replica time a request takes at profiled speed when the replica is saturated."""
        o = self.expected_output(req) if output is None else output
        return req.prompt_tokens * self.inv_prefill[i] + o * self.inv_thr[i]

    def isolated_s(self, i: int, req: Request, output: float | None = None) -> float:
        """The request's latency alone on replica ``i`` at profiled speed (approximate)."""
        o = self.expected_output(req) if output is None else output
        return req.prompt_tokens * self.inv_prefill[i] + o * self.step_s[i]

    def finish_estimate(self, i: int, req: Request, speed: float = 1.0) -> float:
        """Speed-weighted estimated finish time: backlog to drain plus own service."""
        return (self.work_s[i] + self.isolated_s(i, req)) / speed

    # -- accounting (the router drives these) ---------------------------------
    def on_dispatch(self, i: int, req: Request) -> None:
        o = self.expected_output(req)
        cost, tok = self.cost_s(i, req, o), req.prompt_tokens + o
        self._booked[req.request_id] = (cost, tok)
        self.outstanding[i] += 1
        self.work_s[i] += cost
        self.tokens[i] += tok

    def on_complete(self, i: int, req: Request, output_tokens: int | None = None) -> None:
        """``req`` left replica ``i``; ``output_tokens`` (what it generated, when known) teaches the predictor."""
        cost, tok = self._booked.pop(req.request_id, (0.0, 0.0))
        self.outstanding[i] -= 1
        w = self.work_s[i] - cost
        self.work_s[i] = w if self.outstanding[i] > 0 and w > 0 else 0.0
        t = self.tokens[i] - tok
        self.tokens[i] = t if self.outstanding[i] > 0 and t > 0 else 0.0
        if output_tokens is not None and output_tokens > 0:
            self.predictor.observe(req.prompt_tokens, output_tokens)

    def update_engine(self, i: int, *, queue_len: int | None = None, kv_frac: float | None = None,
                      tokens_per_s: float | None = None) -> None:
        if queue_len is not None:
            self.queue_len[i] = queue_len
        if kv_frac is not None:
            self.kv_frac[i] = kv_frac
        if tokens_per_s is not None:
            self.observed_tok_s[i] = tokens_per_s

    def set_healthy(self, i: int, healthy: bool) -> None:
        self.healthy[i] = healthy

    def apply_telemetry(self, telemetry: Telemetry) -> None:
        """Fold a telemetry sample into the engine stats, speed factors and health."""
        self.now = max(self.now, telemetry.time_s)
        for t in telemetry.replicas:
            i = self._index.get(t.replica_id)
            if i is None:
                continue
            f = speed_factor_of(t)
            if f is not None and f > 0:
                self.speed[i] = f
            self.update_engine(i, queue_len=t.queue_len, kv_frac=t.kv_frac, tokens_per_s=t.observed_tok_s)
            self.healthy[i] = t.healthy

    def healthy_indices(self) -> list[int]:
        ok = [i for i, h in enumerate(self.healthy) if h]
        if not ok:
            raise ClusterError("no healthy replica to route to", "wait for replicas to recover or add some")
        return ok


def least_work(state: RouterState, req: Request, *, penalty: Sequence[float] | None = None,
               speed_aware: bool = True, among: Sequence[int] | None = None,
               decode_factor: Sequence[float] | None = None, output: float | None = None) -> int:
    """The healthy replica with the least estimated finish time (the one least-work rule every policy shares).

    Estimated finish on ``i`` = (outstanding work + the request's own isolated
    service at the predicted output length ``output``, its decode part times
    ``decode_factor[i]``) x ``penalty[i]``, divided by the live telemetry speed
    factor when ``speed_aware``. ``among`` restricts the candidates; returns -1
    when none of them is healthy.
    """
    p = req.prompt_tokens
    o = state.expected_output(req) if output is None else output
    work, inv_p, step, healthy, speed = state.work_s, state.inv_prefill, state.step_s, state.healthy, state.speed
    best, best_v = -1, float("inf")
    for i in (range(len(work)) if among is None else among):
        if healthy[i]:
            v = work[i] + p * inv_p[i] + o * step[i] * (decode_factor[i] if decode_factor is not None else 1.0)
            if penalty is not None:
                v *= penalty[i]
            if speed_aware:
                v /= speed[i]
            if v < best_v:
                best, best_v = i, v
    return best


class Policy:
    """Base class: override :meth:`choose`; :meth:`observe` is the optional slow loop."""

    name: str = "policy"

    def choose(self, request: Request, state: RouterState) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def observe(self, telemetry: Telemetry, state: RouterState) -> None:
        """Slow loop: react to a telemetry sample (default: nothing)."""

    def describe(self) -> dict:
        return {"name": self.name}


@dataclass
class PolicyContext:
    """What a policy factory gets: the fleet, a seed, and options."""

    fleet: object
    seed: int = 0
    options: dict = field(default_factory=dict)


def replica_infos(fleet, ref_prompt: int = 1024, ref_context: int = 1024) -> list[ReplicaInfo]:
    """Profiled facts of every replica of a :class:`~mixfleet.routing.fleet.Fleet`."""
    out = []
    for r in fleet.replicas:
        perf = r.perf
        batch = max(1, min(r.max_batch, r.kv_tokens // ref_context))
        thr = batch / perf.decode_step(batch, batch * ref_context)
        out.append(ReplicaInfo(r.replica_id, r.gpu, r.accelerator, ref_prompt / perf.prefill_time(ref_prompt),
                               perf.decode_step(1, ref_context), thr, r.kv_tokens, r.max_batch,
                               (perf.m0, perf.m1, perf.cb, perf.c1)))
    return out
