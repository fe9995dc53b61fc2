"""The audit log (finding 12 of issue 8): every operator action, credential event, tenant policy
change and curtailment command, appended in the transaction of the action it records, queryable
by operators (and by a tenant for its own keys) and exported as one JSON log line per entry."""

from controlplane.services.audit.query import MAX_PAGE, AuditFilter, AuditPage, page, tenant_page
from controlplane.services.audit.record import NO_ORIGIN, SYSTEM, Actor, AuditContext, Origin, as_dict, record

__all__ = [
    "MAX_PAGE",
    "NO_ORIGIN",
    "SYSTEM",
    "Actor",
    "AuditContext",
    "AuditFilter",
    "AuditPage",
    "Origin",
    "as_dict",
    "page",
    "record",
    "tenant_page",
]
