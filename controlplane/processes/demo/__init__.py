"""`switchyard demo`: a whole simulated site on one machine.

Starts Redis (if none is reachable), the API, the scheduler, a worker and beat, and one real
agent process per compute tray of the site (18 for `demo-rack`: 72 simulated GB300 GPUs), on an
SQLite database in the demo's data directory; creates a tenant and its keys, submits a handful
of workloads and shows a live table until Ctrl-C or the end of --duration (or, with
--until-done, until every demo workload has ended). No process it started outlives it.

- ``main``: the flow of a run and its exit code.
- ``supervisor``: the children: spawned with a death signal, stopped in order.
- ``console``: output that never raises, so a dead terminal or pipe cannot stop the stopping.
- ``clock``: when the run is over (signal, --duration, no reader).
- ``site``, ``redis_server``, ``seed``: bringing a fresh site up.
- ``workloads``, ``watch``, ``table``: what is submitted, followed and shown.
"""

from controlplane.processes.demo.main import main

__all__ = ["main"]
