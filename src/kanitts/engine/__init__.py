"""Generation engines behind one contract (:mod:`kanitts.engine.base`)."""

#: ``engine.backend`` values (config, ``--backend``): ``auto`` picks vLLM or PyTorch.
BACKEND_NAMES = ("auto", "native", "vllm", "torch")
