"""`switchyard demo`: the flow of a run, from a fresh data directory to the verdict.

The order at the end is the point of this module: whatever ends the run (Ctrl-C, SIGTERM,
SIGHUP, --duration, --until-done, a dead reader of its output, a child that died), every child
is stopped first, and only then is anything printed; printing cannot raise (``Console``).

Exit code: 0, or 1 if a demo workload ended in the wrong state, if with --until-done one had
not ended when the run stopped, or if the site failed (a child died, the API or the agents did
not come up); 2 for unusable arguments.
"""

from __future__ import annotations

import argparse
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

import httpx

from controlplane.processes.demo import seed
from controlplane.processes.demo.clock import RunClock
from controlplane.processes.demo.console import Console
from controlplane.processes.demo.site import Site, start_site
from controlplane.processes.demo.supervisor import Supervisor
from controlplane.processes.demo.watch import submit, watch
from controlplane.processes.demo.workloads import DemoWorkload, all_ended, verdict

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@dataclass
class Outcome:
    submitted: dict[str, DemoWorkload] = field(default_factory=dict)
    seen: dict[str, str] = field(default_factory=dict)
    error: str | None = None


def main(args: argparse.Namespace) -> int:
    if args.until_done and args.no_workloads:
        print(
            "switchyard demo: --until-done waits for the demo workloads; --no-workloads submits none", file=sys.stderr
        )
        return 2
    if args.duration < 0:
        print("switchyard demo: --duration must be 0 (no limit) or more seconds", file=sys.stderr)
        return 2
    data_dir = Path(args.data_dir).resolve()
    clock = RunClock(args.duration)
    console = Console(sys.stdout, sys.stderr, on_lost=lambda: clock.stop("its output has no reader"))
    supervisor = Supervisor(data_dir / "logs")
    _stop_on_signals(clock, supervisor)
    seed.reset_data_dir(data_dir)
    outcome = Outcome()
    try:
        _run(args, data_dir, outcome, clock, supervisor, console)
    except (RuntimeError, httpx.HTTPError) as exc:  # ChildDied, StartFailed, NoRedis, an API call
        outcome.error = str(exc)
    finally:
        notes = supervisor.stop_all()
    return _report(args, outcome, notes, clock, supervisor, console)


def _stop_on_signals(clock: RunClock, supervisor: Supervisor) -> None:
    def handle(signum: int, _frame: FrameType | None) -> None:
        if clock.stopped.is_set():
            supervisor.hurry.set()  # a second Ctrl-C: kill rather than wait
        clock.stop(f"{signal.Signals(signum).name} received")

    for sig in STOP_SIGNALS:
        signal.signal(sig, handle)


def _run(
    args: argparse.Namespace,
    data_dir: Path,
    outcome: Outcome,
    clock: RunClock,
    supervisor: Supervisor,
    console: Console,
) -> None:
    site = start_site(
        site_name=args.site, port=args.port, data_dir=data_dir, supervisor=supervisor, clock=clock, console=console
    )
    if site is None:
        return
    _print_intro(site, data_dir, console)
    with httpx.Client(base_url=site.url, timeout=10) as http:
        if not args.no_workloads:
            outcome.submitted = submit(http, site.tenant, clock, console)
        outcome.seen = watch(
            http,
            operator=site.operator,
            tenant=site.tenant,
            submitted=outcome.submitted,
            until_done=args.until_done,
            table=not args.no_table and console.is_terminal(),
            clock=clock,
            supervisor=supervisor,
            console=console,
        )
    if args.until_done and all_ended(outcome.submitted, outcome.seen):
        clock.stop("every demo workload has ended")


def _report(
    args: argparse.Namespace,
    outcome: Outcome,
    notes: list[str],
    clock: RunClock,
    supervisor: Supervisor,
    console: Console,
) -> int:
    """Printed once every child is gone; the exit code."""
    ok, lines = verdict(outcome.submitted, outcome.seen, until_done=args.until_done)
    for line in lines:
        console.say(line)
    if args.until_done and not all_ended(outcome.submitted, outcome.seen) and clock.expired():
        console.say(f"--duration {args.duration:g} s ran out before every demo workload had ended")
    for note in notes:
        console.warn(f"switchyard demo: {note}")
    if outcome.error is not None:
        console.warn(f"\nswitchyard demo: {outcome.error}")
    reason = clock.reason or (f"--duration {args.duration:g} s is up" if clock.expired() else "done")
    console.say(f"\nstopped every process the demo started ({len(supervisor.children)}; {reason}).")
    return 0 if ok and outcome.error is None else 1


def _print_intro(site: Site, data_dir: Path, console: Console) -> None:
    url, tenant_key, operator_key = site.url, site.seeded.tenant_key, site.seeded.operator_key
    console.say(
        f"""
Switchyard is up.
  API:          {url}/v1   (OpenAPI: {url}/v1/openapi.json, docs: {url}/v1/docs)
  tenant key:   {tenant_key}
  operator key: {operator_key}
  logs:         {data_dir / "logs"}

Try:
  curl -s -H "Authorization: Bearer {tenant_key}" {url}/v1/workloads
  curl -s -H "Authorization: Bearer {tenant_key}" -H "Content-Type: application/json" \\
       -H "Idempotency-Key: my-first-job" -d '{{"gpus": 4, "command": ["sleep", "30"]}}' {url}/v1/workloads
  curl -s -H "Authorization: Bearer {tenant_key}" {url}/v1/workloads/<id>/logs
  curl -s -H "Authorization: Bearer {operator_key}" {url}/v1/operator/nodes
"""
    )
