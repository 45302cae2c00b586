"""Go-Explore archive of probed allocations.

Every probe (a short training that scores an allocation) is stored under a coarse *cell*: the sites are grouped by
module kind and depth band (first/middle/last third of the blocks) and each group is reduced to the log2 bucket of
its mean rank. An allocation whose cell was already probed reuses that score instead of training again, and the
archive hands solvers the states further exploration starts from (Go-Explore: promising, rarely revisited cells).
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Mapping, Optional, Sequence

from strato_peft.strato.allocation import Allocation
from strato_peft.strato.sites import ModuleSite


@dataclass
class ProbeOutcome:
    """What a probe returns: a score (higher is better, e.g. minus the validation loss) and what it cost."""

    score: float
    seconds: float = 0.0
    metrics: dict[str, Any] = field(default_factory=dict)


@dataclass
class ProbeRecord:
    """One archived probe."""

    cell: tuple
    allocation: Allocation
    score: float
    seconds: float
    solver: str
    metrics: dict[str, Any] = field(default_factory=dict)
    visits: int = 1   # times a solver asked for this cell (1 = the probe itself)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["cell"] = list(self.cell)
        return d


Probe = Callable[[Allocation], ProbeOutcome]


class GoExploreArchive:
    """Probed allocations keyed by cell; reuse instead of re-running, and exploration start states."""

    def __init__(self, sites: Sequence[ModuleSite], probe: Probe, bands: int = 3):
        self.sites = list(sites)
        self.probe = probe
        layers = [s.layer for s in self.sites if s.layer is not None]
        self._n_layers = (max(layers) + 1) if layers else 1
        self._bands = bands
        self.records: dict[tuple, ProbeRecord] = {}
        self.reused = 0
        self.search_seconds = 0.0

    def _group(self, site: ModuleSite) -> tuple[str, int]:
        band = 0 if site.layer is None else min(self._bands - 1, site.layer * self._bands // self._n_layers)
        return site.kind, band

    def cell(self, allocation: Mapping[str, int]) -> tuple:
        """(kind, band, log2 bucket of the group's mean rank) for every group, in a fixed order."""
        sums: dict[tuple[str, int], list[int]] = {}
        for s in self.sites:
            sums.setdefault(self._group(s), []).append(int(allocation.get(s.name, 0)))
        return tuple((k, b, int(round(math.log2(1 + sum(v) / len(v))))) for (k, b), v in sorted(sums.items()))

    def evaluate(self, allocation: Mapping[str, int], solver: str = "") -> ProbeRecord:
        """The archived record of ``allocation``'s cell, probing it first if the cell is new."""
        key = self.cell(allocation)
        if key in self.records:
            self.reused += 1
            self.records[key].visits += 1
            return self.records[key]
        start = time.perf_counter()
        out = self.probe(dict(allocation))
        seconds = out.seconds or (time.perf_counter() - start)
        rec = ProbeRecord(key, dict(allocation), float(out.score), seconds, solver, dict(out.metrics))
        self.records[key] = rec
        return rec

    @property
    def n_probes(self) -> int:
        return len(self.records)

    @property
    def probe_seconds(self) -> float:
        return float(sum(r.seconds for r in self.records.values()))

    def best(self) -> Optional[ProbeRecord]:
        return max(self.records.values(), key=lambda r: r.score, default=None)

    def starts(self, k: int, rng: random.Random) -> list[Allocation]:
        """Up to k archived allocations to explore from: Go-Explore's weight 1/sqrt(visits), times a rank bonus
        for the better-scoring cells (best first gets the largest)."""
        recs = sorted(self.records.values(), key=lambda r: -r.score)
        if not recs:
            return []
        weights = [(1.0 / math.sqrt(r.visits)) * (1.0 / (1 + i)) for i, r in enumerate(recs)]
        chosen = rng.choices(recs, weights=weights, k=k)
        return [dict(r.allocation) for r in chosen]

    def summary(self) -> dict[str, Any]:
        """Counts and costs for strato_plan.json."""
        return {"probes": self.n_probes, "reused": self.reused, "probe_seconds": self.probe_seconds,
                "records": [r.as_dict() for r in sorted(self.records.values(), key=lambda r: -r.score)]}
