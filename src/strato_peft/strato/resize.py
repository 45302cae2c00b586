"""Resize one peft LoRA module's rank in place, keeping its function and the optimizer's state consistent.

Growth adds components (new A rows peft's kaiming init, new B columns zero: the function is unchanged); a shrink
replaces the factors by the truncated SVD of ``scaling * B @ A`` (the best rank-k approximation of the update).
The rank scheduler (``strato.scheduler``) decides which modules change; this module does the change.

rsLoRA scaling is ``alpha / sqrt(r)`` and alpha stays per module, so on a rank change the scaling changes; the ratio
old/new scale is folded into B so that ``scaling * B @ A`` is unchanged on growth and equals the truncated SVD on
shrink. After a shrink A = rho * V_k^T (orthonormal rows with the old A's RMS row norm rho, like a fresh kaiming A)
and B = (s_old / s_new) * U_k S_k / rho.

Optimizer state (AdamW, or any optimizer with same-shape state tensors)
    The new parameters replace the old ones in ``optimizer.param_groups`` (same position, same group, so weight
    decay and the LR scheduler are untouched; accelerate's ``AcceleratedOptimizer`` is unwrapped via
    ``.optimizer``) and the old ones leave ``optimizer.state``. Every resize is written as A' = Y A, B' = B X (new A
    rows aside); the gradients then transform exactly as dL/dA' = (s'/s) X^T dL/dA and dL/dB' = (s'/s) dL/dB Y^T.
    The first moment (``exp_avg``, momentum) is transported with these linear maps, the second (``exp_avg_sq``,
    ``max_exp_avg_sq``) with their elementwise squares (the variance of a linear combination of independent
    coordinates), ``step`` is kept. For growth this is zero-padding of the new rows/columns (and B's moments
    rescaled by the scale ratio, which makes them exactly consistent); for a shrink it is a projection onto the kept
    SVD components, which keeps Adam's per-coordinate step size calibrated (a reset would either restart bias
    correction or, keeping ``step``, make the first updates several times too large). State of any other shape
    (factored/quantised optimizers) is dropped for the resized parameter.

Plain LoRA only (no DoRA or other LoRA variants, no merged adapters, nn.Linear factors).
"""

from __future__ import annotations

import logging
import math
from typing import Any, Optional

import torch

from strato_peft.strato.layers import lora_layers

logger = logging.getLogger(__name__)


def _scaling(layer: Any, adapter: str, rank: int) -> float:
    alpha = layer.lora_alpha[adapter]
    return alpha / math.sqrt(rank) if layer.use_rslora.get(adapter, False) else alpha / rank


def check_layer(layer: Any, adapter: str, name: str = "") -> None:
    """Raise unless the layer is a plain, unmerged LoRA with nn.Linear factors (what resizing supports)."""
    if layer.use_dora.get(adapter, False) or adapter in getattr(layer, "lora_variant", {}):
        raise NotImplementedError(f"rank scheduler: {name or 'layer'} uses a LoRA variant (DoRA, ...); plain LoRA only")
    if adapter in getattr(layer, "merged_adapters", []):
        raise RuntimeError(f"rank scheduler: adapter {adapter!r} of {name or 'layer'} is merged; unmerge it first")
    for m in (layer.lora_A[adapter], layer.lora_B[adapter]):
        if not isinstance(m, torch.nn.Linear):
            raise NotImplementedError(f"rank scheduler: {name or 'layer'} has a {type(m).__name__} LoRA factor")


def delta_weight(layer: Any, adapter: str = "default") -> torch.Tensor:
    """The module's LoRA update ``scaling * B @ A`` (d_out x d_in, float32), in nn.Linear orientation."""
    a = layer.lora_A[adapter].weight.detach().float()
    b = layer.lora_B[adapter].weight.detach().float()
    return float(layer.scaling[adapter]) * (b @ a)


