"""The cost model of STRATO-PEFT: what LoRA of rank r on one module costs, in params, FLOPs and memory.

Costs are additive over modules and, per module, affine in rank: ``cost(site, r) = fixed(site) + r * per_rank(site)``
for r >= 1 and 0 for r = 0 (no adapter). The solvers rely on both properties. Notation: a site maps d_in -> d_out,
the batch is B sequences of S tokens, T = B * S tokens (T = B for a BERT ``pooler``, which only sees the first token
of each sequence), p = ``param_bytes`` (4: peft keeps adapter weights in fp32), a = ``act_bytes`` (bytes per element
of the activations the LoRA matmuls see), m = ``mask_bytes`` (bytes per element of the saved dropout mask).

params  r * (d_in + d_out)                        A is r x d_in, B is d_out x r; exactly what peft counts.

flops   r * 6 * (d_in + d_out)                    training FLOPs per token, a multiply-add counted as 2:
                                                  forward   2 r d_in (h = x A^T) + 2 r d_out (B h)
                                                  backward  2 r d_out (dB) + 2 r d_out (dh)
                                                            + 2 r d_in (dA) + 2 r d_in (dx through A)
        The input gradient through A (2 r d_in) is only computed when the module's input requires grad, i.e. when
        something below it is trainable. It is always counted here: that keeps the cost additive over modules (the
        exception depends on which other modules are adapted) and it is exact whenever the model's input requires
        grad (gradient checkpointing with ``enable_input_require_grads``, as peft's k-bit preparation sets up). In
        plain LoRA training it over-counts only the modules that read the network's input below every other
        trainable part (layer 0's q/k/v, say): measured +0.1 to +2.9 % on SmolLM2-135M / MiniLM-L6 (exact with
        inputs that require grad; bench/cost_model_check.py). A pooler's per-rank FLOPs are scaled by 1/S, rounded
        up to an integer (per token of the batch, it sees one in S).

memory  fixed   T * d_in * (a + m)  if dropout > 0  the dropout output (saved by lora_A for dA) and its mask (saved
                T * d_in * a        if dropout = 0  by the dropout for dx)
        per rank  4 p (d_in + d_out)                adapter weight, its gradient, AdamW's two moments (16 B/param)
                  + T * a                           h = x A^T, saved by lora_B for dB
        Nothing else is saved for the adapter: the weights A and B saved for dx and dh are the parameters themselves,
        and ``B h * scaling`` (a Python scalar) and the residual add save nothing. The dropout mask is saved only when
        the input requires grad (the same caveat as dx, counted always: +0.6 to +8.7 % in plain training on the
        packaged models, exact with inputs that require grad). On CPU dropout is ``x * (bernoulli mask / (1 - p))``
        and the saved mask has the activation's dtype (m = a, measured); on CUDA it is the fused native_dropout whose
        mask is bool (m = 1, from PyTorch's source, not measured here). ``mask_bytes=None`` picks 1 when CUDA is
        available (training runs there), else a; ``from_model`` follows the model's device.
        Without dropout lora_A saves its input x itself, a tensor q/k/v (gate/up) share and the base sometimes keeps
        anyway: charging it to every module is an upper bound (+47 to +62 % on a tiny Llama, tests/test_cost_model.py).
        Not counted: transient backward buffers (the gradients of h and of the dropout output) freed during the
        backward pass, and the activations the frozen base keeps so that gradients flow through it, which depend
        only on the lowest adapted module, not on the ranks.

Everything is for one training step at the model's batch shape (memory in bytes) or per token (FLOPs).
``tests/test_cost_model.py`` checks params exactly against peft and FLOPs/memory against ``FlopCounterMode`` and
the tensors autograd saves; ``bench/cost_model_check.py`` does the same on the packaged models.
"""

from __future__ import annotations

import math
import numbers
import os
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence, Union

import torch

from strato_peft.strato.sites import ModuleSite, _matches, adaptable_sites

DIMENSIONS = ("params", "flops", "memory")

# Module-name parts of sites that see one token per sequence (BERT-style poolers read the [CLS] token only).
ONE_TOKEN_PER_SEQUENCE = frozenset({"pooler"})

Targets = Union[None, str, Sequence[str]]


@dataclass(frozen=True)
class Cost:
    """Cost of an adapter (or a sum of them): trainable params, training FLOPs per token, bytes per training step."""

    params: int = 0
    flops: int = 0
    memory: int = 0

    def __add__(self, other: "Cost") -> "Cost":
        if isinstance(other, int) and other == 0:  # sum(costs) starts from 0
            return self
        if not isinstance(other, Cost):
            return NotImplemented
        return Cost(self.params + other.params, self.flops + other.flops, self.memory + other.memory)

    __radd__ = __add__

    def __mul__(self, k: int) -> "Cost":
        if not isinstance(k, numbers.Integral):
            return NotImplemented
        k = int(k)
        return Cost(self.params * k, self.flops * k, self.memory * k)

    __rmul__ = __mul__

    def get(self, dim: str) -> float:
        if dim not in DIMENSIONS:
            raise KeyError(f"unknown cost dimension {dim!r}; expected one of {list(DIMENSIONS)}")
        return float(getattr(self, dim))

    def as_dict(self) -> dict[str, int]:
        return {d: int(getattr(self, d)) for d in DIMENSIONS}


