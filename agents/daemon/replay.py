"""Sending the spool: reports the control plane did not acknowledge, oldest first, in batches.

A batch (protocol 3) carries up to ``BATCH_REPORTS`` spooled reports in one request; the
control plane folds them in order as if each had come alone and answers for each. A batch it
does not take (an older control plane, a report its wire model refuses) is sent again one
report a request. A report leaves the spool only once the control plane acknowledged it or
refused it for good, never ahead of an older one still waiting.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from enum import Enum

from agents.daemon.clock import Clock
from agents.protocol import MAX_BATCH_REPORTS, ReportRequest
from agents.spool import Spool

log = logging.getLogger(__name__)

# A spool replay sends this many reports per request at most (protocol 3), in this many bytes
# of spool lines: well under the batch route's 8 MiB body limit once re-encoded.
BATCH_REPORTS = MAX_BATCH_REPORTS
BATCH_SPOOL_BYTES = 4 * 1024 * 1024


class Delivery(Enum):
    ACKED = "acked"  # accepted or duplicate: the control plane has it
    REFUSED = "refused"  # a 4xx about this report: sending it again will not help
    RETRY = "retry"  # unreachable, overloaded, or our credential refused: try again later


def drain_spool(
    spool: Spool,
    *,
    deliver: Callable[[ReportRequest], Delivery],
    deliver_batch: Callable[[list[ReportRequest]], list[Delivery] | None],
    stop: threading.Event,
    deadline: float | None,
    clock: Clock,
) -> None:
    """Send spooled reports oldest first until the spool is empty or the control plane fails.

    ``deadline`` (monotonic) bounds the drain at shutdown; without one, a stop ends it.
    """
    sent = 0
    while True:
        if deadline is None and stop.is_set():
            return  # shutting down: the final report drains, with a deadline
        if deadline is not None and clock.monotonic() >= deadline:
            log.warning("%d spooled report(s) left for the next start", len(spool))
            return
        batch = spool.peek(BATCH_REPORTS, max_bytes=BATCH_SPOOL_BYTES)
        if not batch:
            if sent:
                log.info("sent %d spooled report(s); the spool is empty", sent)
            return
        outcomes = deliver_batch(batch) if len(batch) > 1 else None
        if outcomes is None:  # one report, or a control plane that does not take this batch
            outcomes = []
            for request in batch:
                outcomes.append(deliver(request))
                if outcomes[-1] is Delivery.RETRY:
                    break
        for request, outcome in zip(batch, outcomes, strict=False):
            if outcome is Delivery.RETRY:
                return  # in order: nothing after a report still waiting is taken off
            spool.remove(request.seq, rejected=outcome is Delivery.REFUSED)
            sent += 1
