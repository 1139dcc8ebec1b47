"""Speaker encoder for KaniTTS-2 voice cloning: reference audio -> 128-d embedding.

``audio_input`` decodes and validates uploaded reference audio (16 kHz mono float32),
``encoder`` is the model, ``loading`` loads it by hub id or folder, ``reference`` does
decode + embed in one call, ``tiny`` writes random encoders in the real format,
``constants`` holds the fixed facts (sample rate, default hub id, embedding size).

The names below are imported on first use, so that ``kanitts.speaker.constants`` and
``kanitts.speaker.audio_input`` load without torch or transformers.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "DEFAULT_EMBEDDING_DIM": "constants",
    "DEFAULT_SPEAKER_ENCODER": "constants",
    "SPEAKER_SAMPLE_RATE": "constants",
    "ReferenceAudioError": "audio_input",
    "ReferenceAudioLimits": "audio_input",
    "decode_reference_audio": "audio_input",
    "SpeakerEncoder": "encoder",
    "load_speaker_encoder": "loading",
    "embed_reference_audio": "reference",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'kanitts.speaker' has no attribute {name!r}")
    return getattr(importlib.import_module(f"kanitts.speaker.{module}"), name)
