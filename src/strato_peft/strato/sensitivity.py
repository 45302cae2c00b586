"""The layer-sensitivity map: how much a rank-r LoRA update on each module can gain, estimated before training.

For a weight W with accumulated loss gradient G (the mean over a few training batches), the best first-order
loss decrease of an update of Frobenius norm eta restricted to rank r is eta * sqrt(sum_{i<=r} s_i^2), s_i the
singular values of G. The map stores the top ``max_rank`` singular values per module and values rank r at a module
as ``sum_{i<=r} s_i^2`` (concave in r, so value per unit of rank falls as rank grows). ``value(..., power=p)``
raises each term to p: p < 1 flattens the map, for solvers that hedge against its noise.

The map also keeps each module's top right singular vectors (``directions``, max_rank x d_in): the input
directions along which the gradient is largest. ``strato/init.py`` starts LoRA's A there (B stays zero), so the
first steps train the rank-r subspace the map valued instead of a random one.

Building the map costs a forward + backward with weight gradients on ``batches`` batches (a small fraction of one
training run) and an SVD per module; the result is cached on disk keyed by model, data and settings (the
spectra as JSON, the directions as safetensors beside it).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence

import torch

from strato_peft.strato.sites import ModuleSite

CACHE_VERSION = 2  # 2: directions stored beside the spectra


@dataclass
class SensitivityMap:
    """Top singular values (and right singular vectors) of each module's accumulated gradient, and how they were
    obtained."""

    spectra: dict[str, list[float]]
    info: dict[str, Any] = field(default_factory=dict)
    directions: dict[str, torch.Tensor] = field(default_factory=dict)  # name -> (k <= max_rank, d_in), float32 CPU

    def value(self, name: str, rank: int, power: float = 1.0) -> float:
        """Gain of rank ``rank`` at module ``name``: sum of the top-r squared singular values (each raised to
        ``power``; power 0 counts rank units)."""
        if rank <= 0:
            return 0.0
        sv = self.spectra[name]
        vals = [s * s for s in sv[:rank]]
        if rank > len(vals):  # past the stored spectrum: extend with the smallest stored value
            vals += [vals[-1] if vals else 0.0] * (rank - len(vals))
        if power == 0:
            return float(rank)
        return float(sum(v ** power for v in vals))

    def share(self, name: str, rank: int) -> float:
        """``value`` as a fraction of the module's stored spectrum (0 for a module with no gradient)."""
        total = self.total(name)
        return self.value(name, rank) / total if total > 0 else 0.0

    def total(self, name: str) -> float:
        return float(sum(s * s for s in self.spectra[name]))

    def to_json(self) -> dict[str, Any]:
        return {"spectra": self.spectra, "info": self.info}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "SensitivityMap":
        return cls({k: list(map(float, v)) for k, v in data["spectra"].items()}, dict(data.get("info", {})))


def _weight(model: torch.nn.Module, name: str) -> torch.nn.Parameter:
    module = model.get_submodule(name)
    inner = getattr(module, "base_layer", module)
    return inner.weight


