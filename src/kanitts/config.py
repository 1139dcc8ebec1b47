"""The one configuration object.

Precedence, lowest to highest: built-in defaults < TOML file (``--config`` or
``KANITTS_CONFIG``) < ``KANITTS_*`` environment variables (nested keys with ``__``, e.g.
``KANITTS_ENGINE__MODE=balanced``) < command-line flags. Everything is validated at
start-up; errors name the offending key (``engine.mode: ...``) so a typo never becomes a
silent default.
"""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict
from pydantic_settings.exceptions import SettingsError

from kanitts.audio.encoders import AudioFormat
from kanitts.engine import BACKEND_NAMES
from kanitts.audio.resample import MAX_SAMPLE_RATE, MIN_SAMPLE_RATE
from kanitts.engine.base import DEFAULT_SAMPLING
from kanitts.engine.modes import DEFAULT_MODE, MODE_NAMES
from kanitts.text.incremental import DEFAULT_MAX_CHARS, DEFAULT_MIN_CHARS
from kanitts.hub import looks_local
from kanitts.tokens import PromptTemplate
from kanitts.voices.settings import VoicesConfig

DEFAULT_CODEC = "nvidia/nemo-nano-codec-22khz-0.6kbps-12.5fps"

ResponseFormat = AudioFormat  # the audio layer's list of formats


