"""Uploaded reference audio -> speaker embedding, in one call for the API layer."""

from __future__ import annotations

import numpy as np

from kanitts.speaker.audio_input import ReferenceAudioLimits, decode_reference_audio
from kanitts.speaker.encoder import SpeakerEncoder


def embed_reference_audio(
    encoder: SpeakerEncoder, data: bytes, limits: ReferenceAudioLimits = ReferenceAudioLimits()
) -> np.ndarray:
    """Decode and validate ``data`` (any PyAV-decodable file) and embed it: float32
    ``[D]`` with unit L2 norm. Raises
    :class:`~kanitts.speaker.audio_input.ReferenceAudioError` for unusable audio (answer
    400). Blocking CPU/GPU work: run it in a worker thread."""
    return encoder.embed(decode_reference_audio(data, limits))
