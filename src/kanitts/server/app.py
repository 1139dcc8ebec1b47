"""The FastAPI app factory: lifespan, state and middleware wiring.

``create_app(settings)`` builds a fresh app whose lifespan loads the models in the
background: the port answers ``/health`` at once and speech requests get 503 until the
models are ready. Nothing lives in module globals: the service, the :class:`Speaker`
(the speech operation, :mod:`kanitts.server.speech`), admission and counters are in
``app.state``, which the routes (:mod:`kanitts.server.routes`) read through dependencies.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import FastAPI

from kanitts import __version__
from kanitts.config import Settings
from kanitts.server.access_log import log_request
from kanitts.server.admission import Admission
from kanitts.server.errors import install_error_handlers
from kanitts.server.request_id import RequestIdMiddleware
from kanitts.server.routes import router
from kanitts.server.shutdown import Drain
from kanitts.server.speech import Speaker
from kanitts.server.voices_routes import FORM_OVERHEAD_BYTES, voices_router
from kanitts.server.ws import ws_router
from kanitts.service import TTSService

logger = logging.getLogger(__name__)


def create_app(
    settings: Settings,
    *,
    service: TTSService | None = None,
    on_fatal: Callable[[str], None] | None = None,
    on_ready: Callable[[], object] | None = None,
) -> FastAPI:
    """Build the app. ``service`` may be injected (tests); ``on_fatal`` is called with a
    one-line message when the models cannot load (the CLI stops the server); ``on_ready``
    once they have loaded (the CLI: :func:`kanitts.server.gc_freeze.freeze_startup_objects`)."""
    svc = service or TTSService(settings)
    from kanitts.models import admission_limit

    admission = Admission(admission_limit(settings), settings.server.max_queue,
                          settings.server.queue_timeout_seconds)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async def boot() -> None:
            try:
                await svc.start()
            except Exception as exc:  # noqa: BLE001 - reported, not raised into uvicorn
                logger.error("startup failed: %s", exc)
                if on_fatal is not None:
                    on_fatal(str(exc))
                return
            if on_ready is not None:
                on_ready()

        task = asyncio.create_task(boot()) if not svc.ready else None
        try:
            yield
        finally:
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
            await svc.close()

    app = FastAPI(title="kanitts-vllm", version=__version__, lifespan=lifespan)
    state = app.state
    state.service = svc
    state.settings = settings
    state.admission = admission
    state.active_streams = 0
    #: Started by kanitts.server.shutdown.DrainingServer when shutdown begins.
    state.drain = Drain(settings.server.graceful_shutdown_seconds)
    #: Callables receiving each finished request's record (metrics, audit); see access_log.
    state.observers = []

    def count_stream(delta: int) -> None:
        state.active_streams += delta

    def finish(record: dict[str, Any]) -> None:
        log_request(record, state.observers)

    state.speaker = Speaker(
        svc,
        default_format=settings.server.default_response_format,
        pcm_rate=settings.server.pcm_sample_rate,
        max_input_chars=settings.server.max_input_chars,
        admission=admission,
        on_stream=count_stream,
        on_finish=finish,
        drain=state.drain,
    )
    install_error_handlers(app)
    # Production layer (issue 8): keys/limits/CORS, Prometheus metrics, web playground.
    from kanitts.server.metrics import install_metrics
    from kanitts.server.playground import install_playground
    from kanitts.server.security import install_security

    # the voice upload carries an audio file: its own body cap (voices.max_upload_bytes + form)
    body_caps = {"/v1/audio/voices": max(settings.server.max_body_bytes,
                                         settings.voices.max_upload_bytes + FORM_OVERHEAD_BYTES)}
    install_security(app, settings, body_caps)
    install_metrics(app, svc)
    install_playground(app)

    app.add_middleware(RequestIdMiddleware, max_body_bytes=settings.server.max_body_bytes, body_caps=body_caps)
    app.include_router(router)
    app.include_router(voices_router)
    app.include_router(ws_router)
    return app
