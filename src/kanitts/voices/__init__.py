"""Custom voices for KaniTTS-2: a persistent store of speaker embeddings with ownership
rules (``store``), blends of several voices (``blend``), and their errors (``errors``).
Independent of the speaker encoder: the store keeps embeddings, whoever computed them."""

from kanitts.voices.blend import blend_voices, is_blend, mix_embeddings, parse_blend
from kanitts.voices.errors import (
    BlendSyntaxError,
    VoiceAmbiguousError,
    VoiceError,
    VoiceInvalidError,
    VoiceLimitError,
    VoiceNameConflictError,
    VoiceNotFoundError,
    VoicePermissionError,
)
from kanitts.voices.files import read_embedding_file
from kanitts.voices.records import Requester, Voice, VoiceStoreLimits
from kanitts.voices.store import VoiceStore

__all__ = [
    "BlendSyntaxError",
    "Requester",
    "Voice",
    "VoiceAmbiguousError",
    "VoiceError",
    "VoiceInvalidError",
    "VoiceLimitError",
    "VoiceNameConflictError",
    "VoiceNotFoundError",
    "VoicePermissionError",
    "VoiceStore",
    "VoiceStoreLimits",
    "blend_voices",
    "is_blend",
    "mix_embeddings",
    "parse_blend",
    "read_embedding_file",
]