ZERO = Cost()


class LoraCostModel:
    """Per-module LoRA costs at a batch shape (see the module docstring for the formulas)."""

    def __init__(self, sites: Sequence[ModuleSite], batch_size: int, seq_len: int, dropout: float = 0.05,
                 param_bytes: int = 4, act_bytes: int = 4, mask_bytes: Optional[int] = None):
        if batch_size < 1 or seq_len < 1:
            raise ValueError(f"batch_size and seq_len must be >= 1, got {batch_size} and {seq_len}")
        self.sites: list[ModuleSite] = list(sites)
        self.batch_size = int(batch_size)
        self.seq_len = int(seq_len)
        self.dropout = float(dropout)
        self.param_bytes = int(param_bytes)
        self.act_bytes = int(act_bytes)
        if mask_bytes is None:
            mask_bytes = 1 if torch.cuda.is_available() else self.act_bytes
        self.mask_bytes = int(mask_bytes)
        self._by_name = {s.name: s for s in self.sites}
        self._affine: dict[ModuleSite, tuple[Cost, Cost]] = {}

    @classmethod
    def from_model(cls, model: torch.nn.Module, batch_size: int, seq_len: int, targets: Targets = None,
                   dropout: float = 0.05, act_bytes: int = 4) -> "LoraCostModel":
        """The cost model over ``adaptable_sites(model, targets)``; the mask size follows the model's device."""
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        mask_bytes = 1 if device.type == "cuda" else act_bytes
        return cls(adaptable_sites(model, targets), batch_size, seq_len, dropout=dropout, act_bytes=act_bytes,
                   mask_bytes=mask_bytes)

    # -- per module ---------------------------------------------------------------------------------------------
    def site(self, site: Union[ModuleSite, str]) -> ModuleSite:
        if isinstance(site, ModuleSite):
            return site
        try:
            return self._by_name[site]
        except KeyError:
            raise KeyError(f"{site!r} is not an adaptable module of this cost model "
                           f"({len(self.sites)} sites, e.g. {[s.name for s in self.sites[:3]]})") from None

    def tokens_per_sequence(self, site: Union[ModuleSite, str]) -> int:
        """Tokens of each sequence the module processes: S, or 1 for a pooler."""
        parts = self.site(site).name.split(".")
        return 1 if any(p in ONE_TOKEN_PER_SEQUENCE for p in parts) else self.seq_len

    def affine(self, site: Union[ModuleSite, str]) -> tuple[Cost, Cost]:
        """(fixed, per_rank): ``module(site, r) == fixed + r * per_rank`` for every r >= 1."""
        site = self.site(site)
        cached = self._affine.get(site)
        if cached is not None:
            return cached
        d_in, d_out = site.d_in, site.d_out
        seen = self.tokens_per_sequence(site)
        tokens = self.batch_size * seen
        flops_per_rank = 6 * (d_in + d_out)
        if seen != self.seq_len:
            flops_per_rank = math.ceil(flops_per_rank * seen / self.seq_len)
        saved_input = self.act_bytes + (self.mask_bytes if self.dropout > 0 else 0)
        fixed = Cost(0, 0, tokens * d_in * saved_input)
        per_rank = Cost(d_in + d_out, flops_per_rank,
                        4 * self.param_bytes * (d_in + d_out) + tokens * self.act_bytes)
        self._affine[site] = (fixed, per_rank)
        return fixed, per_rank

    def fixed(self, site: Union[ModuleSite, str]) -> Cost:
        return self.affine(site)[0]

    def per_rank(self, site: Union[ModuleSite, str]) -> Cost:
        return self.affine(site)[1]

    def module(self, site: Union[ModuleSite, str], rank: int) -> Cost:
        """Cost of LoRA of ``rank`` on ``site`` (0 for rank 0)."""
        rank = int(rank)
        if rank < 0:
            raise ValueError(f"rank must be >= 0, got {rank}")
        if rank == 0:
            self.site(site)  # still reject unknown names
            return ZERO
        fixed, per_rank = self.affine(site)
        return fixed + rank * per_rank

    # -- allocations --------------------------------------------------------------------------------------------
    def allocation(self, allocation: Mapping[str, int]) -> Cost:
        """Summed cost of an allocation (module name -> rank; absent or 0 = no adapter)."""
        return sum((self.module(name, r) for name, r in allocation.items()), ZERO)

    def uniform(self, rank: int, targets: Targets = None) -> Cost:
        """A reference LoRA: ``rank`` on every site matching ``targets`` (suffixes, full names, a regex, or
        None/'all-linear' for all). Zero cost when nothing matches."""
        return self.allocation(self.uniform_allocation(rank, targets))

    def uniform_allocation(self, rank: int, targets: Targets = None) -> dict[str, int]:
        """The allocation ``uniform`` costs."""
        return {s.name: int(rank) for s in self.sites if _matches(s.name, s.kind, targets)}

    def per_module_table(self, allocation: Mapping[str, int]) -> list[dict[str, Any]]:
        """One row per adapted module (rank > 0), in site order: name, rank, params, flops, memory."""
        order = {s.name: i for i, s in enumerate(self.sites)}
        rows = []
        for name, r in sorted(allocation.items(), key=lambda kv: order.get(kv[0], len(order))):
            if int(r) <= 0:
                continue
            rows.append({"name": name, "rank": int(r), **self.module(name, r).as_dict()})
        return rows

    def __repr__(self) -> str:
        return (f"LoraCostModel({len(self.sites)} sites, batch {self.batch_size} x {self.seq_len}, "
                f"dropout={self.dropout}, param_bytes={self.param_bytes}, act_bytes={self.act_bytes}, "
                f"mask_bytes={self.mask_bytes})")


