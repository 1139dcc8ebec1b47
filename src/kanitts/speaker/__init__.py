"""Speaker encoder for KaniTTS-2 voice cloning: reference audio -> 128-d embedding.

``audio_input`` decodes and validates uploaded reference audio (16 kHz mono float32),
``encoder`` is the model, ``loading`` loads it by hub id or folder, ``reference`` does
decode + embed in one call, ``tiny`` writes random encoders in the real format.
"""

from kanitts.speaker.audio_input import ReferenceAudioError, ReferenceAudioLimits, decode_reference_audio
from kanitts.speaker.encoder import (
    DEFAULT_EMBEDDING_DIM,
    DEFAULT_SPEAKER_ENCODER,
    SPEAKER_SAMPLE_RATE,
    SpeakerEncoder,
)
from kanitts.speaker.loading import load_speaker_encoder
from kanitts.speaker.reference import embed_reference_audio

__all__ = [
    "DEFAULT_EMBEDDING_DIM",
    "DEFAULT_SPEAKER_ENCODER",
    "SPEAKER_SAMPLE_RATE",
    "ReferenceAudioError",
    "ReferenceAudioLimits",
    "SpeakerEncoder",
    "decode_reference_audio",
    "embed_reference_audio",
    "load_speaker_encoder",
]
