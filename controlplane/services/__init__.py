"""Use cases, one package per capability: agents, workloads, fleet, scheduler, admin. Services
read and write through the session of the unit of work their caller opened (``uow``) and never
commit themselves; none imports FastAPI or Celery."""
