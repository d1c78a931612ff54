"""The REAL engine (``engine: torch``): a ``transformers`` causal LM behind its own continuous batching.

Real compute, random weights (see :mod:`mixfleet.routing.torch_model`): the
model is a small Llama with seeded random weights, so its tokens are noise,
but every token is produced by the model's forward passes on this machine's
CPU (or a CUDA GPU). Scheduling, the paged KV cache and chunked prefill are
``transformers``' own :class:`ContinuousBatchingManager` (FIFO scheduler:
every iteration decodes one token of each running sequence and fills the
rest of its ``max_batched_tokens`` budget with prompt chunks, in arrival
order), nothing here re-implements them. The manager runs its generation
loop in a background thread; tokens come back to this replica's event loop
through ``register_result_handler`` and stream to the caller as
:class:`~mixfleet.routing.serve.emulated_engine.Chunk` objects, like the
emulated engine's.

Invariants:

- a request stops at ``max_tokens`` or at its hidden true length
  (``output_tokens``: the trace's output length, which the router never sees;
  a random-weight model has no meaningful end-of-sequence), whichever is
  smaller, and its stream closes once;
- requests without a first token are bounded by ``max_waiting``
  (:class:`~mixfleet.routing.serve.emulated_engine.EngineOverloaded`), and one
  that cannot fit the KV cache or the context is refused up front;
- the KV cache holds ``kv_tokens`` tokens (``kv_tokens // page_size`` pages),
  ``max_batch`` sequences per iteration, ``max_batched_tokens`` tokens per
  iteration: the replica's fleet values, so the simulator models the same engine.

Tokens reach the caller in chunks at most every ``flush_s`` seconds (the first
and the last token at once): one Ray streaming message per token and request
would cost more CPU than the model itself on a small machine, and that CPU is
the engine's (the same chunking as the emulated engine).

Memory: on a CPU under glibc the engine keeps freed memory in its heap
(:func:`keep_freed_memory`). By default glibc hands an iteration's large
activations back to the OS as they are freed and faults them in again on the
next iteration: on the 2-core development machine a decode step of 16
sequences over 4,300 keys took 30-36 ms in a fresh process and 11-13 ms with
the memory kept (and the same after a large burst had raised glibc's own
dynamic thresholds), so without it a replica's speed depended on its history.

Timing: ``ttft_s``/``e2e_s`` are measured from the request's arrival at this
engine to its first/last token as stamped by the generation loop
(``time.perf_counter`` is ``CLOCK_MONOTONIC`` on Linux, the same clock as
``time.monotonic``).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator

from mixfleet.errors import ClusterError, InputError, Unavailable
from mixfleet.routing.serve.emulated_engine import Chunk, EngineOverloaded
from mixfleet.routing.torch_model import (
    REAL_NOTE,
    TorchModelConfig,
    build_model,
    generation_config,
    pick_device,
)

PAGE_SIZE = 32
# glibc mallopt parameters: keep up to 256 MiB of freed memory in the heap, serve blocks up to 32 MiB
# (glibc's ceiling) from it instead of fresh mmaps
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_TRIM_BYTES, _MMAP_BYTES = 256 << 20, 32 << 20


def keep_freed_memory() -> bool:
    """Ask glibc to keep freed memory for reuse (see module doc); False where there is no glibc."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_TRIM_THRESHOLD, _TRIM_BYTES)) and bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_BYTES))


class _Req:
    __slots__ = ("queue", "emitted", "t_submit", "first_at", "sent", "t_sent")

    def __init__(self, t_submit: float) -> None:
        self.queue: asyncio.Queue[Chunk | Exception | None] = asyncio.Queue()
        self.emitted = 0  # tokens seen from the generation loop
        self.sent = 0  # tokens handed to the caller
        self.t_sent = t_submit
        self.t_submit = t_submit
        self.first_at: float | None = None


