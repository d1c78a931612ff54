"""The engine replica deployment: one fleet replica on a GPU of its type.

Each fleet replica (``A100-80GB-0``, ...) is a one-replica Serve deployment
whose ``ray_actor_options`` ask for ``num_gpus`` and the replica's
``accelerator_type``, so Ray places it only on a node of that GPU type (on
these machines: an EMULATED node that declares the GPU type; see
:mod:`mixfleet.platform.local_cluster`).

Engines:

- ``emulated`` (default, and the only one without CUDA): the simulator's
  engine on a wall clock (:mod:`mixfleet.routing.serve.emulated_engine`);
  EMULATED timing from the GPU profile, placeholder tokens.
- ``torch`` (a fleet pool's ``engine: torch``, or ``ServeOptions.engine``): the REAL
  engine (:mod:`mixfleet.routing.serve.torch_engine`): a ``transformers`` causal LM
  with seeded random weights behind ``transformers``' continuous batching, on
  the CPU or a CUDA GPU (real compute, random weights; real timing).
- ``tiny-torch`` (opt-in, CUDA only): a real but TINY torch causal LM
  (:mod:`mixfleet.routing.serve.tiny_engine`); real tokens from random
  weights, real GPU time, not the fleet model's timing.

A replica reports its engine stats to the TelemetryHub every
``stats_interval_s`` (``push_stats("routing.replica", id, ...)``), drives
its emulated GPU's load there, and follows the emulated GPU's
``speed_factor`` (``set_gpu_condition`` = thermal throttling): the engine
then really runs slower, which the router sees through telemetry.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mixfleet.routing.fleet import Replica
    from mixfleet.routing.serve.app import ServeOptions

log = logging.getLogger("mixfleet.routing.serve")

STATS_SCOPE = "routing.replica"


class EngineReplica:
    """Serve deployment class (see module doc). Methods are called through handles by the ingress."""

    def __init__(self, *, replica: Replica, max_batched_tokens: int, options: ServeOptions,
                 stats_interval_s: float = 1.0, cpu_index: int = 0) -> None:
        import ray

        from mixfleet.routing.serve.app import engine_of
        from mixfleet.routing.serve.emulated_engine import EmulatedEngine

        self.replica = rep = replica
        replica_id, engine = rep.replica_id, engine_of(replica, options)
        self.stats_interval_s = stats_interval_s
        ctx = ray.get_runtime_context()
        self.node_id = ctx.get_node_id()
        ids = ray.get_gpu_ids()
        self.gpu_index = int(ids[0]) if ids else None
        self.engine_kind = engine
        self.cpus: list[int] | None = None  # the CPU set a real CPU engine is bound to (``cpu_bind``)
        if engine == "tiny-torch":
            from mixfleet.routing.serve.tiny_engine import TinyTorchEngine

            self.engine = TinyTorchEngine(replica_id, max_waiting=options.max_waiting)
        elif engine == "torch":
            from mixfleet.routing.serve.torch_engine import TorchEngine
            from mixfleet.routing.torch_model import model_config

            if options.cpu_bind is not None and options.device == "cpu":
                from mixfleet.platform.cpus import bind_process, cpu_set_for

                # before the engine starts its threads, which inherit the binding
                self.cpus = cpu_set_for(options.cpu_bind, cpu_index)
                bind_process(self.cpus)

            self.engine = TorchEngine(replica_id, model_config(options.torch_model), kv_tokens=rep.kv_tokens,
                                      max_batch=rep.max_batch, max_batched_tokens=max_batched_tokens,
                                      max_waiting=options.max_waiting, device=options.device,
                                      threads=options.torch_threads, flush_s=options.flush_s)
        else:
            self.engine = EmulatedEngine(replica_id, rep.perf, rep.kv_tokens, rep.max_batch, max_batched_tokens,
                                         max_waiting=options.max_waiting, flush_s=options.flush_s,
                                         dilation=options.time_dilation)
        self._stats_task: asyncio.Task | None = None
        self._last_busy = 0.0
        self._last_t = 0.0

    def _ensure_stats_loop(self) -> None:
        if self._stats_task is None or self._stats_task.done():
            self._stats_task = asyncio.get_running_loop().create_task(self._stats_loop())

    async def generate(self, prompt_tokens: int, max_tokens: int, prompt_ids: list[int] | None = None,
                       output_tokens: int | None = None):
        """Stream the request's :class:`~mixfleet.routing.serve.emulated_engine.Chunk` objects.

        ``prompt_ids`` (the prompt's tokens) and ``output_tokens`` (its hidden true length) reach only the
        engines that use them: the real engine runs the ids and stops at that length; the emulated one
        models the length too."""
        self._ensure_stats_loop()
        if self.engine_kind == "torch":
            stream = self.engine.generate(prompt_tokens, max_tokens, prompt_ids, output_tokens)
        elif self.engine_kind == "emulated":
            stream = self.engine.generate(prompt_tokens, max_tokens, output_tokens)
        else:
            stream = self.engine.generate(prompt_tokens, max_tokens)
        async for chunk in stream:
            yield chunk

    async def info(self) -> dict:
        """Where this replica runs and what it is (EMULATED unless a torch engine runs); ``cpus``: the CPU
        set it was bound to (``cpu_bind``), ``process_cpus``: where its threads may run now; ``settings``:
        the real engine's (:meth:`~mixfleet.routing.serve.torch_engine.TorchEngine.settings`), else None."""
        from mixfleet.platform.cpus import process_cpus

        self._ensure_stats_loop()
        return {"process_cpus": process_cpus(), "replica_id": self.replica.replica_id, "gpu": self.replica.gpu,
                "accelerator": self.replica.accelerator, "node_id": self.node_id, "gpu_index": self.gpu_index,
                "engine": self.engine.kind, "emulated": self.engine.kind == "emulated", "cpus": self.cpus,
                "settings": self.engine.settings() if self.engine_kind == "torch" else None}

    async def time_iterations(self, start: bool = True, phase: str = "served") -> list[dict] | bool:
        """The real engine times its own iterations under traffic: ``start`` begins (False where it can't),
        then ``start=False`` stops and returns them as profile fit points (see
        :meth:`~mixfleet.routing.serve.torch_engine.TorchEngine.timed_iterations`). Real engine only."""
        from mixfleet.errors import InputError

        if self.engine_kind != "torch":
            raise InputError(f"replica {self.replica.replica_id} runs the {self.engine_kind} engine",
                             "iteration timing is for the real engine (engine: torch)")
        if start:  # may wait for the engine's batch processor: not on the event loop
            return await asyncio.to_thread(self.engine.time_iterations)
        return self.engine.timed_iterations(phase)

    async def iteration_stalls(self) -> dict:
        """The waits with work in the engine during the last timed span (real engine; ``{}`` otherwise):
        :func:`mixfleet.routing.iterations.stalls`."""
        return dict(getattr(self.engine, "last_stalls", {}))

    async def stats(self) -> dict:
        return self.engine.stats()

    async def set_speed(self, speed: float) -> None:
        """Emulated thermal throttle, for tests and demos (normally driven by telemetry)."""
        self.engine.set_speed(speed)

    async def check_health(self) -> None:
        """Serve's health check: the engine loop must not have crashed."""
        check = getattr(self.engine, "check_health", None)
        if check is not None:
            check()
            return
        task = getattr(self.engine, "_task", None)
        if task is not None and task.done() and task.exception() is not None:
            raise RuntimeError(f"engine loop crashed: {task.exception()!r}")

    async def _stats_loop(self) -> None:
        from mixfleet.platform.telemetry import get_hub, push_stats, report_gpu_load

        while True:
            await asyncio.sleep(self.stats_interval_s)
            try:
                s = self.engine.stats()
                push_stats(STATS_SCOPE, self.replica.replica_id, s)
                if self.gpu_index is not None and self.engine.kind == "emulated":
                    t, busy = s["model_time_s"], s["busy_s"]
                    util = (busy - self._last_busy) / max(t - self._last_t, 1e-6)
                    self._last_busy, self._last_t = busy, t
                    report_gpu_load(self.node_id, self.gpu_index, min(1.0, max(0.0, util)),
                                    min(1.0, s["kv_frac"]), ttl_s=max(5.0, 4 * self.stats_interval_s))
                    snap = await asyncio.wait_for(get_hub().snapshot.remote(), timeout=5)
                    for g in snap.get("gpus", ()):
                        if g.get("node_id") == self.node_id and g.get("gpu_index") == self.gpu_index:
                            f = g.get("speed_factor")
                            self.engine.set_speed(f if f and f > 0 else 1.0)
            except Exception as exc:  # telemetry is best effort; serving goes on
                log.debug("replica %s: stats loop: %r", self.replica.replica_id, exc)
