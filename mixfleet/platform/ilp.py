"""The one HiGHS-through-Pyomo solve path shared by routing and xfaas.

Parts build a Pyomo ``ConcreteModel`` (pure, no side effects), hand it to
:class:`Solver`, and read values only after :meth:`Solver.solve` returned:
the solve runs with ``load_solution=False``, the termination condition is
checked, and only then are the variable values loaded. A solver is
persistent (HiGHS through ``pyomo.contrib.appsi``): solving the same model
again after changing mutable parameters re-uses the previous basis.
"""

from __future__ import annotations

import contextlib
import sys
import time
from dataclasses import dataclass

from mixfleet.errors import SolverError

INSTALL_HINT = "install HiGHS for Pyomo with `pip install highspy` (it is a mixfleet dependency)"


@dataclass(frozen=True)
class SolveResult:
    """What a solve gave: ``status`` is ``optimal`` or ``feasible`` (time limit hit)."""

    status: str
    objective: float
    solve_time_s: float


def solver_available() -> bool:
    try:
        from pyomo.contrib.appsi.solvers import Highs

        return bool(Highs().available())
    except Exception:
        return False


class Solver:
    """A persistent HiGHS solver for one model at a time."""

    def __init__(self, time_limit_s: float | None = 10.0, mip_gap: float | None = 1e-4):
        try:
            from pyomo.contrib.appsi.solvers import Highs
        except ImportError as exc:  # pragma: no cover - pyomo itself missing
            raise SolverError(f"Pyomo is not importable: {exc}", INSTALL_HINT) from None
        self._highs = Highs()
        if not self._highs.available():
            raise SolverError("the HiGHS solver is not available to Pyomo", INSTALL_HINT)
        self._highs.config.load_solution = False
        self._highs.config.stream_solver = False
        if time_limit_s is not None:
            self._highs.config.time_limit = time_limit_s
        if mip_gap is not None:
            self._highs.config.mip_gap = mip_gap

    def load(self, model) -> None:
        """Hand ``model`` to HiGHS now (the persistent solver's set-up), so that
        :meth:`solve` times the optimisation alone; optional."""
        with contextlib.redirect_stdout(sys.__stdout__ or sys.stdout):
            self._highs.set_instance(model)

    def solve(self, model, *, what: str = "model") -> SolveResult:
        """Solve ``model`` and load its values; raise :class:`SolverError` otherwise."""
        from pyomo.contrib.appsi.base import TerminationCondition as TC

        t0 = time.perf_counter()
        try:
            # Pyomo captures the solver's output at the fd level; under `--json` the CLI
            # points sys.stdout at stderr, which deadlocks that capture: solve against
            # the real stdout (nothing is printed: stream_solver is off).
            with contextlib.redirect_stdout(sys.__stdout__ or sys.stdout):
                res = self._highs.solve(model)
        except Exception as exc:  # HiGHS or the Pyomo interface failed outright
            raise SolverError(f"HiGHS failed on the {what}: {exc}", "see the solver log") from None
        elapsed = time.perf_counter() - t0
        tc = res.termination_condition
        if tc == TC.optimal:
            status = "optimal"
        elif tc in (TC.maxTimeLimit, TC.maxIterations) and res.best_feasible_objective is not None:
            status = "feasible"
        elif tc in (TC.infeasible, TC.infeasibleOrUnbounded):
            raise SolverError(f"the {what} is infeasible", "relax the constraints (SLO, budget, pins)")
        elif tc == TC.unbounded:
            raise SolverError(f"the {what} is unbounded", "this is a modelling bug; please report it")
        else:
            raise SolverError(f"HiGHS stopped on the {what} without a solution ({tc.name})",
                              "raise the time limit or simplify the model")
        res.solution_loader.load_vars()
        return SolveResult(status=status, objective=float(res.best_feasible_objective), solve_time_s=elapsed)
