"""Switchyard node agent: one daemon per GPU host.

The package must stay importable with only the base install (pydantic, httpx,
prometheus_client, nvidia-ml-py): GPU hosts do not carry the control plane's stack.
"""
