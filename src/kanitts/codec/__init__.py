"""NanoCodec: codes -> 22.05 kHz audio, one-shot or streaming, without NeMo at run time.

* :class:`NanoCodec` - the decoder (grouped FSQ + causal HiFi-GAN), loaded from ``.nemo``.
* :class:`StreamingDecoder` - a fixed pool of streams with batched per-layer left context.
* :class:`CodecWorker` - the asyncio front the server uses: many streams, one worker thread.
* :func:`write_tiny_nemo` - random-weight ``.nemo`` archives in the real layout for tests.
"""

from kanitts.codec.layers import CodecConfig, DecoderConfig, QuantizerConfig
from kanitts.codec.nanocodec import NanoCodec
from kanitts.codec.streaming import StreamingDecoder
from kanitts.codec.tiny_nemo import write_tiny_nemo
from kanitts.codec.worker import CodecWorker, CodecWorkerStats

__all__ = [
    "CodecConfig",
    "CodecWorker",
    "CodecWorkerStats",
    "DecoderConfig",
    "NanoCodec",
    "QuantizerConfig",
    "StreamingDecoder",
    "write_tiny_nemo",
]
