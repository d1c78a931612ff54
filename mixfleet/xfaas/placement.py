"""Placement ILP: each unit to one cloud, minimising critical-path latency + lambda * cost.

Notation (see also :mod:`mixfleet.xfaas.model`):
  U, E            units and unit edges e = (u, v) of the (possibly fused) workflow
  C_u             clouds unit u may use (its pin, QPU need, else the general clouds)
  x[u,c] in {0,1} unit u runs on cloud c;            sum_c x[u,c] = 1
  z[e,c,c'] >= 0  edge e goes from c to c' (transport linearisation of x[u,c] * x[v,c']):
                  sum_c' z[e,c,c'] = x[u,c],  sum_c z[e,c,c'] = x[v,c']
  s[u] >= 0       start time of u;  s[v] >= s[u] + sum_c E(u,c) x[u,c] + sum H(e,c,c') z[e,c,c']
  T               makespan;         T >= s[u] + sum_c E(u,c) x[u,c]
  cost            sum R(u,c) x[u,c] + sum K(e,c,c') z[e,c,c']
  objective       min T + lambda * cost          (lambda in seconds per dollar), or
                  min T  s.t.  cost <= theta     (a cost budget)
  quotas          with a planned load L (``Profile.load_rps``), per cloud c with a quota Q(c):
                  o[c] >= L * sum_u E(u,c) x[u,c] - rho * Q(c),  o[c] >= 0, and the objective
                  gains OVERLOAD_PENALTY_S * sum o[c] (executions in flight over the quota)

Hop latency and price depend on the edge's payload size (claim checks past
the payload limit included). The model is built pure, solved through the
shared :class:`mixfleet.platform.ilp.Solver` (termination checked before any
value is read), and read back into a :class:`Plan`. An infeasible budget is
reported with the cheapest feasible cost; a solver failure falls back to the
best single cloud with a warning.
"""

from __future__ import annotations

import logging

from mixfleet.errors import InputError, SolverError
from mixfleet.xfaas.model import OVERLOAD_PENALTY_S, Plan, Profile, UnitGraph, assess, overload_note

log = logging.getLogger(__name__)


def unit_allowed(workflow, units: UnitGraph, clouds) -> list[list[str]]:
    out = []
    for g in units.members:
        ok = None
        for m in g:
            allowed = workflow.allowed_clouds(m, clouds)
            ok = [c for c in (ok if ok is not None else allowed) if c in allowed]
        if not ok:
            raise InputError(f"fusion group {'+'.join(g)} has no cloud every member may use",
                             "do not fuse nodes with different pins or needs")
        out.append(ok)
    return out


def _solve(model, what: str, time_limit_s: float):
    """Solve through the shared Solver (which itself guards against the ``--json`` stdout redirect)."""
    from mixfleet.platform.ilp import Solver

    return Solver(time_limit_s=time_limit_s).solve(model, what=what)


