"""The node agent: register, report, watch desired state, run what it says.

One module per concern, each taking the clock it reads (``clock.Clock``: wall time for the
wire and the health tracker, monotonic time for deadlines), so tests can drive time:

- ``main``: the process (configuration, backend, sandbox, metrics listener, signals);
- ``registration``: the inventory, registration, orphans a previous agent left running;
- ``agent``: the four loops and the parts they share (``Agent``);
- ``reporting``: sample, fold health (``judge_health``), build and deliver reports;
- ``replay``: send the spool, oldest first, in batches;
- ``watch``: the desired-state long poll;
- ``workloads``: reconcile against the desired state (the planner is ``agents.reconcile``);
- ``simload``: what the simulator's GPUs show while workloads run.

The files kept across restarts are in ``agents.state``, the log upload in ``agents.logship``.
"""

from agents.daemon.agent import Agent
from agents.daemon.backoff import Backoff
from agents.daemon.clock import SYSTEM_CLOCK, Clock, SystemClock
from agents.daemon.main import BackendUnavailable, build_backend, build_sandbox, main
from agents.daemon.registration import node_inventory, recover_orphans, register
from agents.daemon.replay import BATCH_REPORTS, BATCH_SPOOL_BYTES, Delivery
from agents.daemon.reporting import (
    CREDENTIAL_REFUSED,
    FINAL_DRAIN_S,
    MAX_HEALTH_REASONS,
    MAX_UNSENT_XID_EVENTS,
    XID_EVENTS_PER_REPORT,
    judge_health,
)
from agents.daemon.simload import SIM_MEMORY_SHARE
from agents.daemon.workloads import LOG_SETTLE_TIMEOUT_S

__all__ = [
    "BATCH_REPORTS",
    "BATCH_SPOOL_BYTES",
    "CREDENTIAL_REFUSED",
    "FINAL_DRAIN_S",
    "LOG_SETTLE_TIMEOUT_S",
    "MAX_HEALTH_REASONS",
    "MAX_UNSENT_XID_EVENTS",
    "SIM_MEMORY_SHARE",
    "SYSTEM_CLOCK",
    "XID_EVENTS_PER_REPORT",
    "Agent",
    "BackendUnavailable",
    "Backoff",
    "Clock",
    "Delivery",
    "SystemClock",
    "build_backend",
    "build_sandbox",
    "judge_health",
    "main",
    "node_inventory",
    "recover_orphans",
    "register",
]
