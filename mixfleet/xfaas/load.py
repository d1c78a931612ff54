"""Load runs against the EMULATED world: concurrent workflow invocations on Ray, delays as real time.

One :class:`WorldHost` (an async Ray actor) per strategy hosts a replica of the world (same seed)
and an executor for the workflow: each invocation is a coroutine that runs the plan's units
through the clouds' capacity pools, sleeping every hop, queue wait, cold start and execution the
world draws, scaled by ``time_scale`` (emulated seconds x time_scale = real seconds). Queueing,
cold starts and throttling therefore happen in the run (instances run out, the scale controller
is slow, a 429 is retried), and so does executor overhead: latency is the real elapsed time of the
invocation divided by ``time_scale``, measured from its scheduled arrival. The driver
(:func:`run_load`) releases arrivals on the workload's schedule, feeds each adaptive arm's
controller with the telemetry its host recorded, and hands its new plans to the host (runs in
flight keep the plan they started with).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from mixfleet.xfaas.model import Plan, UnitGraph


class Pool:
    """One cloud's capacity: instances x slots, scale-out while work waits, scale-in when idle."""

    def __init__(self, truth, host: WorldHost):
        self.truth, self.host = truth, host
        cap = truth.capacity
        self.instances, self.busy, self.waiters = cap.initial_instances, 0, deque()
        self.warm: dict[str, list[float]] = {}  # function key -> idle instances' last-use times
        self.last_scale = 0.0

    def capacity(self) -> int:
        return self.instances * self.truth.capacity.per_instance

    def _scale(self, now: float) -> None:
        cap = self.truth.capacity
        if cap.scale_out_s <= 0:
            return
        if self.waiters and self.instances < cap.max_instances and now - self.last_scale >= cap.scale_out_s:
            self.instances += 1
            self.last_scale = now
            for _ in range(cap.per_instance):
                if self.waiters and self.busy < self.capacity():
                    self.busy += 1
                    self.waiters.popleft().set_result(True)
        elif (not self.waiters and cap.scale_in_s and self.instances > cap.initial_instances
              and self.busy <= (self.instances - 1) * cap.per_instance and now - self.last_scale >= cap.scale_in_s):
            self.instances -= 1
            self.last_scale = now

    async def acquire(self) -> bool:
        self._scale(self.host.now())
        if self.busy < self.capacity():
            self.busy += 1
            return True
        if self.truth.on_limit == "reject":
            return False
        fut = asyncio.get_running_loop().create_future()
        self.waiters.append(fut)
        return await fut

    def release(self) -> None:
        self._scale(self.host.now())
        if self.waiters and self.busy <= self.capacity():
            self.waiters.popleft().set_result(True)
        else:
            self.busy -= 1

    def take_warm(self, key: str, now: float) -> bool:
        idle = self.warm.get(key)
        while idle:
            last = idle.pop()
            if now - last <= self.truth.keep_alive_s:
                return True
        return False


