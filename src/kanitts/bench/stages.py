"""Where a load level's time to first audio went, read back from the server's request log.

``kanitts serve`` logs one JSON record per finished speech request (logger
``kanitts.requests``, :mod:`kanitts.server.access_log`) with the timeline of
:data:`kanitts.server.timeline.STAGES` (ms since the request entered the app). A
:class:`LogTail` remembers where the log ended before a level started; after the level,
:meth:`LogTail.records` returns the records written since, and :func:`stage_summary`
turns them into p50/p95 per stage.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from typing import Any

from kanitts.bench.stats import percentile, rounded
from kanitts.server.timeline import STAGES

#: What precedes a request record's JSON on a server log line (the CLI's log format ends
#: with ``%(name)s: %(message)s``).
RECORD_MARK = "kanitts.requests: "


class LogTail:
    """The request records appended to the log file at ``path`` since the last call (the
    first call: since construction). A missing file has no records."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = path
        self.offset = os.path.getsize(path) if os.path.exists(path) else 0

    def records(self) -> list[dict[str, Any]]:
        """Parsed records since the last call; other lines and torn JSON are skipped."""
        if not os.path.exists(self.path):
            return []
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            data = f.read()
        end = data.rfind(b"\n") + 1  # a line still being written is read next time
        self.offset += end
        return parse_records(data[:end].decode("utf-8", "replace").splitlines())


def parse_records(lines: Iterable[str]) -> list[dict[str, Any]]:
    """The request records (dicts) among server log ``lines``."""
    out = []
    for line in lines:
        at = line.find(RECORD_MARK)
        if at < 0:
            continue
        try:
            rec = json.loads(line[at + len(RECORD_MARK):])
        except ValueError:
            continue
        if isinstance(rec, dict):
            out.append(rec)
    return out


def stage_summary(records: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """p50/p95 (ms since arrival) of every stage of :data:`STAGES` over the ``ok``
    streamed records: ``{"requests": n, "<stage>": {"p50": ms, "p95": ms}, ...}``; a stage
    no record reached has ``None`` for both."""
    ok = [r for r in records if r.get("status") == "ok" and r.get("stream") is not None]
    out: dict[str, Any] = {"requests": len(ok)}
    for key in STAGES:
        values = [float(r[key]) for r in ok if isinstance(r.get(key), (int, float))]
        out[key] = {"p50": rounded(percentile(values, 50)), "p95": rounded(percentile(values, 95))}
    return out
