"""GPU health from NVIDIA's XID catalog, ECC and row-remapping state: a pure policy.

Every condition that makes a GPU degraded or unhealthy carries the rule that clears it, so a
GPU never stays unhealthy after the cause is gone (a known bug elsewhere: a device plugin that
marks a GPU unhealthy until the agent restarts). Conditions clear in one of three ways:

- ``quiet``: no recurrence for a window (application-level XIDs, repeated-if-support ones);
- ``reset``: the GPU was reset or the driver reloaded (the energy counter went backwards, or the
  recovery-action field returned to 0 after asking for a reset);
- ``state``: the condition is a live reading (field 230, pending/failed row remapping) and clears
  when the reading does.

A tracker's state is plain data (``snapshot``, ``GpuHealthTracker.restore``), so the agent can
keep it across a restart (``agents.state.HealthLedger``): a GPU that fell off the bus is not
healthy again because its agent restarted, and a reset while the agent was down still clears.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypeVar

from agents.protocol import EventKind, GpuHealthState, HealthAction, XidEvent
from agents.xid import XID_DOUBLE_BIT_ECC, XID_RECOVERY_ACTION

H = GpuHealthState
T = TypeVar("T")
A = HealthAction

# Field 230 (GPU recovery action) values -> what to do.
RECOVERY_ACTIONS: dict[int, tuple[HealthAction, str]] = {
    1: (A.RESET_GPU, "GPU reset required"),
    2: (A.REBOOT_NODE, "node reboot required"),
    3: (A.DRAIN_NVLINK_PEERS, "drain NVLink peers"),
    4: (A.RESET_GPU, "drain and reset required"),
    5: (A.DRAIN_NVLINK_PEERS, "IMEX domain recovery required"),
    6: (A.RESET_GPU, "bus reset required"),
    7: (A.REBOOT_NODE, "system reboot required"),
}


class Clears(StrEnum):
    QUIET = "quiet"
    RESET = "reset"
    STATE = "state"


@dataclass(frozen=True)
class XidRule:
    health: GpuHealthState
    action: HealthAction
    clears: Clears
    what: str
    # For "ignore, support if repeated": this many within the quiet window make it degraded.
    repeat_threshold: int = 1


_RESET = XidRule(H.UNHEALTHY, A.RESET_GPU, Clears.RESET, "GPU reset required")
_APP = XidRule(H.HEALTHY, A.NOTIFY_TENANT, Clears.QUIET, "application error: restart the application")
_NVLINK = XidRule(H.UNHEALTHY, A.RESET_GPU, Clears.RESET, "NVLink error: reset the GPU")
_IGNORE = XidRule(H.HEALTHY, A.NONE, Clears.QUIET, "informational")
_REPEATED = XidRule(H.DEGRADED, A.NONE, Clears.QUIET, "recurring: contact support", repeat_threshold=5)

# NVIDIA's XID catalog actions, as FACTS.md summarises them.
XID_POLICY: dict[int, XidRule] = {
    13: _APP,
    31: _APP,
    94: _APP,
    43: _IGNORE,
    63: _IGNORE,
    XID_DOUBLE_BIT_ECC: XidRule(H.UNHEALTHY, A.RESET_GPU, Clears.RESET, "double-bit ECC error: reset to remap the row"),
    64: XidRule(H.UNHEALTHY, A.RESET_GPU, Clears.RESET, "row remapping failed: reset the GPU, then support"),
    74: _NVLINK,
    79: XidRule(H.UNHEALTHY, A.REBOOT_NODE, Clears.RESET, "GPU fell off the bus: reboot the node"),
    92: _REPEATED,
    121: _REPEATED,
    # 154 says "read field 230": the recovery-action reading drives the outcome (see _field_230).
    XID_RECOVERY_ACTION: XidRule(H.DEGRADED, A.NONE, Clears.QUIET, "GPU recovery action reported"),
}
for _xid in (95, 109, 119, 120, 136, 140, 143, 155, 156, 158):
    XID_POLICY[_xid] = _RESET
for _xid in range(144, 151):
    XID_POLICY[_xid] = _NVLINK

UNKNOWN_XID = XidRule(H.DEGRADED, A.NONE, Clears.QUIET, "XID not in the policy table")
_SEVERITY = {H.HEALTHY: 0, H.DEGRADED: 1, H.UNHEALTHY: 2}
_ACTION_RANK = {
    A.NONE: 0,
    A.NOTIFY_TENANT: 1,
    A.DRAIN_NVLINK_PEERS: 2,
    A.RESET_GPU: 3,
    A.DRAIN_NODE: 4,
    A.REBOOT_NODE: 5,
}


@dataclass(frozen=True)
class Reading:
    """The state readings of one sample that the policy looks at (None: the backend cannot read it)."""

    energy_mj: int | None = None
    recovery_action: int | None = None
    remapped_rows_pending: bool | None = None
    remapped_rows_failure: bool | None = None
    ecc_volatile_dbe: int | None = None


@dataclass
class _Condition:
    key: str
    health: GpuHealthState
    action: HealthAction
    clears: Clears
    reason: str
    last_seen: float
    count: int = 1


@dataclass(frozen=True)
class Verdict:
    health: GpuHealthState
    action: HealthAction
    reasons: tuple[str, ...]


@dataclass
class GpuHealthTracker:
    """The health of one GPU, folded from its events and readings over time."""

    quiet_window_s: float = 600.0
    _conditions: dict[str, _Condition] = field(default_factory=dict)
    _last_energy: int | None = None
    _last_dbe: int | None = None

    def snapshot(self) -> dict[str, Any]:
        """This tracker's state as JSON-ready data."""
        return _snapshot(self)

    @classmethod
    def restore(cls, state: object) -> GpuHealthTracker:
        """A tracker in the state ``snapshot`` gave; ValueError if ``state`` is not one."""
        return _restore(cls, state)

    def observe(self, *, now: float, events: Iterable[XidEvent] = (), reading: Reading | None = None) -> Verdict:
        reading = reading or Reading()
        if self._reset_observed(reading):
            self._clear(Clears.RESET)
        dbe_seen = False
        for event in events:
            if event.kind is EventKind.XID:
                self._on_xid(event.xid, event.at)
                dbe_seen |= event.xid == XID_DOUBLE_BIT_ECC
            elif event.kind is EventKind.ECC_DBE and not dbe_seen:
                self._on_xid(XID_DOUBLE_BIT_ECC, event.at)  # the double-bit ECC workflow, once per error
                dbe_seen = True
        self._on_dbe(reading, now, already_counted=dbe_seen)
        self._on_state(reading, now)
        self._expire(now)
        return self.verdict()

    def verdict(self) -> Verdict:
        active = [c for c in self._conditions.values() if c.count >= self._threshold(c)]
        if not active:
            return Verdict(H.HEALTHY, A.NONE, ())
        health = max((c.health for c in active), key=_SEVERITY.__getitem__)
        action = max((c.action for c in active), key=_ACTION_RANK.__getitem__)
        reasons = tuple(sorted(c.reason for c in active))
        return Verdict(health, action, reasons)

    def _threshold(self, condition: _Condition) -> int:
        if condition.key.startswith("xid:"):
            rule = XID_POLICY.get(int(condition.key[4:]), UNKNOWN_XID)
            return rule.repeat_threshold
        return 1

    def _on_xid(self, xid: int, at: float) -> None:
        rule = XID_POLICY.get(xid, UNKNOWN_XID)
        key = f"xid:{xid}"
        found = self._conditions.get(key)
        if found is not None:
            found.count += 1
            found.last_seen = max(found.last_seen, at)
            found.reason = f"XID {xid} x{found.count}: {rule.what}"
            return
        self._conditions[key] = _Condition(key, rule.health, rule.action, rule.clears, f"XID {xid}: {rule.what}", at)

    def _on_dbe(self, reading: Reading, now: float, *, already_counted: bool) -> None:
        dbe = reading.ecc_volatile_dbe
        if dbe is None:
            return
        if self._last_dbe is not None and dbe > self._last_dbe and not already_counted:
            self._on_xid(XID_DOUBLE_BIT_ECC, now)  # a double-bit error seen in the counters is XID 48's workflow
        self._last_dbe = dbe

    def _on_state(self, reading: Reading, now: float) -> None:
        if reading.recovery_action == 0:
            self._conditions.pop(f"xid:{XID_RECOVERY_ACTION}", None)  # "read field 230" reads "nothing to do"
        self._set_state(
            "field230",
            reading.recovery_action,
            lambda v: v in RECOVERY_ACTIONS,
            lambda v: (H.UNHEALTHY, RECOVERY_ACTIONS[v][0], f"recovery action {v}: {RECOVERY_ACTIONS[v][1]}"),
            now,
        )
        self._set_state(
            "remap-pending",
            reading.remapped_rows_pending,
            bool,
            lambda _: (H.UNHEALTHY, A.RESET_GPU, "row remapping pending: reset the GPU"),
            now,
        )
        self._set_state(
            "remap-failure",
            reading.remapped_rows_failure,
            bool,
            lambda _: (H.UNHEALTHY, A.DRAIN_NODE, "row remapping failed: the GPU needs service"),
            now,
        )

    def _set_state(
        self,
        key: str,
        value: T | None,
        active: Callable[[T], bool],
        describe: Callable[[T], tuple[GpuHealthState, HealthAction, str]],
        now: float,
    ) -> None:
        if value is None:
            return  # cannot read it: keep what we knew
        if active(value):
            health, action, reason = describe(value)
            self._conditions[key] = _Condition(key, health, action, Clears.STATE, reason, now)
        else:
            self._conditions.pop(key, None)

    def _reset_observed(self, reading: Reading) -> bool:
        """A GPU reset or driver reload zeroes the energy counter: it going backwards is the sign."""
        energy = reading.energy_mj
        reset = energy is not None and self._last_energy is not None and energy < self._last_energy
        if energy is not None:
            self._last_energy = energy
        if reading.recovery_action == 0 and "field230" in self._conditions:
            reset = True  # the driver says the asked-for recovery is done
        return reset

    def _clear(self, how: Clears) -> None:
        for key in [k for k, c in self._conditions.items() if c.clears is how]:
            del self._conditions[key]

    def _expire(self, now: float) -> None:
        for key in [
            k
            for k, c in self._conditions.items()
            if c.clears is Clears.QUIET and now - c.last_seen >= self.quiet_window_s
        ]:
            del self._conditions[key]


