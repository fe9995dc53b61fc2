"""Every Redis key and channel the control plane owns, under one prefix per deployment."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Keys:
    prefix: str

    def node_seq(self, node_id: str) -> str:
        return f"{self.prefix}:node:{node_id}:seq"

    def node_gpus(self, node_id: str) -> str:
        return f"{self.prefix}:node:{node_id}:gpus"

    def node_energy(self, node_id: str) -> str:
        """Hash: per GPU, the last energy counter seen and the energy accumulated from it; and the
        node's counts of accepted and duplicate reports."""
        return f"{self.prefix}:node:{node_id}:energy"

    def node_gpu_uuids(self, node_id: str) -> str:
        """Set: the UUIDs of the node's GPUs, as SQL lists them (a mirror, rebuilt by every SQL
        fold): only their samples and energy are recorded."""
        return f"{self.prefix}:node:{node_id}:gpu_uuids"

    def node_report(self, node_id: str) -> str:
        """Hash: the fingerprint of the last report folded into SQL, and the node's generation."""
        return f"{self.prefix}:node:{node_id}:report"

    @property
    def leases(self) -> str:
        """Sorted set: node id -> lease expiry (unix s). One ZRANGEBYSCORE finds every expired lease."""
        return f"{self.prefix}:leases"

    @property
    def node_wake_channel(self) -> str:
        return f"{self.prefix}:wake:nodes"

    @property
    def scheduler_wake_channel(self) -> str:
        return f"{self.prefix}:wake:scheduler"

    def leader(self, role: str) -> str:
        """The lease of a fenced singleton role ("scheduler", "dispatcher"): holder and epoch
        (the epoch comes from the database's fence, never from a Redis counter)."""
        return f"{self.prefix}:{role}:leader"
