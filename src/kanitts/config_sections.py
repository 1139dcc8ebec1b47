"""The sections of :class:`kanitts.config.Settings` (``[codec]``, ``[engine]``, ``[server]``, ...):
each key's type, bounds and default. Loading, precedence and error reporting live in
:mod:`kanitts.config`."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import NoDecode

from kanitts.audio.encoders import AudioFormat
from kanitts.audio.resample import MAX_SAMPLE_RATE, MIN_SAMPLE_RATE
from kanitts.engine import BACKEND_NAMES, DEPRECATED_BACKENDS
from kanitts.engine.base import DEFAULT_SAMPLING
from kanitts.engine.modes import DEFAULT_MODE, MODE_NAMES
from kanitts.text.incremental import DEFAULT_MAX_CHARS, DEFAULT_MIN_CHARS
from kanitts.tokens import PromptTemplate

DEFAULT_CODEC = "nvidia/nemo-nano-codec-22khz-0.6kbps-12.5fps"

ResponseFormat = AudioFormat  # the audio layer's list of formats

logger = logging.getLogger(__name__)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class LanguageConfig(_Section):
    """One language: which model speaks it and with which voices."""

    model: str
    #: Voice names; when absent they are read from the model's ``speaker_settings``.
    voices: list[str] | None = None
    #: Voice used when a request names none (or an OpenAI alias maps to nothing); None: the
    #: model's first voice.
    default_voice: str | None = None
    #: Prompt layout; fine-tunes may differ from the official one.
    template: PromptTemplate | None = None


class CodecSettings(_Section):
    """The ``[codec]`` section (the codec *model's* own config is
    :class:`kanitts.codec.layers.CodecConfig`)."""

    model: str = DEFAULT_CODEC
    #: Frames in the first streamed chunk (80 ms each): small, so audio starts fast.
    first_chunk_frames: int = Field(1, ge=1, le=32)
    #: Frames per later chunk: larger, for throughput.
    chunk_frames: int = Field(8, ge=1, le=64)
    #: Streams decoded together in one batched codec step (the codec's slot pool). Unset:
    #: the engines' max_num_seqs summed over the loaded languages and replicas (capped at 256).
    max_streams: int | None = Field(None, ge=1, le=1024)
    #: Where the codec runs: ``auto`` follows ``engine.device``; ``cpu`` keeps the server
    #: process off the GPU (no second CUDA context: the smallest GPU footprint).
    device: str = "auto"
    #: ``auto``: bfloat16 on CUDA, float32 elsewhere.
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    #: Channels-last decoder with fused activations (any device); on CUDA also CUDA graphs for
    #: the batched step (captured at start-up). ``false``: the plain reference decoder.
    fast: bool = True
    #: Most stream-frames (streams x frames) one batched decoder call takes; a step with more
    #: work runs several calls. Bounds the codec's GPU activation memory whatever
    #: ``max_streams`` is (~0.8 MB per stream-frame in bf16 with the real codec: 2,048 ->
    #: ~1.7 GB) and the largest CUDA graph captured. 2,048 = 256 streams x 8 frames: the bare
    #: H100 step decoded 4,143 audio s/s there, 4,297 at 512 x 8 (twice the memory for 4%).
    max_batch_frames: int = Field(2048, ge=8, le=65536)


class GenerationConfig(_Section):
    # Defaults: the engine's (kanitts.engine.base.DEFAULT_SAMPLING, the seed's values).
    temperature: float = Field(DEFAULT_SAMPLING.temperature, ge=0.0, le=2.0)
    top_p: float = Field(DEFAULT_SAMPLING.top_p, gt=0.0, le=1.0)
    repetition_penalty: float = Field(DEFAULT_SAMPLING.repetition_penalty, ge=0.5, le=2.0)
    #: Tokens per generated chunk (50 tokens = 1 s of audio; 1200 = 24 s).
    max_tokens: int = Field(DEFAULT_SAMPLING.max_tokens, ge=8, le=8192)
    #: Only the next codebook's ids may be sampled inside speech.
    constrained: bool = True


class LongFormConfig(_Section):
    #: Texts estimated longer than this are split into chunks.
    threshold_seconds: float = Field(15.0, gt=0)
    #: Target duration of each chunk.
    chunk_seconds: float = Field(12.0, gt=0)
    #: Silence between chunks of one paragraph.
    silence_duration: float = Field(0.2, ge=0, le=5)
    #: Silence after a paragraph (blank line).
    paragraph_pause: float = Field(0.6, ge=0, le=10)
    #: Speaking-rate estimates per language (characters per second).
    chars_per_second: dict[str, float] = Field(default_factory=lambda: {"en": 15.0, "es": 14.0, "de": 14.0})
    #: Chunks generated ahead of the one playing (pipelining depth).
    max_chunks_ahead: int = Field(2, ge=0, le=16)
    #: Stop a chunk after this much generated silence.
    max_silence_seconds: float = Field(1.5, gt=0)
    #: Normalize numbers, dates, currency... before synthesis (requests may switch it off).
    normalize: bool = True


class TextConfig(_Section):
    """How request text is read (used when normalization is on for a request)."""

    #: Server-wide pronunciation lexicon: JSON object or ``written = spoken`` lines.
    lexicon_file: Path | None = None
    #: Read chat markdown (headings, lists, links, code, tables...) as sentences.
    markdown: bool = True
    #: Fenced code blocks: ``skip``, ``summarize`` ("Code block in Python.") or ``read``.
    code_blocks: Literal["skip", "summarize", "read"] = "summarize"


class EngineConfig(_Section):
    #: ``auto`` = the native engine (any device; the only one serving KaniTTS-2); ``vllm`` for
    #: what only vLLM offers (fp8, bnb_4bit, tensor parallel). A retired name (``torch``) is read
    #: as its replacement (:data:`kanitts.engine.DEPRECATED_BACKENDS`) with one warning.
    backend: Literal[BACKEND_NAMES] = "auto"  # type: ignore[valid-type]
    #: A preset of :data:`kanitts.engine.modes.MODES`.
    mode: Literal[MODE_NAMES] = DEFAULT_MODE  # type: ignore[valid-type]
    device: str = "auto"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    # Individual vLLM engine arguments; each overrides the mode's preset when set.
    gpu_memory_utilization: float | None = Field(None, gt=0, le=1)
    kv_cache_memory_bytes: int | None = Field(None, gt=0)
    max_model_len: int | None = Field(None, ge=64)
    max_num_seqs: int | None = Field(None, ge=1)
    max_num_batched_tokens: int | None = Field(None, ge=64)
    enforce_eager: bool | None = None
    #: Tokens per streamed engine output (vLLM ``stream_interval``); the presets use 4 = one
    #: codec frame, so the server handles one output per frame instead of one per token.
    stream_interval: int | None = Field(None, ge=1, le=64)
    quantization: str | None = None
    tensor_parallel_size: int = Field(1, ge=1)
    #: Engine replicas (data parallel) behind one server; each new request goes to the
    #: least-loaded one, and a replica that dies is restarted.
    data_parallel_size: int = Field(1, ge=1, le=64)
    #: GPUs for the replicas, one replica per entry (``--gpus 0,1``); sets data_parallel_size.
    gpus: Annotated[list[int] | None, NoDecode] = None
    #: Warm the engine with sampled requests before reporting ready.
    warmup: bool = True
    #: Native engine: fuse the whole decode step with torch.compile (Inductor) before its CUDA
    #: graphs are captured (start-up compiles a few graphs: batch 1, then symbolic sizes).
    compile: bool = False

    @field_validator("backend", mode="before")
    @classmethod
    def _retired_backend(cls, v: Any) -> Any:
        if isinstance(v, str) and v in DEPRECATED_BACKENDS:
            logger.warning("engine.backend = %r (--backend %s) is deprecated: it now means %r; set that instead",
                           v, v, DEPRECATED_BACKENDS[v])
            return DEPRECATED_BACKENDS[v]
        return v

    @field_validator("gpus", mode="before")
    @classmethod
    def _split_gpus(cls, v: Any) -> Any:
        if isinstance(v, int):
            return [v]
        return _split_list(v)

    def replica_devices(self) -> list[str | None]:
        """One entry per replica: a CUDA device index as a string, or None (default device)."""
        if self.gpus:
            return [str(g) for g in self.gpus]
        return [None] * self.data_parallel_size

    def vllm_overrides(self) -> dict[str, Any]:
        keys = (
            "gpu_memory_utilization", "kv_cache_memory_bytes", "max_model_len", "max_num_seqs",
            "max_num_batched_tokens", "enforce_eager", "stream_interval", "quantization",
            "tensor_parallel_size",
        )  # fmt: skip
        return {k: getattr(self, k) for k in keys if getattr(self, k) is not None}


class ServerConfig(_Section):
    host: str = "127.0.0.1"
    port: int = Field(32855, ge=0, le=65535)
    #: Format of a request that names none (OpenAI's default is mp3; SSE streams are pcm).
    default_response_format: ResponseFormat = "mp3"
    #: Output rate (Hz) of ``pcm`` and SSE audio when the request has no ``sample_rate``:
    #: OpenAI's 24,000 (clients such as LiveKit's and Pipecat's plugins assume it). Other
    #: formats default to the model's native 22,050 Hz. 22050 here: no resampling.
    pcm_sample_rate: int = Field(24_000, ge=MIN_SAMPLE_RATE, le=MAX_SAMPLE_RATE)
    #: Longest accepted ``input``, in characters.
    max_input_chars: int = Field(8192, ge=1)
    #: Largest accepted request body, in bytes.
    max_body_bytes: int = Field(1_000_000, ge=1024)
    #: Syntheses running at once; more wait in the queue. Unset: what the engines can batch
    #: (max_num_seqs summed over languages and replicas).
    max_concurrent: int | None = Field(None, ge=1)
    #: Syntheses allowed to wait; beyond it requests get 429 with Retry-After.
    max_queue: int = Field(256, ge=0)
    #: Seconds a queued request waits for a slot before 503.
    queue_timeout_seconds: float = Field(30.0, gt=0)
    #: ``error``: an unknown voice is a 400; ``default``: fall back to the default voice.
    unknown_voice: Literal["error", "default"] = "error"
    #: Seconds given to streams in flight at shutdown.
    graceful_shutdown_seconds: float = Field(10.0, ge=0)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    #: Allow a non-loopback ``host`` without API keys (``--insecure``); otherwise such a
    #: server refuses to start.
    insecure: bool = False
    #: WebSocket sessions: shortest text piece cut at a clause/sentence boundary, in characters.
    ws_min_chars: int = Field(DEFAULT_MIN_CHARS, ge=1)
    #: WebSocket sessions: a piece without any boundary is cut between words at this length.
    ws_max_chars: int = Field(DEFAULT_MAX_CHARS, ge=1)
    #: WebSocket sessions end (close 1008) after this many seconds without a client message
    #: while nothing is being spoken.
    ws_idle_timeout_seconds: float = Field(60.0, gt=0)
    #: WebSocket sessions end (close 1008) after this many seconds in all.
    ws_max_session_seconds: float = Field(3600.0, gt=0)

    @model_validator(mode="after")
    def _ws_bounds(self) -> "ServerConfig":
        if self.ws_max_chars < self.ws_min_chars:
            raise ValueError(f"server.ws_max_chars ({self.ws_max_chars}) must be >= server.ws_min_chars "
                             f"({self.ws_min_chars})")
        return self


class SecurityConfig(_Section):
    #: Allowed CORS origins; empty = same-origin only.
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    #: Routes reachable without a key.
    #: The two list routes are open for Open-WebUI, which fetches them without a key.
    open_routes: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["/health", "/ready", "/metrics", "/v1/audio/models", "/v1/audio/voices"]
    )
    #: Requests per minute per key (or per client IP when keys are off); 0 = unlimited.
    rate_limit_per_minute: int = Field(0, ge=0)
    #: Streams at once per key (or IP); 0 = unlimited.
    max_streams_per_client: int = Field(0, ge=0)

    @field_validator("cors_origins", "open_routes", mode="before")
    @classmethod
    def _split(cls, v: Any) -> Any:
        return _split_list(v)


def _split_list(v: Any) -> Any:
    """Lists from env vars may be JSON or comma-separated."""
    if isinstance(v, str):
        s = v.strip()
        if s.startswith("["):
            return json.loads(s)
        return [x.strip() for x in s.split(",") if x.strip()]
    return v
