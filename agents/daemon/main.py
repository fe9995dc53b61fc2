"""The agent process's entry point: configuration, backend, sandbox, metrics, registration, run.

The main thread only waits for SIGTERM/SIGINT, then stops the workloads' process groups, sends
a last report and exits 0. Before it registers, the agent stops the workload process groups a
killed or crashed predecessor left running (``registration.recover_orphans``).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from importlib import import_module

from agents.client import AgentClient
from agents.config import AgentConfig, ConfigError, load_config
from agents.daemon.agent import Agent
from agents.daemon.registration import recover_orphans, register
from agents.exporter import MetricsServer, SpoolStats, build_exporter
from agents.gpu.base import GpuBackend
from agents.gpu.sim import SimBackend
from agents.runtime.processes import ProcessRunner
from agents.runtime.sandbox import Sandbox, default_policy, nvidia_minors
from agents.spool import Spool
from agents.state import FatalError, FinishedLedger, ProcessLedger, SeqAllocator

log = logging.getLogger("agents.daemon")


class BackendUnavailable(Exception):
    """The configured GPU backend cannot start (module missing, NVML failed); the message says why."""


def build_backend(cfg: AgentConfig) -> GpuBackend:
    """The configured backend; raises BackendUnavailable with a one-line reason if it cannot start."""
    if cfg.backend == "nvml":
        return _build_nvml_backend()
    return SimBackend(
        cfg.sim_gpus,
        seed=cfg.sim_seed,
        node_index=cfg.sim_node_index,
        cluster_uuid=cfg.sim_cluster_uuid,
        clique_id=cfg.sim_clique_id,
    )


def _build_nvml_backend() -> GpuBackend:
    # Imported here: a simulator-only host needs neither the module nor pynvml.
    try:
        module = import_module("agents.gpu.nvml")
    except ImportError as exc:
        raise BackendUnavailable(f"--backend nvml: cannot load the NVML backend: {exc}") from None
    try:
        backend: GpuBackend = module.NvmlBackend()
    except Exception as exc:  # pynvml.NVMLError_*, OSError from the loader: the class varies with the library
        log.debug("NVML backend failed to start", exc_info=True)
        raise BackendUnavailable(f"--backend nvml: {str(exc) or type(exc).__name__}") from None
    return backend


def build_sandbox(cfg: AgentConfig, backend: GpuBackend) -> Sandbox | None:
    """The workloads' sandbox, checked by a real sandboxed start; None only when the operator said so.

    Raises FatalError when workloads cannot be sandboxed here: the agent then refuses to run
    any tenant work at all (it does not even register) rather than run it unconfined.
    """
    if cfg.insecure_no_sandbox:
        log.warning(
            "INSECURE: --insecure-no-sandbox: workloads run as this agent's user (uid %d) with no sandbox; "
            "they can read its credential and each other's files (development only)",
            os.geteuid(),
        )
        return None

    def minors() -> dict[str, int]:
        return nvidia_minors({gpu.uuid: gpu.pci_bus_id for gpu in backend.inventory()})

    policy = default_policy(
        cfg.state_dir,
        home=cfg.child_env.get("HOME"),
        hide=cfg.sandbox_hide,
        uids=cfg.workload_uids,
        gpu_minors=minors,
    )
    sandbox = Sandbox(policy)
    reason = sandbox.check(cfg.state_dir / "work" / ".sandbox-check")
    if reason is not None:
        raise FatalError(
            f"cannot sandbox tenant workloads: {reason}; refusing to run them. Run the agent as root, "
            "or pass --insecure-no-sandbox to run them as this agent's user (development only)"
        )
    log.info(
        "workloads run sandboxed: one uid per workload from %s, own PID and mount namespaces", sandbox.describe_uids()
    )
    return sandbox


def main(argv: list[str] | None = None) -> int:
    try:
        cfg = load_config(argv)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2), already printed
        return exc.code if isinstance(exc.code, int) else 2
    except ConfigError as exc:
        print(f"switchyard-agent: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=cfg.log_level, format="%(asctime)s %(levelname)s %(name)s [%(threadName)s] %(message)s")
    if cfg.log_level != "DEBUG":
        logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per report would drown the log
    try:
        backend = build_backend(cfg)
    except BackendUnavailable as exc:
        print(f"switchyard-agent: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()
    _install_signal_handlers(stop)
    try:
        return _run(cfg, backend, stop)
    except FatalError as exc:
        print(f"switchyard-agent: {exc}", file=sys.stderr)
        return 1
    finally:
        backend.close()


def _run(cfg: AgentConfig, backend: GpuBackend, stop: threading.Event) -> int:
    registry, collector = build_exporter(cfg.hostname)
    collector.set_inventory(backend.inventory(), backend.memory_reserved_mib())
    collector.attach_backend(backend)  # driver version label, profiling metrics (GPM)
    try:
        cfg.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        spool = Spool(cfg.state_dir / "spool", max_bytes=cfg.spool_max_bytes)
    except OSError as exc:
        raise FatalError(f"cannot use state dir {cfg.state_dir}: {exc}") from None
    collector.set_spool_stats_provider(lambda: _exported(spool))
    sandbox = build_sandbox(cfg, backend)  # before anything that could start tenant work
    print(f"switchyard-agent sandbox={'on' if sandbox is not None else 'off-insecure'}", flush=True)
    try:
        metrics = MetricsServer(registry, host=cfg.metrics_addr, port=cfg.metrics_port).start()
    except OSError as exc:
        raise FatalError(f"cannot serve metrics on {cfg.metrics_addr}:{cfg.metrics_port}: {exc.strerror}") from None
    metrics_url = cfg.metrics_url(metrics.port)
    print(f"switchyard-agent metrics_url={metrics_url}", flush=True)
    log.info("serving metrics at %s", metrics_url)
    client = AgentClient(cfg.server)
    try:
        seqs = SeqAllocator(cfg.state_dir / "seq.json")
        finished = FinishedLedger(cfg.state_dir / "finished.json")
        processes = ProcessLedger(cfg.state_dir / "processes.json")
        recover_orphans(processes, finished, grace_s=cfg.stop_grace_s)  # before registering: they hold GPUs
        registration = register(cfg, backend, client, stop, metrics_url=metrics_url)
        if registration is None:
            return 0  # stopped while waiting for the control plane
        client.set_credential(registration.credential)
        print(f"switchyard-agent node_id={registration.node_id}", flush=True)
        log.info("node %s: reporting every %.1fs", registration.node_id, registration.report_interval_s)
        runner = ProcessRunner(
            cfg.state_dir / "logs",
            work_dir=cfg.state_dir / "work",
            base_env=cfg.child_env,
            record_live=processes.save,
            sandbox=sandbox,
        )
        agent = Agent(
            cfg,
            registration=registration,
            backend=backend,
            runner=runner,
            client=client,
            collector=collector,
            seqs=seqs,
            finished=finished,
            spool=spool,
            stop=stop,
            metrics_url=metrics_url,
        )
        agent.start()
        while not stop.wait(1.0):
            pass
        log.info("stopping: terminating workloads")
        agent.shutdown()
        return 0
    finally:
        metrics.close()
        client.close()


def _exported(spool: Spool) -> SpoolStats:
    stats = spool.stats()
    return SpoolStats(depth=stats.spooled, dropped=stats.dropped)


def _install_signal_handlers(stop: threading.Event) -> None:
    if threading.current_thread() is not threading.main_thread():
        return  # embedded (tests): the caller owns signals and sets ``stop`` itself

    def handle(signum: int, _frame: object) -> None:
        log.info("received %s", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
