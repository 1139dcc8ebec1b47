"""A loaded KaniTTS model: its backend, tokenizer, voices and prompt template; capacity
figures derived from the settings (admission limit, codec slots)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kanitts.config import LanguageConfig, Settings
from kanitts.engine.base import GenerationBackend
from kanitts.engine.factory import build_local_backend
from kanitts.engine.replicas import ReplicaPool
from kanitts.hub import ModelLoadError, resolve_model_dir
from kanitts.tokens import (
    DEFAULT_TEMPLATE,
    PromptTemplate,
    build_kanitts2_prompt,
    build_prompt,
    language_tags_from_config,
    pick_language_tag,
    read_speakers,
)

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
    #: The resolved local folder (a hub download or the configured folder); never shown
    #: on an unauthenticated route.
    path: str = ""
    #: KaniTTS-2: the speaker embedding size (None for a v1 model, which takes no embedding).
    speaker_dim: int | None = None
    #: KaniTTS-2: the language tags the model lists (``language_settings``), if any.
    language_tags: list[str] | None = None

    @property
    def clones_voices(self) -> bool:
        """Whether requests may carry a speaker embedding (a KaniTTS-2 model)."""
        return self.speaker_dim is not None

    def prompt(self, text: str, voice: str | None) -> list[int]:
        """Prompt ids for one chunk. v1: ``voice: text``. KaniTTS-2: ``tag: text`` with the
        model's tag for this model's (the routed) language, if it lists tags; the voice is
        the request's speaker embedding, not text."""
        if self.clones_voices:
            tag = pick_language_tag(self.language, self.language_tags)
            return build_kanitts2_prompt(self.tokenizer, text, tag, self.template)
        return build_prompt(self.tokenizer, text, voice, self.template)

    @property
    def name(self) -> str:
        """The public model name (``/v1/models``, headers, ``/health``): the configured hub
        id, or the base name of a local folder (never its full path). Worked out once per
        ``model_id`` (it looks at the disk; every response header carries it)."""
        cached = self.__dict__.get("_public_name")
        if cached is None or cached[0] != self.model_id:
            cached = self.__dict__["_public_name"] = (self.model_id, public_model_name(self.model_id))
        return cached[1]


def public_model_name(model: str) -> str:
    """``model`` (a configured hub id or local path) as it may be shown to anyone: a hub id
    unchanged, a local path (absolute, ``~``/``.``-relative, or an existing folder) by its
    base name."""
    p = Path(model).expanduser()
    local = p.is_absolute() or model.startswith((".", "~")) or "\\" in model or p.exists()
    return p.name or model if local else model


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


def read_kanitts2(model_dir: str) -> tuple[int | None, list[str] | None]:
    """``(speaker_dim, language_tags)`` of a KaniTTS-2 checkpoint folder; ``(None, None)``
    for a v1 model. Raises ModelLoadError for a KaniTTS-2 config with bad values."""
    import json
    from pathlib import Path

    from kanitts.engine.native.kanitts2 import Kani2Config

    try:
        cfg = json.loads((Path(model_dir) / "config.json").read_text())
    except (OSError, ValueError):
        return None, None
    try:
        k2 = Kani2Config.detect(cfg) if isinstance(cfg, dict) else None
    except ValueError as exc:
        raise ModelLoadError(f"{model_dir}: {exc}") from None
    if k2 is None:
        return None, None
    return k2.speaker_emb_dim, language_tags_from_config(cfg)


def engine_capacity(settings: Settings) -> int:
    """Streams the engines can generate at once: max_num_seqs (the mode's, or the override)
    summed over the loaded languages and replicas."""
    from kanitts.engine.modes import engine_args_for

    per_engine = engine_args_for(settings.engine.mode, "", settings.engine.vllm_overrides()).get("max_num_seqs", 64)
    replicas = max(1, len(settings.engine.gpus or []) or settings.engine.data_parallel_size)
    return max(1, int(per_engine) * replicas * len(distinct_models(settings)))


def distinct_models(settings: Settings) -> list[str]:
    """The configured models of the active languages, each once: one engine each (a
    multilingual model configured for several languages loads once)."""
    return list(dict.fromkeys(settings.languages[code].model for code in settings.active_languages()))


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