class TorchEngine:
    """One REAL engine replica (see module doc); submit from one asyncio event loop."""

    kind = "torch"
    note = REAL_NOTE

    def __init__(self, replica_id: str, cfg: TorchModelConfig, *, kv_tokens: int, max_batch: int,
                 max_batched_tokens: int, max_waiting: int = 64, device: str = "auto", threads: int = 1,
                 flush_s: float = 0.0) -> None:
        import logging

        import torch
        from transformers.generation.configuration_utils import ContinuousBatchingConfig

        # its CPU notes (no psutil for a memory breakdown: we size the cache ourselves) are not errors here
        logging.getLogger("ContinuousBatchingLogger").setLevel(logging.CRITICAL)

        self.replica_id, self.cfg, self.max_waiting, self.flush_s = replica_id, cfg, max_waiting, flush_s
        self.max_batch, self.max_batched_tokens, self.threads = max_batch, max_batched_tokens, threads
        self.device = pick_device(device)
        if self.device == "cpu" and threads > 0:
            torch.set_num_threads(threads)
        self.kept_freed_memory = self.device == "cpu" and keep_freed_memory()
        self.kv_tokens = max(PAGE_SIZE, kv_tokens // PAGE_SIZE * PAGE_SIZE)
        self.model = build_model(cfg, self.device)
        cb = ContinuousBatchingConfig(num_blocks=self.kv_tokens // PAGE_SIZE, page_size=PAGE_SIZE,
                                      max_batch_tokens=max_batched_tokens, max_requests_per_batch=max_batch,
                                      allow_block_sharing=False, scheduler_type="fifo")
        self.manager = self.model.init_continuous_batching(generation_config(), continuous_batching_config=cb)
        self.manager.start()
        self._reqs: dict[str, _Req] = {}
        self._ids = itertools.count()
        self._t0 = time.monotonic()
        self._clock_off = time.monotonic() - time.perf_counter()
        self._busy_since: float | None = None
        self.busy_s = 0.0
        self.tokens = 0
        self.completed = 0
        self._timer = None
        self.last_stalls: dict = {}

    # -- the EmulatedEngine interface ---------------------------------------------------------
    def set_speed(self, speed: float) -> None:
        """A real engine cannot be slowed on request; telemetry reports what the hardware really does."""

    @property
    def speed(self) -> float:
        return 1.0

    def in_system(self) -> int:
        return len(self._reqs)

    def waiting(self) -> int:
        return sum(1 for r in self._reqs.values() if r.first_at is None)

    def stats(self) -> dict[str, float]:
        now = time.monotonic()
        busy = self.busy_s + (now - self._busy_since if self._busy_since is not None else 0.0)
        cache = getattr(self.manager.batch_processor, "cache", None)
        try:
            kv = 1.0 - float(cache.compute_free_capacity()) if cache is not None else 0.0
        except Exception:  # cache internals are transformers' own; telemetry is best effort
            kv = 0.0
        waiting = self.waiting()
        return {"queue_len": float(waiting), "running": float(len(self._reqs) - waiting), "kv_frac": kv,
                "busy_s": busy, "profile_s": busy, "tokens": float(self.tokens), "speed": 1.0,
                "completed": float(self.completed), "model_time_s": now - self._t0}

    def retry_after_s(self) -> float:
        return 1.0

    def check_health(self) -> None:
        """Raise when the generation loop has died (Serve then restarts the replica)."""
        status = self.manager.background_thread_status
        if getattr(status, "fatal_error", None) is not None or not self.manager.is_running():
            raise ClusterError(f"replica {self.replica_id}: the generation loop stopped "
                               f"({getattr(status, 'fatal_error', None)!r})", "Serve restarts the replica")

    def close(self) -> None:
        self.manager.stop(block=True, timeout=5)

    def settings(self) -> dict:
        """The engine's settings as a profile records them beside its points (device, threads, cache size,
        iteration budget, the model's configuration)."""
        return {"device": self.device, "threads": self.threads, "kv_tokens": self.kv_tokens,
                "max_batch": self.max_batch, "max_batched_tokens": self.max_batched_tokens,
                "model": self.cfg.model_dump()}

    # -- timing its own iterations ------------------------------------------------------------
    def time_iterations(self) -> bool:
        """Start timing every iteration this engine runs (for a profile of the engine as served: its
        iterations under real traffic, in the serving process); False where ``transformers`` offers no
        hook. Costs two clock reads and a list append per iteration."""
        from mixfleet.routing.iterations import IterationTimer, model_runner

        if self._timer is None:
            runner = model_runner(self)
            if runner is None:
                return False
            self._timer = IterationTimer(runner)
        self._timer.start()
        return True

    def timed_iterations(self, phase: str = "served") -> list[dict]:
        """Stop timing; the iterations timed since :meth:`time_iterations` that the engine went straight on
        from, as profile fit points (:func:`mixfleet.routing.iterations.busy_steps`). The waits in the same
        span where the engine had sequences and ran no iteration go to ``last_stalls``
        (:func:`mixfleet.routing.iterations.stalls`)."""
        from mixfleet.routing.iterations import busy_steps, stalls

        log = self._timer.stop() if self._timer is not None else []
        self.last_stalls = stalls(log)
        return busy_steps(log, phase)

    # -- requests -------------------------------------------------------------------------------
    def _check(self, prompt_ids: list[int], max_tokens: int) -> None:
        n = len(prompt_ids)
        if n < 1 or max_tokens < 1:
            raise InputError(f"bad request size: prompt {n}, max_tokens {max_tokens}", "both must be >= 1")
        if any(not 0 <= t < self.model.config.vocab_size for t in prompt_ids):
            raise InputError(f"prompt token ids must be in 0..{self.model.config.vocab_size - 1} (byte tokens)",
                             "send text or byte-level token ids")
        if n + max_tokens > min(self.kv_tokens, self.cfg.max_context):
            raise InputError(f"prompt ({n}) + max_tokens ({max_tokens}) exceed replica {self.replica_id}'s limit "
                             f"of {min(self.kv_tokens, self.cfg.max_context)} tokens", "send a shorter request")
        if self.waiting() >= self.max_waiting:
            raise EngineOverloaded(self.replica_id, self.waiting(), self.retry_after_s())

    async def generate(self, prompt_tokens: int, max_tokens: int, prompt_ids: list[int] | None = None,
                       output_tokens: int | None = None) -> AsyncIterator[Chunk]:
        """Stream the tokens of one request. Without ``prompt_ids`` the prompt is ``prompt_tokens`` seeded ids."""
        if prompt_ids is None:
            prompt_ids = [(k * 31 + prompt_tokens) % 256 for k in range(prompt_tokens)]
        self._check(prompt_ids, max_tokens)
        n_out = max_tokens if output_tokens is None else max(1, min(max_tokens, output_tokens))
        rid = f"{self.replica_id}-{next(self._ids)}"
        req = _Req(time.monotonic())
        self._reqs[rid] = req
        if self._busy_since is None:
            self._busy_since = req.t_submit
        self.manager.register_result_handler(rid, lambda out, r=req, i=rid: self._on_output(i, r, out))
        self.manager.add_request(list(prompt_ids), request_id=rid, max_new_tokens=n_out, streaming=True,
                                 record_timestamps=True)
        try:
            while True:
                chunk = await req.queue.get()
                if chunk is None:
                    return
                if isinstance(chunk, Exception):
                    raise chunk
                yield chunk
        finally:
            if rid in self._reqs:  # abandoned by the caller: stop generating for it
                self.manager.cancel_request(rid)
                self._finish(rid)

    def _finish(self, rid: str) -> None:
        self._reqs.pop(rid, None)
        if not self._reqs and self._busy_since is not None:
            self.busy_s += time.monotonic() - self._busy_since
            self._busy_since = None

    def _on_output(self, rid: str, req: _Req, out) -> None:
        """Runs on the event loop for every streamed update of ``rid`` (cumulative generated tokens)."""
        if rid not in self._reqs:
            return
        if out.error is not None:
            self._finish(rid)
            req.queue.put_nowait(Unavailable(f"replica {self.replica_id}: generation failed: {out.error}",
                                             retry_after_s=1.0))
            return
        toks = list(out.generated_tokens)
        done = out.is_finished()
        if len(toks) <= req.emitted and not done:
            return
        stamps = out.timestamps or []
        now = time.monotonic()
        if req.first_at is None and toks:
            req.first_at = stamps[0] + self._clock_off if stamps else now
        self.tokens += len(toks) - req.emitted
        req.emitted = len(toks)
        first = req.sent == 0
        if not (first or done or now - req.t_sent >= self.flush_s):
            return  # coalesce: the caller gets these with the next chunk
        chunk = Chunk(toks[req.sent:], first=first and bool(toks), done=done)
        req.sent, req.t_sent = len(toks), now
        if done:
            end = stamps[-1] + self._clock_off if stamps else now
            first_at = req.first_at if req.first_at is not None else end
            chunk.ttft_s, chunk.e2e_s = first_at - req.t_submit, end - req.t_submit
            chunk.t_submit, chunk.t_end, chunk.t_emit = req.t_submit, end, now
            self.completed += 1
            self._finish(rid)
        req.queue.put_nowait(chunk)
        if done:
            req.queue.put_nowait(None)
