"""Audio output: incremental encoders for the OpenAI formats, tempo change and resampling."""

from kanitts.audio.encoders import (
    FORMATS,
    AudioFormat,
    StreamEncoder,
    content_type,
    encode_all,
    encode_stream,
    encoded_rate,
    format_for_suffix,
    to_int16,
    wav_header,
)
from kanitts.audio.resample import (
    MAX_SAMPLE_RATE,
    MIN_SAMPLE_RATE,
    Resampler,
    check_sample_rate,
    resample_all,
    resample_stream,
)
from kanitts.audio.tempo import MAX_SPEED, MIN_SPEED, TempoChanger, apply_speed, atempo_factors

__all__ = [
    "FORMATS",
    "MAX_SAMPLE_RATE",
    "MAX_SPEED",
    "MIN_SAMPLE_RATE",
    "MIN_SPEED",
    "AudioFormat",
    "Resampler",
    "StreamEncoder",
    "TempoChanger",
    "apply_speed",
    "atempo_factors",
    "check_sample_rate",
    "content_type",
    "encode_all",
    "encode_stream",
    "encoded_rate",
    "format_for_suffix",
    "resample_all",
    "resample_stream",
    "to_int16",
    "wav_header",
]
