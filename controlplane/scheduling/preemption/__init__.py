"""Preemption: rights and grace (``policy``), candidates (``candidates``), victim choice (``selection``)."""

from controlplane.scheduling.preemption.candidates import Choice, ModelPreemption, Victim, build, usable_by_dom
from controlplane.scheduling.preemption.policy import stop_grace_s, victim_classes
from controlplane.scheduling.preemption.selection import (
    MAX_DOMAINS_COMPARED,
    choose_across_domains,
    choose_anywhere,
    choose_in_domain,
    claim,
    select_victims,
)

__all__ = [
    "MAX_DOMAINS_COMPARED",
    "Choice",
    "ModelPreemption",
    "Victim",
    "build",
    "choose_across_domains",
    "choose_anywhere",
    "choose_in_domain",
    "claim",
    "select_victims",
    "stop_grace_s",
    "usable_by_dom",
    "victim_classes",
]
