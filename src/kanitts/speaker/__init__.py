"""Speaker encoder for KaniTTS-2 voice cloning: reference audio -> 128-d embedding.

``audio_input`` decodes and validates uploaded reference audio (16 kHz mono float32),
``encoder`` is the model, ``loading`` loads it by hub id or folder, ``tiny`` writes random
encoders in the real format.
"""

from kanitts.speaker.encoder import (
    DEFAULT_EMBEDDING_DIM,
    DEFAULT_SPEAKER_ENCODER,
    SPEAKER_SAMPLE_RATE,
    SpeakerEncoder,
)
from kanitts.speaker.loading import load_speaker_encoder

__all__ = [
    "DEFAULT_EMBEDDING_DIM",
    "DEFAULT_SPEAKER_ENCODER",
    "SPEAKER_SAMPLE_RATE",
    "SpeakerEncoder",
    "load_speaker_encoder",
]
