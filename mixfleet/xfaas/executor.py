"""The workflow executor: units as Ray tasks on their cloud's nodes, driven by one event loop.

Life cycle of a unit (a node, or a fused group run as one invocation):
``waiting -> running -> done | skipped | (failed -> retry_wait -> running) | (polling -> done)``.
A unit is dispatched when every predecessor unit is done or skipped, with
the references of the taken inputs (payloads go worker to worker). Retries
use exponential backoff with jitter from the executor's RNG; a timeout
force-cancels the attempt and counts as a failure; the last failure raises
:class:`JobError` naming the node, the attempt and the cause. A node's ``retries``
count the function's own failures and timeouts; a worker process or node that dies
under a unit is a platform failure, which Ray retries by itself (``SYSTEM_RETRIES``
times, lineage keeps the unit's output references valid for units already waiting on
them), as a FaaS platform re-runs an invocation whose sandbox died.

EMULATION: clouds are not reached. On an emulated cluster whose nodes carry
``cloud:<name>`` resources a unit runs on its cloud's nodes; otherwise its
cloud is a logical placement. Latency and cost are charged on an emulated
clock (:mod:`mixfleet.xfaas.model`): ``emulation="virtual"`` (default)
computes them without sleeping, ``"sleep"`` also injects the hop, cold-start
and exec delays for real (scaled by ``sleep_scale``), ``"off"`` charges no
hop latency (for measuring orchestration overhead). With ``world=`` (a
:class:`mixfleet.xfaas.world.World`) the virtual clock is charged by the world's draws (exec,
hops, cold starts) instead of the planner's model, so a run measures the plan rather than
restating its prediction.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from mixfleet.errors import JobError
from mixfleet.xfaas.accounting import RunResult, account_run
from mixfleet.xfaas.model import Plan, Profile, UnitGraph
from mixfleet.xfaas.runtime import UnitTask, run_poll, run_unit

EMULATIONS = ("virtual", "sleep", "off")
SYSTEM_RETRIES = 3  # Ray's retries of a unit whose worker died (never of the function's own exceptions)


_remote: dict[str, Any] = {}


def _remotes():
    if not _remote:
        import ray

        _remote["unit"] = ray.remote(run_unit)
        _remote["poll"] = ray.remote(run_poll)
    return _remote["unit"], _remote["poll"]


class Executor:
    """Runs one workflow repeatedly; keeps warm-container state and the emulated clouds."""

    def __init__(self, workflow, *, clouds=None, profile: Profile | None = None, emulation: str = "virtual",
                 sleep_scale: float = 1.0, rng: np.random.Generator | None = None,
                 clock: Callable[[], float] = time.monotonic, keep_alive_s: float = 600.0,
                 telemetry: bool = True, world=None):
        from mixfleet.errors import InputError
        from mixfleet.xfaas.clouds import load_clouds
        from mixfleet.xfaas.functions import resolve_all

        if emulation not in EMULATIONS:
            raise InputError(f"unknown emulation '{emulation}'", f"valid: {', '.join(EMULATIONS)}")
        self.workflow = workflow
        self.clouds = clouds or load_clouds()
        workflow.check_clouds(self.clouds)
        self.profile = profile or Profile(workflow, self.clouds)
        self.emulation, self.sleep_scale = emulation, sleep_scale
        self.world = world  # when set, runs are charged by the EMULATED world, not the planner's model
        self.rng = rng or np.random.default_rng(0)
        self.clock, self.keep_alive_s, self.telemetry = clock, keep_alive_s, telemetry
        self.fns = resolve_all(workflow)  # raises before anything runs
        self._warm: dict[tuple[str, str], float] = {}
        self._cloud_nodes: set[str] | None = None

    # ------------------------------------------------------------------------------------------
    def _cloud_resources(self) -> set[str]:
        if self._cloud_nodes is None:
            import ray

            from mixfleet.xfaas.clouds import RESOURCE_PREFIX

            self._cloud_nodes = {k[len(RESOURCE_PREFIX):] for k in ray.cluster_resources()
                                 if k.startswith(RESOURCE_PREFIX)}
        return self._cloud_nodes

    def _options(self, cloud: str, num_returns: int) -> dict:
        opts: dict = {"num_returns": num_returns, "max_retries": SYSTEM_RETRIES, "num_cpus": 0.25}
        if cloud in self._cloud_resources():
            opts["resources"] = {f"cloud:{cloud}": 0.001}
        return opts

    def _remote_for(self, fn, cloud: str, num_returns: int):
        key = (cloud, num_returns)
        cache = self.__dict__.setdefault("_remote_cache", {})
        if key not in cache:
            cache[key] = fn.options(**self._options(cloud, num_returns))
        return cache[key]

    def _build(self, units: UnitGraph, cloud_of_unit: list[str]) -> list[UnitTask]:
        wf = self.workflow
        tasks = []
        for i, members in enumerate(units.members):
            inside = set(members)
            inputs, ext_index = {}, 0
            for m in members:
                lst = []
                for p in wf.preds[m]:
                    if p in inside:
                        lst.append(("int", p))
                    else:
                        lst.append(("ext", ext_index))
                        ext_index += 1
                inputs[m] = lst
            exports = [m for m in members if any(s not in inside for s in wf.succs[m]) or not wf.succs[m]]
            limit = {}
            for m in exports:
                outs = [cloud_of_unit[units.unit_of[s]] for s in wf.succs[m] if s not in inside]
                limit[m] = min((self.clouds.limit_kb(cloud_of_unit[i], c) for c in outs), default=float("inf"))
            when = {(u, v): f for (u, v), f in self.fns["__when__"].items() if u in inside}
            tasks.append(UnitTask(name="+".join(members), members=list(members),
                                  fns={m: self.fns[m]["fn"] for m in members}, inputs=inputs, exports=exports,
                                  limit_kb=limit, when=when,
                                  source_members=[m for m in members if not wf.preds[m]]))
        return tasks

    # ------------------------------------------------------------------------------------------
    def run(self, payload: Any, plan: Plan, *, on_event: Callable[[str, str], None] | None = None) -> RunResult:
        """Run once with ``plan`` (its placement and fusion groups); blocks until done."""
        import ray

        wf, clouds, prof = self.workflow, self.clouds, self.profile
        units = UnitGraph(wf, plan.groups, plan.fusion)
        cloud_of_unit = [plan.placement[g[0]] for g in units.members]
        for m in wf.nodes:
            clouds.check(plan.placement[m])
        tasks = self._build(units, cloud_of_unit)
        unit_fn, poll_fn = _remotes()
        n = len(units.members)
        upreds: dict[int, list[int]] = {i: [] for i in range(n)}
        for a, b in units.edges:
            upreds[b].append(a)
        state = ["waiting"] * n
        out_refs: dict[str, Any] = {}      # member -> payload ref (exports)
        metas: dict[int, dict] = {}
        attempts = [0] * n
        failed_v = [0.0] * n               # emulated time lost in failed attempts and backoffs
        cold = [False] * n
        async_t0: dict[int, float] = {}
        polls = [0] * n
        inflight: dict[Any, tuple[int, str, float | None, list]] = {}  # meta ref -> (unit, kind, deadline, refs)
        timers: list[tuple[float, int, int, str, Any]] = []  # (due, seq, unit, kind, arg)
        seq = 0
        wall0 = self.clock()
        input_ref = ray.put(payload)

        def emit(i: int, what: str) -> None:
            if on_event:
                on_event(tasks[i].name, what)

        def policy(i: int):
            ms = [wf.nodes[m] for m in units.members[i]]
            timeouts = [m.timeout_s for m in ms]
            timeout = sum(timeouts) if all(t is not None for t in timeouts) else None
            return max(ms, key=lambda m: m.retries.max_attempts).retries, timeout

        def taken_inputs(i: int) -> list | None:
            refs, any_taken = [], False
            for m in units.members[i]:
                for p in wf.preds[m]:
                    if units.unit_of[p] == i:
                        continue
                    pm = metas.get(units.unit_of[p])
                    ok = (pm is not None and pm["ran"].get(p) and pm["take"].get(f"{p}->{m}", True))
                    refs.append(out_refs[p] if ok else None)
                    any_taken |= bool(ok)
            return refs if (any_taken or not refs) else None

        usuccs: dict[int, list[int]] = {i: [] for i in range(n)}
        for a, b in units.edges:
            usuccs[a].append(b)

        def eager_ok(i: int, j: int) -> bool:
            """Can ``j`` be dispatched as soon as ``i`` is, its input passed as a pending reference?
            Only when ``i`` is its sole upstream unit, no condition sits between them, neither gets a
            retry or timeout (a failure ends the run; a timeout counts from dispatch), every member of ``i`` is certain to run
            (all its inputs taken, no condition into it) and neither is an async node."""
            pol, timeout = policy(i)
            pol_j, timeout_j = policy(j)  # j's timeout would otherwise count i's run; its retries need i's meta
            return (upreds[j] == [i] and pol.max_attempts == 1 and timeout is None
                    and pol_j.max_attempts == 1 and timeout_j is None
                    and state[j] == "waiting" and full_inputs.get(i, False)
                    and not any(v in units.members[i] for (_, v) in wf.conditions)  # no member of i can be skipped
                    and not any(wf.nodes[m].async_ for m in units.members[i] + units.members[j])
                    and not any((u, v) in wf.conditions for u in units.members[i] for v in units.members[j]))

        full_inputs: dict[int, bool] = {}  # unit -> dispatched with every external input taken

        def dispatch(i: int, eager: bool = False) -> None:
            nonlocal seq
            if eager:  # every input comes from the one upstream unit, unconditionally
                refs = [out_refs[p] for m in units.members[i] for p in wf.preds[m] if units.unit_of[p] != i]
            else:
                refs = taken_inputs(i)
            full_inputs[i] = refs is not None and all(r is not None for r in refs)
            if refs is None:
                state[i] = "skipped"
                metas[i] = {"ran": {m: False for m in units.members[i]}, "take": {}, "exec_s": {},
                            "out_kb": {}, "claim": {}, "node_id": ""}
                emit(i, "skipped")
                return
            task = tasks[i]
            c = cloud_of_unit[i]
            key = (task.name, c)
            last = self._warm.get(key)
            cold[i] = last is None or self.clock() - last > self.keep_alive_s
            if self.emulation == "sleep":
                hop = max((prof.hop_s(cloud_of_unit[a], c, units.edges[(a, i)]) for a in upreds[i]), default=0.0)
                task.sleep_s = self.sleep_scale * (hop + (clouds.get(c).cold_start_s if cold[i] else 0.0))
                task.sleep_exec_s = {m: self.sleep_scale * prof.exec_s(m, c) for m in task.members
                                     if c in wf.nodes[m].exec_ms}
            # taken external inputs become positional args; untaken ones map to None
            args, remap = [], {}
            for j, r in enumerate(refs):
                if r is not None:
                    remap[j] = len(args)
                    args.append(r)
            task_inputs = {m: [("ext", remap.get(v)) if k == "ext" else (k, v) for k, v in lst]
                           for m, lst in task.inputs.items()}
            run_task = UnitTask(**{**task.__dict__, "inputs": task_inputs})
            attempts[i] += 1
            src_arg = input_ref if task.source_members else None  # only sources wait on the input object
            refs_out = self._remote_for(unit_fn, c, 1 + len(task.exports)).remote(run_task, *args, src_arg)
            if not isinstance(refs_out, list):
                refs_out = [refs_out]
            _, timeout = policy(i)
            deadline = self.clock() + timeout if timeout else None
            inflight[refs_out[0]] = (i, "run", deadline, refs_out)
            for m, r in zip(task.exports, refs_out[1:], strict=True):
                out_refs[m] = r
            state[i] = "running"
            emit(i, "running" if attempts[i] == 1 else f"retry {attempts[i]}")
            for j in usuccs[i]:  # pipeline: Ray starts j when i's output exists, no driver round trip
                if eager_ok(i, j):
                    dispatch(j, eager=True)

        def fail(i: int, cause: str, lost_v: float, transient: bool = True) -> None:
            nonlocal seq
            pol, _ = policy(i)
            failed_v[i] += lost_v
            if attempts[i] >= pol.max_attempts:
                # The run is over. What it still has in flight is left to end by itself, not cancelled:
                # units queued behind the failed one fail on its error without running, the others
                # finish and are dropped. A forced cancel kills by worker lease, which Ray may have
                # handed to another run's unit; a polite cancel of a unit whose reply is on its way
                # crashed the driver's core worker (Ray "Check failed: Tried to complete task that was
                # not pending", seen once in this suite on a failure ahead of pipelined units).
                hint = ("a retry may fix this (timeout, I/O or a lost worker): raise retries.max_attempts "
                        "or timeout_s" if transient else
                        "the function itself raised on its input, which a retry will not fix: fix the function "
                        "or its input")
                raise JobError(f"node '{tasks[i].name}' failed on attempt {attempts[i]}/{pol.max_attempts} "
                               f"in workflow '{wf.spec.name}': {cause}", hint)
            delay = min(pol.backoff_max_s, pol.backoff_s * 2 ** (attempts[i] - 1))
            delay *= 1 + pol.jitter * self.rng.uniform(-1, 1)
            failed_v[i] += delay
            state[i] = "retry_wait"
            emit(i, f"failed ({cause}); retrying in {delay:.3f}s")
            seq += 1
            heapq.heappush(timers, (self.clock() + delay, seq, i, "retry", None))

        def finish(i: int) -> None:
            state[i] = "done"
            self._warm[(tasks[i].name, cloud_of_unit[i])] = self.clock()
            emit(i, "done")

        def start_ready() -> None:
            for i in units.order:
                if state[i] == "waiting" and all(state[a] in ("done", "skipped") for a in upreds[i]):
                    dispatch(i)

        start_ready()
        while any(s not in ("done", "skipped") for s in state):
            now = self.clock()
            waits = [d - now for (_, _, d, _) in inflight.values() if d is not None]
            if timers:
                waits.append(timers[0][0] - now)
            timeout = max(0.0, min(waits)) if waits else None
            ready = []
            if inflight:
                ready, _ = ray.wait(list(inflight), num_returns=1, timeout=timeout)
            elif timeout:
                time.sleep(timeout)
            for ref in ready:
                i, kind, _, refs_out = inflight.pop(ref)
                try:
                    meta = ray.get(ref)
                except ray.exceptions.RayError as exc:  # worker died, task cancelled, object lost
                    meta = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0]}"}
                if meta.get("upstream_failed"):
                    state[i] = "waiting_upstream"  # the upstream unit's own failure decides the run
                    continue
                if meta.get("error"):
                    fail(i, meta["error"], 0.0, meta.get("transient", True))
                    continue
                if kind == "run":
                    metas[i] = meta
                    node = wf.nodes[units.members[i][0]]
                    if node.async_ is not None:
                        state[i] = "polling"
                        async_t0[i] = self.clock()
                        seq += 1
                        heapq.heappush(timers, (self.clock() + node.async_.interval_s, seq, i, "poll", None))
                    else:
                        finish(i)
                else:  # a poll came back
                    if meta["done"]:
                        m = units.members[i][0]
                        out_refs[m] = refs_out[1]
                        metas[i]["out_kb"][m] = meta["out_kb"]
                        metas[i]["async_s"] = self.clock() - async_t0[i]
                        metas[i]["polls"] = polls[i]
                        finish(i)
                    else:
                        node = wf.nodes[units.members[i][0]]
                        if polls[i] >= node.async_.max_polls:
                            raise JobError(f"node '{tasks[i].name}' in workflow '{wf.spec.name}' was not done "
                                           f"after {polls[i]} polls", "raise async.max_polls or check the backend")
                        seq += 1
                        heapq.heappush(timers, (self.clock() + node.async_.interval_s, seq, i, "poll", None))
            now = self.clock()
            for ref, (i, _kind, deadline, _) in list(inflight.items()):
                if deadline is not None and now >= deadline:
                    if ray.wait([ref], timeout=0)[0]:
                        continue  # it finished as its time ran out: the next round takes its result
                    inflight.pop(ref)
                    ray.cancel(ref, force=True)
                    fail(i, f"timed out after {policy(i)[1]:g} s", policy(i)[1] or 0.0)
            while timers and timers[0][0] <= self.clock():
                _, _, i, kind, _ = heapq.heappop(timers)
                if kind == "retry":
                    dispatch(i)
                else:
                    polls[i] += 1
                    m = units.members[i][0]
                    r = poll_fn.options(num_returns=2, max_retries=SYSTEM_RETRIES, num_cpus=0.25).remote(
                        self.fns[m]["poll"], out_refs[m])
                    inflight[r[0]] = (i, "poll", None, r)
            start_ready()
        wall = self.clock() - wall0
        self._runs = getattr(self, "_runs", 0) + 1
        run_id = (id(self) % 100_000) * 100_000 + self._runs
        result = account_run(self, units, cloud_of_unit, tasks, metas, state, attempts, cold, failed_v, out_refs,
                             plan, wall, run_id)
        if self.telemetry:
            from mixfleet.xfaas._telemetry import push_run

            push_run(result)
        return result

