"""An EMULATED LLM engine that runs in real time: the simulator's engine on a wall clock.

There is no GPU here, so a replica does not run a model: it drives the
simulator's own :class:`~mixfleet.routing.engine.ReplicaEngine` (the same
continuous-batching scheduler: FIFO admission limited by the KV cache,
``max_batch`` and ``max_batched_tokens``; prefill iterations pause decode)
and *sleeps* for the iteration times of the simulator's
:class:`~mixfleet.routing.profiles.IterationModel` of its GPU type. Tokens
stream to the caller as the modelled decode steps complete. Nothing about
the timing is re-implemented here; this module only maps model time to the
wall clock and iteration ends to token deliveries.

Invariants:

- model time is ``clock() - t0``; an iteration that ends at model time ``t``
  is finished *at* ``t`` (not at the moment the event loop woke up), so
  event-loop lateness delays deliveries but never accumulates into the
  modelled timeline;
- every submitted request receives exactly its ``max_tokens`` tokens, or its
  hidden true length ``output_tokens`` when that is smaller (trace replay: the
  engine alone knows it, as in the simulator), and then its stream closes, once;
- a request is never admitted past the waiting-queue bound
  (:class:`EngineOverloaded`), and one larger than the KV cache is refused
  up front (it could never be scheduled).

``dilation`` D >= 1 runs the emulation D times slower than modelled (model
time = wall time / D): a machine too small to carry the Ray hops at full
speed can still replay a trace faithfully when arrivals are stretched by D
too (see ``benchmarks/routing_live.py``). Reported ``ttft_s``/``e2e_s`` are
model seconds.

Tokens are delivered in chunks at most every ``flush_s`` (wall) seconds during a
decode run (TTFT and the last token are exact; per-token events would cost
one wake-up per decode step of every replica).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from mixfleet.errors import InputError, Overloaded
from mixfleet.routing.engine import DECODE, IDLE, PREFILL, ReplicaEngine, SimRequest
from mixfleet.routing.profiles import steps_within


class EngineOverloaded(Overloaded):
    """The replica's waiting queue is full; the router tries another replica, or the caller retries."""

    def __init__(self, replica_id: str, waiting: int, retry_after_s: float) -> None:
        super().__init__(f"replica {replica_id} has {waiting} requests waiting (its bound)",
                         retry_after_s=retry_after_s)
        self.replica_id = replica_id
        self.waiting = waiting


@dataclass
class Chunk:
    """A piece of a streamed generation: ``tokens`` new tokens (ids), and when the request finished."""

    tokens: list[int]
    first: bool = False
    done: bool = False
    ttft_s: float | None = None
    e2e_s: float | None = None
    # on the last chunk, clock readings (time.monotonic is one clock for every process on a host):
    # arrival at the engine, the modelled finish, and when the event loop actually delivered it
    t_submit: float | None = None
    t_end: float | None = None
    t_emit: float | None = None


class _Stream:
    __slots__ = ("req", "queue", "emitted", "submitted", "first_at")

    def __init__(self, req: SimRequest, submitted: float) -> None:
        self.req = req
        self.queue: asyncio.Queue[Chunk | None] = asyncio.Queue()
        self.emitted = 0
        self.submitted = submitted
        self.first_at: float | None = None


