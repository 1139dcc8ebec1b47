"""Connections the kernel refused while a level ran: a burst bigger than the listen queue.

A SYN that finds the server's accept queue full is dropped and the client retries after
its initial retransmission timeout (1 s on Linux): such a stream's time to first audio
grows by a second that no server log shows. ``/proc/net/netstat`` counts these drops
for the network namespace (clients and server on one machine: the level's own).
"""

from __future__ import annotations

from pathlib import Path

#: The TcpExt counters read (their names in /proc/net/netstat).
COUNTERS = ("ListenOverflows", "ListenDrops", "TCPReqQFullDrop")


def listen_counters(path: str = "/proc/net/netstat") -> dict[str, int] | None:
    """The :data:`COUNTERS` now (cumulative since boot), or None where not readable."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        return None
    rows = [line.split() for line in lines if line.startswith("TcpExt:")]
    if len(rows) < 2:
        return None
    values = dict(zip(rows[0][1:], rows[1][1:]))
    return {k: int(values[k]) for k in COUNTERS if k in values}


def counters_delta(before: dict[str, int] | None, after: dict[str, int] | None) -> dict[str, int] | None:
    """``after - before`` per counter (None when either is missing)."""
    if before is None or after is None:
        return None
    return {k: after[k] - before[k] for k in after if k in before}
