"""The routing plan as a Pyomo model solved by HiGHS, and Mélange-style fleet sizing.

Pure core, thin shell: :func:`build_model` (problem -> Pyomo
model, no side effects) -> :meth:`PlanSolver.solve` (the shared persistent
HiGHS path of :mod:`mixfleet.platform.ilp`: ``load_solution=False``,
termination checked) -> :func:`read_plan` (values -> a plain
:class:`~mixfleet.routing.plan.Plan`). Re-solves are persistent: the model is
built once; telemetry changes only mutable parameters and variable bounds,
and HiGHS restarts from the previous basis.

Notation (routing mode):
    c in C        request classes (prompt bucket x output bucket)
    r in R        replicas
    lam_c         arrival rate of class c (req/s)
    s_cr          saturated replica-seconds per class-c request on r (profile)
    l_cr          isolated end-to-end latency of class c on r (profile)
    f_r           speed factor of r from telemetry (observed / profiled; 0 = lost)
    M_cr          SLO mask: 1 if l_cr / f_r meets the class's SLO
    x_cr in [0,1] fraction of class c sent to r            (decision)
    u_r           predicted utilisation of r
    U             the maximum utilisation
    q_r           queueing proxy of r, >= tangents of u / (1 - u)
    w_r           r's share of the fleet's capacity

    sum_r x_cr = 1                                 every class is served
    x_cr <= M_cr * [f_r > 0]                       SLO mask, lost replicas
    u_r = sum_c lam_c s_cr x_cr / f_r              capacity corrected by telemetry
    u_r <= U
    q_r >= g(u_k) + g'(u_k) (u_r - u_k),  g(u) = u / (1 - u),  u_k in {.5,.7,.8,.9,.95}
    minimise   sum_c,r (lam_c / Lam) x_cr l_cr / f_r / L0      (mean isolated latency, normalised)
             + sum_r w_r q_r                                  (piecewise-linear queueing)
             + 0.1 U                                          (max normalised load)
    where Lam = sum_c lam_c and L0 = the mean isolated latency on the fastest replica.

Notation (provisioning mode, ``plan --provision``; Mélange): g in G GPU types,
n_g integer replicas, y_cg fraction of class c on type g, p_g price/hour:
    minimise sum_g p_g n_g  s.t.  sum_g y_cg = 1,  y_cg <= M_cg,
                                  sum_c lam_c s_cg y_cg <= rho n_g.
"""

from __future__ import annotations

import time

from mixfleet.errors import SolverError
from mixfleet.routing.plan import ClassMix, Plan, PlanProblem, build_problem, class_service_s

TANGENT_POINTS = (0.5, 0.7, 0.8, 0.9, 0.95)


def _tangents() -> list[tuple[float, float]]:
    out = []
    for u in TANGENT_POINTS:
        g, dg = u / (1 - u), 1 / (1 - u) ** 2
        out.append((dg, g - dg * u))
    return out


def build_model(problem: PlanProblem):
    """The Pyomo routing model of ``problem`` (see the module's notation)."""
    import pyomo.environ as pyo

    nc, nr = len(problem.mix.classes), len(problem.group_names)
    m = pyo.ConcreteModel(name="mixfleet-routing")
    m.C = pyo.RangeSet(0, nc - 1)
    m.R = pyo.RangeSet(0, nr - 1)
    m.work = pyo.Param(m.C, m.R, mutable=True, initialize=0.0)
    m.lat = pyo.Param(m.C, m.R, mutable=True, initialize=0.0)
    m.share = pyo.Param(m.R, mutable=True, initialize=0.0)
    m.uw = pyo.Param(mutable=True, initialize=problem.util_weight)
    m.x = pyo.Var(m.C, m.R, bounds=(0.0, 1.0))
    m.u = pyo.Var(m.R, bounds=(0.0, None))
    m.U = pyo.Var(bounds=(0.0, None))
    m.q = pyo.Var(m.R, bounds=(0.0, None))
    m.assign = pyo.Constraint(m.C, rule=lambda m, c: sum(m.x[c, r] for r in m.R) == 1)
    m.util = pyo.Constraint(m.R, rule=lambda m, r: m.u[r] == sum(m.work[c, r] * m.x[c, r] for c in m.C))
    m.peak = pyo.Constraint(m.R, rule=lambda m, r: m.u[r] <= m.U)
    tang = _tangents()
    m.K = pyo.RangeSet(0, len(tang) - 1)
    m.queue = pyo.Constraint(m.R, m.K, rule=lambda m, r, k: m.q[r] >= tang[k][0] * m.u[r] + tang[k][1])
    m.obj = pyo.Objective(
        expr=sum(m.lat[c, r] * m.x[c, r] for c in m.C for r in m.R)
        + sum(m.share[r] * m.q[r] for r in m.R) + m.uw * m.U,
        sense=pyo.minimize)
    set_parameters(m, problem)
    return m


