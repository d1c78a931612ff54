"""The telemetry hub: one named Ray actor that every part reads from and pushes to.

It lives in namespace ``mixfleet`` under the name ``mixfleet-telemetry-hub``
(get-or-create; detached by default, so it outlives the driver that made
it and every driver on the cluster sees one hub), keeps a :class:`~mixfleet.platform.telemetry.state.HubState`, and
answers from memory: ``snapshot()`` does no I/O. Control loops poll with
``wait_for_update(since_version, timeout_s)`` instead of sleeping.

It also watches the agents it holds: each has one outstanding ``watch()``
call that only returns when the agent stops, so the moment Ray reports an
agent process dead the hub marks that node's GPUs stale, without waiting
for a missed-report timeout. Ray restarts the agent (``max_restarts=-1``)
and its first report clears the mark.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from mixfleet.platform.bootstrap import NAMESPACE
from mixfleet.platform.telemetry.state import HubState

HUB_NAME = "mixfleet-telemetry-hub"
POLL_GROUP = "poll"
_handles: dict[tuple, Any] = {}  # per-process cache of the hub handle, keyed by Ray session


class TelemetryHub:
    """Actor body (made a Ray actor by :func:`get_hub`); thread-safe around one HubState."""

    def __init__(self, history: int = 120, stale_after_s: float = 2.0, stats_stale_after_s: float = 10.0,
                 load_ttl_s: float = 10.0):
        self._state = HubState(time.time, history=history, stale_after_s=stale_after_s,
                               stats_stale_after_s=stats_stale_after_s, load_ttl_s=load_ttl_s)
        self._cond = threading.Condition()
        self._agents: dict[str, Any] = {}  # node id -> agent handle (keeps non-detached agents alive)
        self._monitor = threading.Thread(target=self._watch_agents, name="telemetry-hub-monitor", daemon=True)
        self._monitor.start()

    def _write(self, fn, *args, **kwargs):
        with self._cond:
            out = fn(*args, **kwargs)
            self._cond.notify_all()
            return out

    def _watch_agents(self) -> None:
        import ray

        watching: dict[Any, tuple[str, Any]] = {}  # outstanding watch() ref -> (node id, actor id)
        not_before: dict[str, float] = {}
        while True:
            with self._cond:
                agents = {nid: (h, h._actor_id) for nid, h in self._agents.items()}
            busy = set(watching.values())
            now = time.monotonic()
            for node_id, (agent, actor_id) in agents.items():
                if (node_id, actor_id) not in busy and not_before.get(node_id, 0) <= now:
                    watching[agent.watch.remote()] = (node_id, actor_id)
            if not watching:
                time.sleep(0.2)
                continue
            ready, _ = ray.wait(list(watching), num_returns=1, timeout=0.5)
            for ref in ready:
                node_id, actor_id = watching.pop(ref)
                try:
                    why = f"agent stopped ({ray.get(ref)})"
                except Exception as exc:  # RayActorError / ActorUnavailableError: the process is gone
                    why = f"agent died ({type(exc).__name__})"
                if agents.get(node_id, (None, None))[1] == actor_id:  # not an agent replaced since
                    self._write(self._state.mark_down, node_id, why)
                not_before[node_id] = time.monotonic() + 0.5  # do not spin on an actor that is restarting or gone

    def report(self, node_id: str, meta: dict, readings: list[dict]) -> dict:
        """Store an agent's sample; ``watching`` in the reply says whether the hub holds its handle."""
        handle = meta.pop("handle", None)
        if handle is not None:
            self.adopt_agents({node_id: handle})
        reply = self._write(self._state.report, node_id, meta, readings)
        reply["watching"] = node_id in self._agents
        return reply

    def push_stats(self, scope: str, key: str, values: dict, ts: float | None = None) -> None:
        self._write(self._state.push_stats, scope, key, values, ts)

    def report_load(self, node_id: str, gpu_index: int, util: float, mem_frac: float,
                    ttl_s: float | None = None) -> None:
        self._write(self._state.report_load, node_id, gpu_index, util, mem_frac, ttl_s)

    def set_condition(self, node_id: str, gpu_index: int, speed_factor: float | None,
                      throttle: str = "sw_thermal_slowdown") -> None:
        self._write(self._state.set_condition, node_id, gpu_index, speed_factor, throttle)

    def configure(self, period_s: float | None = None, stale_after_s: float | None = None) -> dict:
        with self._cond:
            self._state.configure(period_s=period_s, stale_after_s=stale_after_s)
            return {"period_s": self._state.period_s, "stale_after_s": self._state.stale_after_s}

    def snapshot(self) -> dict:
        with self._cond:
            return self._state.snapshot()

    def wait_for_update(self, since_version: int, timeout_s: float = 5.0) -> dict:
        """The snapshot once ``version > since_version``, or the current one after ``timeout_s``."""
        deadline = time.monotonic() + max(0.0, timeout_s)
        with self._cond:
            while self._state.version <= since_version:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            return self._state.snapshot()

    def history(self, node_id: str, gpu_index: int | None = None, last: int | None = None) -> list[dict]:
        with self._cond:
            return self._state.history(node_id, gpu_index, last)

    def adopt_agents(self, handles: dict[str, Any]) -> int:
        """Hold agent handles. A handle to an actor already held is not swapped in: the held one
        is the creator's, and dropping it would let Ray collect the agent."""
        with self._cond:
            for node_id, handle in handles.items():
                held = self._agents.get(node_id)
                if held is None or held._actor_id != handle._actor_id:
                    self._agents[node_id] = handle
            return len(self._agents)

    def agent(self, node_id: str) -> Any:
        """The handle of the agent on ``node_id`` (``None`` if none was started)."""
        return self._agents.get(node_id)

    def ping(self) -> int:
        return self._state.version


def get_hub(*, detached: bool = True, **hub_options: Any):
    """The hub's actor handle; creates it if absent (``hub_options`` apply only then).

    Works from a driver, a Ray task/actor or a Serve replica (it calls
    :func:`~mixfleet.platform.bootstrap.connect`, which joins the running
    session there). The hub is detached unless ``detached=False`` (then it
    dies with the driver that created it).
    """
    import ray

    from mixfleet.platform.bootstrap import connect, head_affinity

    connect()
    ctx = ray.get_runtime_context()
    key = (ctx.gcs_address, ctx.get_job_id())
    handle = _handles.get(key)
    if handle is not None:
        return handle
    try:
        handle = ray.get_actor(HUB_NAME, namespace=NAMESPACE)
    except ValueError:
        # On the head, with 0 CPUs so it never blocks work: a hub on a worker node would keep that
        # node busy ("Busy workers on node."), so the autoscaler would never remove it.
        options: dict[str, Any] = dict(name=HUB_NAME, namespace=NAMESPACE, get_if_exists=True)
        strategy = head_affinity()
        if strategy is not None:
            options["scheduling_strategy"] = strategy
        if detached:
            options["lifetime"] = "detached"
        # Long polls run in their own thread group, so they never take the threads reports use.
        actor_cls = ray.remote(num_cpus=0, max_concurrency=16, concurrency_groups={POLL_GROUP: 64},
                               max_restarts=-1, max_task_retries=0)(TelemetryHub)
        handle = actor_cls.options(**options).remote(**hub_options)
    _handles[key] = handle
    return handle


def forget_hub() -> None:
    """Drop cached hub handles (after the hub died for good, e.g. with its owner driver)."""
    _handles.clear()
