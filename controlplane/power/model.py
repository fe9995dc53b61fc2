"""Planned (not measured) draw: what the site would draw if every allocated GPU ran at its limit.

The one formula, used by the scheduler's per-pass budget, the mining budget, the operator's
power view, the metrics and the day replay, so that mining is never handed power the scheduler
did not budget (DESIGN invariant 3).

IT draw of a rack = its switch trays + node overhead per node + per GPU (limit if allocated, idle
otherwise); the site's planned GPU-side draw = the sum over racks (and over nodes that belong to
no rack) x PUE; mining is added on top. A node draws from its rack; a node with no rack id draws
from its NVLink domain (an NVL72 rack is one); a node with neither answers to the site cap only
and brings no switch trays. Node overhead is paid whether a node runs work or not, so taking a
GPU adds (limit - idle) to its rack and that x PUE to the site.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from controlplane.domain.site import SiteSpec


@dataclass(frozen=True, slots=True)
class PowerModel:
    site_cap_w: float
    pue: float
    gpu_idle_w: float
    gpu_limit_w: float
    node_overhead_w: float
    switch_trays_w_per_rack: float
    rack_cap_w: Mapping[str, float] = field(default_factory=dict)
    safety_margin_w: float = 0.0

    @classmethod
    def for_site(cls, spec: SiteSpec, rack_cap_w: Mapping[str, float] | None = None) -> PowerModel:
        """The site's model; ``rack_cap_w`` by rack key (default: none capped)."""
        racks = spec.racks
        return cls(
            site_cap_w=spec.cap_w,
            pue=spec.pue,
            gpu_idle_w=racks.gpu_idle_w,
            gpu_limit_w=racks.gpu_power_limit_w,
            node_overhead_w=racks.node_overhead_w,
            switch_trays_w_per_rack=racks.switch_trays_w,
            rack_cap_w=dict(rack_cap_w or {}),
            safety_margin_w=spec.safety_margin_w,
        )

    @property
    def marginal_gpu_w(self) -> float:
        """What taking one idle GPU adds to its rack's IT draw."""
        return self.gpu_limit_w - self.gpu_idle_w

    @property
    def site_limit_w(self) -> float:
        """What planned draw (GPUs x PUE + mining) must stay under: the cap less the margin."""
        return self.site_cap_w - self.safety_margin_w

    def it_w(self, tally: Tally) -> float:
        """The formula: IT watts of ``tally``'s racks, nodes and GPUs."""
        return (
            tally.racks * self.switch_trays_w_per_rack
            + tally.nodes * self.node_overhead_w
            + tally.allocated * self.gpu_limit_w
            + (tally.gpus - tally.allocated) * self.gpu_idle_w
        )

    def grid_w(self, tally: Tally) -> float:
        """What ``tally`` plans to draw from the grid: IT watts x PUE."""
        return self.it_w(tally) * self.pue


@dataclass(slots=True)
class Tally:
    """Counts the formula needs: switch-tray sets (racks with a node), nodes, GPUs, allocated GPUs."""

    racks: int = 0
    nodes: int = 0
    gpus: int = 0
    allocated: int = 0

    def add(self, other: Tally) -> None:
        self.racks += other.racks
        self.nodes += other.nodes
        self.gpus += other.gpus
        self.allocated += other.allocated


def rack_key(rack_id: str | None, domain: str | None) -> str | None:
    """The rack a node draws from: its rack id, else its NVLink domain; None: neither."""
    return rack_id if rack_id is not None else domain


class PoweredGpu(Protocol):
    @property
    def allocated(self) -> bool: ...


class PoweredNode(Protocol):
    """What the formula needs of a node (the scheduler's ``NodeView`` is one)."""

    @property
    def rack_id(self) -> str | None: ...

    @property
    def domain(self) -> str | None: ...

    @property
    def gpus(self) -> Sequence[PoweredGpu]: ...


def tally_by_rack(nodes: Iterable[PoweredNode]) -> dict[str | None, Tally]:
    """Per rack key (``rack_key``; None: nodes of no rack): one loop, a campus is 30,000 nodes."""
    out: dict[str | None, Tally] = {}
    for node in nodes:
        key = node.rack_id if node.rack_id is not None else node.domain  # rack_key, inline: per node
        t = out.get(key)
        if t is None:
            t = out[key] = Tally(racks=0 if key is None else 1)
        t.nodes += 1
        gpus = node.gpus
        t.gpus += len(gpus)
        allocated = 0
        for gpu in gpus:
            if gpu.allocated:
                allocated += 1
        t.allocated += allocated
    return out


def site_tally(by_rack: Mapping[str | None, Tally]) -> Tally:
    total = Tally()
    for t in by_rack.values():
        total.add(t)
    return total
