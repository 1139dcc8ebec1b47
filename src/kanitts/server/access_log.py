"""The access log: one JSON line per finished speech request, also handed to observers."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from typing import Any

logger = logging.getLogger(__name__)
#: The logger the records go to, one JSON object per line (INFO).
access_log = logging.getLogger("kanitts.requests")


def log_request(record: dict[str, Any], observers: Sequence[Callable[[dict[str, Any]], None]] = ()) -> None:
    """Log ``record`` (see ``Speech.record``) and pass it to each observer (metrics, audit);
    an observer that raises is logged and never breaks the request."""
    access_log.info(json.dumps(record))
    for observer in observers:
        try:
            observer(record)
        except Exception:  # noqa: BLE001 - observers never break a request
            logger.exception("request observer failed")