def _svd_factors(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """SVD of B @ A (B: d_out x r, A: r x d_in) without forming it: U (d_out x m), S (m), V (d_in x m)."""
    qa, ra = torch.linalg.qr(a.T)       # A^T = Qa Ra
    qb, rb = torch.linalg.qr(b)         # B = Qb Rb
    uc, s, vch = torch.linalg.svd(rb @ ra.T, full_matrices=False)
    return qb @ uc, s, qa @ vch.T


def svd_energy_rank(layer: Any, adapter: str, keep_energy: float) -> int:
    """Smallest k whose top-k singular values of B @ A hold ``keep_energy`` of the squared total (>= 1)."""
    _, s, _ = _svd_factors(layer.lora_A[adapter].weight.detach().float(), layer.lora_B[adapter].weight.detach().float())
    e = s.double() ** 2
    total = float(e.sum())
    if total <= 0:
        return 1
    cum = torch.cumsum(e, 0) / total
    return int(min(len(s), int((cum < keep_energy - 1e-12).sum()) + 1))


# ------------------------------------------------------------------------------------------- optimizer plumbing

def unwrap_optimizer(optimizer: Any) -> Any:
    """The torch optimizer under accelerate's AcceleratedOptimizer (or similar ``.optimizer`` wrappers)."""
    seen = 0
    while optimizer is not None and hasattr(optimizer, "optimizer") and seen < 8:
        inner = getattr(optimizer, "optimizer")
        if not hasattr(inner, "param_groups"):
            break
        optimizer, seen = inner, seen + 1
    return optimizer


_SQUARED_KEYS = ("exp_avg_sq", "max_exp_avg_sq", "square_avg", "sum", "acc_delta")


def _swap_param(optimizer: Any, old: torch.nn.Parameter, new: torch.nn.Parameter,
                left: Optional[torch.Tensor] = None, right: Optional[torch.Tensor] = None) -> None:
    """Put ``new`` where ``old`` is in the optimizer's param_groups and move its state: same-shape tensors become
    left @ t @ right (first moments) or left^2 @ t @ right^2 (second moments, keys in _SQUARED_KEYS); scalars such as
    ``step`` are kept; state of any other shape drops the parameter's whole state (a fresh start for it)."""
    opt = unwrap_optimizer(optimizer)
    if opt is None:
        return
    found = False
    for group in opt.param_groups:
        params = group["params"]
        for i, p in enumerate(params):
            if p is old:
                params[i] = new
                found = True
    if not found:
        return
    state = opt.state.pop(old, None)
    if not state:
        return
    moved: dict[str, Any] = {}
    for key, val in state.items():
        if not torch.is_tensor(val) or val.dim() == 0 or (val.numel() == 1 and old.numel() != 1):
            moved[key] = val.clone() if torch.is_tensor(val) else val
            continue
        if val.shape != old.shape:
            logger.warning("strato resize: optimizer state %r of shape %s does not match its parameter %s; "
                           "resetting that parameter's state", key, tuple(val.shape), tuple(old.shape))
            return
        t = val.detach().float()
        sq = key in _SQUARED_KEYS
        if left is not None:
            t = (left.square() if sq else left) @ t
        if right is not None:
            t = t @ (right.square() if sq else right)
        if sq:
            t = t.clamp_min(0)
        moved[key] = t.to(val.dtype).contiguous()
    opt.state[new] = moved


def _set_weight(lin: torch.nn.Linear, weight: torch.Tensor, optimizer: Any,
                left: Optional[torch.Tensor] = None, right: Optional[torch.Tensor] = None) -> None:
    old = lin.weight
    new = torch.nn.Parameter(weight.to(device=old.device, dtype=old.dtype).contiguous(),
                             requires_grad=old.requires_grad)
    lin.weight = new
    lin.out_features, lin.in_features = new.shape
    if optimizer is not None:
        dev = old.device
        _swap_param(optimizer, old, new, None if left is None else left.to(dev),
                    None if right is None else right.to(dev))


# ------------------------------------------------------------------------------------------------------- resizing

def grow_lora(layer: Any, adapter: str, new_rank: int, optimizer: Any = None,
              generator: Optional[torch.Generator] = None) -> None:
    """Add ``new_rank - r`` components: new A rows kaiming-uniform (peft's init), new B columns zero, the scale
    ratio folded into B, so ``scaling * B @ A`` (the module's function) is unchanged. Optimizer moments are
    zero-padded (B's rescaled by the scale ratio), ``step`` kept."""
    check_layer(layer, adapter)
    r = int(layer.r[adapter])
    if new_rank <= r:
        raise ValueError(f"grow_lora: new rank {new_rank} must exceed the current {r}")
    lin_a, lin_b = layer.lora_A[adapter], layer.lora_B[adapter]
    a, b = lin_a.weight.detach().float(), lin_b.weight.detach().float()
    s_old, s_new = float(layer.scaling[adapter]), _scaling(layer, adapter, new_rank)
    c = s_old / s_new
    g = new_rank - r
    extra = torch.empty(g, a.shape[1], dtype=torch.float32)
    torch.nn.init.kaiming_uniform_(extra, a=math.sqrt(5), generator=generator)
    with torch.no_grad():
        new_a = torch.cat([a, extra.to(a.device)], 0)
        new_b = torch.cat([b * c, torch.zeros(b.shape[0], g, device=b.device)], 1)
        dev = a.device
        x_t = torch.cat([torch.eye(r, device=dev), torch.zeros(g, r, device=dev)], 0)   # (s'/s) X^T, k x r
        y_t = torch.cat([torch.eye(r, device=dev) / c, torch.zeros(r, g, device=dev)], 1)  # (s'/s) Y^T, r x k
        _set_weight(lin_a, new_a, optimizer, left=x_t)
        _set_weight(lin_b, new_b, optimizer, right=y_t)
    layer.r[adapter] = int(new_rank)
    layer.scaling[adapter] = s_new


def shrink_lora(layer: Any, adapter: str, new_rank: int, optimizer: Any = None) -> float:
    """Replace the factors by the rank-``new_rank`` truncated SVD of ``scaling * B @ A`` (``new_rank`` = r keeps
    the function and only re-parameterises): A = rho V_k^T, B = (s/s') U_k S_k / rho with rho the old A's RMS row
    norm. Optimizer moments are projected onto the kept components (see the module docstring). Returns the share
    of squared singular values kept."""
    check_layer(layer, adapter)
    r = int(layer.r[adapter])
    if not 1 <= new_rank <= r:
        raise ValueError(f"shrink_lora: new rank {new_rank} must be in [1, {r}]")
    lin_a, lin_b = layer.lora_A[adapter], layer.lora_B[adapter]
    a, b = lin_a.weight.detach().float(), lin_b.weight.detach().float()
    s_old, s_new = float(layer.scaling[adapter]), _scaling(layer, adapter, new_rank)
    c = s_old / s_new
    with torch.no_grad():
        u, s, v = _svd_factors(a, b)
        m = s.numel()
        if m < new_rank:  # r exceeded min(d_in, d_out): pad with zero components
            u = torch.cat([u, torch.zeros(u.shape[0], new_rank - m, device=u.device)], 1)
            v = torch.cat([v, torch.zeros(v.shape[0], new_rank - m, device=v.device)], 1)
            s = torch.cat([s, torch.zeros(new_rank - m, device=s.device)])
        u_k, s_k, v_k = u[:, :new_rank], s[:new_rank], v[:, :new_rank]
        rho = float(a.norm()) / math.sqrt(r)
        if not rho > 0:
            rho = 1.0 / math.sqrt(3.0)  # RMS row norm of peft's kaiming-uniform A
        new_a = rho * v_k.T
        new_b = (c / rho) * (u_k * s_k)
        # B' = B X with X = (c/rho) A V_k;  A' = Y A with Y = rho V_k^T A^+;  state maps are (s'/s) X^T and (s'/s) Y^T
        x_t = (v_k.T @ a.T) / rho                                   # k x r
        y_t = (rho / c) * (torch.linalg.pinv(a).T @ v_k)            # r x k
        _set_weight(lin_a, new_a, optimizer, left=x_t)
        _set_weight(lin_b, new_b, optimizer, right=y_t)
    layer.r[adapter] = int(new_rank)
    layer.scaling[adapter] = s_new
    e = s.double() ** 2
    total = float(e.sum())
    return float(e[:new_rank].sum()) / total if total > 0 else 1.0


def sync_peft_config(model: torch.nn.Module, adapter: str = "default") -> None:
    """Write the layers' current ranks (and alphas) into the adapter's LoraConfig so that ``save_pretrained`` +
    ``PeftModel.from_pretrained`` rebuild these shapes. ``rank_pattern`` becomes exactly {full module name: rank}
    for every LoRA module (peft takes the *first* key that matches a module, so a leftover suffix/regex key listed
    earlier would win over an exact name); ``alpha_pattern`` likewise when any module's alpha differs from the
    config's ``lora_alpha`` or it was set before."""
    layers = lora_layers(model, adapter)
    cfg = model.peft_config[adapter]
    cfg.rank_pattern = {n: int(m.r[adapter]) for n, m in layers.items()}
    alphas = {n: m.lora_alpha[adapter] for n, m in layers.items()}
    if cfg.alpha_pattern or any(a != cfg.lora_alpha for a in alphas.values()):
        cfg.alpha_pattern = dict(alphas)


def set_module_rank(model: torch.nn.Module, name: str, new_rank: int, optimizer: Any = None,
                    adapter: str = "default", generator: Optional[torch.Generator] = None,
                    sync_config: bool = True) -> float:
    """Resize the LoRA of module ``name`` (full base-model name) to ``new_rank`` in place: grow or SVD-shrink the
    factors, move the optimizer state, update the peft config. Returns the energy share kept (1.0 for growth)."""
    layer = lora_layers(model, adapter)[name]
    r = int(layer.r[adapter])
    kept = 1.0
    if new_rank > r:
        grow_lora(layer, adapter, new_rank, optimizer, generator)
    elif new_rank < r:
        kept = shrink_lora(layer, adapter, new_rank, optimizer)
    if sync_config:
        sync_peft_config(model, adapter)
    return kept