HEALTH_STATE_VERSION = 1


def trackers_snapshot(trackers: dict[str, GpuHealthTracker]) -> dict[str, Any]:
    """Every GPU's tracker as JSON-ready data (``restore_trackers`` reads it back)."""
    return {"version": HEALTH_STATE_VERSION, "gpus": {uuid: t.snapshot() for uuid, t in sorted(trackers.items())}}


def restore_trackers(data: object) -> dict[str, GpuHealthTracker]:
    """The trackers ``trackers_snapshot`` saved; ValueError if ``data`` is not such a snapshot."""
    if not isinstance(data, dict) or data.get("version") != HEALTH_STATE_VERSION:
        raise ValueError("not a health state of version 1")
    gpus = data.get("gpus")
    if not isinstance(gpus, dict):
        raise ValueError("no GPUs in the health state")
    return {str(uuid): GpuHealthTracker.restore(state) for uuid, state in gpus.items()}


def _number(value: object, what: str, *, optional: bool = False) -> float | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        raise ValueError(f"{what} is not a number")
    return value


def _optional_int(value: object, what: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{what} is not an integer")
    return value


def _snapshot(self: GpuHealthTracker) -> dict[str, Any]:
    return {
        "quiet_window_s": self.quiet_window_s,
        "last_energy_mj": self._last_energy,
        "last_dbe": self._last_dbe,
        "conditions": [
            {
                "key": c.key,
                "health": c.health.value,
                "action": c.action.value,
                "clears": c.clears.value,
                "reason": c.reason,
                "last_seen": c.last_seen,
                "count": c.count,
            }
            for c in self._conditions.values()
        ],
    }


def _restore(cls: type[GpuHealthTracker], state: object) -> GpuHealthTracker:
    if not isinstance(state, dict):
        raise ValueError("a GPU's health state is not an object")
    window = _number(state.get("quiet_window_s"), "quiet_window_s")
    assert window is not None
    tracker = cls(quiet_window_s=float(window))
    tracker._last_energy = _optional_int(state.get("last_energy_mj"), "last_energy_mj")
    tracker._last_dbe = _optional_int(state.get("last_dbe"), "last_dbe")
    conditions = state.get("conditions")
    if not isinstance(conditions, list):
        raise ValueError("conditions is not a list")
    for item in conditions:
        if (
            not isinstance(item, dict)
            or not isinstance(item.get("key"), str)
            or not isinstance(item.get("reason"), str)
        ):
            raise ValueError("a condition is not an object with a key and a reason")
        count = _optional_int(item.get("count"), "count")
        last_seen = _number(item.get("last_seen"), "last_seen")
        assert last_seen is not None
        condition = _Condition(
            key=item["key"],
            health=GpuHealthState(str(item.get("health"))),
            action=HealthAction(str(item.get("action"))),
            clears=Clears(str(item.get("clears"))),
            reason=item["reason"],
            last_seen=float(last_seen),
            count=1 if count is None else count,
        )
        tracker._conditions[condition.key] = condition
    return tracker
