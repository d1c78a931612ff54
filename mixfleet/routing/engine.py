"""An EMULATED LLM engine replica: iteration-level continuous batching.

The engine is a state machine driven by the discrete-event core; it never
reads a clock itself. It follows vLLM's default (non-chunked) scheduler:

- requests wait in a FIFO queue; at each iteration boundary the head of the
  queue is admitted while the KV cache has room for its prompt plus its
  output (reserved up front), the running batch is below ``max_batch`` and
  the iteration's prompt tokens stay under ``max_batched_tokens`` (the first
  request is always admitted);
- an iteration with admitted requests is a prefill iteration (decode pauses);
  it ends with each admitted request's first token;
- otherwise the running batch decodes one token per request per step.

Decode steps are not simulated one by one: a *decode run* covers all steps
until the next request in the batch finishes, and its length is computed in
closed form from the linear-in-context step time (see
:mod:`mixfleet.routing.profiles`). An arrival that can be admitted cuts the
run short at the next step boundary, so a newcomer waits at most one decode
step, as in a real engine. Memory is proportional to the requests on the
replica.

Invariant: every admitted request leaves exactly once, through ``finished``.
Iteration times are divided by ``speed`` (1.0 = as profiled; a thermal
throttle sets e.g. 0.5).
"""

from __future__ import annotations

import heapq
from collections import deque

from mixfleet.routing.profiles import run_time, steps_within


class SimRequest:
    """A request inside the simulator (the router sees only its Request)."""

    __slots__ = ("seq", "arrival", "prompt", "output", "req", "replica", "first_token", "finish",
                 "ctx_base", "done_step")

    def __init__(self, seq: int, arrival: float, prompt: int, output: int, req) -> None:
        self.seq, self.arrival, self.prompt, self.output, self.req = seq, arrival, prompt, output, req
        self.replica = -1
        self.first_token = -1.0
        self.finish = -1.0
        self.ctx_base = 0
        self.done_step = 0


IDLE, PREFILL, DECODE = 0, 1, 2


class ReplicaEngine:
    """One emulated replica (see module doc)."""

    def __init__(self, index: int, perf, kv_tokens: int, max_batch: int, max_batched_tokens: int) -> None:
        self.index = index
        self.perf = perf
        self.kv_tokens = kv_tokens
        self.max_batch = max_batch
        self.max_batched_tokens = max_batched_tokens
        self.speed = 1.0
        self.waiting: deque[SimRequest] = deque()
        self.running: list[tuple[int, int, SimRequest]] = []  # heap of (done_step, seq, req)
        self.kv_used = 0
        self.step = 0         # decode steps executed so far
        self.ctx_sum = 0      # context of the batch = ctx_sum + len(running) * step
        self.phase = IDLE
        self.version = 0
        self.start = 0.0
        self.end = 0.0
        self.prefill_batch: list[SimRequest] = []
        self.run_lines = (0.0, 0.0, 0.0, 0.0)
        self.run_k = 0
        # counters for telemetry and utilisation (actual seconds, profiled seconds, tokens)
        self.busy_s = 0.0
        self.profile_s = 0.0
        self.tokens = 0

    # -- queries ---------------------------------------------------------------
    def in_system(self) -> int:
        return len(self.waiting) + len(self.running) + len(self.prefill_batch)

    def kv_frac(self) -> float:
        return self.kv_used / self.kv_tokens

    def _admissible(self, r: SimRequest, batch_extra: int) -> bool:
        return (self.kv_used + r.prompt + r.output <= self.kv_tokens
                and len(self.running) + batch_extra < self.max_batch)

    # -- transitions (each returns the new iteration end time, or None) ---------
    def enqueue(self, r: SimRequest, now: float) -> float | None:
        self.waiting.append(r)
        if self.phase == IDLE:
            return self._begin(now)
        if self.phase == DECODE and len(self.waiting) == 1 and self._admissible(r, 0):
            return self._cut_run(now)
        return None

    def set_speed(self, speed: float, now: float) -> float | None:
        """Change the speed from the next step boundary on (e.g. thermal throttling)."""
        cut = self._cut_run(now) if self.phase == DECODE else None
        self.speed = speed
        return cut

    def _cut_run(self, now: float) -> float | None:
        done = steps_within(self.run_lines, self.run_k, (now - self.start) * self.speed)
        if done + 1 >= self.run_k:
            return None
        self.run_k = done + 1
        self.end = self.start + run_time(self.run_lines, self.run_k) / self.speed
        self.version += 1
        return self.end

    def finish_iteration(self, now: float, finished: list[SimRequest]) -> float | None:
        """End the current iteration at ``now``; append leavers to ``finished``."""
        dt = now - self.start
        self.busy_s += dt
        self.profile_s += dt * self.speed
        if self.phase == PREFILL:
            self.tokens += len(self.prefill_batch)
            for r in self.prefill_batch:
                r.first_token = now
                if r.output <= 1:
                    self._leave(r, now, finished)
                else:
                    r.done_step = self.step + r.output - 1
                    r.ctx_base = r.prompt + 1 - self.step
                    self.ctx_sum += r.ctx_base
                    heapq.heappush(self.running, (r.done_step, r.seq, r))
            self.prefill_batch = []
        elif self.phase == DECODE:
            self.tokens += self.run_k * len(self.running)
            self.step += self.run_k
            running = self.running
            while running and running[0][0] <= self.step:
                r = heapq.heappop(running)[2]
                self.ctx_sum -= r.ctx_base
                self._leave(r, now, finished)
        return self._begin(now)

    def _leave(self, r: SimRequest, now: float, finished: list[SimRequest]) -> None:
        r.finish = now
        self.kv_used -= r.prompt + r.output
        finished.append(r)

    def _begin(self, now: float) -> float | None:
        self.version += 1
        self.start = now
        batch: list[SimRequest] = []
        tokens = 0
        sq = 0
        waiting = self.waiting
        while waiting:
            r = waiting[0]
            if batch and tokens + r.prompt > self.max_batched_tokens:
                break
            if not self._admissible(r, len(batch)):
                break
            waiting.popleft()
            batch.append(r)
            self.kv_used += r.prompt + r.output
            tokens += r.prompt
            sq += r.prompt * r.prompt
        if batch:
            self.phase = PREFILL
            self.prefill_batch = batch
            self.end = now + self.perf.prefill_time(tokens, sq) / self.speed
            return self.end
        if self.running:
            b = len(self.running)
            self.phase = DECODE
            self.run_k = self.running[0][0] - self.step
            self.run_lines = self.perf.decode_lines(b, self.ctx_sum + b * self.step, b)
            self.end = now + run_time(self.run_lines, self.run_k) / self.speed
            return self.end
        self.phase = IDLE
        return None
