"""Accounting of one workflow run on the emulated clock: latency, cost, per-node rows.

With an executor ``world`` (the CLI's ``run`` always passes one) exec times, hops and cold starts
are the EMULATED world's draws (:mod:`mixfleet.xfaas.world`). Without one, the clock follows
:mod:`mixfleet.xfaas.model` (the planners' model, kept for unit tests of the executor): a unit
starts when its last taken input has arrived (upstream finish + hop latency,
with lognormal noise from the executor's RNG) plus any cold start and the
time lost in failed attempts and backoffs; it runs for the longest path of
its members' exec times (benchmark profile per cloud where the node has
one, else the measured time times the cloud's speed factor). Cost is the
invocations (each attempt billed) plus every taken hop's price.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mixfleet.platform.output import check_json
from mixfleet.xfaas.runtime import ClaimCheck


@dataclass
class RunResult:
    workflow: str
    output: Any
    latency_s: float  # on the emulated clock
    wall_s: float
    cost_usd: float
    placement: dict[str, str]
    nodes: list[dict] = field(default_factory=list)
    claim_checks: int = 0
    emulation: str = "virtual"
    run_id: int = 0
    hops: list = field(default_factory=list)  # (src cloud, dst cloud, KB, emulated latency s) per taken hop

    def to_json(self) -> dict:
        return {"output": self.output, "latency_s": self.latency_s, "cost_usd": self.cost_usd,
                "placement": self.placement, "nodes": self.nodes, "wall_s": self.wall_s,
                "claim_checks": self.claim_checks,
                "emulation": f"clouds emulated ({self.emulation} clock); latency and cost are modelled"}



def account_run(executor, units, cloud_of_unit, tasks, metas, state, attempts, cold, failed_v, out_refs, plan, wall,
                run_id: int) -> RunResult:
    """Charge a finished run on the emulated clock and fetch its output (``executor``: the Executor)."""
    import ray

    wf, clouds, prof = executor.workflow, executor.clouds, executor.profile
    emulation, rng = executor.emulation, executor.rng
    world = getattr(executor, "world", None)
    sig = clouds.config.noise
    finish_v: dict[int, float] = {}
    cost = 0.0
    rows = []
    n_claims = 0
    upreds: dict[int, list[int]] = {i: [] for i in range(len(units.members))}
    for a, b in units.edges:
        upreds[b].append(a)
    hop_obs: list[tuple[str, str, float, float]] = []
    for i in units.order:
        meta, c = metas[i], cloud_of_unit[i]
        if state[i] == "skipped":
            finish_v[i] = max((finish_v[a] for a in upreds[i]), default=0.0)
            rows += [{"node": m, "cloud": c, "skipped": True} for m in units.members[i]]
            continue
        start = 0.0
        for a in upreds[i]:
            if state[a] != "done":
                continue
            src_members = [m for m in units.members[a] if any(units.unit_of.get(s) == i for s in wf.succs[m])]
            kb = max((metas[a]["out_kb"].get(m, wf.nodes[m].output_kb) for m in src_members), default=0.0)
            kb = max(kb, max(wf.nodes[m].output_kb for m in src_members))
            if world is not None:
                hop = 0.0 if emulation == "off" else world.hop_s(cloud_of_unit[a], c, kb, finish_v[a])
            else:
                hop = 0.0 if emulation == "off" else prof.hop_s(cloud_of_unit[a], c, kb)
                hop *= float(rng.lognormal(0.0, sig.hop_sigma)) if sig.hop_sigma else 1.0
            hop_obs.append((cloud_of_unit[a], c, kb, hop))
            start = max(start, finish_v[a] + hop)
            cost += clouds.hop_usd(cloud_of_unit[a], c, kb)
            if kb > clouds.limit_kb(cloud_of_unit[a], c):
                n_claims += 1
        if cold[i] and emulation != "off":
            start += world.cold_start_s(c, units.memory_mb[i], start) if world is not None else clouds.get(c).cold_start_s
        start += failed_v[i]

        def exec_v(m: str, cloud: str, meta=meta, t=start) -> float:
            if "async_s" in meta:
                return meta["async_s"]
            if world is not None:
                return world.exec_for(wf.spec.name, m, cloud, t, meta["exec_s"].get(m, 0.0))
            if wf.nodes[m].exec_ms or (m, cloud) in prof.overrides:  # a benchmark profile: the planner's model
                e = prof.exec_s(m, cloud)
            else:
                e = meta["exec_s"].get(m, 0.0) * clouds.get(cloud).speed * prof.slowdown.get(cloud, 1.0)
            return e * (float(rng.lognormal(0.0, sig.exec_sigma)) if sig.exec_sigma else 1.0)

        member_v = {m: exec_v(m, c) for m in units.members[i] if meta["ran"].get(m)}
        ex = units.unit_exec_s(i, c, lambda m, _c, mv=member_v: mv.get(m, 0.0), clouds)
        finish_v[i] = start + ex
        run_cost = clouds.run_usd(c, ex, units.memory_mb[i]) * attempts[i]
        cost += run_cost
        for m in units.members[i]:
            rows.append({"node": m, "cloud": c, "unit": tasks[i].name, "skipped": not meta["ran"].get(m),
                         "attempts": attempts[i], "cold_start": cold[i], "exec_s": member_v.get(m, 0.0),
                         "start_s": start, "finish_s": finish_v[i],
                         "cost_usd": run_cost / len(units.members[i]),
                         "out_kb": meta["out_kb"].get(m), "claim_check": bool(meta["claim"].get(m)),
                         "ray_node_id": meta.get("node_id", ""), "polls": meta.get("polls")})
    ran_sinks = [s for s in wf.sinks if metas[units.unit_of[s]]["ran"].get(s)]
    values = [ray.get(out_refs[s]) for s in ran_sinks]
    values = [ray.get(v.ref[0]) if isinstance(v, ClaimCheck) else v for v in values]
    for s, v in zip(ran_sinks, values, strict=True):
        check_json(v, f"the output of node '{s}' in workflow '{wf.spec.name}'")
    output = values[0] if len(wf.sinks) == 1 and values else dict(zip(ran_sinks, values, strict=False))
    latency = max(finish_v.values())
    return RunResult(wf.spec.name, output, latency, wall, cost, dict(plan.placement), rows, n_claims,
                     emulation, run_id=run_id, hops=hop_obs)
