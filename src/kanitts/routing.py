"""Pick the model, language and voice for a request.

Rules, in order:
1. ``language`` given: that language's model (it must be loaded).
2. A real voice of exactly one loaded model picks that model (a voice unique to one
   language wins over detection). A real voice always wins over an OpenAI alias of the
   same name (``nova`` is both).
3. Otherwise the language is detected among the loaded languages (default language for
   short or ambiguous text), and the voice is resolved in it: real voice, then OpenAI
   alias, then the language's default voice when none was asked for.
4. A voice that no loaded model has and that is no alias is an error listing the valid
   voices, unless ``unknown_voice = "default"`` makes it fall back to the default voice.

Voice and alias names are case-insensitive (``Andrew`` is ``andrew``; training lowercases
speaker ids); the route carries the voice as the model spells it. ``among`` restricts all
of this to some languages (the request named a model serving only those).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

from kanitts.models import VoiceModel

logger = logging.getLogger(__name__)


class RoutingError(ValueError):
    """A request names a voice or language we cannot serve; the message is user-facing."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


class Detector(Protocol):
    def detect(self, text: str) -> str: ...


@dataclass(frozen=True)
class Route:
    model: VoiceModel
    language: str
    voice: str | None
    detected: bool


class Router:
    def __init__(
        self,
        models: dict[str, VoiceModel],
        default_language: str,
        aliases: dict[str, dict[str, str]],
        detector: Detector | None,
        unknown_voice: str = "error",
    ) -> None:
        if default_language not in models:
            default_language = next(iter(models))
        self.models = models
        self.default_language = default_language
        self.aliases = {k.lower(): v for k, v in aliases.items()}
        self.detector = detector
        self.unknown_voice = unknown_voice

    def all_voices(self) -> list[str]:
        seen: list[str] = []
        for m in self.models.values():
            seen.extend(v for v in m.voices if v not in seen)
        return seen

    def unknown_voice_message(self, voice: str) -> str:
        """The 400 message for a voice no model has: every model voice, then the aliases
        (the OpenAI names) that are accepted too."""
        msg = f"voice {voice!r} is not available; valid voices: {', '.join(self.all_voices())}"
        if self.aliases:
            msg += f"; also accepted (mapped to those): {', '.join(sorted(self.aliases))}"
        return msg

    def _owners(self, voice: str) -> list[str]:
        return [code for code, m in self.models.items() if voice in m.voices]

    def _detect(self, text: str, among: list[str] | None = None) -> str:
        langs = among or list(self.models)
        if len(langs) == 1 or self.detector is None:
            return langs[0] if self.default_language not in langs else self.default_language
        lang = self.detector.detect(text)
        if lang in langs:
            return lang
        return self.default_language if self.default_language in langs else langs[0]

    def _voice_in(self, lang: str, voice: str | None) -> str | None:
        model = self.models[lang]
        if voice is None:
            return model.default_voice
        if voice in model.voices:
            return voice
        alias = self.aliases.get(voice.lower())
        if alias is not None:
            mapped = alias.get(lang)
            if mapped is not None and (not model.voices or mapped in model.voices):
                return mapped
            return model.default_voice
        if not model.voices:
            return voice  # single-speaker model: the name is passed through
        if self.unknown_voice == "default":
            logger.info("unknown voice %r: falling back to %r", voice, model.default_voice)
            return model.default_voice
        raise RoutingError(self.unknown_voice_message(voice), "voice")

    def _canonical(self, voice: str) -> str:
        """``voice`` as a loaded model spells it (case-insensitive match), else unchanged."""
        if any(voice in m.voices for m in self.models.values()):
            return voice
        low = voice.lower()
        for m in self.models.values():
            for v in m.voices:
                if v.lower() == low:
                    return v
        return voice

    def restricted(self, languages: list[str]) -> "Router":
        """The same rules over only ``languages`` (each must be loaded)."""
        models = {code: self.models[code] for code in languages}
        return Router(models, self.default_language, self.aliases, self.detector, self.unknown_voice)

    def route(
        self,
        text: str,
        voice: str | None = None,
        language: str | None = None,
        among: list[str] | None = None,
        cloned: list[str] | None = None,
    ) -> Route:
        """Route a request (rules in the module docstring). ``among``: only these languages
        (e.g. those of the model the request names). ``cloned``: the languages whose models
        can use the request's cloned voice (KaniTTS-2): detection picks among them (and
        ``among``), a ``language`` outside them is an error, and the route names no built-in
        voice. Raises :class:`RoutingError` (``param`` ``voice`` or ``language``)."""
        if cloned is not None:
            return self._route_among(text, language, [c for c in cloned if among is None or c in among])
        if among is not None and set(among) != set(self.models):
            if language and language.strip().lower() in self.models and language.strip().lower() not in among:
                raise RoutingError(
                    f"language {language!r} is not served by the requested model (it serves: {', '.join(among)})",
                    "language",
                )
            return self.restricted(among).route(text, voice, language)
        voice = self._canonical(voice.strip()) if voice and voice.strip() else None
        if language:
            lang = language.strip().lower()
            if lang not in self.models:
                raise RoutingError(
                    f"language {language!r} is not loaded; loaded languages: {', '.join(self.models)}",
                    "language",
                )
            return Route(self.models[lang], lang, self._voice_in(lang, voice), False)
        if voice:
            owners = self._owners(voice)
            if len(owners) == 1:
                return Route(self.models[owners[0]], owners[0], voice, False)
            if len(owners) > 1:
                lang = self._detect(text, owners)
                return Route(self.models[lang], lang, voice, True)
            if voice.lower() not in self.aliases and self.unknown_voice != "default" and self.all_voices():
                raise RoutingError(self.unknown_voice_message(voice), "voice")
        lang = self._detect(text)
        return Route(self.models[lang], lang, self._voice_in(lang, voice), True)

    def _route_among(self, text: str, language: str | None, among: list[str]) -> Route:
        langs = [code for code in among if code in self.models]
        if not langs:
            raise RoutingError("no loaded model can serve this voice", "voice")
        if language:
            lang = language.strip().lower()
            if lang not in langs:
                raise RoutingError(
                    f"language {language!r} is not served by a model that can use this voice "
                    f"(those languages: {', '.join(langs)})", "language",
                )
            return Route(self.models[lang], lang, None, False)
        lang = self._detect(text, langs)
        return Route(self.models[lang], lang, None, True)
