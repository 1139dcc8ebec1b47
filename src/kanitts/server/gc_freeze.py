"""Keep the start-up objects out of the garbage collector's full collections.

A server process holds a few hundred thousand objects from start-up (modules, torch,
FastAPI/pydantic, the models) that live as long as it does. CPython's full (generation 2)
collections walk every tracked object, and a burst of requests triggers several of them
(each request's objects survive long enough to be promoted): every one stops the event loop
for as long as the walk takes. ``gc.freeze()`` moves everything alive at that moment to a
permanent generation those walks skip. Measured with ``scripts/loop_overhead.py``'s fake
server (222,000 start-up objects, 1,000 requests arriving at once, CPU): the full
collections during the burst took 1.1-2.9 s of the loop without it, 0.4-0.5 s with it
(BENCHMARKS.md, issue 18). ``kanitts serve`` calls :func:`freeze_startup_objects` once,
when its models have loaded (``create_app(on_ready=...)``); the test suite's many
short-lived apps do not (objects frozen there would never be collected).
"""

from __future__ import annotations

import gc
import logging

logger = logging.getLogger(__name__)


def freeze_startup_objects() -> int:
    """Collect garbage, then freeze every object alive now (``gc.freeze()``). Returns the
    number of objects in the permanent generation."""
    gc.collect()
    gc.freeze()
    frozen = gc.get_freeze_count()
    logger.debug("froze %d start-up objects out of the garbage collector's full collections", frozen)
    return frozen
