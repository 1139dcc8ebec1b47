"""The web playground: a static page at ``/`` (files under ``server/static``).

No build step, no CDN: ``index.html`` + ``app.js`` + ``style.css`` ship in the package
and work offline. The page streams ``pcm`` from ``/v1/audio/speech`` into Web Audio.
Its download-format menu is filled in when the page is served, from the audio layer's
list (:data:`kanitts.audio.FORMATS`), so a new format appears there by itself.
"""

from __future__ import annotations

from html import escape
from pathlib import Path
from typing import Any

from kanitts.audio import FORMATS

STATIC_DIR = Path(__file__).with_name("static")
#: Where ``index.html`` receives the ``<option>`` list of its format menu.
FORMAT_OPTIONS = "<!--FORMAT_OPTIONS-->"
#: Preselected in the menu: the page builds this one from the streamed PCM itself.
PAGE_FORMAT = "wav"

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
        return HTMLResponse(render_index(index.read_text(encoding="utf-8")), headers=SECURITY_HEADERS)

    async def favicon() -> Response:
        return Response(status_code=204)

    app.add_api_route("/", playground, methods=["GET"], include_in_schema=False)
    app.add_api_route("/favicon.ico", favicon, methods=["GET"], include_in_schema=False)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")


def format_options(formats: tuple[str, ...] = FORMATS, selected: str = PAGE_FORMAT) -> str:
    """The ``<option>`` elements of the format menu: ``selected`` first, then the rest in
    the audio layer's order."""
    ordered = [selected, *(f for f in formats if f != selected)] if selected in formats else list(formats)
    return "".join(
        f'<option value="{escape(f)}"{" selected" if f == selected else ""}>{escape(f)}</option>'
        for f in ordered
    )


def render_index(html: str) -> str:
    """``index.html`` with its format menu filled in; raises ``ValueError`` when the page
    has no ``FORMAT_OPTIONS`` marker."""
    if FORMAT_OPTIONS not in html:
        raise ValueError(f"index.html has no {FORMAT_OPTIONS} marker for the format menu")
    return html.replace(FORMAT_OPTIONS, format_options(), 1)
