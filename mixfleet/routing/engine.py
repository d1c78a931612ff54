"""An EMULATED LLM engine replica: iteration-level continuous batching.

The engine is a state machine driven by the discrete-event core; it never
reads a clock itself. Requests wait in a FIFO queue; at each iteration
boundary the head of the queue is admitted while the KV cache has room
(see *KV reservation*) and the batch is below ``max_batch``. Two
schedulers, as in vLLM:

- ``chunked=False`` (prefill-first, vLLM's old default): an iteration with
  admitted requests is a prefill iteration over their whole prompts (at most
  ``max_batched_tokens`` prompt tokens, the first request always fits);
  decode pauses; it ends with each admitted request's first token;
- ``chunked=True`` (chunked prefill, vLLM/SGLang's default today): every
  iteration has a token budget of ``max_batched_tokens``; the running batch
  decodes one token per sequence and the rest of the budget goes to prompt
  chunks of the admitted requests in FIFO order (a long prompt takes several
  iterations); a request whose last chunk was processed has its first token.

Otherwise the running batch decodes. Decode steps are not simulated one by
one: a *decode run* covers all steps until the next request in the batch
finishes (or the KV cache fills), and its length is computed in closed form
from the linear-in-context step time (see :mod:`mixfleet.routing.profiles`).
An arrival that can be admitted cuts the run short at the next step
boundary, so a newcomer waits at most one decode step, as in a real engine.

*KV reservation*: ``reserve="cap"`` reserves prompt + the client's cap up
front (the output never exceeds the cap, so nothing is ever preempted);
``reserve="prompt"`` reserves the prompt and lets the cache grow one token
per sequence per step, as vLLM does: when it is exhausted, the most recently
admitted running request is *preempted* (its KV is freed and it waits at the
queue's head to recompute prompt + generated tokens, then continues).
The engine alone knows each request's true output length (it stops at EOS);
the router only sees the cap.

Invariant: every admitted request leaves exactly once, through ``finished``.
Iteration times are divided by ``speed`` (1.0 = as profiled; a thermal
throttle sets e.g. 0.5). Memory is proportional to the requests on the replica.
"""

from __future__ import annotations

import heapq
from collections import deque

from mixfleet.errors import unknown_name
from mixfleet.routing.profiles import run_time, steps_within

RESERVE = ("cap", "prompt")


class SimRequest:
    """A request inside the engine: the true ``output`` is known here only (the router sees its Request)."""

    __slots__ = ("seq", "arrival", "prompt", "output", "cap", "req", "replica", "first_token", "finish",
                 "ctx_base", "done_step", "gen", "pre", "todo", "join_step", "preemptions", "held")

    def __init__(self, seq: int, arrival: float, prompt: int, output: int, req, cap: int | None = None) -> None:
        self.seq, self.arrival, self.prompt, self.output, self.req = seq, arrival, prompt, output, req
        self.cap = output if cap is None else max(cap, output)
        self.replica = -1
        self.first_token = -1.0
        self.finish = -1.0
        self.ctx_base = 0
        self.done_step = 0
        self.gen = 0          # tokens generated before the current residency (preemption)
        self.pre = prompt     # tokens to prefill on admission: prompt + gen (recompute)
        self.todo = prompt    # prompt tokens of this residency not prefilled yet (chunked)
        self.join_step = 0
        self.preemptions = 0
        self.held = 0         # KV tokens reserved at admission


IDLE, PREFILL, DECODE, MIXED = 0, 1, 2, 3


