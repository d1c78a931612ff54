"""One telemetry agent per Ray node: samples its GPUs every period and reports to the hub.

An agent is a Ray actor pinned to its node (hard node affinity, 0 CPUs),
named ``mixfleet-telemetry-agent-<node_id>`` in namespace ``mixfleet`` so
:func:`start_agents` is idempotent. It runs ``max_restarts=-1``: if its
process dies Ray starts it again on the same node; until then the hub sees
no reports and marks that node's GPUs stale. Each tick it reads its source
(NVML, or the emulated one), sets the ``mixfleet_gpu_*`` gauges, and sends
the readings to the hub, whose reply carries the load/conditions that
drive emulated GPUs and the period to use.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import warnings
from typing import Any

from mixfleet.platform.bootstrap import NAMESPACE

AGENT_PREFIX = "mixfleet-telemetry-agent-"
DEFAULT_PERIOD_S = 0.5
log = logging.getLogger(__name__)


class TelemetryAgent:
    """Actor body (made a Ray actor by :func:`start_agents`)."""

    def __init__(self, node_id: str, accelerator_type: str | None, num_gpus: int, emulated_node: bool,
                 period_s: float = DEFAULT_PERIOD_S, source: str = "auto", hub: Any = None):
        """``hub``: report to this hub handle instead of the named one (a private hub, tests)."""
        import ray

        from mixfleet.platform.metrics import GpuGauges
        from mixfleet.platform.telemetry.sources import open_source

        self.node_id = node_id
        self.accelerator_type = accelerator_type
        self.period_s = period_s
        self.source = open_source(node_id, source=source, accelerator_type=accelerator_type, num_gpus=num_gpus,
                                  emulated_node=emulated_node, clock=time.time)
        self.gauges = GpuGauges()
        with warnings.catch_warnings():  # the property reads a deprecated attribute inside Ray
            warnings.simplefilter("ignore")
            self.restarted = bool(ray.get_runtime_context().was_current_actor_reconstructed)
        self.errors = 0
        self.last_error: str | None = None
        self._drive: dict = {}
        self._watched = False
        self._hub = hub
        self._latest: list[dict] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="telemetry-agent", daemon=True)
        self._thread.start()

    def _meta(self) -> dict[str, Any]:
        return {"accelerator_type": self.accelerator_type, "source": self.source.name if self.source else None,
                "period_s": self.period_s, "pid": os.getpid(), "restarted": self.restarted,
                "hostname": socket.gethostname()}

    def tick(self, hub: Any) -> list[dict]:
        """Sample once, export gauges, report to the hub; the readings."""
        import ray

        readings = self.source.sample(self._drive) if self.source else []
        self.gauges.record(readings)
        meta = self._meta()
        if not self._watched:  # introduce ourselves, so a new or restarted hub watches us
            meta["handle"] = ray.get_runtime_context().current_actor
        reply = ray.get(hub.report.remote(self.node_id, meta, readings), timeout=30)
        self._watched = bool(reply.get("watching"))
        self._drive = reply.get("drive") or {}
        if reply.get("period_s"):
            self.period_s = reply["period_s"]
        self._latest = readings
        return readings

    def _loop(self) -> None:
        from ray.exceptions import ActorDiedError

        from mixfleet.platform.telemetry.hub import forget_hub, get_hub

        hub = self._hub
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                hub = hub or get_hub()
                self.tick(hub)
            except ActorDiedError:  # the hub is gone for good: find (or create) the new one next tick
                forget_hub()
                hub, self._watched = self._hub, False
                self.errors += 1
            except Exception as exc:  # keep sampling; the hub marks us stale if this persists
                self.errors += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("telemetry agent on %s: %s", self.node_id[:12], self.last_error)
            self._stop.wait(max(0.0, self.period_s - (time.monotonic() - started)))

    def latest(self) -> list[dict]:
        return list(self._latest)

    def info(self) -> dict[str, Any]:
        return {**self._meta(), "node_id": self.node_id, "errors": self.errors, "last_error": self.last_error,
                "num_gpus": self.source.num_gpus if self.source else 0}

    def watch(self) -> str:
        """Return only when this agent stops; the hub keeps one call pending to learn of its death."""
        self._stop.wait()
        return "stopped"

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        if self.source:
            self.source.close()


def agent_name(node_id: str) -> str:
    return AGENT_PREFIX + node_id


def start_agents(*, period_s: float = DEFAULT_PERIOD_S, source: str = "auto", detached: bool = True,
                 wait_s: float = 15.0) -> dict[str, Any]:
    """Place one agent on every alive node (idempotent) and return the hub snapshot.

    Waits up to ``wait_s`` for every alive node's agent to report.
    ``period_s`` also applies to agents already running (the hub tells
    them). Agents are detached (a node service, like Ray's own agents)
    unless ``detached=False``: then they die with this driver, the hub
    marks their GPUs stale, and the next call starts new ones.
    """
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from mixfleet.errors import InputError
    from mixfleet.platform.accelerators import accelerator_of
    from mixfleet.platform.local_cluster import EMULATED_LABEL
    from mixfleet.platform.telemetry.hub import POLL_GROUP, get_hub

    if not isinstance(period_s, (int, float)) or not period_s > 0:
        raise InputError(f"bad telemetry period {period_s!r}: expected seconds > 0", "the default is 0.5")
    hub = get_hub()
    ray.get(hub.configure.remote(period_s=period_s))
    agent_cls = ray.remote(TelemetryAgent)
    alive = [n for n in ray.nodes() if n.get("Alive")]
    handles: dict[str, Any] = {}
    for n in alive:
        res = n.get("Resources", {})
        options: dict[str, Any] = dict(
            name=agent_name(n["NodeID"]), namespace=NAMESPACE, get_if_exists=True, num_cpus=0,
            max_concurrency=4, max_restarts=-1, max_task_retries=0,
            scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
        if detached:
            options["lifetime"] = "detached"
        handle = agent_cls.options(**options).remote(
            n["NodeID"], accelerator_of(res), int(res.get("GPU", 0)),
            (n.get("Labels") or {}).get(EMULATED_LABEL) == "true", period_s, source)
        handles[n["NodeID"]] = handle
    # A non-detached named actor dies with its last handle; the hub holds them for as long as it lives.
    ray.get(hub.adopt_agents.remote(handles))
    wanted = {n["NodeID"] for n in alive}
    deadline = time.monotonic() + wait_s
    snap = ray.get(hub.snapshot.remote())
    while time.monotonic() < deadline:
        fresh = {nid for nid, node in snap["nodes"].items() if not node["stale"]}
        if wanted <= fresh:
            break
        snap = ray.get(hub.wait_for_update.options(concurrency_group=POLL_GROUP).remote(snap["version"], 1.0))
    return snap
