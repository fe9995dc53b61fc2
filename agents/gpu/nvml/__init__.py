"""The NVML backend: a node's real GPUs, read through pynvml (the ``nvidia-ml-py`` package).

By concern: ``calls`` (calling NVML, what is remembered per GPU), ``inventory`` (identity,
limits, platform, fabric, MIG), ``fast`` (every sample), ``slow`` (health counters), ``events``
(registration and the wait thread), ``backend`` (``NvmlBackend``, which ties them together).

A field a GPU or driver cannot give is ``None``, never a made-up zero, and never stops the loop.
"""

from __future__ import annotations

from agents.xid import XID_DOUBLE_BIT_ECC

from .backend import NvmlBackend, PowerLimitError
from .calls import NvmlUnavailableError

__all__ = ["XID_DOUBLE_BIT_ECC", "NvmlBackend", "NvmlUnavailableError", "PowerLimitError"]