def batch_to(batch: Mapping[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


LOWRANK_OVERSAMPLE = 16
EXACT_SVD_UP_TO = 1024  # matrices whose smaller side is at most this get the exact SVD (tens of ms on a CPU)


def top_svd(g: torch.Tensor, k: int, exact_up_to: int = EXACT_SVD_UP_TO
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The top ``k`` singular triplets (U_k, s_k, V_k^T) of ``g``: exact unless both sides of ``g`` exceed
    ``exact_up_to`` and ``k`` is far below them (large models, where a full SVD per module would dominate the map's
    cost); then randomized (``torch.svd_lowrank``, 4 power iterations, fixed seed, the caller's RNG state kept)."""
    q = k + LOWRANK_OVERSAMPLE
    if min(g.shape) <= max(exact_up_to, 4 * q):
        u, s, vh = torch.linalg.svd(g, full_matrices=False)
        return u[:, :k], s[:k], vh[:k]
    devices = [g.device.index or 0] if g.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(0)
        u, s, v = torch.svd_lowrank(g, q=q, niter=4)
    return u[:, :k], s[:k], v[:, :k].T


def build_sensitivity(model: torch.nn.Module, batches: Iterable[Mapping[str, Any]], sites: Sequence[ModuleSite],
                      max_rank: int) -> SensitivityMap:
    """Accumulate the loss gradient of every site's weight over ``batches`` (model(**batch).loss) and keep the top
    ``max_rank`` singular values of each. Only the sites' weights require grad meanwhile; flags are restored."""
    start = time.perf_counter()
    flags = {id(p): p.requires_grad for p in model.parameters()}
    params = [p for p in model.parameters()]
    weights = {s.name: _weight(model, s.name) for s in sites}
    grads = {n: None for n in weights}
    directions: dict[str, torch.Tensor] = {}
    device = next(model.parameters()).device
    was_training = model.training
    n_batches = tokens = 0
    try:
        for p in params:
            p.requires_grad_(False)
        for w in weights.values():
            w.requires_grad_(True)
            w.grad = None
        model.eval()  # no dropout: the expected gradient, not a noisy one
        for batch in batches:
            batch = batch_to(batch, device)
            loss = model(**batch).loss
            loss.backward()
            n_batches += 1
            if "attention_mask" in batch:
                tokens += int(batch["attention_mask"].sum())
            for n, w in weights.items():
                if w.grad is not None:
                    grads[n] = w.grad.detach().float().clone() if grads[n] is None else grads[n] + w.grad.float()
                    w.grad = None
        if n_batches == 0:
            raise ValueError("sensitivity: no batches to estimate from")
        spectra = {}
        for s in sites:
            g = grads[s.name]
            if g is None:
                spectra[s.name] = [0.0] * s.rank_limit(max_rank)
                continue
            u, sv, vh = top_svd(g / n_batches, max_rank)
            spectra[s.name] = [float(x) for x in sv.cpu()]
            # input-space directions: rows of V^T (nn.Linear weight is d_out x d_in; Conv1D stores it transposed)
            inputs = u.T if s.conv1d else vh
            directions[s.name] = inputs.detach().float().cpu().contiguous()
    finally:
        for p in params:
            p.requires_grad_(flags[id(p)])
            p.grad = None
        model.train(was_training)
    info = {"batches": n_batches, "tokens": tokens, "seconds": time.perf_counter() - start, "max_rank": max_rank,
            "estimator": "singular values of the mean loss gradient per weight matrix"}
    return SensitivityMap(spectra, info, directions)


def cache_key(parts: Mapping[str, Any]) -> str:
    """A stable key for (model, data, settings): sha256 of their JSON."""
    blob = json.dumps({"version": CACHE_VERSION, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def data_fingerprint(batches: Sequence[Mapping[str, Any]]) -> str:
    """Hash of the token ids (and labels) of the batches the map is built from."""
    h = hashlib.sha256()
    for b in batches:
        for k in sorted(b):
            v = b[k]
            if isinstance(v, torch.Tensor):
                h.update(k.encode())
                h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:24]


def model_fingerprint(model: torch.nn.Module, identity: str) -> str:
    """Identity string + config + a sample of the weights (cheap; catches a different checkpoint under one name)."""
    h = hashlib.sha256(identity.encode())
    cfg = getattr(model, "config", None)
    if cfg is not None:
        # problem_type: transformers' classifiers fill it in on their first forward with labels (inferred from the
        # labels, so it says nothing new); left in, a model would change fingerprint once a map or probe ran it
        h.update(json.dumps({**cfg.to_dict(), "problem_type": None}, sort_keys=True, default=str).encode())
    for i, (name, p) in enumerate(model.named_parameters()):
        if i % 7 == 0 and p.device.type != "meta":
            h.update(name.encode())
            h.update(p.detach().flatten()[:64].float().cpu().numpy().tobytes())
    return h.hexdigest()[:24]


def load_or_build(cache_dir: Optional[Path], key_parts: Mapping[str, Any], model: torch.nn.Module,
                  batches: Sequence[Mapping[str, Any]], sites: Sequence[ModuleSite], max_rank: int,
                  build: Optional[Callable[[], SensitivityMap]] = None) -> SensitivityMap:
    """The cached map for these (model, data, settings) if there is one, else build it (``build``, by default the
    gradient map of ``batches``) and cache it atomically. ``key_parts`` must name everything ``build`` depends on
    beyond the model, the batches, the sites and ``max_rank``."""
    key = cache_key({**key_parts, "data": data_fingerprint(batches), "sites": [s.name for s in sites],
                     "max_rank": max_rank})
    path = cache_dir / f"{key}.json" if cache_dir else None
    vectors = path.with_suffix(".safetensors") if path is not None else None
    if path is not None and path.is_file() and vectors.is_file():
        from safetensors.torch import load_file

        smap = SensitivityMap.from_json(json.loads(path.read_text()))
        smap.directions = load_file(str(vectors))
        smap.info.update(cached=True, cache_file=str(path))
        return smap
    smap = build() if build is not None else build_sensitivity(model, batches, sites, max_rank)
    smap.info.update(cached=False, key=key)
    if path is not None:
        from safetensors.torch import save_file

        from strato_peft.outputs import atomic_file, atomic_write_text

        # vectors first: a map file without its vectors beside it is never taken for a complete entry
        with atomic_file(vectors) as tmp:
            save_file(smap.directions, str(tmp))
        atomic_write_text(path, json.dumps(smap.to_json()))
        smap.info["cache_file"] = str(path)
    return smap
