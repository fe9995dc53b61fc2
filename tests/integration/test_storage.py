"""Storage invariants enforced by the database itself, on PostgreSQL and SQLite."""

from __future__ import annotations

import pytest
from factories import make_site, make_tenant, register_node
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from controlplane.domain.ids import new_id
from controlplane.runtime import Runtime
from controlplane.store.migrate import downgrade, upgrade
from controlplane.store.models import Allocation, Gpu, Workload
from controlplane.store.types import utcnow


def _workload(session: Session, tenant_id: str) -> Workload:
    wl = Workload(
        id=new_id("wl"),
        tenant_id=tenant_id,
        gpu_count=1,
        gpu_model="NVIDIA GB300",
        nvlink="none",
        priority="on_demand",
        command=["true"],
        env={},
        max_duration_s=60,
    )
    session.add(wl)
    session.flush()
    return wl


def test_database_refuses_a_second_live_allocation_of_a_gpu(runtime: Runtime) -> None:
    make_site(runtime)
    node = register_node(runtime, 1)
    acme = make_tenant(runtime, "acme")
    rival = make_tenant(runtime, "rival")
    with runtime.uow() as s:
        gpu = s.scalars(select(Gpu).where(Gpu.node_id == node.node_id, Gpu.index == 0)).one()
        first = _workload(s, acme.tenant_id)
        second = _workload(s, rival.tenant_id)
        s.add(Allocation(workload_id=first.id, gpu_id=gpu.id, node_id=node.node_id, rank=0, epoch=1))
    with pytest.raises(IntegrityError), runtime.uow() as s:
        s.add(Allocation(workload_id=second.id, gpu_id=gpu.id, node_id=node.node_id, rank=0, epoch=2))
        s.flush()
    # Once released, the GPU can be allocated again, and history keeps both rows.
    with runtime.uow() as s:
        live = s.scalars(select(Allocation).where(Allocation.gpu_id == gpu.id)).one()
        live.released_at = utcnow()
    with runtime.uow() as s:
        s.add(Allocation(workload_id=second.id, gpu_id=gpu.id, node_id=node.node_id, rank=0, epoch=2))
    with runtime.sessions() as s:
        rows = s.scalars(select(Allocation).where(Allocation.gpu_id == gpu.id)).all()
        assert len(rows) == 2 and sum(r.released_at is None for r in rows) == 1


def test_idempotency_key_unique_per_tenant(runtime: Runtime) -> None:
    make_site(runtime)
    acme = make_tenant(runtime, "acme")
    with runtime.uow() as s:
        wl = _workload(s, acme.tenant_id)
        wl.idempotency_key = "k1"
    with pytest.raises(IntegrityError), runtime.uow() as s:
        dup = _workload(s, acme.tenant_id)
        dup.idempotency_key = "k1"
        s.flush()


def test_migrations_downgrade_and_upgrade_again(db_url: str) -> None:
    downgrade(db_url, "base")
    upgrade(db_url)


def test_migrations_match_the_models(db_url: str) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from controlplane.store.db import make_engine
    from controlplane.store.models import Base

    engine = make_engine(db_url)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
    engine.dispose()
    assert diff == []