def set_parameters(m, problem: PlanProblem) -> None:
    """Write rates, telemetry speed factors and the mask into the model's mutable parts."""
    mix = problem.mix
    nr = len(problem.group_names)
    eff = [problem.group_capacity(g) for g in range(nr)]  # effective replicas per group
    if not any(eff):
        raise SolverError("every replica is down or stopped", "nothing can be planned until one recovers")
    total = mix.total_rate() or 1.0
    fastest = min(range(nr), key=lambda r: sum(problem.latency[k][r] for k in range(len(mix.classes))))
    pw = problem.latency_power
    l0 = sum(mix.rate[k] / total * problem.latency[k][fastest] ** pw for k in range(len(mix.classes))) or 1.0
    mean_s = [sum(mix.rate[k] * problem.service[k][r] for k in range(len(mix.classes))) / total for r in range(nr)]
    cap = [eff[r] / (mean_s[r] or 1.0) for r in range(nr)]  # req/s each group sustains on this mix
    cap_total = sum(cap) or 1.0
    for r in range(nr):
        m.share[r] = problem.queue_weight * cap[r] / cap_total
    for k in range(len(mix.classes)):
        row_ok = [problem.allowed[k][r] and eff[r] > 0 for r in range(nr)]
        if not any(row_ok):  # the SLO cannot be met on what is left: serve it anyway
            row_ok = [eff[r] > 0 for r in range(nr)]
        for r in range(nr):
            f = eff[r] if eff[r] > 0 else 1.0
            live = [problem.speed[i] for i in problem.members[r] if problem.up[i] and problem.speed[i] > 0]
            slow = len(live) / sum(live) if live else 1.0  # mean slowdown of the group's live replicas
            # coefficients below HiGHS's 1e-9 tolerance would be dropped with a warning: write 0
            m.work[k, r] = _clip(mix.rate[k] * problem.service[k][r] / f)
            m.lat[k, r] = _clip(mix.rate[k] / total * (problem.latency[k][r] * slow) ** pw / l0)
            m.x[k, r].setub(1.0 if row_ok[r] else 0.0)


def _clip(v: float) -> float:
    return v if v >= 1e-8 else 0.0


def read_plan(m, problem: PlanProblem, status: str, objective: float, solve_s: float, build_s: float) -> Plan:
    """Variable values (already loaded by the solver) -> a plain :class:`Plan`."""
    import pyomo.environ as pyo

    nc, nr = len(problem.mix.classes), len(problem.group_names)
    rows = []
    for c in range(nc):
        row = [max(0.0, pyo.value(m.x[c, r]) or 0.0) for r in range(nr)]
        s = sum(row) or 1.0
        rows.append(tuple(v / s for v in row))
    util = tuple(float(pyo.value(m.u[r]) or 0.0) for r in range(nr))
    return Plan(tuple(problem.mix.classes), tuple(problem.mix.grid.label(c) for c in problem.mix.classes),
                tuple(problem.group_names), tuple(tuple(m_) for m_ in problem.members), tuple(rows), util, max(util) if util else 0.0, objective, status,
                solve_s, build_s)


class PlanSolver:
    """Builds the routing model once and re-solves it persistently as telemetry changes."""

    def __init__(self, problem: PlanProblem, *, time_limit_s: float = 5.0) -> None:
        from mixfleet.platform.ilp import Solver

        self.problem = problem
        t0 = time.perf_counter()
        self.model = build_model(problem)
        self._solver = Solver(time_limit_s=time_limit_s, mip_gap=None)
        try:
            self._solver.load(self.model)  # build time includes handing the model to HiGHS
        except Exception as exc:
            raise SolverError(f"HiGHS could not load the routing plan: {exc}", "see the solver log") from None
        self.build_time_s = time.perf_counter() - t0
        self.solves = 0

    def solve(self) -> Plan:
        res = self._solver.solve(self.model, what="routing plan")
        build, self.build_time_s = (self.build_time_s if self.solves == 0 else 0.0), 0.0
        self.solves += 1
        return read_plan(self.model, self.problem, res.status, res.objective, res.solve_time_s, build)

    def resolve(self, *, rates: list[float] | None = None, speed: list[float] | None = None,
                up: list[bool] | None = None, costs: PlanProblem | None = None) -> Plan:
        """Re-solve after new class rates, telemetry (speed factors, lost replicas) and/or new per-class
        costs (``costs``: a problem over the same classes and groups, e.g. after new output estimates)."""
        p = self.problem
        if costs is not None:
            p.mix, p.service, p.latency, p.allowed = costs.mix, costs.service, costs.latency, costs.allowed
        if rates is not None:
            p.mix = ClassMix(p.mix.grid, p.mix.classes, tuple(rates), p.mix.prompt, p.mix.output)
        if speed is not None:
            p.speed = list(speed)
        if up is not None:
            p.up = list(up)
        t0 = time.perf_counter()
        set_parameters(self.model, p)
        self.build_time_s = time.perf_counter() - t0
        return self.solve()


