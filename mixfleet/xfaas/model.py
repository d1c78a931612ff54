"""The latency/cost model shared by the executor's emulated clock and the planners.

One code path: the executor charges a run with :meth:`Profile.exec_s` and
:meth:`Clouds.hop_s`/``hop_usd``/``run_usd``; the planners predict a plan
with :func:`predict` over the same functions (without noise or cold
starts; runs after the first are warm).

Notation (used by ``placement`` too):
  U          units (a node, or a fused group of nodes that runs as one invocation)
  E(u, c)    execution time of unit u on cloud c = longest path of its members'
             exec times inside the unit (members on independent branches run on threads)
  H(e,c,c')  hop latency of unit edge e = (u, v) carrying kb(e) from c to c'
  K(e,c,c')  hop price (orchestration + egress + claim check)
  R(u, c)    invocation price of u on c (request + GB-s at the unit's max memory)
  latency    = longest path over units of E + H;  cost = sum R + sum K
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


class Profile:
    """Per-(node, cloud) execution-time estimates.

    Priority: an override (observed running median, see ``adaptive``), the
    node's ``exec_ms`` for that cloud, else the geometric mean of its
    ``exec_ms`` (or ``default_exec_s``) times the cloud's speed factor.
    """

    def __init__(self, workflow, clouds, *, default_exec_s: float = 0.005):
        self.workflow, self.clouds, self.default_exec_s = workflow, clouds, default_exec_s
        self.overrides: dict[tuple[str, str], float] = {}
        self.slowdown: dict[str, float] = {}  # emulated degradation of a cloud (exec and hops)

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
        return self.clouds.hop_s(src, dst, kb) * f


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

    def to_json(self) -> dict:
        return {"strategy": self.strategy, "placement": dict(self.placement),
                "fusion_groups": [g for g in self.groups if len(g) > 1],
                "predicted_latency_s": self.predicted_latency_s, "predicted_cost_usd": self.predicted_cost_usd,
                "solve_time_s": self.solve_time_s, "status": self.status, "warnings": list(self.warnings)}


class UnitGraph:
    """The workflow contracted by fusion groups (singletons when unfused)."""

    def __init__(self, workflow, groups: list[list[str]] | None = None):
        self.workflow = workflow
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

    def unit_exec_s(self, i: int, cloud: str, exec_s) -> float:
        """Longest path of member exec times inside unit ``i`` (``exec_s(node, cloud)``)."""
        members = self.members[i]
        inside = set(members)
        finish: dict[str, float] = {}
        for n in members:
            start = max((finish[p] for p in self.workflow.preds[n] if p in inside), default=0.0)
            finish[n] = start + exec_s(n, cloud)
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
        ex = units.unit_exec_s(i, c, profile.exec_s)
        finish[i] = start + ex
        cost += clouds.run_usd(c, ex, units.memory_mb[i])
    return max(finish.values()), cost


def evaluate(workflow, profile: Profile, placement: dict[str, str], groups: list[list[str]] | None = None,
             strategy: str = "fixed") -> Plan:
    """A :class:`Plan` for a given placement, with predicted figures."""
    units = UnitGraph(workflow, groups)
    cloud_of_unit = [placement[g[0]] for g in units.members]
    lat, cost = predict(units, cloud_of_unit, profile)
    return Plan(strategy, dict(placement), [list(g) for g in units.members], lat, cost)
