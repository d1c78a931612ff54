"""The latency/cost model shared by the executor's emulated clock and the planners.

One code path: the executor charges a run with :meth:`Profile.exec_s` and
:meth:`Clouds.hop_s`/``hop_usd``/``run_usd``; the planners predict a plan
with :func:`predict` over the same functions (without noise or cold
starts; runs after the first are warm).

Notation (used by ``placement`` too):
  U          units (a node, or a fused group of nodes that runs as one invocation)
  E(u, c)    execution time of unit u on cloud c = its members' exec times list-scheduled on
             floor(vCPUs) slots, the vCPUs its memory buys on c (at least one slot; see
             ``CloudConfig.parallel_slots``); ``fusion="sequential"`` (XFaaS's generated fused
             functions) always uses one slot
  H(e,c,c')  hop latency of unit edge e = (u, v) carrying kb(e) from c to c'
  K(e,c,c')  hop price (orchestration + egress + claim check)
  R(u, c)    invocation price of u on c (request + GB-s at the unit's max memory)
  latency    = longest path over units of E + H;  cost = sum R + sum K
  B(c)       busy seconds one run holds on cloud c: sum of E(u, c) over its units there (a unit
             holds one instance for its makespan)
  overload   at a planned load of L runs/s, sum over clouds with a published concurrency quota
             Q(c) of max(0, L * B(c) - rho * Q(c)) (Little's law: executions in flight; rho is
             the utilisation the plan may use, 0.8). Planners add OVERLOAD_PENALTY_S per
             execution over it to the latency they minimise, so a plan fits the quotas first.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

OVERLOAD_PENALTY_S = 60.0  # seconds of latency the planners charge per concurrent execution over a quota


class Profile:
    """Per-(node, cloud) execution-time estimates.

    Priority: an override (observed running median, see ``adaptive``), the
    node's ``exec_ms`` for that cloud, else the geometric mean of its
    ``exec_ms`` (or ``default_exec_s``) times the cloud's speed factor.
    """

    def __init__(self, workflow, clouds, *, default_exec_s: float = 0.005):
        self.workflow, self.clouds, self.default_exec_s = workflow, clouds, default_exec_s
        self.overrides: dict[tuple[str, str], float] = {}
        self.slowdown: dict[str, float] = {}  # believed (or emulated) degradation of a cloud (exec and hops)
        self.hop_scale: dict[tuple[str, str], float] = {}  # benchmarked hop / clouds.yaml hop model, per pair
        self.load_rps: float | None = None  # the run rate a plan must carry within the quotas (None: ignore quotas)
        self.utilization = 0.8  # share of a quota a plan may fill at ``load_rps``

    def derive(self, clouds=None) -> Profile:
        """The same planner input (benchmark, planned load) over ``clouds`` (default: the same), no slow-downs."""
        out = Profile(self.workflow, clouds or self.clouds, default_exec_s=self.default_exec_s)
        out.overrides, out.hop_scale = dict(self.overrides), dict(self.hop_scale)
        out.load_rps, out.utilization = self.load_rps, self.utilization
        return out

    def base_exec_s(self, node: str, cloud: str) -> float:
        if (node, cloud) in self.overrides:
            return self.overrides[(node, cloud)]
        n = self.workflow.nodes[node]
        if cloud in n.exec_ms:
            return n.exec_ms[cloud] / 1000.0
        known = [v for v in n.exec_ms.values() if v > 0]
        ref = math.exp(sum(math.log(v / 1000.0) for v in known) / len(known)) if known else self.default_exec_s
        return ref * self.clouds.get(cloud).speed

    def exec_s(self, node: str, cloud: str) -> float:
        return self.base_exec_s(node, cloud) * self.slowdown.get(cloud, 1.0)

    def hop_s(self, src: str, dst: str, kb: float) -> float:
        f = max(self.slowdown.get(src, 1.0), self.slowdown.get(dst, 1.0))
        return self.clouds.hop_s(src, dst, kb) * f * self.hop_scale.get((src, dst), 1.0)

    def apply_benchmark(self, bench: dict) -> Profile:
        """Take a benchmark run's medians (``mixfleet xfaas profile`` output): per-(node, cloud) exec
        times, per-pair hop latencies and per-node payload sizes. Returns ``self``."""
        for node, per_cloud in bench.get("NodeBenchmarks", {}).items():
            for cloud, v in per_cloud.items():
                if node in self.workflow.nodes and cloud in self.clouds.names:
                    self.overrides[(node, cloud)] = float(v["Latency"]) / 1000.0
        for node, kb in bench.get("DataTransferSize", {}).items():
            if node in self.workflow.nodes:  # node specs are frozen: swap in a copy
                self.workflow.nodes[node] = self.workflow.nodes[node].model_copy(update={"output_kb": float(kb)})
        for pair, v in bench.get("EdgeBenchmarks", {}).items():
            src, _, dst = pair.partition("->")
            if src in self.clouds.names and dst in self.clouds.names:
                model = self.clouds.hop_s(src, dst, float(v["kb"]))
                if model > 0:
                    self.hop_scale[(src, dst)] = float(v["Latency"]) / 1000.0 / model
        return self


@dataclass
class Plan:
    """A placement (node -> cloud) with fusion groups and its predicted figures."""

    strategy: str
    placement: dict[str, str]
    groups: list[list[str]]
    predicted_latency_s: float = 0.0
    predicted_cost_usd: float = 0.0
    solve_time_s: float = 0.0
    status: str = "optimal"
    warnings: list[str] = field(default_factory=list)
    fusion: str = "vcpu"  # how a fused unit runs its branches: "vcpu" (up to its vCPUs) or "sequential"
    load_rps: float | None = None  # the load it was planned for
    overload: float = 0.0  # concurrent executions over the quotas at that load (see the module docstring)

    def to_json(self) -> dict:
        return {"strategy": self.strategy, "placement": dict(self.placement),
                "fusion_groups": [g for g in self.groups if len(g) > 1], "fusion_rule": self.fusion,
                "predicted_latency_s": self.predicted_latency_s, "predicted_cost_usd": self.predicted_cost_usd,
                "solve_time_s": self.solve_time_s, "status": self.status, "warnings": list(self.warnings),
                "planned_load_rps": self.load_rps, "overload_executions": self.overload}

    @property
    def effective_s(self) -> float:
        """The latency planners compare: predicted latency plus the overload penalty."""
        return self.predicted_latency_s + OVERLOAD_PENALTY_S * self.overload


class UnitGraph:
    """The workflow contracted by fusion groups (singletons when unfused)."""

    def __init__(self, workflow, groups: list[list[str]] | None = None, fusion: str = "vcpu"):
        self.workflow, self.fusion = workflow, fusion
        groups = groups or [[n] for n in workflow.order]
        self.unit_of: dict[str, int] = {}
        for i, g in enumerate(groups):
            for n in g:
                assert n not in self.unit_of, f"node {n} in two groups"
                self.unit_of[n] = i
        assert set(self.unit_of) == set(workflow.nodes), "groups must cover every node"
        pos = {n: i for i, n in enumerate(workflow.order)}
        self.members = [sorted(g, key=pos.__getitem__) for g in groups]
        kb: dict[tuple[int, int], float] = {}
        for u, v, _ in workflow.edges:
            a, b = self.unit_of[u], self.unit_of[v]
            if a != b:
                kb[(a, b)] = max(kb.get((a, b), 0.0), workflow.nodes[u].output_kb)
        self.edges = kb  # (unit, unit) -> KB
        self.memory_mb = [max(workflow.nodes[n].memory_mb for n in g) for g in self.members]
        self.order = self._topo()

    def _topo(self) -> list[int]:
        indeg = [0] * len(self.members)
        succ: dict[int, list[int]] = {i: [] for i in range(len(self.members))}
        for a, b in self.edges:
            indeg[b] += 1
            succ[a].append(b)
        ready = sorted(i for i, d in enumerate(indeg) if d == 0)
        out = []
        while ready:
            i = ready.pop(0)
            out.append(i)
            for j in succ[i]:
                indeg[j] -= 1
                if indeg[j] == 0:
                    ready.append(j)
        if len(out) != len(self.members):
            from mixfleet.errors import InputError

            raise InputError("fusion groups create a cycle between groups", "fuse along edges only")
        return out

    def unit_exec_s(self, i: int, cloud: str, exec_s, clouds=None) -> float:
        """Makespan of unit ``i`` on ``cloud``: members list-scheduled (in topological order, each as
        soon as its inputs inside the unit are done) on the slots the unit's memory buys there."""
        members = self.members[i]
        if len(members) == 1:
            return exec_s(members[0], cloud)
        return self.schedule(i, cloud, {m: exec_s(m, cloud) for m in members}, clouds)

    def slots(self, i: int, cloud: str, clouds=None) -> int:
        if self.fusion == "sequential":
            return 1
        if clouds is None:
            from mixfleet.xfaas.clouds import load_clouds

            clouds = load_clouds()
        return clouds.get(cloud).parallel_slots(self.memory_mb[i])

    def schedule(self, i: int, cloud: str, durations: dict[str, float], clouds=None) -> float:
        inside = set(self.members[i])
        free = [0.0] * self.slots(i, cloud, clouds)
        finish: dict[str, float] = {}
        for n in self.members[i]:
            ready = max((finish[p] for p in self.workflow.preds[n] if p in inside), default=0.0)
            k = min(range(len(free)), key=free.__getitem__)
            finish[n] = max(ready, free[k]) + durations.get(n, 0.0)
            free[k] = finish[n]
        return max(finish.values())


