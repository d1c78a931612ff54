"""Placement baselines: XFaaS's single cut, and the exact DP for chains (an ILP cross-check).

XFaaS single cut (CCGrid 2023): order the functions topologically, put a
prefix on one cloud and the rest on another (one cut, chosen once from
offline benchmarks); every ordered cloud pair and every cut position is
tried, the lowest predicted latency wins. Cut positions that would break a
pin are skipped.

Chain DP: for a chain n_1 -> ... -> n_k,
``D[i][c] = R'(n_i, c) + min_c' (D[i-1][c'] + H'(c', c))`` where ``R'`` and
``H'`` add ``lambda * price`` to the latencies; exact in ``O(k |C|^2)``.
"""

from __future__ import annotations

from mixfleet.errors import InputError
from mixfleet.xfaas.model import Plan, Profile, UnitGraph, predict


def xfaas_cut(workflow, profile: Profile) -> Plan:
    clouds = profile.clouds
    order = workflow.order
    units = UnitGraph(workflow)
    allowed = {n: workflow.allowed_clouds(n, clouds) for n in order}
    best: Plan | None = None
    general = clouds.general()
    for a in general:
        for b in general:
            for k in range(len(order) + 1):
                placement = {}
                for j, n in enumerate(order):
                    want = a if j < k else b
                    placement[n] = want if want in allowed[n] else (allowed[n][0] if len(allowed[n]) == 1 else None)
                if any(v is None for v in placement.values()):
                    continue
                lat, cost = predict(units, [placement[g[0]] for g in units.members], profile)
                if best is None or (lat, cost) < (best.predicted_latency_s, best.predicted_cost_usd):
                    best = Plan("xfaas_cut", placement, [list(g) for g in units.members], lat, cost, 0.0,
                                f"cut after {k} of {len(order)}: {a} | {b}")
    assert best is not None
    return best


def chain_order(workflow) -> list[str]:
    """The nodes of a chain in order; :class:`InputError` if the workflow is not a chain."""
    for n in workflow.nodes:
        if len(workflow.preds[n]) > 1 or len(workflow.succs[n]) > 1:
            raise InputError(f"workflow '{workflow.spec.name}' is not a chain (node '{n}' branches)",
                             "the chain DP applies to chains only; use the ILP")
    return workflow.order


def chain_dp(workflow, profile: Profile, *, lam: float = 0.0) -> Plan:
    clouds = profile.clouds
    chain = chain_order(workflow)
    units = UnitGraph(workflow)
    D: list[dict[str, float]] = []
    back: list[dict[str, str]] = []
    for i, n in enumerate(chain):
        node = workflow.nodes[n]
        row, arg = {}, {}
        for c in workflow.allowed_clouds(n, clouds):
            e = profile.exec_s(n, c)
            here = e + lam * clouds.run_usd(c, e, node.memory_mb)
            if i == 0:
                row[c] = here
                continue
            kb = workflow.nodes[chain[i - 1]].output_kb
            best = min(D[-1], key=lambda p: D[-1][p] + profile.hop_s(p, c, kb) + lam * clouds.hop_usd(p, c, kb))
            row[c] = D[-1][best] + profile.hop_s(best, c, kb) + lam * clouds.hop_usd(best, c, kb) + here
            arg[c] = best
        D.append(row)
        back.append(arg)
    c = min(D[-1], key=D[-1].get)
    placement = {}
    for i in range(len(chain) - 1, -1, -1):
        placement[chain[i]] = c
        if i:
            c = back[i][c]
    lat, cost = predict(units, [placement[g[0]] for g in units.members], profile)
    plan = Plan("chain_dp", placement, [list(g) for g in units.members], lat, cost, 0.0, "optimal")
    plan.objective = min(D[-1].values())
    return plan