# -- measurement ------------------------------------------------------------------------------------------------------
# What the formulas above are checked against (tests/test_cost_model.py, bench/cost_model_check.py). The adapters'
# share is isolated by a *reference* pass of the same peft model in which every LoRA layer runs only its base layer
# and adds a zero scalar that requires grad: the base model then computes and saves exactly what it does in the
# adapted pass (the same activations require grad, so the same input gradients flow through the frozen layers), and
# the add itself saves nothing and counts no FLOPs. Adapted minus reference is what the adapters add.


def lora_trainable_params(model: torch.nn.Module) -> int:
    """peft's trainable-parameter count minus trainables that are not LoRA weights (e.g. a classifier head)."""
    trainable = int(model.get_nb_trainable_parameters()[0]) if hasattr(model, "get_nb_trainable_parameters") else \
        sum(p.numel() for p in model.parameters() if p.requires_grad)
    other = sum(p.numel() for n, p in model.named_parameters() if p.requires_grad and "lora_" not in n)
    return trainable - other


def _lora_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    from peft.tuners.lora import LoraLayer

    return [m for m in model.modules() if isinstance(m, LoraLayer) and hasattr(m, "base_layer")]


class _ReferencePass:
    """Context: LoRA layers run their base layer only, plus a zero scalar that requires grad (see above)."""

    def __init__(self, model: torch.nn.Module):
        self.layers = _lora_layers(model)
        device = next(model.parameters()).device
        self.gate = torch.zeros((), device=device, requires_grad=True)
        self.handles: list[Any] = []
        self.flags: list[bool] = []

    def __enter__(self) -> "_ReferencePass":
        gate = self.gate
        for layer in self.layers:
            self.flags.append(layer._disable_adapters)
            layer._disable_adapters = True
            self.handles.append(layer.register_forward_hook(lambda _m, _a, out: out + gate.to(out.dtype)))
        return self

    def __exit__(self, *exc: Any) -> None:
        for layer, flag in zip(self.layers, self.flags):
            layer._disable_adapters = flag
        for h in self.handles:
            h.remove()


def _inputs(model: torch.nn.Module, batch: Mapping[str, torch.Tensor], input_requires_grad: bool) -> dict:
    inputs = dict(batch)
    if input_requires_grad:
        ids = inputs.pop("input_ids")
        with torch.no_grad():
            embeds = model.get_input_embeddings()(ids)
        inputs["inputs_embeds"] = embeds.detach().requires_grad_(True)
    return inputs


def _loss(out: Any) -> torch.Tensor:
    loss = getattr(out, "loss", None)
    return loss if loss is not None else out.logits.float().sum()


