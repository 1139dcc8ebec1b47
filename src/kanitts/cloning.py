"""KaniTTS-2 voice cloning for a service: the speaker encoder and the custom-voice store,
built from settings when a KaniTTS-2 model is loaded (never for v1-only servers).

:func:`build_voice_cloning` loads both (blocking: call it from a worker thread);
:meth:`VoiceCloning.create` turns uploaded reference audio into a stored voice (blocking:
decode, encoder, atomic file write).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

from kanitts.config import Settings
from kanitts.hub import ModelLoadError
from kanitts.speaker import ReferenceAudioLimits, SpeakerEncoder, decode_reference_audio, load_speaker_encoder
from kanitts.voices import Requester, Voice, VoiceError, VoicePermissionError, VoiceStore
from kanitts.voices.names import validate_name

logger = logging.getLogger(__name__)


@dataclass
class VoiceCloning:
    """The encoder (one embedding at a time), the store and the reference-audio limits."""

    encoder: SpeakerEncoder
    store: VoiceStore
    limits: ReferenceAudioLimits
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def create(self, name: str, audio: bytes, who: Requester, shared: bool = False) -> Voice:
        """Reference audio (any PyAV-decodable file) -> a new stored voice owned by ``who``.
        Raises :class:`~kanitts.speaker.ReferenceAudioError` (unusable audio) or
        :class:`~kanitts.voices.VoiceError` (name, sharing, limits); blocking."""
        validate_name(name, self.store.limits.max_name_chars)  # cheap checks before the encoder
        if shared and not who.admin:
            raise VoicePermissionError("only an admin key can share a voice")
        pcm = decode_reference_audio(audio, self.limits)
        with self._lock:
            embedding = self.encoder.embed(pcm)
        return self.store.create(name, embedding, who, shared=shared)


def build_voice_cloning(settings: Settings, dim: int) -> VoiceCloning:
    """Load the speaker encoder (``voices.speaker_encoder`` on ``voices.device``), open the
    store in ``voices.directory`` for ``dim``-sized embeddings and pre-load
    ``voices.preload``. Raises ModelLoadError (one line) when any of it fails."""
    from kanitts.engine.device import pick_device

    v = settings.voices
    device = pick_device(settings.engine.device if v.device == "auto" else v.device)
    encoder = load_speaker_encoder(v.speaker_encoder, device=str(device))
    if encoder.dim != dim:
        raise ModelLoadError(f"voices.speaker_encoder {v.speaker_encoder} makes {encoder.dim}-d embeddings; "
                             f"the KaniTTS-2 model takes {dim}")
    try:
        store = VoiceStore(v.directory, dim, v.store_limits())
        if v.preload:
            store.preload(v.preload)
    except (VoiceError, OSError) as exc:
        raise ModelLoadError(f"voices: {exc}") from None
    logger.info("voice cloning on: encoder %s (%s), store %s", v.speaker_encoder, device, v.directory)
    return VoiceCloning(encoder, store, v.audio_limits())