def build_model(workflow, profile: Profile, units: UnitGraph, *, lam: float = 0.0, budget: float | None = None):
    """The Pyomo model (pure: no solve)."""
    import pyomo.environ as pyo

    clouds = profile.clouds
    allowed = unit_allowed(workflow, units, clouds)
    U = range(len(units.members))
    X = [(u, c) for u in U for c in allowed[u]]
    edges = list(units.edges)
    Z = [(k, c, d) for k, (u, v) in enumerate(edges) for c in allowed[u] for d in allowed[v]]
    E = {(u, c): units.unit_exec_s(u, c, profile.exec_s, clouds) for u, c in X}
    H = {(k, c, d): profile.hop_s(c, d, units.edges[edges[k]]) for k, c, d in Z}
    K = {(k, c, d): clouds.hop_usd(c, d, units.edges[edges[k]]) for k, c, d in Z}
    R = {(u, c): clouds.run_usd(c, E[u, c], units.memory_mb[u]) for u, c in X}
    horizon = sum(max(E[u, c] for c in allowed[u]) for u in U) + sum(
        max(H[k, c, d] for c in allowed[u] for d in allowed[v]) for k, (u, v) in enumerate(edges))

    m = pyo.ConcreteModel(name="xfaas_placement")
    m.x = pyo.Var(X, domain=pyo.Binary)
    m.z = pyo.Var(Z, bounds=(0, 1))
    m.s = pyo.Var(U, bounds=(0, horizon))
    m.T = pyo.Var(bounds=(0, horizon))
    m.one = pyo.Constraint(U, rule=lambda m, u: sum(m.x[u, c] for c in allowed[u]) == 1)
    m.out = pyo.Constraint([(k, c) for k, (u, v) in enumerate(edges) for c in allowed[u]],
                           rule=lambda m, k, c: sum(m.z[k, c, d] for d in allowed[edges[k][1]])
                           == m.x[edges[k][0], c])
    m.inn = pyo.Constraint([(k, d) for k, (u, v) in enumerate(edges) for d in allowed[v]],
                           rule=lambda m, k, d: sum(m.z[k, c, d] for c in allowed[edges[k][0]])
                           == m.x[edges[k][1], d])

    def ex(m, u):
        return sum(E[u, c] * m.x[u, c] for c in allowed[u])

    m.prec = pyo.Constraint(range(len(edges)), rule=lambda m, k: m.s[edges[k][1]] >= m.s[edges[k][0]] + ex(
        m, edges[k][0]) + sum(H[k, c, d] * m.z[k, c, d] for c in allowed[edges[k][0]] for d in allowed[edges[k][1]]))
    # valid bounds that tighten the LP relaxation (same integer optimum): every unit starts no
    # earlier than its fastest head path, and T covers its fastest tail path
    head, tail = _head_tail(units, allowed, E, H, edges)
    for u in U:
        m.s[u].setlb(head[u])
    m.span = pyo.Constraint(U, rule=lambda m, u: m.T >= m.s[u] + ex(m, u) + tail[u])
    m.cost = pyo.Expression(expr=sum(R[i] * m.x[i] for i in X) + sum(K[i] * m.z[i] for i in Z))
    quota = {c: clouds.get(c).concurrency_quota for c in {c for _, c in X}}
    Q = [c for c, q in sorted(quota.items()) if q] if profile.load_rps else []
    m.o = pyo.Var(Q, bounds=(0, None))
    m.quota = pyo.Constraint(Q, rule=lambda m, c: m.o[c] >= profile.load_rps * sum(
        E[u, d] * m.x[u, d] for u, d in X if d == c) - profile.utilization * quota[c])
    penalty = OVERLOAD_PENALTY_S * sum(m.o[c] for c in Q)
    if budget is not None:
        m.budget = pyo.Constraint(expr=m.cost <= budget)
        m.obj = pyo.Objective(expr=m.T + penalty, sense=pyo.minimize)
    else:
        m.obj = pyo.Objective(expr=m.T + lam * m.cost + penalty, sense=pyo.minimize)
    m._allowed = allowed
    return m


def _head_tail(units: UnitGraph, allowed, E, H, edges):
    """Lower bounds: fastest time to reach a unit, and fastest time from its end to the finish."""
    n = len(units.members)
    emin = [min(E[u, c] for c in allowed[u]) for u in range(n)]
    hmin = {edges[k]: min(H[k, c, d] for c in allowed[edges[k][0]] for d in allowed[edges[k][1]])
            for k in range(len(edges))}
    head, tail = [0.0] * n, [0.0] * n
    for v in units.order:
        head[v] = max((head[u] + emin[u] + hmin[(u, v)] for (u, w) in hmin if w == v), default=0.0)
    for u in reversed(units.order):
        tail[u] = max((hmin[(u, v)] + emin[v] + tail[v] for (w, v) in hmin if w == u), default=0.0)
    return head, tail


def read_plan(model, units: UnitGraph) -> list[str]:
    """The cloud of each unit (values loaded by the solver)."""
    out = []
    for u, allowed in enumerate(model._allowed):
        out.append(max(allowed, key=lambda c: model.x[u, c].value or 0.0))
    return out


