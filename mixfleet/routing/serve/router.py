"""The live router: the simulator's policy object, router-side accounting, retries, admission.

Why an ingress deployment that dispatches through handles, and not Serve's
custom ``RequestRouter`` (``choose_replicas``): a ``RequestRouter`` is
instantiated once per *handle owner* (every proxy, every calling replica),
so its outstanding-work accounting would be split across copies that each
see a fraction of the traffic, and the ILP's per-class weighted round robin
would run once per copy. Here exactly one :class:`LiveRouter` (in the
ingress replica) sees every request, keeps the one
:class:`~mixfleet.routing.policy.RouterState`, and calls the policy exactly
as :class:`~mixfleet.routing.simulator.Simulation` does: ``choose`` then
``on_dispatch``, ``on_complete`` when the request leaves, ``observe`` on
every telemetry sample (one code path). Each fleet replica is
its own one-replica Serve deployment, so the policy's choice of replica
``i`` is exactly where the request goes. The ingress also has to parse and
validate OpenAI/gRPC requests and shape responses anyway; the extra hop
costs about a millisecond on loopback.

Nothing here imports Ray: the transport is the ``send`` callable, which the
ingress implements with Serve handles and tests can implement in-process.

Invariants:

- ``on_dispatch``/``on_complete`` pair up exactly once per attempt, also on
  errors and client disconnects, so outstanding work returns to zero;
- a replica that fails a dispatch is marked unhealthy at once (so no new
  request goes there) and the policy is told (``observe``), which lets the
  ``ilp`` policy re-solve without it; :meth:`LiveRouter.mark_up` restores it;
- admission is bounded: beyond ``max_outstanding`` requests in flight a
  request is refused with :class:`Overloaded` (HTTP 429, gRPC
  RESOURCE_EXHAUSTED) instead of queueing without limit;
- a request is retried on another replica only before its first token was
  delivered, at most ``max_attempts`` times; nothing waits forever: the
  first chunk has a deadline.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from mixfleet.errors import Overloaded, Unavailable
from mixfleet.routing.policy import Policy, ReplicaTelemetry, Request, RouterState, Telemetry
from mixfleet.routing.serve.app import ServeOptions
from mixfleet.routing.serve.emulated_engine import Chunk

log = logging.getLogger("mixfleet.routing.serve")


class ReplicaDown(Unavailable):
    """A replica died or cannot be reached (raised by ``send``; the router marks it down)."""


@dataclass
class Routed:
    """An admitted request: the replica serving it, its first chunk and the rest of the stream."""

    index: int
    replica_id: str
    gpu: str
    accelerator: str
    first: Chunk
    rest: Rest
    attempts: int


Send = Callable[[int, Request], AsyncIterator[Chunk]]


class LiveRouter:
    """One router over the fleet (see module doc)."""

    def __init__(self, fleet, policy: Policy, send: Send, options: ServeOptions, *, max_attempts: int = 3,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.fleet = fleet
        self.policy = policy
        self.state = RouterState.from_fleet(fleet)
        self.send = send
        self.max_outstanding = options.outstanding_bound(fleet)
        self.first_chunk_timeout_s = options.first_chunk_timeout_s
        self.max_attempts = max_attempts
        self.clock = clock
        self.served = [0] * len(self.state)
        self.rejected = 0
        self.retried = 0
        self.down_reason: dict[int, str] = {}

    # -- health ---------------------------------------------------------------------
    def mark_down(self, i: int, why: str) -> None:
        if self.state.healthy[i]:
            log.warning("replica %s marked down: %s", self.state.ids[i], why)
        self.state.set_healthy(i, False)
        self.down_reason[i] = why
        self._tell_policy()

    def mark_up(self, i: int) -> None:
        if not self.state.healthy[i]:
            log.warning("replica %s is back", self.state.ids[i])
            self.state.set_healthy(i, True)
            self.down_reason.pop(i, None)
            self._tell_policy()

    def _tell_policy(self) -> None:
        tel = Telemetry(self.clock(), tuple(ReplicaTelemetry(rid, healthy=h)
                                            for rid, h in zip(self.state.ids, self.state.healthy, strict=True)))
        self.observe(tel)

    def observe(self, telemetry: Telemetry) -> None:
        """The slow loop's entry: fold a sample into the state and hand it to the policy."""
        healthy = list(self.state.healthy)
        self.state.apply_telemetry(telemetry)
        for i in self.down_reason:  # a replica a dispatch found dead stays down until probed
            self.state.healthy[i] = False
        if healthy != self.state.healthy:
            log.warning("replica health now %s", dict(zip(self.state.ids, self.state.healthy, strict=True)))
        try:
            self.policy.observe(telemetry, self.state)
        except Exception:  # the slow loop must never take routing down
            log.exception("policy %s failed in observe(); keeping the current plan", self.policy.name)

    # -- admission and dispatch ---------------------------------------------------------
    def in_flight(self) -> int:
        return sum(self.state.outstanding)

    def retry_after_s(self) -> float:
        st = self.state
        ok = [st.work_s[i] / max(st.speed[i], 1e-3) for i in range(len(st)) if st.healthy[i]]
        return max(1.0, min(ok) if ok else 5.0)

    async def route(self, req: Request) -> Routed:
        """Admit, choose a replica with the policy, and return once the first chunk arrived."""
        if self.in_flight() >= self.max_outstanding:
            self.rejected += 1
            raise Overloaded(f"{self.in_flight()} requests in flight (the bound is {self.max_outstanding})",
                             retry_after_s=self.retry_after_s())
        st = self.state
        busy: list[int] = []
        why = ""
        for attempt in range(1, self.max_attempts + 1):
            st.now = self.clock()
            saved = [(i, st.healthy[i]) for i in busy]
            for i in busy:  # a replica that just refused (queue full) sits this request out
                st.healthy[i] = False
            try:
                try:
                    i = self.policy.choose(req, st)
                finally:
                    for j, h in saved:
                        st.healthy[j] = h
            except Exception as exc:  # ClusterError when nothing is healthy
                raise Unavailable(f"no replica can take the request: {why or exc}",
                                  retry_after_s=self.retry_after_s()) from None
            st.on_dispatch(i, req)
            stream = self.send(i, req)
            try:
                first = await asyncio.wait_for(anext(stream), timeout=self.first_chunk_timeout_s)
            except Overloaded as exc:  # that replica's queue is full: try another
                st.on_complete(i, req)
                busy.append(i)
                why = str(exc)
                self.retried += 1
                continue
            except (ReplicaDown, asyncio.TimeoutError, StopAsyncIteration) as exc:
                st.on_complete(i, req)
                why = f"replica {st.ids[i]}: {exc or type(exc).__name__}"
                self.mark_down(i, why)
                self.retried += 1
                continue
            except BaseException:
                st.on_complete(i, req)
                raise
            rep = self.fleet.replicas[i]
            self.served[i] += 1
            rest = self._rest(i, req, stream)
            rest.generated = _n_tokens(first)
            return Routed(i, rep.replica_id, rep.gpu, rep.accelerator, first, rest, attempt)
        raise Unavailable(f"gave up after {self.max_attempts} attempts; last: {why}",
                          retry_after_s=self.retry_after_s())

    def _rest(self, i: int, req: Request, stream: AsyncIterator[Chunk]) -> Rest:
        return Rest(self, i, req, stream)

    def counts(self) -> dict:
        by_gpu: dict[str, int] = {}
        for rep, n in zip(self.fleet.replicas, self.served, strict=True):
            by_gpu[rep.gpu] = by_gpu.get(rep.gpu, 0) + n
        return {"by_replica": dict(zip(self.state.ids, self.served, strict=True)), "by_gpu": by_gpu}


