"""kanitts.audio.encoders: one container per response, decodable whole, right length."""

from __future__ import annotations

import asyncio
import io
import struct

import av
import numpy as np
import pytest

from kanitts.audio import FORMATS, StreamEncoder, content_type, encode_all, encode_stream, to_int16

SR = 22050
FRAME = 1764  # one NanoCodec frame of samples
CHUNKS = [1, 3, 8, 2, 5, 1, 4]  # uneven chunk sizes in codec frames: 24 frames = 1.92 s
N_IN = FRAME * sum(CHUNKS)

# Decoded length minus input length (in input samples) that each format may add when
# streaming: codec priming and padding of the last frame. Measured with FFmpeg 8.1:
#   mp3: LAME's 1105-sample delay (576 + 529) + padding to a 576-sample MPEG-2 frame;
#        non-streaming files carry a LAME tag and decode to the exact length.
#   aac: 1024 priming samples (ADTS cannot signal them) + padding to 1024.
#   opus: exact (pre-skip and the final granule position trim both ends).
#   flac, wav, pcm: exact.
MAX_EXTRA_STREAMING = {"mp3": 1105 + 576, "aac": 1024 + 1024, "opus": 0, "flac": 0, "wav": 0, "pcm": 0}
MAX_EXTRA_FILE = {**MAX_EXTRA_STREAMING, "mp3": 0}
DECODED_RATE = {"opus": 48000}  # FFmpeg decodes Opus at 48 kHz


def signal(n: int = N_IN, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n) / SR
    return (0.5 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(n)).astype(np.float32)


def split(x: np.ndarray) -> list[np.ndarray]:
    out, pos = [], 0
    for k in CHUNKS:
        out.append(x[pos : pos + FRAME * k])
        pos += FRAME * k
    assert pos == x.size
    return out


def decode(data: bytes) -> tuple[int, int, np.ndarray]:
    """Decode a whole file with PyAV -> (rate, channels, mono samples as float32)."""
    with av.open(io.BytesIO(data)) as c:
        stream = c.streams.audio[0]
        parts = []
        for frame in c.decode(stream):
            a = frame.to_ndarray()
            if a.dtype == np.int16:
                a = a.astype(np.float32) / 32768.0
            parts.append(a.reshape(frame.layout.nb_channels, -1)[0] if a.ndim == 2 else a)
        return stream.rate, stream.channels, np.concatenate(parts) if parts else np.zeros(0, np.float32)


def encode_chunks(fmt: str, x: np.ndarray, streaming: bool) -> list[bytes]:
    enc = StreamEncoder(fmt, SR, streaming=streaming)
    out = [enc.encode(c) for c in split(x)]
    out.append(enc.flush())
    return out


def expected_rate(fmt: str) -> int:
    return DECODED_RATE.get(fmt, SR)


def raw_decode(fmt: str, data: bytes) -> tuple[int, int, np.ndarray]:
    if fmt == "pcm":
        return SR, 1, np.frombuffer(data, "<i2").astype(np.float32) / 32768.0
    return decode(data)


def test_content_types():
    assert {f: content_type(f) for f in FORMATS} == {
        "mp3": "audio/mpeg",
        "opus": "audio/ogg",
        "aac": "audio/aac",
        "flac": "audio/flac",
        "wav": "audio/wav",
        "pcm": "audio/pcm",
    }
    with pytest.raises(ValueError):
        content_type("ogg")
    with pytest.raises(ValueError):
        StreamEncoder("vorbis")  # type: ignore[arg-type]


@pytest.mark.parametrize("streaming", [True, False], ids=["stream", "file"])
@pytest.mark.parametrize("fmt", FORMATS)
def test_roundtrip_length_rate_channels(fmt, streaming):
    x = signal()
    parts = encode_chunks(fmt, x, streaming)
    data = b"".join(parts)
    rate, channels, y = raw_decode(fmt, data)
    assert rate == expected_rate(fmt)
    assert channels == 1
    n_in = round(N_IN * rate / SR)
    extra = MAX_EXTRA_STREAMING[fmt] if streaming else MAX_EXTRA_FILE[fmt]
    extra = round(extra * rate / SR)
    assert n_in <= y.size <= n_in + extra, (fmt, streaming, y.size, n_in)
    if not streaming and fmt != "pcm":
        assert all(p == b"" for p in parts[:-1])  # whole file at flush()
    # The decoded audio is the sine, not noise: strong correlation after delay search.
    if fmt in ("wav", "pcm", "flac"):
        np.testing.assert_allclose(y, to_int16(x).astype(np.float32) / 32768.0, atol=1e-6)
    else:
        spectrum = np.abs(np.fft.rfft(y * np.hanning(y.size)))
        assert abs(np.argmax(spectrum) * rate / y.size - 440) < 2, fmt
        ref = x if rate == SR else None
        if ref is not None:
            best = max(
                float(np.corrcoef(ref[2000:-2000], y[d + 2000 : d + N_IN - 2000])[0, 1])
                for d in range(0, y.size - N_IN + 1)
            )
            assert best > 0.95, (fmt, best)