def predict(units: UnitGraph, cloud_of_unit: list[str], profile: Profile) -> tuple[float, float]:
    """Predicted (latency_s, cost_usd) of one warm run."""
    clouds = profile.clouds
    finish: dict[int, float] = {}
    cost = 0.0
    preds: dict[int, list[int]] = {i: [] for i in range(len(units.members))}
    for a, b in units.edges:
        preds[b].append(a)
    for i in units.order:
        c = cloud_of_unit[i]
        start = 0.0
        for a in preds[i]:
            kb = units.edges[(a, i)]
            start = max(start, finish[a] + profile.hop_s(cloud_of_unit[a], c, kb))
            cost += clouds.hop_usd(cloud_of_unit[a], c, kb)
        ex = units.unit_exec_s(i, c, profile.exec_s, clouds)
        finish[i] = start + ex
        cost += clouds.run_usd(c, ex, units.memory_mb[i])
    return max(finish.values()), cost


def busy_by_cloud(units: UnitGraph, cloud_of_unit: list[str], profile: Profile) -> dict[str, float]:
    """B(c): seconds of execution one run holds on each cloud."""
    busy: dict[str, float] = {}
    for i, c in enumerate(cloud_of_unit):
        busy[c] = busy.get(c, 0.0) + units.unit_exec_s(i, c, profile.exec_s, profile.clouds)
    return busy


