"""kanitts-vllm: OpenAI-compatible text-to-speech for KaniTTS models."""

__version__ = "0.1.0"