def _n_tokens(chunk: Chunk) -> int:
    return len(chunk.tokens)


class Rest:
    """The remaining chunks of a routed request; its accounting closes exactly once.

    Iterate it to the end or call :meth:`aclose` (e.g. when the client went away).
    """

    def __init__(self, router: LiveRouter, i: int, req: Request, stream: AsyncIterator[Chunk]) -> None:
        self._router, self._i, self._req, self._stream = router, i, req, stream
        self._closed = False
        self.generated = 0  # tokens streamed so far: on a normal end, what teaches the shared length predictor

    def __aiter__(self) -> Rest:
        return self

    async def __anext__(self) -> Chunk:
        if self._closed:
            raise StopAsyncIteration
        try:
            chunk = await anext(self._stream)
        except StopAsyncIteration:
            self._finish(self.generated)
            raise
        except ReplicaDown as exc:
            self._finish()
            r = self._router
            r.mark_down(self._i, str(exc))
            raise Unavailable(f"replica {r.state.ids[self._i]} died while generating: {exc}",
                              retry_after_s=1.0) from None
        except BaseException:
            self._finish()
            raise
        self.generated += _n_tokens(chunk)
        return chunk

    def _finish(self, generated: int | None = None) -> None:
        if not self._closed:
            self._closed = True
            self._router.state.on_complete(self._i, self._req, generated)

    async def aclose(self) -> None:
        if not self._closed:
            self._finish()
            close = getattr(self._stream, "aclose", None)
            if close is not None:
                try:
                    await close()
                except Exception:  # the stream is being abandoned; nothing to report
                    pass


def make_live_policy(fleet, options: ServeOptions):
    """The policy object, built exactly as the simulator builds it (``runner.simulate``).

    The ``ilp`` policy plans for a workload: the class mix of ``plan_trace``
    (first ``plan_limit`` requests) scaled to ``plan_load`` x the fleet's
    capacity, as ``mixfleet routing simulate --policy ilp --load F`` does; its
    slow loop then re-plans from the observed class rates.
    """
    from mixfleet.routing.policies import make_policy

    extra = dict(options.policy_options)
    if options.policy == "ilp" and "workload" not in extra and "mix" not in extra:
        from mixfleet.routing.runner import prepare

        extra["workload"] = prepare(fleet, options.plan_trace, options.plan_load, options.plan_limit)
    return make_policy(options.policy, fleet, seed=options.seed, **extra)
