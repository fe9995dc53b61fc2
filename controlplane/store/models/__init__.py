"""SQLAlchemy models, one module per capability. Schema changes go through Alembic migrations in
``store/migrations/``. Importing this package registers every table on ``Base.metadata``.

SQL holds state changes only; heartbeats and telemetry live in Redis (DESIGN.md section 8).
"""

from controlplane.store.models.audit import AuditEntry, CredentialAddress
from controlplane.store.models.base import NAMING, Base
from controlplane.store.models.fleet import Gpu, GpuEvent, Node, Rack, Site
from controlplane.store.models.metering import EnergyReading, UsageHourly, UsageRecord
from controlplane.store.models.power import MiningEvent
from controlplane.store.models.scheduling import LeaderFence, Preemption
from controlplane.store.models.tenancy import ApiKey, BootstrapToken, Tenant
from controlplane.store.models.workloads import Allocation, Workload, WorkloadEvent, WorkloadLog, WorkloadRank

__all__ = [
    "Allocation",
    "ApiKey",
    "AuditEntry",
    "Base",
    "BootstrapToken",
    "CredentialAddress",
    "EnergyReading",
    "Gpu",
    "LeaderFence",
    "GpuEvent",
    "MiningEvent",
    "NAMING",
    "Node",
    "Preemption",
    "Rack",
    "Site",
    "Tenant",
    "UsageHourly",
    "UsageRecord",
    "Workload",
    "WorkloadEvent",
    "WorkloadLog",
    "WorkloadRank",
]
