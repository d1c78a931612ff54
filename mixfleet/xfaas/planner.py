"""One entry point for every placement strategy, keyed by lowercase name.

Strategies: a cloud name (everything there, pins and QPU needs respected),
``xfaas_cut`` (XFaaS's single cut), ``ilp`` (the placement ILP),
``ilp_fusion`` (fusion planner + ILP; fused branches run in parallel up to the vCPUs the
unit's memory buys), ``xfaas_fusion`` (XFaaS-style: consecutive pairs on the critical path,
fused code runs its members one after another) and ``adaptive`` (the ILP re-solved from
telemetry; its first plan is the ILP's).
"""

from __future__ import annotations

from mixfleet.errors import unknown_name
from mixfleet.xfaas.model import Plan, Profile

STRATEGIES = ("xfaas_cut", "ilp", "ilp_fusion", "xfaas_fusion", "adaptive")


def strategy_names(clouds) -> list[str]:
    return [*clouds.general(), *STRATEGIES]


def make_plan(workflow, strategy: str, *, profile: Profile, lam: float = 0.0, budget: float | None = None,
              cost_cap: float = 1.2) -> Plan:
    from mixfleet.xfaas import baselines, placement

    clouds = profile.clouds
    workflow.check_clouds(clouds)
    name = strategy.lower()
    if name in clouds.general():
        return placement.single_cloud(workflow, profile, name)
    if name == "xfaas_cut":
        return baselines.xfaas_cut(workflow, profile)
    if name in ("ilp", "adaptive"):
        plan = placement.solve_ilp(workflow, profile, lam=lam, budget=budget)
        plan.strategy = name
        return plan
    if name == "ilp_fusion":
        from mixfleet.xfaas.fusion import plan_fusion

        return plan_fusion(workflow, profile, lam=lam, budget=budget, cost_cap=cost_cap)
    if name == "xfaas_fusion":
        from mixfleet.xfaas.fusion import plan_fusion

        return plan_fusion(workflow, profile, lam=lam, budget=budget, cost_cap=cost_cap, fusion="sequential",
                           pairs_only=True, strategy="xfaas_fusion")
    raise unknown_name("placement", strategy, strategy_names(clouds))
