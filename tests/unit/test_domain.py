"""Pure domain rules: API key format, the workload state machine, workload specs."""

from __future__ import annotations

from typing import Any

import pytest

from controlplane.domain import keys
from controlplane.domain.enums import KeyScope, NvlinkPolicy, PriorityClass, WorkloadState
from controlplane.domain.errors import InvalidRequest, InvalidTransition
from controlplane.domain.ids import new_id
from controlplane.domain.specs import WorkloadSpec
from controlplane.domain.workload import can_transition, check_transition

S = WorkloadState


@pytest.mark.parametrize("scope", list(KeyScope))
def test_keys_are_typed_random_and_checksummed(scope: KeyScope) -> None:
    a, b = keys.generate(scope), keys.generate(scope)
    assert a != b and a.startswith(f"sy_{scope.value}_")
    assert keys.scope_of(a) is scope
    # One changed character breaks the checksum: refused without any lookup.
    body_index = len(f"sy_{scope.value}_") + 5
    flipped = a[:body_index] + ("A" if a[body_index] != "A" else "B") + a[body_index + 1 :]
    assert keys.scope_of(flipped) is None
    assert keys.scope_of(a[:-1]) is None
    assert keys.display_prefix(a) == a[: len(f"sy_{scope.value}_") + 6]


def test_key_digest_depends_on_the_pepper() -> None:
    key = keys.generate(KeyScope.TENANT)
    assert keys.digest(key, b"pepper-one-xxxxxxxx") != keys.digest(key, b"pepper-two-xxxxxxxx")
    assert len(keys.digest(key, b"p" * 16)) == 64


def test_bootstrap_tokens() -> None:
    token = keys.generate_bootstrap_token()
    assert keys.is_bootstrap_token(token) and keys.scope_of(token) is None
    assert not keys.is_bootstrap_token(token[:-2] + "zz")


def test_ids_sort_by_time() -> None:
    assert new_id("wl", now_ms=1000) < new_id("wl", now_ms=2000)
    assert len(new_id("wl")) == 3 + 26


def test_state_machine() -> None:
    assert can_transition(S.PENDING, S.SCHEDULED) and can_transition(S.RUNNING, S.SUCCEEDED)
    assert can_transition(S.RUNNING, S.PENDING)  # requeue
    assert not can_transition(S.PENDING, S.RUNNING)
    for terminal in (S.SUCCEEDED, S.FAILED, S.CANCELLED, S.PREEMPTED):
        for target in S:
            assert not can_transition(terminal, target)
    with pytest.raises(InvalidTransition, match="already succeeded"):
        check_transition(S.SUCCEEDED, S.CANCELLED)


def spec(**kw: Any) -> WorkloadSpec:
    base: dict[str, Any] = {
        "gpu_count": 4,
        "gpu_model": "NVIDIA GB300",
        "nvlink": NvlinkPolicy.REQUIRED,
        "priority": PriorityClass.ON_DEMAND,
        "command": ("python", "train.py"),
    }
    base.update(kw)
    return WorkloadSpec(**base)


def test_spec_validation() -> None:
    assert spec().fingerprint() == spec().fingerprint() != spec(gpu_count=8).fingerprint()
    for bad in (
        {"gpu_count": 0},
        {"priority": PriorityClass.MINING},
        {"command": ("",)},
        {"env": {"RANK": "3"}},
        {"env": {"PET_NNODES": "3"}},
        {"env": {"SWITCHYARD_X": "1"}},
        {"env": {"A-B": "1"}},
    ):
        with pytest.raises(InvalidRequest):
            spec(**bad)
