"""Cost estimates: parameters, adapter FLOPs per token and training memory, and STRATO's per-module LoRA cost model."""

from strato_peft.cost.estimate import CostReport, adapter_flops_per_token, cost_report, count_params, human_bytes
from strato_peft.cost.model import DIMENSIONS, Cost, LoraCostModel, measure_flops, measure_memory

__all__ = ["DIMENSIONS", "Cost", "CostReport", "LoraCostModel", "adapter_flops_per_token", "cost_report",
           "count_params", "human_bytes", "measure_flops", "measure_memory"]
