"""Generation engines behind one contract (:mod:`kanitts.engine.base`)."""

#: ``engine.backend`` values (config, ``--backend``): ``auto`` picks the native engine (vLLM for fp8, bnb_4bit, tensor parallel).
BACKEND_NAMES = ("auto", "native", "vllm", "torch")
