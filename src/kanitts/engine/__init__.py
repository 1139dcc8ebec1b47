"""Generation engines behind one contract (:mod:`kanitts.engine.base`)."""

#: ``engine.backend`` values: ``auto`` picks the native engine (vLLM for fp8, bnb_4bit, tensor parallel).
BACKEND_NAMES = ("auto", "native", "vllm")

#: Retired ``engine.backend`` values still accepted (config, ``--backend``), each -> the backend that
#: replaces it; loading the settings maps them and logs one warning naming the replacement.
#: ``torch`` was the transformers-based backend, retired for the native engine (issue 18).
DEPRECATED_BACKENDS: dict[str, str] = {"torch": "native"}
