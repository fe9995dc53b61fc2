"""XID codes the agent acts on by number, in one place (NVIDIA's XID catalog).

The health policy (``agents.health``), the NVML backend and the simulator import these rather
than repeating the numbers.
"""

from __future__ import annotations

from typing import Final

XID_DOUBLE_BIT_ECC: Final = 48  # the XID NVIDIA's catalog gives a double-bit ECC error
XID_ROW_REMAP_FAILURE: Final = 64
XID_FELL_OFF_THE_BUS: Final = 79
XID_RECOVERY_ACTION: Final = 154  # "read field 230 (NVML_FI_DEV_GET_GPU_RECOVERY_ACTION)"
