"""Fusion planner in the style of XFaaS's Algorithm 1, combined with the placement ILP.

Start from the ILP placement of the unfused workflow. Repeat: walk the
critical path of the current plan; every pair of consecutive units on it is
a candidate merge, and so is a unit on it with all its branches (fan-out)
or all its inputs (fan-in) (the merged unit runs as one invocation on one cloud:
the hop between them disappears, members on independent branches run on
threads, the invocation is billed at the largest member memory). A
candidate is scored by its best cloud (others held fixed): it must cut
latency (``dlat < 0``) and keep the cost under ``cost_cap`` times the
unfused plan's cost (XFaaS caps at 1.2x); candidates that also cut cost
come first, by the latency they save; the rest rank by ``dlat / dcost``
(latency bought per dollar). The best merge is applied and the whole
placement re-solved by the ILP. Stops when no candidate qualifies. Under a planned
load (``Profile.load_rps``) every latency compared here includes the overload
penalty (see :mod:`mixfleet.xfaas.model`), so a merge that would overfill a
cloud's concurrency quota does not count as a gain.

Merges never fuse async (submit/poll) nodes or nodes with different pins or
needs, and never create a cycle between units.
"""

from __future__ import annotations

import time

from mixfleet.errors import InputError
from mixfleet.xfaas.model import Plan, Profile, UnitGraph, assess
from mixfleet.xfaas.placement import solve_ilp, unit_allowed


def critical_path(units: UnitGraph, cloud_of_unit: list[str], profile: Profile) -> list[int]:
    """Units on the longest path (latency) under the given placement, in order."""
    preds: dict[int, list[int]] = {i: [] for i in range(len(units.members))}
    for a, b in units.edges:
        preds[b].append(a)
    finish, via = {}, {}
    for i in units.order:
        start, arg = 0.0, None
        for a in preds[i]:
            t = finish[a] + profile.hop_s(cloud_of_unit[a], cloud_of_unit[i], units.edges[(a, i)])
            if t > start:
                start, arg = t, a
        finish[i] = start + units.unit_exec_s(i, cloud_of_unit[i], profile.exec_s, profile.clouds)
        via[i] = arg
    node = max(finish, key=finish.get)
    path = [node]
    while via[node] is not None:
        node = via[node]
        path.append(node)
    return path[::-1]


def _local_search(units: UnitGraph, clouds_of: list[str], allowed: list[list[str]], profile: Profile,
                  lam: float, fixed: int | None = None, sweeps: int = 3) -> tuple[float, float, list[str]]:
    """Cheap re-placement for scoring a merge: move one unit at a time to its best cloud.

    Returns (effective latency, cost, placement): the latency includes the overload penalty."""
    score, _, cost, _ = assess(units, clouds_of, profile, lam)
    for _ in range(sweeps):
        moved = False
        for u in units.order:
            if u == fixed or len(allowed[u]) < 2:
                continue
            keep = clouds_of[u]
            for c in allowed[u]:
                if c == keep:
                    continue
                clouds_of[u] = c
                s2, _, c2, _ = assess(units, clouds_of, profile, lam)
                if s2 < score - 1e-9:
                    score, cost, keep, moved = s2, c2, c, True
            clouds_of[u] = keep
        if not moved:
            break
    return score - lam * cost, cost, clouds_of


def _fusable(workflow, group: list[str]) -> bool:
    return all(workflow.nodes[n].async_ is None for n in group)