def _rss_bytes() -> Optional[int]:
    """Resident set size of this process (Linux /proc), None elsewhere."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError, AttributeError):
        return None


def measure_flops(model: torch.nn.Module, batch: Mapping[str, torch.Tensor], input_requires_grad: bool = False
                  ) -> dict[str, float]:
    """Adapter training FLOPs per token of one forward+backward, by ``FlopCounterMode``: adapted minus reference.

    ``input_requires_grad`` feeds input embeddings that require grad (as gradient checkpointing with
    ``enable_input_require_grads`` does): then every LoRA module computes its input gradient. Works on meta tensors
    (the counts are shape-based), which the benchmark uses for the big models."""
    from torch.utils.flop_counter import FlopCounterMode

    model.train()
    tokens = int(batch["input_ids"].numel())
    totals = {}
    for arm in ("adapted", "reference"):
        model.zero_grad(set_to_none=True)
        ctx = _ReferencePass(model) if arm == "reference" else None
        if ctx:
            ctx.__enter__()
        try:
            counter = FlopCounterMode(display=False)
            with counter:
                _loss(model(**_inputs(model, batch, input_requires_grad))).backward()
            totals[arm] = int(counter.get_total_flops())
        finally:
            if ctx:
                ctx.__exit__()
    model.zero_grad(set_to_none=True)
    return {"tokens": tokens, "flops_adapted": totals["adapted"], "flops_reference": totals["reference"],
            "flops_per_token": (totals["adapted"] - totals["reference"]) / tokens}


def _saved_bytes(model: torch.nn.Module, inputs: dict, attribute: bool, rss: bool) -> dict[str, Any]:
    """Forward once, keeping the graph; unique storage bytes autograd saved (parameters excluded), those saved
    only inside LoRA sub-modules (lora_dropout/lora_A/lora_B), and the process RSS growth while the graph lives."""
    import gc

    params = {p.untyped_storage()._cdata for p in model.parameters()}
    saved: dict[int, int] = {}
    inside: set[int] = set()
    outside: set[int] = set()
    depth = [0]
    handles = []
    if attribute:
        for name, module in model.named_modules():
            parts = name.split(".")
            if len(parts) >= 2 and parts[-2] in ("lora_dropout", "lora_A", "lora_B"):  # e.g. q_proj.lora_A.default
                handles.append(module.register_forward_pre_hook(lambda *_: depth.__setitem__(0, depth[0] + 1)))
                handles.append(module.register_forward_hook(lambda *_: depth.__setitem__(0, depth[0] - 1)))

    def pack(t: torch.Tensor) -> torch.Tensor:
        s = t.untyped_storage()
        key = s._cdata
        if key not in params:
            saved[key] = s.nbytes()
            (inside if depth[0] > 0 else outside).add(key)
        return t

    if rss:
        gc.collect()
    rss0 = _rss_bytes() if rss else None
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = model(**inputs)
        rss1 = _rss_bytes() if rss else None
    finally:
        for h in handles:
            h.remove()
    result = {"saved_bytes": sum(saved.values()),
              "saved_in_adapters": sum(saved[k] for k in inside - outside)}
    if rss and rss0 is not None and rss1 is not None:
        result["rss_delta"] = rss1 - rss0
    del out
    if rss:
        gc.collect()
    return result


def optimizer_state_bytes(model: torch.nn.Module) -> int:
    """Bytes of the LoRA weights, their gradients and AdamW's state after a step (lr=0: weights unchanged)."""
    params = [p for n, p in model.named_parameters() if p.requires_grad and "lora_" in n]
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    opt = torch.optim.AdamW(params, lr=0.0)
    opt.step()
    total = 0
    for p in params:
        total += p.numel() * p.element_size() + p.grad.numel() * p.grad.element_size()
        total += sum(v.numel() * v.element_size() for v in opt.state[p].values() if isinstance(v, torch.Tensor))
    model.zero_grad(set_to_none=True)
    return total


def measure_memory(model: torch.nn.Module, batch: Mapping[str, torch.Tensor], input_requires_grad: bool = False,
                   rss: bool = False, optimizer: bool = True) -> dict[str, Any]:
    """Adapter memory of one training step: saved-activation bytes (adapted minus reference forward, unique storages,
    parameters excluded) plus the LoRA weights, grads and AdamW state (measured after a step); also the bytes
    attributed to LoRA sub-modules directly and, with ``rss``, the process RSS growth of both forwards."""
    model.train()
    adapted = _saved_bytes(model, _inputs(model, batch, input_requires_grad), attribute=True, rss=rss)
    with _ReferencePass(model):
        reference = _saved_bytes(model, _inputs(model, batch, input_requires_grad), attribute=False, rss=rss)
    result = {"tokens": int(batch["input_ids"].numel()),
              "saved_adapted": adapted["saved_bytes"], "saved_reference": reference["saved_bytes"],
              "saved_diff": adapted["saved_bytes"] - reference["saved_bytes"],
              "saved_in_adapters": adapted["saved_in_adapters"]}
    if rss and "rss_delta" in adapted and "rss_delta" in reference:
        result["rss_adapted"], result["rss_reference"] = adapted["rss_delta"], reference["rss_delta"]
        result["rss_diff"] = adapted["rss_delta"] - reference["rss_delta"]
    if optimizer:
        result["state_bytes"] = optimizer_state_bytes(model)
        result["memory"] = result["saved_diff"] + result["state_bytes"]
    return result
