"""Tenant use cases on workloads: submit, read, cancel, and the lifecycle every state change goes
through; deadlines and the tenant's quota view."""
