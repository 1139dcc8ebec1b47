"""What ``kanitts bench`` writes: ``BENCH {json}`` progress lines, the ``RESULT {json}``
line, and the JSON results file (a list, one entry appended per run).

These lines are the command's output (read by scripts/gpu_bench_suite.sh and people), so
they go to stdout, not to logging.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any


def bench_line(msg: str, **fields: Any) -> None:
    """One ``BENCH {"t": HH:MM:SS, "msg": msg, ...}`` progress line on stdout."""
    line = json.dumps({"t": time.strftime("%H:%M:%S"), "msg": msg, **fields})
    print("BENCH " + line, flush=True)


def result_line(entry: dict[str, Any]) -> None:
    """The run's ``RESULT {json}`` line on stdout."""
    print("RESULT " + json.dumps(entry), flush=True)


def append_json(path: str | Path, entry: dict[str, Any]) -> None:
    """Append ``entry`` to the JSON list in ``path`` (created, or restarted if unreadable)."""
    path = Path(path)
    data: list[Any] = []
    if path.exists():
        try:
            loaded = json.loads(path.read_text())
            data = loaded if isinstance(loaded, list) else [loaded]
        except ValueError:
            data = []
    data.append(entry)
    path.write_text(json.dumps(data, indent=1) + "\n")
