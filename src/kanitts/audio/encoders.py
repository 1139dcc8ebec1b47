"""Incremental audio encoders for the OpenAI ``response_format`` values.

The synthesis pipeline yields mono float32 PCM chunks (22050 Hz for NanoCodec) as
they are decoded. :class:`StreamEncoder` turns that chunk sequence into *one*
continuous file in the requested format: the container header is written once,
at the start, and every later :meth:`StreamEncoder.encode` call returns only the
bytes the codec has produced since (possibly ``b""`` while a codec frame fills
up). :meth:`StreamEncoder.flush` drains the codec and writes the trailer. The
concatenation of everything returned is always a complete, valid file.

Formats
-------
========  ==================  =====================================================
``fmt``   Content-Type        What is sent
========  ==================  =====================================================
``pcm``   ``audio/pcm``       raw signed 16-bit little-endian mono samples, no header
                              (L16 byte order is big-endian per RFC 2586; we follow
                              OpenAI and send little-endian; the rate is the input
                              rate, 22050 Hz for KaniTTS).
``wav``   ``audio/wav``       RIFF/WAVE, 16-bit PCM. Streaming: one 44-byte header
                              whose RIFF and data sizes are 0xFFFFFFFF ("unknown"),
                              then raw samples. Non-streaming: real sizes.
``mp3``   ``audio/mpeg``      MPEG audio layer III (libmp3lame -q 5, CBR 64 kb/s; at
                              22.05 kHz that is MPEG-2 with 576-sample frames).
                              Non-streaming files carry a Xing/LAME tag (exact
                              length and gapless trimming); streams are bare frames
                              (no ID3, no tag), so decoders add LAME's 1105-sample
                              delay plus last-frame padding.
``opus``  ``audio/ogg``       Opus (libopus, 32 kb/s, complexity 5) in Ogg, resampled
                              to the nearest Opus rate (22050 -> 24000 Hz); pre-skip
                              and the end granule make the decoded length exact.
``aac``   ``audio/aac``       AAC-LC (FFmpeg's native encoder, 64 kb/s) in ADTS
                              frames; decoders add 1024 priming samples (ADTS
                              cannot signal them) plus last-frame padding.
``flac``  ``audio/flac``      FLAC, 16-bit. Non-streaming files carry the total
                              sample count and MD5 in STREAMINFO; streams leave them 0
                              (allowed by the FLAC spec for streams).
========  ==================  =====================================================

Compressed formats go through PyAV output containers that write into an in-memory
sink; the sink is drained after every :meth:`~StreamEncoder.encode`, so encoded
bytes leave as soon as the encoder emits them. With ``streaming=True`` the sink is
not seekable, so muxers never go back to patch headers. With ``streaming=False``
the sink is seekable (mp3 gets its Xing/LAME tag, flac its STREAMINFO totals) and
all bytes are returned by :meth:`~StreamEncoder.flush`.
"""

from __future__ import annotations

import asyncio
import io
import struct
from collections.abc import AsyncIterator
from fractions import Fraction
from typing import Literal, get_args

import numpy as np

from kanitts.offload import shared_threads

AudioFormat = Literal["mp3", "opus", "aac", "flac", "wav", "pcm"]
FORMATS: tuple[str, ...] = get_args(AudioFormat)

_CONTENT_TYPES: dict[str, str] = {
    "mp3": "audio/mpeg",
    "opus": "audio/ogg",  # Opus in an Ogg container (RFC 7845); "audio/ogg; codecs=opus"
    "aac": "audio/aac",  # ADTS stream
    "flac": "audio/flac",
    "wav": "audio/wav",
    "pcm": "audio/pcm",  # raw s16le mono at the model rate (OpenAI's "pcm")
}

#: File name suffixes (``kanitts say -o``): each format's own, plus ``.ogg`` (Ogg Opus) and ``.raw``.
_SUFFIXES: dict[str, str] = {f".{fmt}": fmt for fmt in FORMATS} | {".ogg": "opus", ".raw": "pcm"}

# fmt -> (PyAV container format, encoder, sample format fed to the encoder,
#         default bit rate, container options, codec options)
_CODECS: dict[str, tuple[str, str, str, int | None, dict[str, str], dict[str, str]]] = {
    # id3v2_version=0: no ID3 tag, the stream starts with an MPEG frame.
    # compression_level=5 is LAME's -q 5: ~25% faster than the default -q 3, same
    # bit rate; the difference is inaudible on 22 kHz speech.
    "mp3": ("mp3", "libmp3lame", "fltp", 64_000, {"id3v2_version": "0"}, {"compression_level": "5"}),
    # Ogg pages of ~40 ms: the muxer holds back at most one partial page (FFmpeg's
    # default is 1 s). Measured end-to-end lag (last sample fed -> decodable) is
    # ~90 ms at 40 ms pages (~160-200 ms at 100 ms), for ~6 kb/s of page overhead.
    # Complexity 5 instead of 10 makes libopus ~2.5x faster at 32 kb/s.
    "opus": ("ogg", "libopus", "flt", 32_000, {"page_duration": "40000"}, {"compression_level": "5"}),
    "aac": ("adts", "aac", "fltp", 64_000, {}, {}),
    "flac": ("flac", "flac", "s16", None, {}, {}),
}