class WorldHost:
    """An async Ray actor: one strategy's emulated clouds and its workflow executor."""

    def __init__(self, workflow, world_file, seed: int, events, time_scale: float, t0_wall: float):
        from mixfleet.xfaas.world import load_world

        self.wf, self.scale, self.t0 = workflow, time_scale, t0_wall
        self.world = load_world(world_file, seed=seed, events=events)
        self.clouds = self.world.clouds
        self.pools = {c: Pool(t, self) for c, t in self.world.config.clouds.items()}
        self.plans: dict[int, tuple[UnitGraph, list[str]]] = {}
        self.records: list[dict] = []
        self.telemetry_rows: list[dict] = []
        self.inflight = 0
        self.probe_cost = 0.0
        self._tasks: set = set()

    def now(self) -> float:
        return (time.time() - self.t0) / self.scale

    async def _sleep(self, emulated_s: float) -> None:
        if emulated_s > 0:
            await asyncio.sleep(emulated_s * self.scale)

    def ready(self) -> bool:
        return True

    def anchor(self, t0_wall: float) -> None:
        self.t0 = t0_wall

    def start(self, version: int, times: list[float], plan: Plan | None = None) -> int:
        if plan is not None:
            units = UnitGraph(self.wf, plan.groups, plan.fusion)
            self.plans[version] = (units, [plan.placement[g[0]] for g in units.members])
        for t in times:
            self.inflight += 1
            task = asyncio.get_running_loop().create_task(self._invoke(version, t))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return len(times)

    async def _call(self, units: UnitGraph, i: int, cloud: str, rec: dict, probe: bool = False) -> None:
        pool, key = self.pools[cloud], ("probe:" if probe else "") + "+".join(units.members[i])
        t_q, tries = self.now(), 0
        while not await pool.acquire():  # 429: the orchestrator retries with exponential backoff
            tries += 1
            rec["throttles"] += 1
            rec["cost_usd"] += self.clouds.hop_usd(cloud, cloud, 0.0)
            await self._sleep(pool.truth.retry_s * 2 ** min(tries - 1, 5))
        rec["queue_s"] += self.now() - t_q
        try:
            t = self.now()
            cold = not pool.take_warm(key, t)
            cs = self.world.cold_start_s(cloud, units.memory_mb[i], t) if cold else 0.0
            mk, times = self.world.unit_exec(units, i, cloud, t)
            await self._sleep(cs + mk)
        finally:
            pool.release()
        pool.warm.setdefault(key, []).append(self.now())
        rec["cold_starts"] += int(cold)
        rec["cost_usd"] += self.clouds.run_usd(cloud, mk, units.memory_mb[i])
        done = self.now()
        for m, x in times.items():
            self.telemetry_rows.append({"t": done, "started": t, "node": m, "cloud": cloud, "exec_s": x,
                                        "probe": probe})

    async def _invoke(self, version: int, t_arr: float) -> None:
        await self._sleep(t_arr - self.now())
        units, where = self.plans[version]
        # lag: how late the emulator started this invocation (its own CPU, not the clouds); a health check
        rec = {"t": t_arr, "version": version, "cost_usd": 0.0, "cold_starts": 0, "queue_s": 0.0, "throttles": 0,
               "lag_s": max(0.0, self.now() - t_arr)}
        preds: dict[int, list[int]] = {i: [] for i in range(len(units.members))}
        for a, b in units.edges:
            preds[b].append(a)
        done = {i: asyncio.Event() for i in preds}
        wfname = self.wf.spec.name

        async def edge(a: int, b: int) -> None:
            await done[a].wait()
            src = [m for m in units.members[a] if any(units.unit_of[s] == b for s in self.wf.succs[m])]
            kb = max(self.world.output_kb(wfname, m, self.wf.nodes[m].output_kb) for m in src)
            h = self.world.hop_s(where[a], where[b], kb, self.now())
            rec["cost_usd"] += self.clouds.hop_usd(where[a], where[b], kb)
            await self._sleep(h)
            self.telemetry_rows.append({"t": self.now(), "hop": [where[a], where[b]], "kb": kb, "hop_s": h})

        async def unit(i: int) -> None:
            await asyncio.gather(*(edge(a, i) for a in preds[i]))
            await self._call(units, i, where[i], rec)
            done[i].set()

        try:
            await asyncio.gather(*(unit(i) for i in preds))
            rec["latency_s"] = self.now() - t_arr
            self.records.append(rec)
        finally:
            self.inflight -= 1

    async def probe(self, cloud: str, node: str) -> None:
        """One warm-up-and-measure invocation of ``node`` alone on ``cloud`` (its cost is counted)."""
        units = UnitGraph(self.wf)
        rec = {"cost_usd": 0.0, "cold_starts": 0, "queue_s": 0.0, "throttles": 0}
        await self._call(units, units.unit_of[node], cloud, rec, probe=True)
        self.probe_cost += rec["cost_usd"]

    def telemetry(self, since: int) -> tuple[int, list[dict]]:
        return len(self.telemetry_rows), self.telemetry_rows[since:]

    async def drain(self) -> dict:
        while self.inflight or self._tasks:
            await asyncio.sleep(0.02)
        return {"records": self.records, "probe_cost_usd": self.probe_cost,
                "instances": {c: p.instances for c, p in self.pools.items()}}


@dataclass
class Arm:
    """One strategy under load: a fixed plan, or a controller whose ``plan`` changes."""

    name: str
    plan: Plan
    controller: object | None = None
    versions: list[dict] = field(default_factory=list)


