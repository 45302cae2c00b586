"""Allocation solvers: each module registers one solver by name (knapsack, uniform, breadth, layers, ppo)."""

from strato_peft.strato.solvers.base import (AllocationProblem, SolverResult, available_solvers, get_solver,
                                             register_solver)

from strato_peft.strato.solvers import breadth, knapsack, ppo  # noqa: E402,F401  (register each solver)

__all__ = ["AllocationProblem", "SolverResult", "available_solvers", "get_solver", "register_solver"]
