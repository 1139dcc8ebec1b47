"""OpenAI-compatible request/response models, kept apart from the serving logic."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from kanitts.audio import MAX_SPEED, MIN_SPEED, AudioFormat

OPENAI_TTS_MODELS = ("tts-1", "tts-1-hd", "gpt-4o-mini-tts")


class SpeechRequest(BaseModel):
    """``POST /v1/audio/speech``. Unknown fields are ignored, as OpenAI does."""

    model_config = ConfigDict(extra="ignore")

    model: str | None = Field(None, description="tts-1, tts-1-hd, gpt-4o-mini-tts or a loaded model id")
    input: str = Field(..., description="Text to speak")
    voice: str | None = Field(None, description="A voice of a loaded model, or an OpenAI voice name")
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
    normalize: bool | None = None