_OPUS_RATES = (8000, 12000, 16000, 24000, 48000)
_MP3_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)
_AAC_RATES = (7350, 8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 64000, 88200, 96000)

# Largest value a RIFF size field can hold; also the "unknown size" marker.
_RIFF_UNKNOWN = 0xFFFFFFFF


def content_type(fmt: AudioFormat | str) -> str:
    """HTTP Content-Type for ``fmt`` (see the module docstring)."""
    try:
        return _CONTENT_TYPES[fmt]
    except KeyError:
        raise ValueError(f"unsupported audio format {fmt!r}; expected one of {', '.join(FORMATS)}") from None


def format_for_suffix(suffix: str, default: str = "wav") -> str:
    """The format a file name suffix names (``".mp3"`` -> ``"mp3"``, ``".ogg"`` -> ``"opus"``,
    case-insensitive); ``default`` for any other suffix."""
    return _SUFFIXES.get(suffix.lower(), default)


def to_int16(pcm: np.ndarray) -> np.ndarray:
    """Float PCM (nominal range [-1, 1]) -> int16: NaN -> 0, clipped, scaled by 32767, rounded.

    int16 input is returned unchanged (as a contiguous array).
    """
    a = np.asarray(pcm)
    if a.dtype == np.int16:
        return np.ascontiguousarray(a.reshape(-1))
    a = np.asarray(a, dtype=np.float32).reshape(-1)
    # np.clip(a, -1, 1) and out.max() through the ufuncs themselves: the same values without
    # numpy's Python-level wrappers (half this function's time on a 1-frame chunk).
    out = np.maximum(a, -1.0)  # a fresh array; +-inf -> +-1 as nan_to_num would
    np.minimum(out, 1.0, out=out)
    if np.isnan(np.maximum.reduce(out, initial=0.0)):  # NaN propagates through max: only then the extra pass
        out[np.isnan(out)] = 0.0
    np.multiply(out, 32767.0, out=out)
    np.rint(out, out=out)
    return out.astype("<i2")


def _to_float32(pcm: np.ndarray) -> np.ndarray:
    """Mono float32 in [-1, 1] (int16 input is scaled by 1/32768)."""
    a = np.asarray(pcm)
    if a.dtype == np.int16:
        return a.reshape(-1).astype(np.float32) / 32768.0
    a = np.array(a, dtype=np.float32, copy=True).reshape(-1)
    np.nan_to_num(a, copy=False, nan=0.0, posinf=1.0, neginf=-1.0)
    np.clip(a, -1.0, 1.0, out=a)
    return a


def _check_mono(pcm: np.ndarray) -> None:
    shape = np.shape(pcm)
    if len(shape) > 2 or (len(shape) == 2 and 1 not in shape):
        raise ValueError(f"expected mono PCM (1-D, or 2-D with one channel); got shape {shape}")


def _pick_rate(rate: int, supported: tuple[int, ...]) -> int:
    """``rate`` if supported, else the smallest supported rate above it (else the largest)."""
    if rate in supported:
        return rate
    higher = [r for r in sorted(supported) if r > rate]
    return higher[0] if higher else max(supported)


def encoded_rate(fmt: AudioFormat, sample_rate: int) -> int:
    """The rate (Hz) a file of ``fmt`` holds when fed PCM at ``sample_rate``: the input rate,
    except where the codec supports only some rates (opus, mp3, aac: the smallest supported
    rate above it; e.g. opus at 22050 -> 24000)."""
    supported = {"opus": _OPUS_RATES, "mp3": _MP3_RATES, "aac": _AAC_RATES}.get(fmt)
    return int(sample_rate) if supported is None else _pick_rate(int(sample_rate), supported)


def wav_header(sample_rate: int, data_bytes: int | None, *, channels: int = 1, bits: int = 16) -> bytes:
    """44-byte canonical PCM WAVE header; ``data_bytes=None`` writes 0xFFFFFFFF sizes (streaming)."""
    block_align = channels * bits // 8
    if data_bytes is None:
        riff_size = data_size = _RIFF_UNKNOWN
    else:
        data_size = min(data_bytes, _RIFF_UNKNOWN - 36)
        riff_size = 36 + data_size
    return struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        b"RIFF",
        riff_size,
        b"WAVE",
        b"fmt ",
        16,
        1,  # WAVE_FORMAT_PCM
        channels,
        sample_rate,
        sample_rate * block_align,
        block_align,
        bits,
        b"data",
        data_size,
    )


