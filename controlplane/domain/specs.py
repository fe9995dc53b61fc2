"""What a tenant asks for, validated: the service layer's input, independent of the API schema."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field

from controlplane.domain.enums import NvlinkPolicy, PriorityClass
from controlplane.domain.errors import InvalidRequest

ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
# Set by the agent from the placement; a tenant cannot override them.
RESERVED_ENV = frozenset(
    {
        "CUDA_VISIBLE_DEVICES",
        "NVIDIA_VISIBLE_DEVICES",
        "RANK",
        "NODE_RANK",
        "NNODES",
        "WORLD_SIZE",
        "LOCAL_WORLD_SIZE",
        "MASTER_ADDR",
        "MASTER_PORT",
    }
)
RESERVED_ENV_PREFIXES = ("SWITCHYARD_", "PET_")
TENANT_PRIORITIES = frozenset({PriorityClass.RESERVED, PriorityClass.ON_DEMAND, PriorityClass.SPOT})
# Work the site itself submits (GPU mining) may also use the internal class; the API never sets
# ``internal``, so a tenant cannot ask for it.
INTERNAL_PRIORITIES = TENANT_PRIORITIES | {PriorityClass.MINING}
# A declared checkpoint interval: a minute to a week (and never above the max duration).
MIN_CHECKPOINT_INTERVAL_S = 60
MAX_CHECKPOINT_INTERVAL_S = 7 * 24 * 3600
# A tenant's fair-share weight among the tenants of its class (its contract): bounded, above zero.
DEFAULT_SHARE_WEIGHT = 1.0
MIN_SHARE_WEIGHT = 0.01
MAX_SHARE_WEIGHT = 1000.0


@dataclass(frozen=True)
class WorkloadSpec:
    gpu_count: int
    gpu_model: str
    nvlink: NvlinkPolicy
    priority: PriorityClass
    command: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)
    max_duration_s: int | None = None
    name: str = ""
    sim_utilization: float = 0.9
    internal: bool = False  # submitted by Switchyard itself (GPU mining), never by a tenant
    # How often it checkpoints: a preemption loses the work since the last one (None: all of it).
    checkpoint_interval_s: int | None = None

    def __post_init__(self) -> None:
        if self.gpu_count < 1:
            raise InvalidRequest("gpus must be at least 1")
        if self.priority not in (INTERNAL_PRIORITIES if self.internal else TENANT_PRIORITIES):
            raise InvalidRequest(f"priority {self.priority.value!r} is not available to tenants")
        if not self.command or any(not part for part in self.command[:1]):
            raise InvalidRequest("command must name a program to run")
        interval = self.checkpoint_interval_s
        if interval is not None:
            if not MIN_CHECKPOINT_INTERVAL_S <= interval <= MAX_CHECKPOINT_INTERVAL_S:
                raise InvalidRequest(
                    f"checkpoint_interval_s must be {MIN_CHECKPOINT_INTERVAL_S} to {MAX_CHECKPOINT_INTERVAL_S} s"
                )
            if self.max_duration_s is not None and interval > self.max_duration_s:
                raise InvalidRequest(
                    f"checkpoint_interval_s ({interval} s) is above the workload's max duration "
                    f"({self.max_duration_s} s)"
                )
        for name in self.env:
            if not ENV_NAME.match(name):
                raise InvalidRequest(f"env name {name!r} is not a valid variable name")
            if name in RESERVED_ENV or name.startswith(RESERVED_ENV_PREFIXES):
                raise InvalidRequest(f"env {name!r} is set by Switchyard from the placement")

    def fingerprint(self) -> str:
        """Canonical hash of the request, to tell an idempotent retry from a conflicting reuse."""
        payload = asdict(self)
        payload["command"] = list(self.command)
        if not self.internal:
            del payload["internal"]  # tenants' hashes stay what they were before the flag existed
        if self.checkpoint_interval_s is None:
            del payload["checkpoint_interval_s"]  # nor before the checkpoint interval existed
        blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(blob.encode()).hexdigest()
