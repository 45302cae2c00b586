"""Allocation solvers: each module registers one solver by name (knapsack, ppo)."""

from strato_peft.strato.solvers.base import (AllocationProblem, SolverResult, available_solvers, get_solver,
                                             register_solver)

__all__ = ["AllocationProblem", "SolverResult", "available_solvers", "get_solver", "register_solver"]
