"""Reference-audio decoding: real files in every container, made on the fly with PyAV."""

from __future__ import annotations

import io
from fractions import Fraction

import av
import numpy as np
import pytest

from kanitts.speaker import SPEAKER_SAMPLE_RATE
from kanitts.speaker.audio_input import (
    ReferenceAudioError,
    ReferenceAudioLimits,
    decode_reference_audio,
    rms_dbfs,
)

TONE_HZ = 440.0


def tone(seconds: float, rate: int, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * TONE_HZ * t)).astype(np.float32)


def encode(pcm: np.ndarray, rate: int, container: str, codec: str, channels: int = 1) -> bytes:
    """Encode mono float ``pcm`` to a complete file (``channels`` copies of it)."""
    buf = io.BytesIO()
    with av.open(buf, mode="w", format=container) as out:
        stream = out.add_stream(codec, rate=rate, layout="stereo" if channels == 2 else "mono")
        fmt = stream.codec_context.format.name
        samples = np.repeat(pcm[None, :], channels, axis=0)
        if fmt.startswith("s16"):
            samples = np.clip(np.round(samples * 32767), -32768, 32767).astype(np.int16)
        elif fmt.startswith("s32"):
            samples = np.round(samples.astype(np.float64) * 2147483647).astype(np.int32)
        else:
            samples = samples.astype(np.float32)
        planar = fmt.endswith("p")
        frame_size = stream.codec_context.frame_size or 1024
        for start in range(0, samples.shape[1], frame_size):
            part = samples[:, start : start + frame_size]
            data = part if planar else part.T.reshape(1, -1)
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(data), format=fmt, layout=stream.layout.name)
            frame.sample_rate = rate
            frame.pts = start
            frame.time_base = Fraction(1, rate)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return buf.getvalue()


# container, codec, input rate, channels
FORMATS = {
    "wav": ("wav", "pcm_s16le", 44100, 2),
    "mp3": ("mp3", "libmp3lame", 44100, 1),
    "flac": ("flac", "flac", 22050, 1),
    "ogg-opus": ("ogg", "libopus", 48000, 2),
    "m4a-aac": ("ipod", "aac", 24000, 1),
}


def peak_hz(pcm: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(pcm * np.hanning(pcm.size)))
    return float(np.argmax(spectrum)) * SPEAKER_SAMPLE_RATE / pcm.size


@pytest.mark.parametrize("name", list(FORMATS))
def test_decodes_every_container_to_16k_mono(name: str) -> None:
    container, codec, rate, channels = FORMATS[name]
    data = encode(tone(4.0, rate), rate, container, codec, channels)
    pcm = decode_reference_audio(data)
    assert pcm.dtype == np.float32 and pcm.ndim == 1
    # codec delay / padding adds at most a few tens of ms
    assert abs(pcm.size / SPEAKER_SAMPLE_RATE - 4.0) < 0.1
    assert abs(peak_hz(pcm) - TONE_HZ) < 2.0
    # a 0.5-amplitude sine is -9 dBFS RMS; identical channels average to the same level
    assert rms_dbfs(pcm) == pytest.approx(-9.03, abs=0.5)


def test_too_short() -> None:
    data = encode(tone(2.0, 16000), 16000, "wav", "pcm_s16le")
    with pytest.raises(ReferenceAudioError, match="2.0 s; at least 3 s") as err:
        decode_reference_audio(data)
    assert err.value.code == "too_short"
    # limits are parameters
    assert decode_reference_audio(data, ReferenceAudioLimits(min_seconds=1.5)).size == 32000


def test_too_long() -> None:
    data = encode(tone(31.0, 22050), 22050, "flac", "flac")
    with pytest.raises(ReferenceAudioError, match="longer than 30 s") as err:
        decode_reference_audio(data)
    assert err.value.code == "too_long"
    assert decode_reference_audio(data, ReferenceAudioLimits(max_seconds=32)).size == 31 * 16000


@pytest.mark.parametrize("amplitude", [0.0, 10 ** (-75 / 20)])
def test_silence(amplitude: float) -> None:
    data = encode(tone(5.0, 16000, amplitude), 16000, "flac", "flac")
    with pytest.raises(ReferenceAudioError, match="silent") as err:
        decode_reference_audio(data)
    assert err.value.code == "silent"


def test_quiet_speech_level_passes() -> None:
    data = encode(tone(5.0, 16000, 10 ** (-40 / 20)), 16000, "wav", "pcm_s16le")
    assert rms_dbfs(decode_reference_audio(data)) == pytest.approx(-43.0, abs=0.5)


@pytest.mark.parametrize(
    "data",
    [
        np.random.default_rng(0).bytes(100_000),
        b"this is a text file, not audio\n" * 200,
        b"RIFF\xff\xff\xff\xffWAVEfmt " + np.random.default_rng(1).bytes(5000),
        b"",
    ],
    ids=["random", "text", "broken-riff", "empty"],
)
def test_undecodable(data: bytes) -> None:
    with pytest.raises(ReferenceAudioError, match="could not be decoded|empty") as err:
        decode_reference_audio(data)
    assert err.value.code == "undecodable"


def test_truncated_file_is_rejected() -> None:
    data = encode(tone(5.0, 44100), 44100, "mp3", "libmp3lame")
    with pytest.raises(ReferenceAudioError) as err:
        decode_reference_audio(data[: len(data) // 3])
    assert err.value.code in ("too_short", "undecodable")


def test_video_without_audio_is_rejected() -> None:
    buf = io.BytesIO()
    with av.open(buf, mode="w", format="mp4") as out:
        stream = out.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        for i in range(5):
            frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), i * 40, np.uint8), format="rgb24")
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    with pytest.raises(ReferenceAudioError, match="no audio stream"):
        decode_reference_audio(buf.getvalue())


def test_too_large() -> None:
    data = encode(tone(4.0, 16000), 16000, "wav", "pcm_s16le")
    with pytest.raises(ReferenceAudioError, match=f"{len(data)} bytes; at most 1000") as err:
        decode_reference_audio(data, ReferenceAudioLimits(max_bytes=1000))
    assert err.value.code == "too_large"


def test_invalid_limits() -> None:
    with pytest.raises(ValueError):
        ReferenceAudioLimits(min_seconds=5, max_seconds=3)
    with pytest.raises(ValueError):
        ReferenceAudioLimits(max_bytes=0)
