"""Why a workload is pending: a bounded code (for metrics, alerts, the CLI) beside the words.

The words carry the numbers (``waiting for 72 NVIDIA GB300 GPUs: 9/72 free (63 allocated)``); the
code is one of a closed set, so a dashboard can count pending work by reason without parsing
text or growing a label per workload.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class PendingCode(StrEnum):
    SUBMITTED = "submitted"  # not yet seen by a scheduling pass
    REQUEUED = "requeued"  # back in the queue after its node was lost
    NO_SUCH_MODEL = "no_such_model"
    TOO_LARGE = "too_large"  # more GPUs than the fleet has of the model
    NO_GPUS = "no_gpus"  # asks for none
    QUOTA_GPUS = "quota_gpus"
    QUOTA_GPU_HOURS = "quota_gpu_hours"
    QUOTA_SPEND = "quota_spend"
    GPUS = "gpus"  # fewer free GPUs of the model than asked
    SHAPE = "shape"  # enough free, but not in the shape asked
    NVLINK_DOMAIN = "nvlink_domain"  # no one NVLink domain has enough free
    WHOLE_DOMAINS = "whole_domains"  # not enough whole free domains for a gang larger than one
    NVLINK_DRAINING = "nvlink_draining"  # free GPUs sit in domains draining their NVLink peers
    RACK_POWER = "rack_power"
    SITE_POWER = "site_power"
    PREEMPTION = "preemption"  # waiting for GPUs being freed by preemption
    PLANNED = "planned"  # blocked, with a planned start: GPUs of its shape are held for it
    FILTERED = "filtered"  # refused by an admission plugin (its text says which and why)


@dataclass(frozen=True, slots=True)
class PendingReason:
    code: PendingCode
    text: str

    def __str__(self) -> str:
        return self.text