class ReplicaEngine:
    """One emulated replica (see module doc)."""

    def __init__(self, index: int, perf, kv_tokens: int, max_batch: int, max_batched_tokens: int, *,
                 chunked: bool = False, reserve: str = "cap") -> None:
        if reserve not in RESERVE:
            raise unknown_name("KV reservation", reserve, RESERVE)
        self.index = index
        self.perf = perf
        self.kv_tokens = kv_tokens
        self.max_batch = max_batch
        self.max_batched_tokens = max_batched_tokens
        self.chunked = chunked
        self.grow = reserve == "prompt"
        self.speed = 1.0
        self.waiting: deque[SimRequest] = deque()
        self.running: list[tuple[int, int, SimRequest]] = []  # heap of (done_step, seq, req)
        self.kv_fixed = 0     # reserved KV tokens (cap: whole reservations; prompt: prompts being prefilled)
        self.step = 0         # decode steps executed so far
        self.ctx_sum = 0      # context of the batch = ctx_sum + len(running) * step
        self.phase = IDLE
        self.version = 0
        self.start = 0.0
        self.end = 0.0
        self.prefill_batch: list[SimRequest] = []  # admitted, prompt not fully prefilled
        self.chunks: list[tuple[SimRequest, int]] = []  # this MIXED iteration's prompt chunks
        self.run_lines = (0.0, 0.0, 0.0, 0.0)
        self.run_k = 0
        # counters for telemetry and utilisation (actual seconds, profiled seconds, tokens)
        self.busy_s = 0.0
        self.profile_s = 0.0
        self.tokens = 0
        self.preemptions = 0
        self.iterations = 0   # iterations run (each step of a decode run counts)

    # -- queries ---------------------------------------------------------------
    def in_system(self) -> int:
        return len(self.waiting) + len(self.running) + len(self.prefill_batch)

    @property
    def kv_used(self) -> int:
        if self.grow:
            return self.kv_fixed + self.ctx_sum + len(self.running) * self.step
        return self.kv_fixed

    def kv_frac(self) -> float:
        return self.kv_used / self.kv_tokens

    def _hold(self, r: SimRequest) -> int:
        return r.pre if self.grow else r.pre + r.cap - r.gen

    def _admissible(self, r: SimRequest, batch_extra: int) -> bool:
        # growing caches keep one step of headroom for every sequence (vLLM's watermark)
        need = self._hold(r) + (len(self.running) + batch_extra + 1 if self.grow else 0)
        return self.kv_used + need <= self.kv_tokens and len(self.running) + batch_extra < self.max_batch

    # -- transitions (each returns the new iteration end time, or None) ---------
    def enqueue(self, r: SimRequest, now: float) -> float | None:
        self.waiting.append(r)
        if self.phase == IDLE:
            return self._begin(now)
        if self.phase == DECODE and len(self.waiting) == 1 and self._admissible(r, len(self.prefill_batch)):
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
        self.iterations += self.run_k if self.phase == DECODE else 1
        if self.phase == PREFILL:
            batch, self.prefill_batch = self.prefill_batch, []
            self._first_tokens(batch, now, finished)
        elif self.phase == DECODE:
            self._decoded(self.run_k, now, finished)
        elif self.phase == MIXED:
            if self.running:
                self._decoded(1, now, finished)
            done = []
            for r, n in self.chunks:
                r.todo -= n
                if r.todo <= 0:
                    done.append(r)
            self.chunks = []
            if done:
                self.prefill_batch = [r for r in self.prefill_batch if r.todo > 0]
                self._first_tokens(done, now, finished)
        return self._begin(now)

    def _decoded(self, k: int, now: float, finished: list[SimRequest]) -> None:
        self.tokens += k * len(self.running)
        self.step += k
        running = self.running
        while running and running[0][0] <= self.step:
            r = heapq.heappop(running)[2]
            self.ctx_sum -= r.ctx_base
            self._leave(r, now, finished)

    def _first_tokens(self, batch: list[SimRequest], now: float, finished: list[SimRequest]) -> None:
        """Prefill done: each request has its next token (its first, unless it is recomputing)."""
        self.tokens += len(batch)
        for r in batch:
            if r.first_token < 0:
                r.first_token = now
            if self.grow:
                self.kv_fixed -= r.held  # its KV is counted as batch context from now on
            left = r.output - r.gen
            if left <= 1:
                r.gen = r.output
                if self.grow:  # never joined the batch: nothing else to release
                    r.finish = now
                    finished.append(r)
                else:
                    self._leave(r, now, finished)
            else:
                r.join_step = self.step
                r.done_step = self.step + left - 1
                r.ctx_base = r.pre + 1 - self.step
                self.ctx_sum += r.ctx_base
                heapq.heappush(self.running, (r.done_step, r.seq, r))

    def _leave(self, r: SimRequest, now: float, finished: list[SimRequest]) -> None:
        r.finish = now
        if not self.grow:
            self.kv_fixed -= r.held
        finished.append(r)

    def _preempt(self) -> None:
        """KV exhausted: recompute the most recently admitted running request later (vLLM's default)."""
        k = max(range(len(self.running)), key=lambda j: self.running[j][1])
        r = self.running.pop(k)[2]
        heapq.heapify(self.running)
        self.ctx_sum -= r.ctx_base
        r.gen += 1 + self.step - r.join_step
        r.pre = r.todo = r.prompt + r.gen
        r.preemptions += 1
        self.preemptions += 1
        self.waiting.appendleft(r)

    def _admit(self, budget: int | None) -> list[SimRequest]:
        batch: list[SimRequest] = []
        tokens = 0
        waiting = self.waiting
        while waiting:
            r = waiting[0]
            if budget is not None and batch and tokens + r.pre > budget:
                break
            if not self._admissible(r, len(self.prefill_batch) + len(batch)):
                break
            waiting.popleft()
            batch.append(r)
            r.todo = r.pre
            r.held = self._hold(r)
            self.kv_fixed += r.held
            tokens += r.pre
        return batch

    def _begin(self, now: float) -> float | None:
        self.version += 1
        self.start = now
        if self.grow:
            while self.running and self.kv_used + len(self.running) > self.kv_tokens:
                self._preempt()
        if not self.chunked:
            batch = self._admit(self.max_batched_tokens)
            if batch:
                self.phase = PREFILL
                self.prefill_batch = batch
                sq = sum(r.pre * r.pre for r in batch)
                self.end = now + self.perf.prefill_time(sum(r.pre for r in batch), sq) / self.speed
                return self.end
        else:
            self.prefill_batch.extend(self._admit(None))
            if self.prefill_batch:
                return self._mixed(now)
        if self.running:
            b = len(self.running)
            self.phase = DECODE
            self.run_k = self.running[0][0] - self.step
            if self.grow:
                self.run_k = max(1, min(self.run_k, (self.kv_tokens - self.kv_used) // b))
            self.run_lines = self.perf.decode_lines(b, self.ctx_sum + b * self.step, b)
            self.end = now + run_time(self.run_lines, self.run_k) / self.speed
            return self.end
        self.phase = IDLE
        return None

    def _mixed(self, now: float) -> float:
        """One chunked-prefill iteration: a decode step of the batch plus prompt chunks within the budget."""
        b = len(self.running)
        budget = max(1, self.max_batched_tokens - b)
        chunks, tokens, sq, keys = [], 0, 0.0, 0
        for r in self.prefill_batch:
            if budget <= 0:
                break
            n = min(r.todo, budget)
            o = r.pre - r.todo  # chunk [o, o + n) attends to the o tokens before it
            chunks.append((r, n))
            tokens += n
            sq += (o + n) * (o + n) - o * o
            keys += o + n
            budget -= n
        self.chunks = chunks
        self.phase = MIXED
        ctx = self.ctx_sum + b * self.step
        self.end = now + self.perf.mixed_time(b, ctx, tokens, sq, keys) / self.speed
        return self.end
