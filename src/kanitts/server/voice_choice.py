"""Which voice a speech request asks for: a built-in voice, a custom (cloned) voice by name
or by ``{"id": ...}``, or a blend ``"alice(0.7)+bob(0.3)"`` -> what the router and the
engine need (:class:`VoiceChoice`). And who asks (:func:`requester_of`).

Rules, in order, for ``voice``:

1. ``{"id": "voice_..."}``: that custom voice (it must be visible to the caller); an id that
   is a built-in voice or an OpenAI alias is that name, as in OpenAI's object shape.
2. A string with ``(``, ``)`` or ``+``: a blend of custom (or pre-loaded) voices.
3. A built-in voice of a loaded v1 model: routed as before (no embedding).
4. A custom voice of that name (the caller's own, a pre-loaded one, then a shared one).
5. Otherwise the router decides (OpenAI aliases, ``server.unknown_voice``); when it lands on
   a KaniTTS-2 model with a voice the configuration named (``default_voice``, an alias) and a
   pre-loaded or custom voice has that name, its embedding is used (:func:`configured_embedding`).

A custom voice or a blend needs a KaniTTS-2 model: routing is restricted to the languages
such models serve, and the speaker embedding travels with the request to the engine.
Lookups are in memory (no file I/O), so this runs on the event loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from starlette.requests import HTTPConnection

from kanitts.server.errors import APIError
from kanitts.server.security import bearer_token, key_id
from kanitts.voices import Requester, VoiceError, VoiceNotFoundError, blend_voices, is_blend

#: The owner of requests without a key while keys are on (only open routes see them).
ANONYMOUS = "anonymous"


@dataclass(frozen=True)
class VoiceChoice:
    """``router_voice``: the voice handed to the router (None for a custom voice);
    ``embedding``: float32 ``[D]`` speaker embedding, or None; ``label``: what the response
    headers and logs call the voice; ``among``: languages that may serve it (None: any)."""

    router_voice: str | None
    embedding: np.ndarray | None = None
    label: str | None = None
    among: list[str] | None = None


def voice_parts(voice: Any) -> tuple[str | None, str | None]:
    """``(name, id)`` of a request's ``voice``: a string, None, or an object with an ``id``
    (a pydantic model or a dict)."""
    if voice is None or isinstance(voice, str):
        return voice, None
    vid = voice.get("id") if isinstance(voice, dict) else getattr(voice, "id", None)
    if not isinstance(vid, str) or not vid.strip():
        raise APIError(400, "voice must be a name or an object {\"id\": \"voice_...\"}", param="voice",
                       code="invalid_voice")
    return None, vid.strip()


def _voice_error(exc: VoiceError) -> APIError:
    # in a speech request an unknown voice is a bad parameter (400), not a missing resource
    status = 400 if exc.http_status == 404 else exc.http_status
    return APIError(status, str(exc), param="voice", code="invalid_voice")


def choose_voice(svc: Any, voice: Any, who: Requester, unknown_voice: str = "error") -> VoiceChoice:
    """Resolve ``voice`` for ``who`` on the loaded service ``svc`` (rules in the module
    docstring). Raises :class:`APIError` 400 ``invalid_voice`` (403 for a voice one may not
    use) with a message saying why."""
    name, vid = voice_parts(voice)
    cloning = svc.cloning
    router = svc.router
    if vid is not None and _builtin(router, vid):
        name, vid = vid, None  # OpenAI's object shape naming a built-in voice or an alias
    if cloning is None:
        if vid is not None or (name and is_blend(name)):
            what = "voice ids" if vid is not None else "voice blends"
            raise APIError(400, f"{what} need a KaniTTS-2 model (custom voices); none is loaded",
                           param="voice", code="invalid_voice")
        return VoiceChoice(name)
    among = svc.cloning_languages()
    try:
        if vid is not None:
            found = cloning.store.get(vid, who)
            return VoiceChoice(None, found.embedding, found.name, among)
        if not name or not name.strip():
            return VoiceChoice(None)
        name = name.strip()
        if is_blend(name):
            mixed = blend_voices(name, lambda n: cloning.store.embedding(n, who))
            return VoiceChoice(None, mixed, name, among)
        if router is not None and name.casefold() in {v.casefold() for v in router.all_voices()}:
            return VoiceChoice(name)  # a built-in voice (the router matches its case)
        try:
            found = cloning.store.find(name, who)
        except VoiceNotFoundError:
            if (router is not None and name.lower() in router.aliases) or unknown_voice == "default":
                return VoiceChoice(name)
            builtin = router.all_voices() if router is not None else []
            custom = [v.name for v in cloning.store.list(who)]
            raise VoiceNotFoundError(f"voice {name!r} is not available; valid voices: "
                                     f"{', '.join([*builtin, *custom]) or 'none yet (upload one)'}") from None
        return VoiceChoice(None, found.embedding, found.name, among)
    except VoiceError as exc:
        raise _voice_error(exc) from None


def _builtin(router: Any, name: str) -> bool:
    """Whether ``name`` is a loaded model's voice or an OpenAI alias (any case)."""
    if router is None:
        return False
    return name.casefold() in {v.casefold() for v in router.all_voices()} or name.lower() in router.aliases


def configured_embedding(svc: Any, route: Any, who: Requester) -> np.ndarray | None:
    """The embedding of a voice the configuration chose for a KaniTTS-2 route
    (``languages.<code>.default_voice`` or a ``voice_aliases`` entry naming a pre-loaded or
    custom voice); None when the route's voice is no such voice."""
    if svc.cloning is None or not route.model.clones_voices or not route.voice:
        return None
    try:
        return svc.cloning.store.find(route.voice, who).embedding
    except VoiceError:
        return None


def requester_of(conn: HTTPConnection) -> Requester:
    """Who sends this request: with API keys off, everyone is one owner (None) and no one
    is an admin; with keys on, the owner is :func:`~kanitts.server.security.key_id` of the
    presented key, an admin when it is one of ``admin_api_keys``."""
    state = conn.app.state
    if not getattr(state, "auth_enabled", False):
        return Requester()
    token = bearer_token(conn.scope.get("headers", []))
    if token is None:
        return Requester(owner=ANONYMOUS)
    owner = key_id(token)
    return Requester(owner=owner, admin=owner in getattr(state, "admin_key_ids", frozenset()))
