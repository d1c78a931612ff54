"""Cross-cloud serverless workflows on Ray (XFaaS-style), with placement and fusion.

The user works with a :class:`Workflow` (``load_workflow`` reads YAML/JSON or
an XFaaS ``dag.json`` as-is), a :class:`Plan` (``make_plan``) and an
:class:`Executor` (or the one-call :func:`run`). Clouds are EMULATED (see
``clouds.yaml``): the executor, data passing and accounting are real.
"""

from __future__ import annotations

from typing import Any

from mixfleet.xfaas.clouds import Clouds, load_clouds
from mixfleet.xfaas.model import Plan, Profile
from mixfleet.xfaas.planner import make_plan
from mixfleet.xfaas.spec import Workflow, load_workflow

__all__ = ["Clouds", "Executor", "Plan", "Profile", "Workflow", "load_clouds", "load_workflow", "make_plan", "run"]


def __getattr__(name: str):
    if name == "Executor":  # imports numpy/ray-facing code only when asked for
        from mixfleet.xfaas.executor import Executor

        return Executor
    raise AttributeError(name)


def run(workflow: Workflow | str, payload: Any, *, placement: str = "ilp", clouds: Clouds | None = None,
        **executor_kwargs):
    """Plan ``workflow`` with ``placement`` and run it once on the connected (or a new local) Ray."""
    from mixfleet.platform.bootstrap import connect
    from mixfleet.xfaas.executor import Executor

    wf = load_workflow(workflow) if isinstance(workflow, str) else workflow
    clouds = clouds or load_clouds()
    profile = Profile(wf, clouds)
    plan = make_plan(wf, placement, profile=profile)
    connect()
    return Executor(wf, clouds=clouds, profile=profile, **executor_kwargs).run(payload, plan)