@pytest.mark.parametrize("fmt", ["mp3", "opus", "aac", "flac", "wav", "pcm"])
def test_streaming_bytes_leave_early(fmt):
    """Bytes come out per chunk (not all at flush) and every prefix is playable."""
    x = signal()
    enc = StreamEncoder(fmt, SR, streaming=True)
    sent = b""
    fed = 0
    for i, chunk in enumerate(split(x)):
        sent += enc.encode(chunk)
        fed += chunk.size
        if i >= 1:  # from the 2nd chunk on, the client can play all but the codec lag
            _, _, y = raw_decode(fmt, sent)
            # Measured: mp3 <= ~100 ms, opus ~86 ms (40 ms Ogg pages + resampler +
            # 20 ms framing), aac ~90 ms, flac <= one 2304-sample block.
            lag = 0.15 * SR
            assert y.size * SR / expected_rate(fmt) >= fed - lag, (fmt, i, y.size, fed)
    sent += enc.flush()
    assert enc.flush() == b""  # idempotent
    with pytest.raises(RuntimeError):
        enc.encode(x[:10])


def test_wav_streaming_header():
    parts = encode_chunks("wav", signal(), streaming=True)
    data = b"".join(parts)
    assert parts[0][:4] == b"RIFF" and data.count(b"RIFF") == 1 and data.count(b"WAVE") == 1
    riff_size, = struct.unpack_from("<I", data, 4)
    assert data[36:40] == b"data"
    data_size, = struct.unpack_from("<I", data, 40)
    assert riff_size == data_size == 0xFFFFFFFF
    assert len(data) == 44 + 2 * N_IN
    fmt_chunk = struct.unpack_from("<4sIHHIIHH", data, 12)
    assert fmt_chunk == (b"fmt ", 16, 1, 1, SR, 2 * SR, 2, 16)


def test_wav_file_header_real_sizes():
    data = encode_all(signal(), "wav")
    assert data.count(b"RIFF") == 1
    assert struct.unpack_from("<I", data, 4)[0] == len(data) - 8
    assert struct.unpack_from("<I", data, 40)[0] == 2 * N_IN == len(data) - 44
    assert data[44:] == to_int16(signal()).tobytes()


def test_wav_and_ogg_empty_stream_is_valid():
    for fmt in ("wav", "opus", "flac"):
        enc = StreamEncoder(fmt, SR)
        data = enc.flush()
        assert data, fmt
    assert len(StreamEncoder("wav", SR).flush()) == 44


def test_ogg_opus_single_header():
    for streaming in (True, False):
        parts = encode_chunks("opus", signal(), streaming)
        data = b"".join(parts)
        assert data.startswith(b"OggS")
        assert data.count(b"OpusHead") == 1
        assert data.count(b"OpusTags") == 1
        if streaming:
            assert b"OpusHead" in parts[0]  # header goes out with the first chunk
        # Every Ogg page belongs to one logical stream; the BOS flag is set once.
        pos, serials, bos = 0, set(), 0
        while pos < len(data):
            assert data[pos : pos + 4] == b"OggS", pos
            flags = data[pos + 5]
            serials.add(struct.unpack_from("<I", data, pos + 14)[0])
            bos += bool(flags & 2)
            nseg = data[pos + 26]
            body = sum(data[pos + 27 : pos + 27 + nseg])
            pos += 27 + nseg + body
        assert pos == len(data) and len(serials) == 1 and bos == 1


def test_mp3_single_stream():
    stream = b"".join(encode_chunks("mp3", signal(), True))
    assert stream[0] == 0xFF and stream[1] & 0xE0 == 0xE0  # starts with an MPEG frame
    assert b"ID3" not in stream[:10]
    assert stream.count(b"Xing") + stream.count(b"Info") == 0  # nothing to patch when streaming
    file = encode_all(signal(), "mp3")
    # One LAME/Info tag frame at the start (seekable sink): exact length on decode.
    assert file.count(b"Xing") + file.count(b"Info") == 1
    assert file.find(b"Info") < 100 or file.find(b"Xing") < 100


def _adts_frames(data: bytes) -> int:
    pos = n = 0
    while pos < len(data):
        assert data[pos] == 0xFF and data[pos + 1] & 0xF6 == 0xF0, pos  # ADTS sync, layer 0
        length = ((data[pos + 3] & 0x03) << 11) | (data[pos + 4] << 3) | (data[pos + 5] >> 5)
        assert length > 7
        pos += length
        n += 1
    assert pos == len(data)
    return n


