"""Reference audio for voice cloning: uploaded bytes -> validated 16 kHz mono float32.

Anything PyAV (FFmpeg) decodes is accepted: wav, mp3, flac, ogg/opus, m4a/aac, webm and
more. The first audio stream is decoded, resampled by PyAV's resampler to
:data:`~kanitts.speaker.constants.SPEAKER_SAMPLE_RATE` float32 and averaged over channels
(mono). Input that is too large, undecodable, too short, too long or silent raises
:class:`ReferenceAudioError`, whose ``code`` says which and whose message is
user-facing (the API layer answers it with a 400).

Decoding is CPU work (up to ``max_seconds`` of audio; decoding stops as soon as the limit
is passed): call it from a worker thread, never on an event loop.
"""

from __future__ import annotations

import io
import logging
import math
from dataclasses import dataclass
from typing import Literal

import av
import numpy as np

from kanitts.speaker.constants import SPEAKER_SAMPLE_RATE

logger = logging.getLogger(__name__)

ReferenceAudioErrorCode = Literal["too_large", "undecodable", "too_short", "too_long", "silent"]


@dataclass(frozen=True)
class ReferenceAudioLimits:
    """Limits on uploaded reference audio. ``max_bytes`` bounds the encoded upload;
    ``min_seconds``/``max_seconds`` the decoded duration; audio whose RMS level is below
    ``silence_dbfs`` (dB relative to full scale, 0 = a full-scale square wave) is silent."""

    min_seconds: float = 3.0
    max_seconds: float = 30.0
    max_bytes: int = 20 * 1024 * 1024
    silence_dbfs: float = -60.0

    def __post_init__(self) -> None:
        if not 0 < self.min_seconds <= self.max_seconds:
            raise ValueError(f"need 0 < min_seconds <= max_seconds, got {self.min_seconds}, {self.max_seconds}")
        if self.max_bytes <= 0:
            raise ValueError(f"max_bytes must be positive, got {self.max_bytes}")


class ReferenceAudioError(ValueError):
    """Unusable reference audio. ``code`` is one of ``too_large``, ``undecodable``,
    ``too_short``, ``too_long``, ``silent``; ``str(err)`` is a message for the client."""

    def __init__(self, code: ReferenceAudioErrorCode, message: str) -> None:
        super().__init__(message)
        self.code: ReferenceAudioErrorCode = code


def rms_dbfs(pcm: np.ndarray) -> float:
    """RMS level of float samples in dBFS (``-inf`` for all-zero or empty input)."""
    if pcm.size == 0:
        return -math.inf
    rms = float(np.sqrt(np.mean(np.square(pcm, dtype=np.float64))))
    return 20 * math.log10(rms) if rms > 0 else -math.inf


def _decode_mono(data: bytes, max_samples: int) -> np.ndarray:
    """Decode the first audio stream to float32 mono at the speaker rate; raises
    ``too_long`` as soon as more than ``max_samples`` samples came out."""
    undecodable = "the file could not be decoded as audio"
    try:
        container = av.open(io.BytesIO(data), mode="r")
    except (av.error.FFmpegError, ValueError, OSError, UnicodeDecodeError) as exc:
        raise ReferenceAudioError("undecodable", f"{undecodable} ({type(exc).__name__})") from None
    chunks: list[np.ndarray] = []
    total = 0
    with container:
        stream = next((s for s in container.streams if s.type == "audio"), None)
        if stream is None:
            raise ReferenceAudioError("undecodable", f"{undecodable}: it has no audio stream")
        # keep the channels (planar float) and average them here: FFmpeg's own downmix
        # sums at -3 dB, so identical channels would come out 3 dB louder than either
        resampler = av.AudioResampler(format="fltp", rate=SPEAKER_SAMPLE_RATE)
        try:
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray().mean(axis=0))
                    total += chunks[-1].size
                if total > max_samples:
                    raise ReferenceAudioError(
                        "too_long", f"the audio is longer than {max_samples / SPEAKER_SAMPLE_RATE:g} s"
                    )
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().mean(axis=0))
        except ReferenceAudioError:
            raise
        except (av.error.FFmpegError, ValueError) as exc:
            raise ReferenceAudioError("undecodable", f"{undecodable} ({type(exc).__name__})") from None
    pcm = np.concatenate(chunks).astype(np.float32, copy=False) if chunks else np.zeros(0, np.float32)
    if not np.all(np.isfinite(pcm)):
        raise ReferenceAudioError("undecodable", f"{undecodable}: it decodes to non-finite samples")
    return pcm


def decode_reference_audio(
    data: bytes, limits: ReferenceAudioLimits = ReferenceAudioLimits()
) -> np.ndarray:
    """Uploaded file bytes -> float32 ``[T]`` mono samples at 16 kHz, in ``[-1, 1]``
    for integer sources, ready for :meth:`kanitts.speaker.SpeakerEncoder.embed`.

    Raises :class:`ReferenceAudioError` (a ``ValueError``) with a user-facing message:
    ``too_large`` (more than ``limits.max_bytes``), ``undecodable`` (not audio, empty,
    corrupt, or no audio stream), ``too_long`` (over ``limits.max_seconds``; decoding
    stops there), ``too_short`` (under ``limits.min_seconds``), ``silent`` (RMS below
    ``limits.silence_dbfs``)."""
    if len(data) > limits.max_bytes:
        raise ReferenceAudioError(
            "too_large", f"the file is {len(data)} bytes; at most {limits.max_bytes} bytes are accepted"
        )
    if not data:
        raise ReferenceAudioError("undecodable", "the file is empty")
    max_samples = int(round(limits.max_seconds * SPEAKER_SAMPLE_RATE))
    pcm = _decode_mono(data, max_samples)
    seconds = pcm.size / SPEAKER_SAMPLE_RATE
    if pcm.size > max_samples:
        raise ReferenceAudioError("too_long", f"the audio is {seconds:.1f} s; at most {limits.max_seconds:g} s is accepted")
    if seconds < limits.min_seconds:
        raise ReferenceAudioError(
            "too_short", f"the audio is {seconds:.1f} s; at least {limits.min_seconds:g} s of speech is needed"
        )
    level = rms_dbfs(pcm)
    if level < limits.silence_dbfs:
        raise ReferenceAudioError(
            "silent", f"the audio is silent (level {level:.0f} dBFS, below {limits.silence_dbfs:g} dBFS)"
        )
    return pcm