class _Sink:
    """Write-only, non-seekable byte sink (so muxers never seek back); drained by the owner."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = bytearray()

    def write(self, data) -> int:
        self._buf += data
        return len(data)

    def drain(self) -> bytes:
        if not self._buf:
            return b""
        out = bytes(self._buf)
        self._buf.clear()
        return out


class StreamEncoder:
    """Encode one response's PCM chunks into one file of format ``fmt``.

    ``encode(pcm)`` takes mono float32 in [-1, 1] (NaN -> 0, out-of-range values are
    clipped; int16 arrays are accepted too) and returns the bytes ready now, which
    may be ``b""``. ``flush()`` ends the stream: it returns the remaining bytes and
    the trailer; afterwards the encoder is closed. ``close()`` drops an unfinished
    stream (e.g. client disconnect) without producing more output.

    ``streaming=True`` (default): bytes come out as soon as the codec emits them and
    nothing ever needs patching. ``streaming=False``: the file is produced for a
    complete (non-streamed) response: ``encode()`` returns ``b""`` (except ``pcm``)
    and ``flush()`` returns the whole file, with exact sizes/lengths in its headers.

    ``bitrate`` (bits/s) applies to mp3, opus and aac; ``None`` picks the default.

    Not thread-safe; use one encoder per response.
    """

    def __init__(
        self,
        fmt: AudioFormat,
        sample_rate: int = 22050,
        *,
        streaming: bool = True,
        bitrate: int | None = None,
    ) -> None:
        if fmt not in _CONTENT_TYPES:
            raise ValueError(f"unsupported audio format {fmt!r}; expected one of {', '.join(FORMATS)}")
        if int(sample_rate) <= 0:
            raise ValueError(f"sample_rate must be positive, got {sample_rate}")
        if bitrate is not None and int(bitrate) <= 0:
            raise ValueError(f"bitrate must be positive, got {bitrate}")
        self.fmt: str = fmt
        self.sample_rate = int(sample_rate)
        self.streaming = bool(streaming)
        self.content_type = _CONTENT_TYPES[fmt]
        self.samples_in = 0  # input samples accepted so far
        self._closed = False
        self._wav_data: list[bytes] = []  # non-streaming wav body
        self._wav_bytes = 0
        self._header_sent = False
        self._container = None
        self._stream = None
        self._sink = None
        if fmt in _CODECS:
            self._open_container(bitrate)

    # -- setup ---------------------------------------------------------------------
    def _open_container(self, bitrate: int | None) -> None:
        import av  # local import: keeps `import kanitts.audio` cheap for pcm/wav-only users

        container_fmt, codec, sample_fmt, default_bitrate, options, codec_options = _CODECS[self.fmt]
        codec_rate = self.codec_rate = encoded_rate(self.fmt, self.sample_rate)
        self._sample_fmt = sample_fmt
        self._time_base = Fraction(1, self.sample_rate)

        self._sink = _Sink() if self.streaming else io.BytesIO()
        self._container = av.open(self._sink, "w", format=container_fmt, options=dict(options))
        try:
            stream = self._container.add_stream(
                codec, rate=codec_rate, layout="mono", options=dict(codec_options)
            )
            cc = stream.codec_context
            cc.format = sample_fmt
            cc.time_base = Fraction(1, codec_rate)
            if default_bitrate is not None:
                stream.bit_rate = int(bitrate or default_bitrate)
            self._stream = stream
            # Write the container header now, so the first encode() already returns it.
            self._container.start_encoding()
        except Exception:
            self._abort()
            raise

    # -- public API ------------------------------------------------------------------
    def encode(self, pcm: np.ndarray) -> bytes:
        """Encode one chunk; returns the bytes that are ready (possibly ``b""``)."""
        if self._closed:
            raise RuntimeError("StreamEncoder is closed (flush() or close() was called)")
        _check_mono(pcm)
        n = int(np.size(pcm))
        fmt = self.fmt
        if fmt == "pcm":
            self.samples_in += n
            return to_int16(pcm).tobytes()
        if fmt == "wav":
            body = to_int16(pcm).tobytes()
            self.samples_in += n
            if not self.streaming:
                if body:
                    self._wav_data.append(body)
                    self._wav_bytes += len(body)
                return b""
            return self._wav_stream_header() + body
        if n == 0:
            return self._drain()
        self._encode_frame(pcm, n)
        return self._drain()

    def flush(self) -> bytes:
        """End of stream: the remaining bytes and the trailer. Closes the encoder."""
        if self._closed:
            return b""
        fmt = self.fmt
        if fmt == "pcm":
            self._closed = True
            return b""
        if fmt == "wav":
            self._closed = True
            if self.streaming:
                return self._wav_stream_header()  # empty stream: still a valid file
            out = wav_header(self.sample_rate, self._wav_bytes) + b"".join(self._wav_data)
            self._wav_data.clear()
            return out
        try:
            self._container.mux(self._stream.encode(None))  # drain framing fifo + encoder
            self._container.close()  # trailer (and header patches when seekable)
        except Exception:
            self._abort()
            raise
        self._closed = True
        if self.streaming:
            out = self._sink.drain()
        else:
            out = self._sink.getvalue()
        self._release()
        return out

    def close(self) -> None:
        """Abandon the stream (no trailer); frees codec resources. Idempotent."""
        if not self._closed:
            self._abort()

    def __enter__(self) -> StreamEncoder:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- internals -------------------------------------------------------------------
    def _wav_stream_header(self) -> bytes:
        if self._header_sent:
            return b""
        self._header_sent = True
        return wav_header(self.sample_rate, None)

    def _encode_frame(self, pcm: np.ndarray, n: int) -> None:
        import av

        if self._sample_fmt == "s16":
            data = to_int16(pcm).reshape(1, n)
        else:
            data = _to_float32(pcm).reshape(1, n)
        frame = av.AudioFrame.from_ndarray(data, format=self._sample_fmt, layout="mono")
        frame.sample_rate = self.sample_rate
        frame.time_base = self._time_base
        frame.pts = self.samples_in
        self.samples_in += n
        try:
            # PyAV splits/merges samples into the codec's fixed frame size (and
            # resamples for opus) through a buffered filter graph; partial frames wait
            # there until more samples arrive or flush() pads the last one.
            self._container.mux(self._stream.encode(frame))
        except Exception:
            self._abort()
            raise

    def _drain(self) -> bytes:
        if not self.streaming:
            return b""
        return self._sink.drain()

    def _release(self) -> None:
        self._container = None
        self._stream = None
        self._sink = None

    def _abort(self) -> None:
        self._closed = True
        container = self._container
        self._release()
        if container is not None:
            try:
                container.close()
            except Exception:  # noqa: BLE001 - best effort cleanup of an abandoned stream
                pass


def encode_all(
    pcm: np.ndarray,
    fmt: AudioFormat,
    sample_rate: int = 22050,
    *,
    bitrate: int | None = None,
) -> bytes:
    """Encode a whole clip into one complete file (non-streaming response)."""
    enc = StreamEncoder(fmt, sample_rate, streaming=False, bitrate=bitrate)
    try:
        head = enc.encode(pcm)
        return head + enc.flush()
    finally:
        enc.close()


# Chunks shorter than this are encoded inline on the event loop; longer ones in a
# worker thread (PyAV releases the GIL inside the codec, numpy in to_int16's passes: pcm's
# 8-frame chunk costs the loop ~45 us inline, ~8 us handed over; kanitts.offload).
_INLINE_SAMPLES = 4096


async def encode_stream(
    chunks: AsyncIterator[np.ndarray],
    fmt: AudioFormat,
    sample_rate: int = 22050,
    *,
    bitrate: int | None = None,
) -> AsyncIterator[bytes]:
    """Encode an async stream of PCM chunks into an async stream of file bytes.

    Yields only non-empty byte strings; the first carries the container header
    (for wav/ogg/flac it may come before any audio is encoded). Closing the
    generator (e.g. client disconnect) closes ``chunks`` when it supports
    ``aclose()`` and releases the encoder.
    """
    enc = StreamEncoder(fmt, sample_rate, streaming=True, bitrate=bitrate)
    cheap = fmt in ("pcm", "wav")
    pending: asyncio.Future | None = None  # encoder call running in a worker thread
    try:
        async for chunk in chunks:
            if np.size(chunk) <= _INLINE_SAMPLES:
                data = enc.encode(chunk)
            else:
                pending = shared_threads.run(enc.encode, chunk)
                data = await asyncio.shield(pending)
                pending = None
            if data:
                yield data
        if cheap:
            data = enc.flush()
        else:
            pending = shared_threads.run(enc.flush)
            data = await asyncio.shield(pending)
            pending = None
        if data:
            yield data
    finally:
        if pending is not None and not pending.done():
            # Cancelled while a worker thread is inside the codec: free the encoder
            # only after that call has returned.
            pending.add_done_callback(lambda _f: enc.close())
        else:
            enc.close()
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            try:
                await aclose()
            except Exception:  # noqa: BLE001
                pass
