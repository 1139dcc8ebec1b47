"""Builds and owns everything a server or the CLI needs: models, codec, router, synthesizer.

No module-level globals: ``TTSService`` is created per app (or per CLI run) and passed in.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

from kanitts.config import Settings
from kanitts.hub import ModelLoadError
from kanitts.engine.base import GenerationBackend
from kanitts.models import (
    VoiceModel,
    build_backend,
    codec_pool_size,
    describe_language,
    distinct_models,
    load_tokenizer,
    read_kanitts2,
)
from kanitts.routing import Route, Router
from kanitts.synthesis import Synthesis, SynthesisOptions, Synthesizer

logger = logging.getLogger(__name__)


@dataclass
class ModelStatus:
    language: str
    model: str
    state: str = "pending"  # pending | loading | ready | failed
    error: str | None = None


@dataclass
class TTSService:
    settings: Settings
    models: dict[str, VoiceModel] = field(default_factory=dict)
    status: dict[str, ModelStatus] = field(default_factory=dict)
    codec: Any = None
    codec_worker: Any = None
    router: Router | None = None
    synthesizer: Synthesizer | None = None
    #: KaniTTS-2 voice cloning (:class:`kanitts.cloning.VoiceCloning`): built at start only
    #: when a KaniTTS-2 model is loaded; None otherwise.
    cloning: Any = None
    ready: bool = False
    error: str | None = None
    #: One backend per model folder: languages configured with the same model share it.
    backends: dict[str, GenerationBackend] = field(default_factory=dict)

    # -- lifecycle -------------------------------------------------------------------
    async def start(self) -> None:
        """Load the codec and every active language's model; ``ready`` when done."""
        s = self.settings
        from kanitts.engine.factory import apply_process_env

        applied = apply_process_env(s)  # before this process first uses CUDA
        if applied:
            logger.info("process environment for engine.mode %s: %s", s.engine.mode,
                        " ".join(f"{k}={v}" for k, v in applied.items()))
        langs = s.active_languages()
        for code in langs:
            self.status[code] = ModelStatus(code, s.languages[code].model)
        try:
            await self._load_codec()
            share = 1.0 / max(1, len(distinct_models(s)))
            for code in langs:
                await self._load_language(code, share)
            await self._load_cloning()
            detector = None
            if len(self.models) > 1:
                from kanitts.text import LanguageDetector

                detector = await asyncio.to_thread(
                    LanguageDetector, list(self.models), s.default_language
                )
            self.router = Router(
                self.models, s.default_language, s.voice_aliases, detector, s.server.unknown_voice
            )
            self.synthesizer = Synthesizer(self.codec_worker, normalizer=self._normalizer())
            self.ready = True
            logger.info("ready: %s", ", ".join(f"{c}={m.model_id}" for c, m in self.models.items()))
        except Exception as exc:
            self.error = str(exc)
            raise

    def _normalizer(self) -> Any:
        """The request-text normalizer with the server's lexicon file and markdown rules."""
        from kanitts.text.normalize import Normalizer, load_lexicon

        t = self.settings.text
        return Normalizer(load_lexicon(t.lexicon_file), markdown=t.markdown, code_blocks=t.code_blocks)

    async def _load_codec(self) -> None:
        from kanitts.codec import CodecWorker, NanoCodec

        from kanitts.engine.device import pick_device, pick_dtype

        c = self.settings.codec
        device = pick_device(self.settings.engine.device if c.device == "auto" else c.device)
        dtype = pick_dtype(c.dtype, device)
        self.codec = await asyncio.to_thread(NanoCodec.from_pretrained, c.model, device=str(device), dtype=dtype)
        self.codec_worker = CodecWorker(
            self.codec,
            max_streams=codec_pool_size(self.settings),
            first_chunk_frames=c.first_chunk_frames,
            chunk_frames=c.chunk_frames,
            fast=c.fast,
            max_batch_frames=c.max_batch_frames,
        )
        graphs = await asyncio.to_thread(self.codec_worker.warmup)
        if graphs:
            logger.info("codec: %d CUDA graphs captured (%s)", graphs, dtype)

    async def _load_cloning(self) -> None:
        """The speaker encoder and voice store, when a KaniTTS-2 model is loaded."""
        dims = {m.speaker_dim for m in self.models.values() if m.speaker_dim is not None}
        if not dims:
            return
        if len(dims) > 1:
            raise ModelLoadError(f"the KaniTTS-2 models take speaker embeddings of different sizes {sorted(dims)}")
        from kanitts.cloning import build_voice_cloning

        self.cloning = await asyncio.to_thread(build_voice_cloning, self.settings, dims.pop())

    def cloning_languages(self) -> list[str]:
        """Languages served by a KaniTTS-2 model (those that take cloned voices)."""
        return [code for code, m in self.models.items() if m.clones_voices]

    async def _load_language(self, code: str, share: float) -> None:
        cfg = self.settings.languages[code]
        st = self.status[code]
        st.state = "loading"
        try:
            path, voices, default = await asyncio.to_thread(describe_language, code, cfg)
            tokenizer = await asyncio.to_thread(load_tokenizer, path)
            speaker_dim, tags = await asyncio.to_thread(read_kanitts2, path)
            backend = self.backends.get(path)
            if backend is None:  # a multilingual model configured for several languages loads once
                backend = build_backend(self.settings, path, share=share)
                await backend.start()
                self.backends[path] = backend
            else:
                logger.info("%s: sharing the engine of %s", code, cfg.model)
        except Exception as exc:
            st.state, st.error = "failed", str(exc)
            raise
        from kanitts.tokens import DEFAULT_TEMPLATE

        self.models[code] = VoiceModel(
            language=code,
            model_id=cfg.model,
            backend=backend,
            tokenizer=tokenizer,
            voices=voices,
            default_voice=default,
            template=cfg.template or DEFAULT_TEMPLATE,
            speaker_dim=speaker_dim,
            language_tags=tags,
            path=path,
        )
        st.state = "ready"

    async def close(self) -> None:
        for path, backend in self.backends.items():
            try:
                await backend.close()
            except Exception:  # noqa: BLE001
                logger.exception("closing the engine of %s", path)
        if self.codec_worker is not None:
            close = getattr(self.codec_worker, "aclose", None) or getattr(self.codec_worker, "close", None)
            if close is not None:
                res = close()
                if asyncio.iscoroutine(res):
                    await res
        self.ready = False

    # -- requests -------------------------------------------------------------------------
    def options(self, **overrides: Any) -> SynthesisOptions:
        """Request options: configured defaults, then the request's own values."""
        s = self.settings
        g, lf = s.generation, s.long_form
        opts = SynthesisOptions(
            temperature=g.temperature,
            top_p=g.top_p,
            repetition_penalty=g.repetition_penalty,
            max_tokens=g.max_tokens,
            constrained=g.constrained,
            normalize=lf.normalize,
            max_chunk_seconds=lf.chunk_seconds,
            threshold_seconds=lf.threshold_seconds,
            silence_duration=lf.silence_duration,
            paragraph_pause=lf.paragraph_pause,
            max_chunks_ahead=lf.max_chunks_ahead,
            max_silence_seconds=lf.max_silence_seconds,
        )
        for k, v in overrides.items():
            if v is not None:
                setattr(opts, k, v)
        return opts

    def route(
        self, text: str, voice: str | None, language: str | None, among: list[str] | None = None,
        cloned: list[str] | None = None,
    ) -> Route:
        """Model, language and voice for a request (``among``: only these languages, e.g.
        those of the model the request names; ``cloned``: the languages whose KaniTTS-2 models
        can use the request's cloned voice); raises :class:`RoutingError`."""
        assert self.router is not None
        return self.router.route(text, voice, language, among, cloned)

    def synthesize(self, route: Route, text: str, opts: SynthesisOptions, request_id: str = "") -> Synthesis:
        assert self.synthesizer is not None
        if opts.chars_per_second is None:
            opts.chars_per_second = self.settings.long_form.chars_per_second.get(route.language)
        return self.synthesizer.start(route, text, opts, request_id)
