"""A loaded KaniTTS model: its backend, tokenizer, voices and prompt template; capacity
figures derived from the settings (admission limit, codec slots)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from kanitts.config import LanguageConfig, Settings
from kanitts.engine.base import GenerationBackend
from kanitts.engine.factory import backend_kind, build_local_backend
from kanitts.engine.replicas import ReplicaPool
from kanitts.hub import ModelLoadError, resolve_model_dir
from kanitts.tokens import DEFAULT_TEMPLATE, PromptTemplate, build_prompt, read_speakers

logger = logging.getLogger(__name__)


@dataclass
class VoiceModel:
    """One language's model as the router and synthesizer see it."""

    language: str
    model_id: str
    backend: GenerationBackend
    tokenizer: Any
    voices: list[str]
    default_voice: str | None
    template: PromptTemplate = field(default_factory=lambda: DEFAULT_TEMPLATE)

    def prompt(self, text: str, voice: str | None) -> list[int]:
        return build_prompt(self.tokenizer, text, voice, self.template)

    @property
    def name(self) -> str:
        """The public model name (``/v1/models``): the hub id or folder name."""
        return self.model_id


def load_tokenizer(model_dir: str) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(model_dir)
    except Exception as exc:  # noqa: BLE001
        raise ModelLoadError(f"could not load the tokenizer from {model_dir}: {exc}") from exc


def describe_language(code: str, cfg: LanguageConfig) -> tuple[str, list[str], str | None]:
    """Resolve the model folder and its voices (config first, else ``speaker_settings``)."""
    path = str(resolve_model_dir(cfg.model))
    voices = list(cfg.voices) if cfg.voices is not None else (read_speakers(path) or [])
    default = cfg.default_voice
    if default is not None and voices and default not in voices:
        raise ModelLoadError(
            f"languages.{code}.default_voice {default!r} is not a voice of {cfg.model} "
            f"(it has: {', '.join(voices)})"
        )
    if default is None and voices:
        default = voices[0]
    return path, voices, default


def engine_capacity(settings: Settings) -> int:
    """Streams the engines can generate at once: max_num_seqs (the mode's, or the override)
    summed over the loaded languages and replicas for the native and vLLM engines; 64 for the
    PyTorch backend (it round-robins any number)."""
    if backend_kind(settings) == "torch":
        return 64
    from kanitts.engine.modes import engine_args_for

    per_engine = engine_args_for(settings.engine.mode, "", settings.engine.vllm_overrides()).get("max_num_seqs", 64)
    replicas = max(1, len(settings.engine.gpus or []) or settings.engine.data_parallel_size)
    return max(1, int(per_engine) * replicas * len(settings.active_languages()))


def codec_pool_size(settings: Settings) -> int:
    """Codec slots: enough for every stream the engines can run at once, no more (each
    slot holds per-layer state and its CUDA graphs' activations), at most 256 by default."""
    if settings.codec.max_streams is not None:
        return settings.codec.max_streams
    return min(256, engine_capacity(settings))


def admission_limit(settings: Settings) -> int:
    """Syntheses admitted at once (``server.max_concurrent``; unset: the engines' capacity,
    so a big batch is not throttled by the HTTP layer)."""
    if settings.server.max_concurrent is not None:
        return settings.server.max_concurrent
    return engine_capacity(settings)


def build_backend(settings: Settings, model_path: str, *, share: float = 1.0) -> GenerationBackend:
    """The configured backend for one model (``share``: its fraction of GPU memory
    when several models share a card): one engine in this process, or a
    :class:`ReplicaPool` of them (one process per GPU / replica, each building its
    backend with :func:`kanitts.engine.factory.build_local_backend`)."""
    if settings.engine.data_parallel_size > 1 or settings.engine.gpus:
        return ReplicaPool(settings, model_path, share=share)
    return build_local_backend(settings, model_path, share=share)
