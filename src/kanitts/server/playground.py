"""The web playground: a static page at ``/`` (files under ``server/static``).

No build step, no CDN: ``index.html`` + ``app.js`` + ``style.css`` ship in the package
and work offline. The page streams ``pcm`` from ``/v1/audio/speech`` into Web Audio.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

STATIC_DIR = Path(__file__).with_name("static")

#: The page talks only to this origin and plays blob:/Web Audio data.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "media-src 'self' blob:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'; form-action 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def install_playground(app: Any) -> None:
    """``GET /`` serves the page, ``/static/*`` its assets; both stay open (no key)."""
    from starlette.responses import HTMLResponse, Response
    from starlette.staticfiles import StaticFiles

    index = STATIC_DIR / "index.html"

    async def playground() -> Response:
        return HTMLResponse(index.read_text(encoding="utf-8"), headers=SECURITY_HEADERS)

    async def favicon() -> Response:
        return Response(status_code=204)

    app.add_api_route("/", playground, methods=["GET"], include_in_schema=False)
    app.add_api_route("/favicon.ico", favicon, methods=["GET"], include_in_schema=False)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