class EmulatedEngine:
    """One EMULATED replica engine (see module doc); lives in one asyncio event loop."""

    kind = "emulated"

    def __init__(self, replica_id: str, perf, kv_tokens: int, max_batch: int, max_batched_tokens: int, *,
                 max_waiting: int = 64, flush_s: float = 0.02, clock: Callable[[], float] = time.monotonic,
                 vocab_size: int = 32000, dilation: float = 1.0) -> None:
        if not dilation >= 1.0:
            raise InputError(f"time dilation {dilation} must be >= 1", "use 1 for real time, e.g. 4 for 4x slower")
        self.dilation = dilation
        self.replica_id = replica_id
        self.perf = perf
        self.max_waiting = max_waiting
        self.flush_s = flush_s
        self.vocab_size = vocab_size
        self._clock = clock
        self._t0 = clock()
        self._eng = ReplicaEngine(0, perf, kv_tokens, max_batch, max_batched_tokens)
        self._streams: dict[int, _Stream] = {}
        self._seq = 0
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self.completed = 0

    # -- clock -------------------------------------------------------------------
    def now(self) -> float:
        """Model time in seconds since the engine started."""
        return (self._clock() - self._t0) / self.dilation

    # -- public API ------------------------------------------------------------------
    def submit(self, prompt_tokens: int, max_tokens: int, output_tokens: int | None = None) -> _Stream:
        """Queue a request now; raises :class:`EngineOverloaded` past the waiting bound."""
        eng = self._eng
        if prompt_tokens < 1 or max_tokens < 1:
            raise InputError(f"bad request size: prompt {prompt_tokens}, max_tokens {max_tokens}",
                             "both must be >= 1")
        if prompt_tokens + max_tokens > eng.kv_tokens:
            raise InputError(f"prompt ({prompt_tokens}) + max_tokens ({max_tokens}) exceed replica "
                             f"{self.replica_id}'s KV cache of {eng.kv_tokens} tokens", "send a shorter request")
        if len(eng.waiting) >= self.max_waiting:
            raise EngineOverloaded(self.replica_id, len(eng.waiting), self.retry_after_s())
        now = self.now()
        self._advance(now)  # finish iterations that are already due, so admission happens at `now`
        out = max_tokens if output_tokens is None else max(1, min(max_tokens, output_tokens))
        r = SimRequest(self._seq, now, prompt_tokens, out, None, cap=max_tokens)
        self._seq += 1
        stream = _Stream(r, now)
        self._streams[r.seq] = stream
        eng.enqueue(r, now)
        self._ensure_loop()
        self._wake.set()
        return stream

    async def generate(self, prompt_tokens: int, max_tokens: int,
                       output_tokens: int | None = None) -> AsyncIterator[Chunk]:
        """Submit and stream :class:`Chunk` s until the request finishes."""
        stream = self.submit(prompt_tokens, max_tokens, output_tokens)
        while True:
            chunk = await stream.queue.get()
            if chunk is None:
                return
            yield chunk

    def set_speed(self, speed: float) -> None:
        """Run at ``speed`` x the profile from the next step boundary (emulated thermal throttle)."""
        if not speed > 0:
            raise InputError(f"speed {speed} must be > 0", "e.g. 0.5 for half speed")
        if abs(speed - self._eng.speed) < 1e-9:
            return
        self._advance(self.now())
        self._eng.set_speed(speed, self.now())
        if self._wake is not None:
            self._wake.set()

    @property
    def speed(self) -> float:
        return self._eng.speed

    def stats(self) -> dict[str, float]:
        """Counters for telemetry: the same ones the simulator turns into a Telemetry sample."""
        eng = self._eng
        return {"queue_len": float(len(eng.waiting)), "running": float(len(eng.running) + len(eng.prefill_batch)),
                "kv_frac": eng.kv_frac(), "busy_s": eng.busy_s, "profile_s": eng.profile_s,
                "tokens": float(eng.tokens), "speed": eng.speed, "completed": float(self.completed),
                "model_time_s": self.now()}

    def retry_after_s(self) -> float:
        """A rough wait until the queue drains by one batch (for Retry-After)."""
        eng = self._eng
        step = self.perf.decode_step(max(1, len(eng.running)), eng.kv_used)
        return max(1.0, step * 64 / eng.speed * self.dilation)

    def in_system(self) -> int:
        return self._eng.in_system()

    # -- the loop ------------------------------------------------------------------------
    def _ensure_loop(self) -> None:
        if self._task is None or self._task.done():
            self._wake = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        eng = self._eng
        while True:
            if eng.phase == IDLE:
                self._wake.clear()
                await self._wake.wait()
                continue
            now = self.now()
            wait = (eng.end - now) * self.dilation
            if eng.phase == DECODE:
                wait = min(wait, self.flush_s)
            if wait > 0:
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout=wait)
                except asyncio.TimeoutError:
                    pass
            now = self.now()
            self._advance(now)
            self._flush(now)

    def _advance(self, now: float) -> None:
        """Finish every iteration that ended at or before ``now`` (at its modelled end time)."""
        eng = self._eng
        finished: list[SimRequest] = []
        while eng.phase != IDLE and eng.end <= now:
            end = eng.end
            admitted = list(eng.prefill_batch) if eng.phase == PREFILL else []
            eng.finish_iteration(end, finished)
            for r in admitted:
                s = self._streams.get(r.seq)
                if s is not None and s.emitted == 0:
                    s.first_at = end
                    self._emit(s, 1, first=True)
            for r in finished:
                s = self._streams.pop(r.seq, None)
                if s is None:
                    continue
                self._emit(s, r.output - s.emitted, done=True, end=end)
                s.queue.put_nowait(None)
                self.completed += 1
            finished.clear()

    def _flush(self, now: float) -> None:
        """Deliver the tokens of the decode steps completed so far in the current run."""
        eng = self._eng
        if eng.phase != DECODE or not eng.running:
            return
        done = steps_within(eng.run_lines, eng.run_k, (now - eng.start) * eng.speed)
        step = eng.step + min(done, eng.run_k)
        for done_step, _seq, r in eng.running:
            s = self._streams.get(r.seq)
            if s is None:
                continue
            have = min(r.output - 1, step - done_step + r.output)
            if have > s.emitted:
                self._emit(s, have - s.emitted)

    def _emit(self, s: _Stream, n: int, *, first: bool = False, done: bool = False, end: float | None = None) -> None:
        if n <= 0 and not done:
            return
        base = s.emitted
        ids = [(s.req.seq * 7919 + (base + k) * 104729) % self.vocab_size for k in range(max(0, n))]
        s.emitted += max(0, n)
        chunk = Chunk(ids, first=first, done=done)
        if done and end is not None:
            chunk.ttft_s = (s.first_at if s.first_at is not None else end) - s.submitted
            chunk.e2e_s = end - s.submitted
            d = self.dilation
            chunk.t_submit, chunk.t_end, chunk.t_emit = s.submitted * d + self._t0, end * d + self._t0, self._clock()
        s.queue.put_nowait(chunk)
