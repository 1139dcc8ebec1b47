"""create_app(on_ready=...): called once the models have loaded, never when loading fails;
kanitts.server.gc_freeze freezes what is alive."""

from __future__ import annotations

import asyncio
import gc

from _wait import wait_for

from kanitts.config import load_settings
from kanitts.server.app import create_app
from kanitts.server.gc_freeze import freeze_startup_objects
from kanitts.service import TTSService

SETTINGS = {"multi_language": False, "languages": {"en": {"model": "fake"}}}


class _Loads(TTSService):
    fail = False

    async def start(self) -> None:
        if self.fail:
            raise RuntimeError("no weights")
        self.ready = True


def _run(fail: bool) -> tuple[list[str], list[str]]:
    settings = load_settings(None, SETTINGS, env=False)
    svc = _Loads(settings)
    svc.fail = fail
    ready: list[str] = []
    fatal: list[str] = []
    app = create_app(settings, service=svc, on_fatal=fatal.append, on_ready=lambda: ready.append("ready"))

    async def run() -> None:
        async with app.router.lifespan_context(app):
            await wait_for(lambda: ready or fatal, "the models to load or fail")

    asyncio.run(run())
    return ready, fatal


def test_on_ready_after_loading():
    assert _run(fail=False) == (["ready"], [])


def test_no_on_ready_when_loading_fails():
    assert _run(fail=True) == ([], ["no weights"])


def test_freeze_startup_objects_freezes_what_is_alive():
    try:
        kept = object()
        assert freeze_startup_objects() == gc.get_freeze_count() > 0
        assert kept is not None
    finally:
        gc.unfreeze()
