"""The shared HiGHS solve path: optimal values loaded, infeasibility reported."""

from __future__ import annotations

import pytest

from mixfleet.errors import SolverError
from mixfleet.platform.ilp import Solver


def _knapsack():
    import pyomo.environ as pyo

    m = pyo.ConcreteModel()
    m.cap = pyo.Param(initialize=10, mutable=True)
    m.x = pyo.Var(range(3), domain=pyo.Binary)
    w, v = [5, 4, 6], [10, 40, 30]
    m.c = pyo.Constraint(expr=sum(w[i] * m.x[i] for i in range(3)) <= m.cap)
    m.o = pyo.Objective(expr=sum(v[i] * m.x[i] for i in range(3)), sense=pyo.maximize)
    return m


def test_solves_and_resolves_after_a_parameter_change():
    import pyomo.environ as pyo

    m, s = _knapsack(), Solver()
    r = s.solve(m)
    assert r.status == "optimal" and r.objective == pytest.approx(70)
    assert [round(pyo.value(m.x[i])) for i in range(3)] == [0, 1, 1]
    m.cap = 4
    assert s.solve(m).objective == pytest.approx(40)


def test_infeasible_model_raises_a_clear_error():
    import pyomo.environ as pyo

    m = _knapsack()
    m.force = pyo.Constraint(expr=m.x[0] + m.x[2] >= 2)
    m.cap = 4
    with pytest.raises(SolverError, match="infeasible"):
        Solver().solve(m, what="placement model")