def _expand(units: UnitGraph, cloud_of_unit: list[str]) -> dict[str, str]:
    return {n: cloud_of_unit[u] for u, g in enumerate(units.members) for n in g}


def solve_ilp(workflow, profile: Profile, groups: list[list[str]] | None = None, *, lam: float = 0.0,
              budget: float | None = None, time_limit_s: float = 10.0, strategy: str = "ilp",
              fusion: str = "vcpu") -> Plan:
    """Solve the placement ILP; an infeasible budget names the cheapest feasible cost."""
    units = UnitGraph(workflow, groups, fusion)
    model = build_model(workflow, profile, units, lam=lam, budget=budget)
    try:
        res = _solve(model, "xfaas placement ILP", time_limit_s)
    except SolverError as exc:
        if budget is not None and "infeasible" in exc.message:
            cheapest = solve_min_cost(workflow, profile, groups, fusion)
            raise InputError(
                f"cost budget theta=${budget:.3g} per run is infeasible: the binding constraint is the budget; "
                f"the cheapest placement that respects the pins and QPU needs costs ${cheapest:.3g}",
                f"raise --budget to at least {cheapest:.3g} or unpin nodes") from None
        if "infeasible" in exc.message:
            raise InputError("placement is infeasible: pins and QPU needs cannot all hold",
                             "check the pins against the clouds file") from None
        single = best_single_cloud(workflow, profile, groups, fusion)
        single.warnings.append(f"ILP solver failed ({exc.message}); fell back to the best single cloud")
        log.warning(single.warnings[-1])
        return single
    cloud_of_unit = read_plan(model, units)
    return plan_for(strategy, units, cloud_of_unit, profile, res.solve_time_s, res.status)


def plan_for(strategy: str, units: UnitGraph, cloud_of_unit: list[str], profile: Profile, solve_time_s: float = 0.0,
             status: str = "fixed") -> Plan:
    """A :class:`Plan` with its predicted figures and, under a planned load, its overload."""
    _, lat, cost, over = assess(units, cloud_of_unit, profile)
    plan = Plan(strategy, _expand(units, cloud_of_unit), [list(g) for g in units.members], lat, cost, solve_time_s,
                status, fusion=units.fusion, load_rps=profile.load_rps, overload=over)
    note = overload_note(plan, units, profile)
    if note:
        plan.warnings.append(note)
    return plan


def solve_min_cost(workflow, profile: Profile, groups=None, fusion: str = "vcpu") -> float:
    """The cheapest feasible cost per run (used to explain an infeasible budget)."""
    import pyomo.environ as pyo

    units = UnitGraph(workflow, groups, fusion)
    model = build_model(workflow, profile, units)
    model.obj.deactivate()
    model.cost_obj = pyo.Objective(expr=model.cost, sense=pyo.minimize)
    _solve(model, "xfaas min-cost ILP", 10.0)
    return float(pyo.value(model.cost))


def single_cloud(workflow, profile: Profile, cloud: str, groups=None, fusion: str = "vcpu") -> Plan:
    """Every node on ``cloud`` except those whose pin or need forbids it."""
    clouds = profile.clouds
    clouds.check(cloud)
    placement = {}
    for n in workflow.nodes:
        allowed = workflow.allowed_clouds(n, clouds)
        placement[n] = cloud if cloud in allowed else allowed[0]
    units = UnitGraph(workflow, groups, fusion)
    plan = plan_for(cloud, units, [placement[g[0]] for g in units.members], profile)
    plan.placement = placement
    return plan


def best_single_cloud(workflow, profile: Profile, groups=None, fusion: str = "vcpu") -> Plan:
    plans = [single_cloud(workflow, profile, c, groups, fusion) for c in profile.clouds.general()]
    best = min(plans, key=lambda p: p.effective_s)
    best.strategy = "best_single_cloud"
    return best