def _in_flight(units: UnitGraph, cloud_of_unit: list[str], profile: Profile) -> list[tuple[str, float, int]]:
    """(cloud, executions in flight at ``profile.load_rps``, its quota) for each cloud with a quota."""
    return [(c, profile.load_rps * b, q) for c, b in busy_by_cloud(units, cloud_of_unit, profile).items()
            if (q := profile.clouds.get(c).concurrency_quota)]


def overload(units: UnitGraph, cloud_of_unit: list[str], profile: Profile) -> float:
    """Concurrent executions over the clouds' quotas at ``profile.load_rps`` (0 when no load is planned)."""
    if not profile.load_rps:
        return 0.0
    return sum(max(0.0, n - profile.utilization * q) for _, n, q in _in_flight(units, cloud_of_unit, profile))


def assess(units: UnitGraph, cloud_of_unit: list[str], profile: Profile, lam: float = 0.0
           ) -> tuple[float, float, float, float]:
    """(score, latency_s, cost_usd, overload): score = latency + lam * cost + the overload penalty."""
    lat, cost = predict(units, cloud_of_unit, profile)
    over = overload(units, cloud_of_unit, profile)
    return lat + lam * cost + OVERLOAD_PENALTY_S * over, lat, cost, over


def overload_note(plan: Plan, units: UnitGraph, profile: Profile) -> str | None:
    """A warning naming the clouds a plan overloads at its planned load, or None."""
    if plan.overload <= 0:
        return None
    over = [f"{c}: {n:.0f} executions in flight, quota {q}"
            for c, n, q in _in_flight(units, [plan.placement[g[0]] for g in units.members], profile)
            if n > profile.utilization * q]
    return (f"at {profile.load_rps:g} runs/s this plan fills more than {profile.utilization:.0%} of a concurrency "
            f"quota ({'; '.join(over)}); runs will queue there")


def evaluate(workflow, profile: Profile, placement: dict[str, str], groups: list[list[str]] | None = None,
             strategy: str = "fixed", fusion: str = "vcpu") -> Plan:
    """A :class:`Plan` for a given placement, with predicted figures."""
    units = UnitGraph(workflow, groups, fusion)
    cloud_of_unit = [placement[g[0]] for g in units.members]
    lat, cost = predict(units, cloud_of_unit, profile)
    return Plan(strategy, dict(placement), [list(g) for g in units.members], lat, cost, fusion=fusion)
