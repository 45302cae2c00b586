"""STRATO-PEFT: decide which modules get a LoRA adapter and what rank each gets, under a cost budget.

One home per concept:

    sites.py         the modules peft can adapt (name, shape, layer) - what an allocation is over
    allocation.py    an allocation (module -> rank) and its plan record
    budget.py        a budget in params/FLOPs/memory, absolute or relative to a reference LoRA, with lambda weights
    sensitivity.py   the layer-sensitivity map (value of adding rank to each module), cached on disk
    archive.py       the Go-Explore archive of probed allocations
    probe.py         short probe trainings that score a candidate allocation on a validation split
    planner.py       the search end to end: map -> gate (is a search worth its probes?) -> solver -> plan
    solvers/         knapsack (greedy on value per unit cost) and ppo (stable-baselines3 policy)
    scheduler.py     the rank scheduler that grows/shrinks ranks during training
    resize.py        one module's rank change in place (growth, SVD truncation) with the optimizer state moved
    layers.py        a peft model's LoRA layers by full module name, and their current ranks
    init.py          the gradient-aligned start of LoRA A from the sensitivity map
    export.py        the plain peft LoRA adapter (+ strato_plan.json) that any peft user loads

The cost model itself lives in ``strato_peft.cost`` (it also costs every other method).
"""
