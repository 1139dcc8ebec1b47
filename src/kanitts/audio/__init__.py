"""Audio output: incremental encoders for the OpenAI formats and tempo change."""

from kanitts.audio.encoders import (
    FORMATS,
    AudioFormat,
    StreamEncoder,
    content_type,
    encode_all,
    encode_stream,
    format_for_suffix,
    to_int16,
    wav_header,
)
from kanitts.audio.tempo import MAX_SPEED, MIN_SPEED, TempoChanger, apply_speed, atempo_factors

__all__ = [
    "FORMATS",
    "MAX_SPEED",
    "MIN_SPEED",
    "AudioFormat",
    "StreamEncoder",
    "TempoChanger",
    "apply_speed",
    "atempo_factors",
    "content_type",
    "encode_all",
    "encode_stream",
    "format_for_suffix",
    "to_int16",
    "wav_header",
]
