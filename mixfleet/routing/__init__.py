"""Heterogeneity-aware LLM request routing: profiles, simulator, policies, ILP plan.

The user-facing nouns are :class:`Fleet` (``load_fleet("fleet.yaml")``), the
policies (``make_policy(name, fleet)``; the same objects run in the
simulator and in the live router), :class:`RouterState` (the router-side
view a policy reads) and :func:`simulate`. GPUs are EMULATED in the
simulator: iteration times come from calibrated roofline profiles.

Importing this package does not import Ray, torch or Pyomo.
"""

from mixfleet.routing.fleet import Fleet, load_fleet
from mixfleet.routing.policies import POLICIES, make_policy
from mixfleet.routing.policy import Policy, ReplicaTelemetry, Request, RouterState, Telemetry
from mixfleet.routing.runner import simulate

__all__ = [
    "POLICIES",
    "Fleet",
    "Policy",
    "ReplicaTelemetry",
    "Request",
    "RouterState",
    "Telemetry",
    "load_fleet",
    "make_policy",
    "simulate",
]