def run_load(workflow, arms: list[Arm], arrivals: list[float], *, time_scale: float = 0.05, seed: int = 0,
             events=None, world_file=None, control_s: float = 2.0, lookahead_s: float = 2.0) -> dict:
    """Replay ``arrivals`` (emulated s) against one world replica per arm, all arms at once."""
    import ray

    remote = ray.remote(num_cpus=0)(WorldHost)
    t0 = time.time() + 2.0
    hosts = [remote.remote(workflow, world_file, seed, events, time_scale, t0) for _ in arms]
    ray.get([h.ready.remote() for h in hosts])
    t0 = time.time() + 0.5
    ray.get([h.anchor.remote(t0) for h in hosts])  # re-anchor the clock once every actor is up
    version = [0] * len(arms)
    sent = [0] * len(arms)
    cursor = [0] * len(arms)
    for arm in arms:
        arm.versions = [{"t": 0.0, "version": 0, "placement": arm.plan.placement, "groups": arm.plan.groups}]
    next_control = control_s
    end = (arrivals[-1] if arrivals else 0.0) + lookahead_s
    first = [True] * len(arms)
    while True:
        now = (time.time() - t0) / time_scale
        for k, (arm, h) in enumerate(zip(arms, hosts, strict=True)):
            j = sent[k]
            while j < len(arrivals) and arrivals[j] < now + lookahead_s:
                j += 1
            if j > sent[k] or first[k]:
                h.start.remote(version[k], arrivals[sent[k]:j], arm.plan if first[k] else None)
                first[k], sent[k] = False, j
        if now >= next_control:
            next_control += control_s
            for k, (arm, h) in enumerate(zip(arms, hosts, strict=True)):
                ctl = arm.controller
                if ctl is None:
                    continue
                cursor[k], rows = ray.get(h.telemetry.remote(cursor[k]))
                new = ctl.update(now, rows)
                for cloud, node in ctl.probes(now):
                    h.probe.remote(cloud, node)
                if new is not None:
                    version[k] += 1
                    arm.plan = new
                    arm.versions.append({"t": now, "version": version[k], "placement": new.placement,
                                         "groups": new.groups})
                    h.start.remote(version[k], [], new)
        if now > end:
            break
        time.sleep(0.01)
    outs = ray.get([h.drain.remote() for h in hosts])
    for h in hosts:
        ray.kill(h)
    return {arm.name: {**out, "versions": arm.versions} for arm, out in zip(arms, outs, strict=True)}


def pct(xs, q: float) -> float:
    return float(np.percentile(np.asarray(xs), q)) if len(xs) else math.nan


def summarize(out: dict, plan: Plan, window: tuple[float, float] | None = None) -> dict:
    """p50/p95/p99 latency, cost per run, cold starts, queueing, throttles (optionally in a window)."""
    recs = [r for r in out["records"] if window is None or window[0] <= r["t"] < window[1]]
    lat = [r["latency_s"] for r in recs]
    n = max(1, len(out["records"]))
    cost = [r["cost_usd"] for r in recs]
    res = {"runs": len(recs), "p50_latency_s": pct(lat, 50), "p95_latency_s": pct(lat, 95),
           "p99_latency_s": pct(lat, 99), "cost_usd": float(np.mean(cost)) if cost else math.nan,
           "cold_starts_per_run": float(np.mean([r["cold_starts"] for r in recs])) if recs else math.nan,
           "queue_s_p95": pct([r["queue_s"] for r in recs], 95),
           "emulator_lag_s_p95": pct([r.get("lag_s", 0.0) for r in recs], 95),
           "throttles": int(sum(r["throttles"] for r in recs))}
    if window is None:
        res["cost_usd"] += out.get("probe_cost_usd", 0.0) / n  # probes are paid by the runs they serve
        res["predicted_latency_s"] = plan.predicted_latency_s
        res["predicted_cost_usd"] = plan.predicted_cost_usd
        res["prediction_error_p50"] = plan.predicted_latency_s / res["p50_latency_s"] - 1 if lat else math.nan
        res["plan_changes"] = len(out["versions"]) - 1
    return res
