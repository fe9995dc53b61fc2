"""What the simulator's GPUs show while workloads run: load, memory and processes per GPU,
and the exporter's assignment gauges (a real GPU shows its own)."""

from __future__ import annotations

from agents.exporter import AgentCollector
from agents.gpu.base import GpuBackend, LoadDriver
from agents.runtime.processes import ProcessRunner

SIM_MEMORY_SHARE = 0.85  # simulated workloads fill this share of usable memory x their utilisation


def apply_load(
    backend: GpuBackend, runner: ProcessRunner, collector: AgentCollector, usable_mib: dict[str, float]
) -> None:
    """Tell the exporter and (a simulator) the backend what runs on which GPU now."""
    active = runner.active_assignments()
    owners = {uuid: a.workload_id for a in active for uuid in a.gpu_uuids}
    collector.set_assignments(len(active), owners)
    if not isinstance(backend, LoadDriver):
        return
    loads = {uuid: a.sim_utilization for a in active for uuid in a.gpu_uuids}
    pids: dict[str, list[int]] = {}
    for proc in runner.live_processes():
        for assignment in active:
            if (assignment.workload_id, assignment.rank, assignment.epoch) == (proc.workload_id, proc.rank, proc.epoch):
                for uuid in assignment.gpu_uuids:
                    pids.setdefault(uuid, []).append(proc.pid)
    for uuid in usable_mib:
        if uuid in loads:
            memory = loads[uuid] * SIM_MEMORY_SHARE * usable_mib[uuid]
            backend.set_load(uuid, loads[uuid], memory)
        else:
            backend.clear_load(uuid)
        backend.set_processes(uuid, pids.get(uuid, []))