def test_aac_is_pure_adts():
    parts = encode_chunks("aac", signal(), True)
    n = _adts_frames(b"".join(parts))
    assert n == -(-(N_IN + 1024) // 1024)  # priming frame + ceil(input / 1024)
    # Chunk boundaries fall on ADTS frame boundaries (each part is whole frames).
    for p in parts:
        if p:
            _adts_frames(p)


def test_flac_single_header():
    for streaming in (True, False):
        data = b"".join(encode_chunks("flac", signal(), streaming))
        assert data.startswith(b"fLaC") and data.count(b"fLaC") == 1
    # The non-streaming file has the total sample count in STREAMINFO.
    data = encode_all(signal(), "flac")
    info = data[8:42]
    total = ((info[13] & 0x0F) << 32) | struct.unpack_from(">I", info, 14)[0]
    assert total == N_IN


def test_pcm_byte_exact_and_clipping():
    x = signal()
    data = b"".join(encode_chunks("pcm", x, True))
    ref = np.round(np.clip(x, -1, 1) * np.float32(32767)).astype("<i2")  # float32 math
    assert data == ref.tobytes()
    odd = np.array([2.0, -3.0, 1.0, -1.0, 0.0, 0.5, -0.5, 1 / 32767 * 0.6, np.nan], np.float32)
    got = np.frombuffer(StreamEncoder("pcm").encode(odd), "<i2")
    assert got.tolist() == [32767, -32767, 32767, -32767, 0, 16384, -16384, 1, 0]
    # int16 input passes through untouched; (N, 1) and (1, N) shapes are mono.
    i16 = np.array([-32768, 5, 32767], np.int16)
    assert StreamEncoder("pcm").encode(i16) == i16.tobytes()
    assert StreamEncoder("pcm").encode(odd[:4].reshape(-1, 1)) == got[:4].tobytes()
    with pytest.raises(ValueError):
        StreamEncoder("pcm").encode(np.zeros((2, 10), np.float32))


@pytest.mark.parametrize("fmt", ["mp3", "opus", "aac", "flac", "wav"])
def test_out_of_range_input_is_clipped(fmt):
    x = signal() * 6.0  # way past full scale
    rate, _, y = decode(encode_all(x, fmt))
    # Lossy codecs ring around the clipped, square-ish wave (Gibbs overshoot, ~1.4
    # for aac); without clipping the peak would be ~3.3.
    limit = 32767 / 32768 if fmt in ("flac", "wav") else 1.6
    assert 0.9 < np.abs(y).max() <= limit, (fmt, np.abs(y).max())
    if fmt in ("flac", "wav"):
        assert np.abs(y).max() == 32767 / 32768
        assert np.mean(np.abs(y) > 0.99) > 0.5  # most samples sit on the rails


def test_empty_chunks_and_close():
    for fmt in FORMATS:
        enc = StreamEncoder(fmt, SR)
        enc.encode(np.zeros(0, np.float32))
        enc.encode(signal(3000))
        enc.close()  # abandon: no error, later calls refused
        with pytest.raises(RuntimeError):
            enc.encode(signal(10))
        assert enc.flush() == b""


def test_other_sample_rates_and_bitrate():
    x = signal(16000)
    rate, _, y = decode(encode_all(x, "opus", sample_rate=16000))
    assert rate == 48000 and y.size == 48000
    rate, _, y = decode(encode_all(signal(44100), "mp3", sample_rate=44100))
    assert rate == 44100 and y.size == 44100
    small = encode_all(signal(SR * 2), "mp3", bitrate=32000)
    big = encode_all(signal(SR * 2), "mp3", bitrate=128000)
    assert len(big) > 3 * len(small)


async def _agen(chunks):
    for c in chunks:
        await asyncio.sleep(0)
        yield c


@pytest.mark.parametrize("fmt", FORMATS)
async def test_encode_stream_matches_sync(fmt):
    x = signal()
    got = [b async for b in encode_stream(_agen(split(x)), fmt, SR)]
    assert all(got)  # no empty yields
    want = b"".join(encode_chunks(fmt, x, True))
    if fmt == "opus":  # the Ogg stream serial number is random: compare the audio
        np.testing.assert_array_equal(decode(b"".join(got))[2], decode(want)[2])
    else:
        assert b"".join(got) == want


async def test_encode_stream_close_propagates():
    closed = asyncio.Event()

    async def source():
        try:
            for c in split(signal()):
                yield c
        finally:
            closed.set()

    gen = encode_stream(source(), "mp3", SR)
    first = await gen.__anext__()
    assert first
    await gen.aclose()
    assert closed.is_set()


async def test_encode_stream_cancel_during_worker_encode():
    """Cancelling while a worker thread is inside the codec frees the encoder only afterwards."""
    closed = asyncio.Event()

    async def source():
        try:
            while True:
                yield signal(SR * 2)  # large chunks go to a worker thread
        finally:
            closed.set()

    gen = encode_stream(source(), "mp3", SR)
    task = asyncio.ensure_future(gen.__anext__())
    await asyncio.sleep(0.002)
    task.cancel()
    with pytest.raises((asyncio.CancelledError, StopAsyncIteration)):
        await task
    await gen.aclose()
    assert closed.is_set()
    await asyncio.sleep(0.05)  # let the worker finish; nothing may crash