def plan_routing(fleet, mix: ClassMix) -> Plan:
    """One-shot: build the problem for ``fleet`` and ``mix`` and solve it."""
    return PlanSolver(build_problem(fleet, mix)).solve()


# -- provisioning (Mélange-style fleet sizing) ----------------------------------------
def provision(fleet, mix: ClassMix, *, target_util: float = 0.8, gpu_types: list[str] | None = None) -> dict:
    """The cheapest count of each GPU type that serves ``mix`` within the SLO at ``target_util``."""
    import pyomo.environ as pyo

    from mixfleet.platform.ilp import Solver
    from mixfleet.routing.fleet import FleetConfig, PoolConfig, build_fleet

    cfg = fleet.config
    book = fleet.book
    types = gpu_types or list(book.gpus)
    candidates = []
    for g in types:
        try:
            one = build_fleet(FleetConfig(**{**cfg.model_dump(), "pools": [PoolConfig(gpu=g, count=1)]}), book)
        except Exception:  # the model does not fit this GPU type: not a candidate
            continue
        candidates.append(one.replicas[0])
    if not candidates:
        raise SolverError(f"model '{fleet.model}' fits none of the GPU types {types}", "choose a smaller model")
    probe = PlanProblem(mix, [r.gpu for r in candidates], [[g] for g in range(len(candidates))],
                        [[class_service_s(r, p, o) for r in candidates] for p, o in zip(mix.prompt, mix.output, strict=True)],
                        [[r.perf.isolated_latency(max(1, round(p)), max(1, round(o)))[1] for r in candidates]
                         for p, o in zip(mix.prompt, mix.output, strict=True)], [], len(candidates))
    slo = cfg.slo
    for k in range(len(mix.classes)):
        best = min(probe.latency[k])
        bound = slo.e2e_slowdown * best if slo.e2e_s is None else min(slo.e2e_slowdown * best, slo.e2e_s)
        probe.allowed.append([x <= bound + 1e-12 for x in probe.latency[k]])
        if not any(probe.allowed[k]):
            i = probe.latency[k].index(best)
            raise SolverError(
                f"infeasible SLO for class {mix.grid.label(mix.classes[k])}: the e2e SLO is {bound:.3f} s but even "
                f"the fastest GPU ({candidates[i].gpu}) takes {best:.3f} s for it alone",
                "relax slo.e2e_s in the fleet file or allow faster GPU types")

    def solve_for(allowed_types: list[int]) -> dict | None:
        m = pyo.ConcreteModel(name="mixfleet-provision")
        C, G = range(len(mix.classes)), allowed_types
        m.n = pyo.Var(G, domain=pyo.NonNegativeIntegers, bounds=(0, 10000))
        m.y = pyo.Var(C, G, bounds=(0.0, 1.0))
        for c in C:
            for g in G:
                if not probe.allowed[c][g]:
                    m.y[c, g].setub(0.0)
        m.assign = pyo.Constraint(C, rule=lambda m, c: sum(m.y[c, g] for g in G) == 1)
        m.cap = pyo.Constraint(G, rule=lambda m, g: sum(mix.rate[c] * probe.service[c][g] * m.y[c, g] for c in C)
                               <= target_util * m.n[g])
        m.obj = pyo.Objective(expr=sum(candidates[g].price_per_hour * m.n[g] for g in G), sense=pyo.minimize)
        if any(not any(probe.allowed[c][g] for g in G) for c in C):
            return None
        try:
            res = Solver(time_limit_s=10.0).solve(m, what="provisioning model")
        except SolverError:
            return None
        counts = {candidates[g].gpu: round(pyo.value(m.n[g])) for g in G}
        return {"counts": {k: v for k, v in counts.items() if v > 0}, "cost_per_hour": res.objective,
                "solve_time_s": res.solve_time_s}

    best = solve_for(list(range(len(candidates))))
    if best is None:
        raise SolverError("the provisioning model has no solution", "relax the SLO or the target utilisation")
    singles = {}
    for g in range(len(candidates)):
        one = solve_for([g])
        singles[candidates[g].gpu] = None if one is None else one["cost_per_hour"]
    feasible = [v for v in singles.values() if v is not None]
    best["best_single_type_cost_per_hour"] = min(feasible) if feasible else None
    best["single_type_cost_per_hour"] = singles
    best["saving_vs_best_single"] = (1 - best["cost_per_hour"] / min(feasible)) if feasible else None
    best["target_util"] = target_util
    return best