class ConfigError(ValueError):
    """Invalid configuration; the message names every bad key."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class LanguageConfig(_Section):
    """One language: which model speaks it and with which voices."""

    model: str
    #: Voice names; when absent they are read from the model's ``speaker_settings``.
    voices: list[str] | None = None
    #: Voice used when a request names none (or an OpenAI alias maps to nothing).
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
    #: the engines' max_num_seqs summed over the loaded languages with vLLM (capped at 256),
    #: 64 with the PyTorch backend.
    max_streams: int | None = Field(None, ge=1, le=1024)
    #: Where the codec runs: ``auto`` follows ``engine.device``; ``cpu`` keeps the server
    #: process off the GPU (no second CUDA context: the smallest GPU footprint).
    device: str = "auto"
    #: ``auto``: bfloat16 on CUDA, float32 elsewhere.
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    #: Channels-last decoder with fused activations (any device); on CUDA also CUDA graphs for
    #: the batched step (captured at start-up). ``false``: the plain reference decoder.
    fast: bool = True


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
    #: what only vLLM offers (fp8, bnb_4bit, tensor parallel); ``torch`` = transformers (reference path).
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
    #: (max_num_seqs summed over languages and replicas) with vLLM, 64 with PyTorch.
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


def _default_languages() -> dict[str, LanguageConfig]:
    return {
        "en": LanguageConfig(model="nineninesix/kani-tts-400m-en", default_voice="andrew"),
        "es": LanguageConfig(model="nineninesix/kani-tts-400m-es", default_voice="nova"),
        "de": LanguageConfig(model="nineninesix/kani-tts-400m-de", voices=["bert", "thorsten"],
                             default_voice="thorsten"),
    }


def _default_aliases() -> dict[str, dict[str, str]]:
    male_en, female_en = "andrew", "katie"
    return {
        "alloy": {"en": female_en, "es": "nova"},
        "ash": {"en": male_en, "es": "ash"},
        "ballad": {"en": male_en, "es": "ballad"},
        "coral": {"en": female_en, "es": "nova"},
        "echo": {"en": male_en, "es": "ash"},
        "fable": {"en": male_en, "es": "ballad"},
        "onyx": {"en": male_en, "es": "ash"},
        "nova": {"en": female_en, "es": "nova"},
        "sage": {"en": female_en, "es": "nova"},
        "shimmer": {"en": female_en, "es": "nova"},
        "verse": {"en": male_en, "es": "ballad"},
        "marin": {"en": female_en, "es": "nova"},
        "cedar": {"en": male_en, "es": "ash"},
    }


class Settings(BaseSettings):
    """Everything configurable. See README "Configuration reference"."""

    model_config = SettingsConfigDict(
        env_prefix="KANITTS_",
        env_nested_delimiter="__",
        extra="forbid",
        validate_assignment=True,
    )

    #: Load every language in ``languages`` and route by detection; else only the default.
    multi_language: bool = True
    default_language: str = "en"
    languages: dict[str, LanguageConfig] = Field(default_factory=_default_languages)
    #: OpenAI voice name -> our voice per language (used when a model lacks that voice).
    voice_aliases: dict[str, dict[str, str]] = Field(default_factory=_default_aliases)
    codec: CodecSettings = Field(default_factory=CodecSettings)
    generation: GenerationConfig = Field(default_factory=GenerationConfig)
    long_form: LongFormConfig = Field(default_factory=LongFormConfig)
    text: TextConfig = Field(default_factory=TextConfig)
    engine: EngineConfig = Field(default_factory=EngineConfig)
    server: ServerConfig = Field(default_factory=ServerConfig)
    security: SecurityConfig = Field(default_factory=SecurityConfig)
    voices: VoicesConfig = Field(default_factory=VoicesConfig)
    #: Bearer keys accepted by the API (``KANITTS_API_KEYS`` may be comma-separated).
    api_keys: Annotated[list[str], NoDecode] = Field(default_factory=list)
    #: File with one key per line (blank lines and ``#`` comments ignored).
    api_keys_file: Path | None = None
    #: Admin keys: accepted like ``api_keys``, and may also share, see and delete any
    #: custom voice.
    admin_api_keys: Annotated[list[str], NoDecode] = Field(default_factory=list)

    @field_validator("api_keys", "admin_api_keys", mode="before")
    @classmethod
    def _split_keys(cls, v: Any) -> Any:
        return _split_list(v)

    @model_validator(mode="after")
    def _check(self) -> "Settings":
        if self.default_language not in self.languages:
            raise ValueError(
                f"default_language {self.default_language!r} has no [languages.{self.default_language}] "
                f"table (configured: {', '.join(sorted(self.languages)) or 'none'})"
            )
        for code, lang in self.languages.items():
            if lang.voices is not None and lang.default_voice and lang.default_voice not in lang.voices:
                raise ValueError(
                    f"languages.{code}.default_voice {lang.default_voice!r} is not in "
                    f"languages.{code}.voices {lang.voices}"
                )
        return self

    # -- derived -------------------------------------------------------------------
    def active_languages(self) -> list[str]:
        """Languages whose models load: all when multi_language, else the default one."""
        if self.multi_language:
            return list(self.languages)
        return [self.default_language]

    def all_api_keys(self) -> list[str]:
        """Every accepted key: ``api_keys``, the lines of ``api_keys_file``, ``admin_api_keys``."""
        keys = [k for k in [*self.api_keys, *self.admin_api_keys] if k]
        if self.api_keys_file is not None:
            try:
                text = Path(self.api_keys_file).expanduser().read_text()
            except OSError as exc:
                raise ConfigError(f"api_keys_file: cannot read {self.api_keys_file}: {exc}") from None
            for line in text.splitlines():
                line = line.strip()
                if line and not line.startswith("#"):
                    keys.append(line)
        return keys

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # init (CLI flags, already merged with the file by load_settings) > env.
        # The file is merged below env inside load_settings so that precedence holds.
        return (_InitOverEnv(settings_cls, init_settings, env_settings),)


class _InitOverEnv(PydanticBaseSettingsSource):
    """Deep-merges: file (lowest) < env < CLI, for nested tables too."""

    def __init__(
        self,
        settings_cls: type[BaseSettings],
        init: PydanticBaseSettingsSource,
        env: PydanticBaseSettingsSource,
    ) -> None:
        super().__init__(settings_cls)
        self._init = init
        self._env = env

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:  # pragma: no cover
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        init = dict(self._init())
        file_layer = init.pop("__file__", {}) or {}
        cli_layer = init
        env_layer = self._env()
        return _deep_merge(_deep_merge(file_layer, env_layer), cli_layer)


def _deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in top.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def read_config_file(path: str | Path) -> dict[str, Any]:
    p = Path(path).expanduser()
    try:
        with p.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {p} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {p}: invalid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"config file {p}: {exc}") from None


def _local_path(value: Any, base: Path) -> Any:
    """``value`` joined to ``base`` when it is a relative path: it looks like one
    (:func:`kanitts.hub.looks_local`) or names something that exists under ``base``."""
    if not isinstance(value, str) or not value or value.startswith(("/", "~")):
        return value
    if looks_local(value) or (base / value).exists():
        return str((base / value).resolve())
    return value


def _paths_from_file(layer: dict[str, Any], file_path: Path) -> dict[str, Any]:
    """The config file's layer with its relative paths (``languages.*.model``,
    ``codec.model``, ``api_keys_file``) made relative to the file's folder, not the
    working directory."""
    base = file_path.expanduser().resolve().parent
    out = dict(layer)
    langs = out.get("languages")
    if isinstance(langs, dict):
        out["languages"] = {
            code: ({**t, "model": _local_path(t.get("model"), base)} if isinstance(t, dict) and "model" in t else t)
            for code, t in langs.items()
        }
    codec = out.get("codec")
    if isinstance(codec, dict) and "model" in codec:
        out["codec"] = {**codec, "model": _local_path(codec["model"], base)}
    if "api_keys_file" in out:
        out["api_keys_file"] = _local_path(out["api_keys_file"], base)
    return out


def _format_errors(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(x) for x in err["loc"]) or "(root)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        lines.append(f"{loc}: {msg}")
    return "invalid configuration:\n  " + "\n  ".join(lines)


def load_settings(
    config_file: str | Path | None = None,
    cli: dict[str, Any] | None = None,
    *,
    env: bool = True,
) -> Settings:
    """Build the effective :class:`Settings` (defaults < file < env < CLI).

    ``cli`` is a nested dict of values given on the command line (``None`` values are
    dropped so unset flags never override anything).
    """
    file_path = config_file or os.environ.get("KANITTS_CONFIG")
    file_layer = _paths_from_file(read_config_file(file_path), Path(file_path)) if file_path else {}
    cli_layer = _drop_none(cli or {})
    kwargs = dict(cli_layer)
    kwargs["__file__"] = file_layer
    try:
        if env:
            return Settings(**kwargs)
        return _NoEnvSettings(**kwargs)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc)) from None
    except SettingsError as exc:
        raise ConfigError(f"invalid configuration from the environment: {exc}") from None


class _NoEnvSettings(Settings):
    model_config = SettingsConfigDict(env_prefix="KANITTS_NO_ENV_SOURCE_", extra="forbid")


def _drop_none(d: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            sub = _drop_none(v)
            if sub:
                out[k] = sub
        elif v is not None:
            out[k] = v
    return out


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    if isinstance(d, dict):
        for k, v in d.items():
            key = f"{prefix}.{k}" if prefix else str(k)
            if isinstance(v, dict) and v:
                out.update(_flatten(v, key))
            else:
                out[key] = v
    return out


def explain_settings(
    config_file: str | Path | None = None,
    cli: dict[str, Any] | None = None,
    settings: Settings | None = None,
) -> list[tuple[str, Any, str]]:
    """(key, effective value, source) for every leaf key — for ``kanitts config show``.

    The source is the highest layer that set the key (or a parent table of it):
    ``cli``, ``env``, ``file:PATH`` or ``default``. ``settings``: the effective object when
    the caller built it (the CLI does, so ``config show`` shows exactly what ``serve`` uses).
    """
    if settings is None:
        settings = load_settings(config_file, cli)
    file_path = config_file or os.environ.get("KANITTS_CONFIG")
    layers: list[tuple[str, dict[str, Any]]] = [
        ("cli", _flatten(_drop_none(cli or {}))),
        ("env", _flatten(_env_layer())),
    ]
    if file_path:
        layers.append((f"file:{file_path}", _flatten(read_config_file(file_path))))
    rows = []
    for key, value in _flatten(settings.model_dump(mode="json")).items():
        source = "default"
        for name, flat in layers:
            if any(key == k or key.startswith(k + ".") or k.startswith(key + ".") for k in flat):
                source = name
                break
        rows.append((key, value, source))
    return rows


def _env_layer() -> dict[str, Any]:
    from pydantic_settings import EnvSettingsSource

    return EnvSettingsSource(Settings)()
