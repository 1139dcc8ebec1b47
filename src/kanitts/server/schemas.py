"""OpenAI-compatible request/response models, kept apart from the serving logic."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from kanitts.audio import MAX_SAMPLE_RATE, MAX_SPEED, MIN_SAMPLE_RATE, MIN_SPEED, AudioFormat

OPENAI_TTS_MODELS = ("tts-1", "tts-1-hd", "gpt-4o-mini-tts")


class VoiceRef(BaseModel):
    """``voice: {"id": "voice_..."}``: a custom voice by id (OpenAI's custom-voice shape)."""

    model_config = ConfigDict(extra="ignore")

    id: str = Field(..., min_length=1, max_length=128)


class SpeechRequest(BaseModel):
    """``POST /v1/audio/speech``. Unknown fields are ignored, as OpenAI does."""

    model_config = ConfigDict(extra="ignore")

    model: str | None = Field(None, description="tts-1, tts-1-hd, gpt-4o-mini-tts or a loaded model id")
    input: str = Field(..., description="Text to speak")
    voice: str | VoiceRef | None = Field(
        None, description="A voice of a loaded model or an OpenAI voice name (any case), a custom "
        "voice's name, {\"id\": ...} (a custom voice's id or a built-in voice's name), or a blend "
        "\"alice(0.7)+bob(0.3)\"")
    response_format: AudioFormat | None = None
    speed: float = Field(1.0, ge=MIN_SPEED, le=MAX_SPEED)
    instructions: str | None = Field(None, description="Accepted for compatibility; ignored")
    stream_format: Literal["audio", "sse"] | None = None
    # Extensions (all optional).
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    repetition_penalty: float | None = Field(None, ge=0.5, le=2.0)
    seed: int | None = Field(None, ge=0, le=2**63 - 1)
    max_tokens: int | None = Field(None, ge=8, le=8192, description="Tokens per chunk (50 = 1 s)")
    min_tokens: int | None = Field(None, ge=0, le=8192, description="Benchmarks: force a fixed length")
    max_chunk_duration: float | None = Field(None, gt=0.5, le=60.0)
    silence_duration: float | None = Field(None, ge=0.0, le=5.0)
    language: str | None = Field(None, max_length=16)
    normalize: bool | None = Field(None, description="false: the text reaches the model as written")
    lexicon: dict[Annotated[str, StringConstraints(min_length=1, max_length=100)],
                  Annotated[str, StringConstraints(max_length=500)]] | None = Field(
        None, max_length=1000, description="Pronunciation lexicon for this request: written -> spoken")
    sample_rate: int | None = Field(
        None, ge=MIN_SAMPLE_RATE, le=MAX_SAMPLE_RATE,
        description="Output rate in Hz (default: 24000 for pcm and SSE, the model's 22050 otherwise)",
    )
    timestamps: bool = Field(False, description="Non-streamed: segment timestamps in the X-Kanitts-Segments "
                             "header (base64 JSON); SSE streams always carry segment events")

    @field_validator("voice", mode="before")
    @classmethod
    def _voice_object(cls, v: object) -> object:
        """OpenAI's object shape must carry a string ``id`` (an error on ``voice`` itself)."""
        if isinstance(v, dict) and not isinstance(v.get("id"), str):
            raise ValueError('a voice object must be {"id": "<voice id or name>"}')
        return v
