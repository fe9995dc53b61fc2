"""Ship each rank's log file to the control plane, from the offset it acknowledged.

The control plane answers every upload with the offset it holds per (workload, rank), so a
lost request, a duplicate or an agent restart (which starts again from offset 0) all resume
from the right place.
"""

from __future__ import annotations

import base64
import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from agents.client import AgentClient, ControlPlaneError
from agents.protocol import PROTOCOL_VERSION, LogChunk, LogUpload, log_key

log = logging.getLogger(__name__)

LOG_CHUNK_BYTES = 256 * 1024
LOG_UPLOAD_BYTES = 2 * 1024 * 1024  # per request: well under the 64 chunks x 1.5 MB the wire allows
MAX_CHUNKS = 64  # per request, as the wire allows

LogFiles = Callable[[], Sequence[tuple[str, int, Path]]]  # (workload_id, rank, path)


class LogShipper:
    """Sends log bytes beyond the acknowledged offsets; ``shipped`` tells whether a file is all sent."""

    def __init__(self, client: AgentClient, node_id: str, log_files: LogFiles) -> None:
        self._client = client
        self._node_id = node_id
        self._log_files = log_files
        self._lock = threading.Lock()
        self._acked: dict[str, int] = {}

    def ship(self, max_rounds: int = 8) -> None:
        """Send each rank's log bytes beyond what the control plane acknowledged."""
        for _ in range(max_rounds):
            chunks = self._next_chunks()
            if not chunks:
                return
            try:
                response = self._client.upload_logs(
                    self._node_id, LogUpload(protocol_version=PROTOCOL_VERSION, chunks=chunks)
                )
            except ControlPlaneError as exc:
                log.warning("log upload failed: %s", exc)
                return
            with self._lock:
                self._acked.update(response.acked)

    def shipped(self, workload_id: str, rank: int, path: Path) -> bool:
        """Whether the control plane holds every byte of this rank's log written so far."""
        with self._lock:
            acked = self._acked.get(log_key(workload_id, rank), 0)
        return _size(path) <= acked

    def _next_chunks(self) -> list[LogChunk]:
        chunks: list[LogChunk] = []
        budget = LOG_UPLOAD_BYTES
        for wid, rank, path in self._log_files():
            with self._lock:
                offset = self._acked.get(log_key(wid, rank), 0)
            try:
                with open(path, "rb") as f:
                    f.seek(offset)
                    while budget > 0 and len(chunks) < MAX_CHUNKS:
                        data = f.read(min(LOG_CHUNK_BYTES, budget))
                        if not data:
                            break
                        chunks.append(
                            LogChunk(
                                workload_id=wid,
                                rank=rank,
                                offset=offset,
                                data_b64=base64.b64encode(data).decode(),
                            )
                        )
                        offset += len(data)
                        budget -= len(data)
            except FileNotFoundError:
                continue
        return chunks


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0