def _candidates(workflow, groups: list[list[str]], placement: dict[str, str], profile: Profile, lam: float,
                fusion: str = "vcpu", pairs_only: bool = False):
    """Every candidate merge with its best placement: yields (new_groups, placement, lat, cost)."""
    units = UnitGraph(workflow, groups, fusion)
    cloud_of_unit = [placement[g[0]] for g in units.members]
    path = critical_path(units, cloud_of_unit, profile)
    succ: dict[int, list[int]] = {i: [] for i in range(len(units.members))}
    pred: dict[int, list[int]] = {i: [] for i in range(len(units.members))}
    for x, y in units.edges:
        succ[x].append(y)
        pred[y].append(x)
    cands = list(zip(path, path[1:], strict=False))  # XFaaS: consecutive pairs on the critical path
    if not pairs_only:
        cands += [(a, *succ[a]) for a in path if len(succ[a]) > 1]  # a fan-out with all its branches
        cands += [(*pred[b], b) for b in path if len(pred[b]) > 1]  # a fan-in with all its inputs
    for cand in cands:
        merged = [n for k in cand for n in units.members[k]]
        if not _fusable(workflow, merged):
            continue
        new_groups = [g for k, g in enumerate(units.members) if k not in cand] + [merged]
        try:
            new_units = UnitGraph(workflow, new_groups, fusion)
            allowed = unit_allowed(workflow, new_units, profile.clouds)
        except InputError:  # a cycle between units, or no common cloud
            continue
        m = new_units.unit_of[merged[0]]
        for c in allowed[m]:
            others = [placement[g[0]] for g in new_units.members]
            others[m] = c
            lat, cost, where = _local_search(new_units, others, allowed, profile, lam, fixed=m)
            yield new_groups, {n: where[u] for u, g in enumerate(new_units.members) for n in g}, lat, cost


def _best(options, cur_lat: float, cur_cost: float, cap: float):
    """The best improving merge: cheaper-and-faster first (by latency saved), then by dlat/dcost."""
    best = None
    for groups, _placement, lat, cost in options:
        dlat, dcost = lat - cur_lat, cost - cur_cost
        if dlat >= -1e-9 or cost > cap * (1 + 1e-9):
            continue
        key = (0, dlat, dcost) if dcost <= 0 else (1, dlat / dcost, dlat)
        if best is None or key < best[0]:
            best = (key, groups)
    return best


def plan_fusion(workflow, profile: Profile, *, lam: float = 0.0, budget: float | None = None,
                cost_cap: float = 1.2, max_rounds: int = 200, fusion: str = "vcpu", pairs_only: bool = False,
                strategy: str = "ilp_fusion") -> Plan:
    """Greedy fusion + ILP placement. When no single merge helps, one two-merge lookahead is tried
    (a merge that only pays off once its neighbour is merged too) before stopping.

    ``fusion`` is the rule fused units run by (``vcpu``: branches in parallel up to the vCPUs the
    unit's memory buys; ``sequential``: one member at a time, as XFaaS's generated code does);
    ``pairs_only`` keeps XFaaS's candidate set (consecutive pairs on the critical path)."""
    t0 = time.perf_counter()
    base = solve_ilp(workflow, profile, lam=lam, budget=budget, fusion=fusion)
    cap = cost_cap * base.predicted_cost_usd
    groups = [list(g) for g in base.groups]
    plan = base
    for _ in range(max_rounds):
        cur_lat, cur_cost = plan.effective_s, plan.predicted_cost_usd
        options = list(_candidates(workflow, groups, plan.placement, profile, lam, fusion, pairs_only))
        best = _best(options, cur_lat, cur_cost, cap)
        if best is None:  # lookahead: the best improving second merge after any first one
            for g1, p1, _lat, cost1 in options:
                if cost1 <= cap * (1 + 1e-9):
                    b2 = _best(_candidates(workflow, g1, p1, profile, lam, fusion, pairs_only), cur_lat, cur_cost,
                               cap)
                    if b2 is not None and (best is None or b2[0] < best[0]):
                        best = b2
        if best is None:
            break
        groups = best[1]
        candidate = solve_ilp(workflow, profile, groups, lam=lam, budget=budget, strategy=strategy, fusion=fusion)
        if candidate.effective_s > cur_lat + 1e-9:
            break  # the ILP could not keep the gain (e.g. under a budget): stop at the last good plan
        plan = candidate
    plan.strategy = strategy
    plan.solve_time_s = time.perf_counter() - t0
    return plan
