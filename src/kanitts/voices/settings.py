"""The ``[voices]`` configuration section (KaniTTS-2 voice cloning), part of
:class:`kanitts.config.Settings`; its limits default to the speaker and store modules' own."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

from kanitts.speaker.audio_input import ReferenceAudioLimits
from kanitts.speaker.constants import DEFAULT_SPEAKER_ENCODER
from kanitts.voices.records import VoiceStoreLimits

_AUDIO_LIMITS = ReferenceAudioLimits()
_STORE_LIMITS = VoiceStoreLimits()


class VoicesConfig(BaseModel):
    """KaniTTS-2 voice cloning: the speaker encoder, the custom-voice store and its limits.
    Used only when a KaniTTS-2 model is loaded."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    #: Speaker encoder: hub id or folder.
    speaker_encoder: str = DEFAULT_SPEAKER_ENCODER
    #: Where the encoder runs: ``auto`` follows ``engine.device``.
    device: str = "auto"
    #: Directory of uploaded voices (one file per voice; created when missing).
    directory: Path = Path("~/.local/share/kanitts/voices")
    #: Uploaded voices in all, and per owner (API key).
    max_voices: int = Field(_STORE_LIMITS.max_voices, ge=1)
    max_voices_per_owner: int = Field(_STORE_LIMITS.max_voices_per_owner, ge=1)
    #: Largest reference-audio file accepted, in bytes (413 beyond it).
    max_upload_bytes: int = Field(_AUDIO_LIMITS.max_bytes, ge=1024)
    #: Shortest and longest reference audio, in seconds.
    min_seconds: float = Field(_AUDIO_LIMITS.min_seconds, gt=0)
    max_seconds: float = Field(_AUDIO_LIMITS.max_seconds, gt=0)
    #: Read-only shared voices from embedding files (the official server's ``.pt``/``.npy``
    #: format): ``{name = "path"}``, or a list of paths (named by file stem).
    preload: dict[str, str] | list[str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> "VoicesConfig":
        if self.min_seconds > self.max_seconds:
            raise ValueError(f"min_seconds {self.min_seconds} is above max_seconds {self.max_seconds}")
        return self

    def audio_limits(self) -> ReferenceAudioLimits:
        return ReferenceAudioLimits(min_seconds=self.min_seconds, max_seconds=self.max_seconds,
                                    max_bytes=self.max_upload_bytes)

    def store_limits(self) -> VoiceStoreLimits:
        return VoiceStoreLimits(max_voices=self.max_voices, max_voices_per_owner=self.max_voices_per_owner)
