"""Errors of the custom-voice store and voice blending. Messages are user-facing;
``http_status`` is the status the API layer answers with (OpenAI error shape)."""

from __future__ import annotations


class VoiceError(Exception):
    """Base class; ``http_status`` 400."""

    http_status = 400


class VoiceInvalidError(VoiceError):
    """A bad name, embedding or embedding file (400)."""


class VoiceNotFoundError(VoiceError):
    """No such voice, or one the requester may not see (404: existence is not leaked)."""

    http_status = 404


class VoiceNameConflictError(VoiceError):
    """The requester already has a voice of that name (case-insensitive) (409)."""

    http_status = 409


class VoicePermissionError(VoiceError):
    """The requester may see the voice but not change it (403)."""

    http_status = 403


class VoiceLimitError(VoiceError):
    """A count limit of the store is reached (403)."""

    http_status = 403


class VoiceAmbiguousError(VoiceError):
    """A name matches several shared voices; use the voice id (400)."""


class BlendSyntaxError(VoiceError):
    """A malformed blend such as ``"alice(0.7)+"`` or negative weights (400)."""
