"""Cost estimates: parameters, adapter FLOPs per token and training memory (extended by issue 5's cost model)."""

from strato_peft.cost.estimate import CostReport, adapter_flops_per_token, cost_report, count_params, human_bytes

__all__ = ["CostReport", "adapter_flops_per_token", "cost_report", "count_params", "human_bytes"]
