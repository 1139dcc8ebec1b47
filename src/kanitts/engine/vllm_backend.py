"""vLLM generation backend: continuous batching through vLLM's ``AsyncLLM`` (v1 engine).

vLLM is imported lazily (``pip install 'kanitts-vllm[vllm]'``): this module imports on any
machine. Token-id prompts, DELTA outputs, one vLLM request per :meth:`VllmBackend.stream`;
closing or cancelling the stream aborts the request inside vLLM. Codebook-restricted
sampling runs in :mod:`kanitts.engine.vllm_logits` (a vLLM v1 logits processor).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

from kanitts.engine.base import GenerationBackend, SamplingParams
from kanitts.engine.vllm_logits import EXTRA_ARGS_KEY, LOGITS_PROCESSOR_FQCN, RESTRICT_MODES
from kanitts.tokens import END_OF_HUMAN, END_OF_TEXT, OPENING, START_OF_HUMAN, START_OF_TEXT, with_opening  # noqa: F401

logger = logging.getLogger(__name__)

VLLM_MISSING = "vLLM is not installed: pip install 'kanitts-vllm[vllm]'"


def import_vllm() -> Any:
    """Import vllm or raise a one-line, actionable error."""
    try:
        import vllm  # noqa: F401
    except ImportError as e:  # pragma: no cover - depends on the machine
        raise RuntimeError(f"{VLLM_MISSING} ({e})") from e
    return vllm


def vllm_available() -> bool:
    try:
        import importlib.util

        return importlib.util.find_spec("vllm") is not None
    except (ImportError, ValueError):
        return False


def sampling_kwargs(params: SamplingParams, restrict: str = "sample") -> dict[str, Any]:
    """Map our :class:`SamplingParams` to vLLM ``SamplingParams`` keyword arguments.

    ``restrict`` (``sample`` | ``mask`` | ``off``) applies when ``params.constrained``:
    in ``sample`` mode vLLM is asked for a greedy, penalty-free pick and the kanitts
    logits processor samples on the valid codebook slice itself (the settings travel in
    ``extra_args``); in ``mask`` mode vLLM samples as usual over the masked vocabulary.
    """
    if restrict not in RESTRICT_MODES:
        raise ValueError(f"restrict must be one of {RESTRICT_MODES}, got {restrict!r}")
    max_tokens = int(params.max_tokens)
    min_tokens = max(0, min(int(params.min_tokens), max_tokens))
    kw: dict[str, Any] = {
        "max_tokens": max_tokens,
        "min_tokens": min_tokens,
        "stop_token_ids": list(params.stop_token_ids),
        "ignore_eos": min_tokens >= max_tokens,
        "detokenize": False,
        "skip_special_tokens": False,
    }
    mode = restrict if params.constrained else "off"
    native = {
        "temperature": float(params.temperature),
        "top_p": float(params.top_p),
        "repetition_penalty": float(params.repetition_penalty),
        "seed": params.seed,
    }
    if mode == "sample":
        kw.update(temperature=0.0, top_p=1.0, repetition_penalty=1.0)
    else:
        kw.update(native)
    if mode != "off":
        kw["extra_args"] = {EXTRA_ARGS_KEY: {"mode": mode, **native}}
    return kw


def build_sampling_params(params: SamplingParams, sp_cls: Any, *, output_kind: Any = None,
                          restrict: str = "sample") -> Any:
    """vLLM SamplingParams (``sp_cls``) for one request; DELTA output kind when given."""
    kw = sampling_kwargs(params, restrict)
    if output_kind is not None:
        kw["output_kind"] = output_kind
    return sp_cls(**kw)


def warmup_prompt(i: int = 0) -> list[int]:
    """A short prompt in the training layout (random text ids: the weights don't care)."""
    return [START_OF_HUMAN, START_OF_TEXT, *[3 + (i * 7 + j) % 200 for j in range(8)], END_OF_TEXT, END_OF_HUMAN]


class VllmBackend(GenerationBackend):
    """One model served by vLLM's AsyncLLM with continuous batching."""

    name = "vllm"

    def __init__(
        self,
        model: str,
        engine_args: dict[str, Any] | None = None,
        *,
        warmup: bool = True,
        restrict: str = "sample",
        warmup_requests: int = 16,
        warmup_tokens: int = 64,
        force_opening: bool = True,
    ) -> None:
        super().__init__()
        if restrict not in RESTRICT_MODES:
            raise ValueError(f"restrict must be one of {RESTRICT_MODES}, got {restrict!r}")
        self.model = model
        self.engine_args = dict(engine_args or {})
        self.engine_args.setdefault("model", model)
        self.restrict = restrict
        self.warmup = warmup
        self.warmup_requests = warmup_requests
        self.warmup_tokens = warmup_tokens
        self.force_opening = force_opening
        self._engine: Any = None
        self._ready = False
        self._sp_cls: Any = None
        self._delta: Any = None
        self.start_seconds: float | None = None
        self.warmup_seconds: float | None = None

    # -- lifecycle
    def full_engine_args(self) -> dict[str, Any]:
        args = dict(self.engine_args)
        args.setdefault("skip_tokenizer_init", True)
        args.setdefault("enable_log_requests", False)
        if self.restrict != "off":
            procs = list(args.get("logits_processors") or [])
            if LOGITS_PROCESSOR_FQCN not in procs:
                procs.append(LOGITS_PROCESSOR_FQCN)
            args["logits_processors"] = procs
        return args

    async def start(self) -> None:
        from kanitts.engine.native.kanitts2 import require_v1

        import_vllm()
        await asyncio.to_thread(require_v1, self.engine_args["model"], "vLLM")  # before the engine loads it
        from vllm import SamplingParams as VSamplingParams
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.sampling_params import RequestOutputKind
        from vllm.v1.engine.async_llm import AsyncLLM

        self._sp_cls = VSamplingParams
        self._delta = RequestOutputKind.DELTA
        t0 = time.perf_counter()
        eargs = AsyncEngineArgs(**self.full_engine_args())
        self._engine = AsyncLLM.from_engine_args(eargs, stat_loggers=[_stat_logger_factory(self)])
        self.start_seconds = time.perf_counter() - t0
        if self.warmup:
            t1 = time.perf_counter()
            await self._warm_up()
            self.warmup_seconds = time.perf_counter() - t1
        self._ready = True
        logger.info("vLLM engine ready (start %.1fs, warm-up %s s)", self.start_seconds,
                    f"{self.warmup_seconds:.1f}" if self.warmup_seconds is not None else "-")

    async def _warm_up(self) -> None:
        """Compile Triton sampling kernels before serving: batches of sampled requests,
        through the restricted path and vLLM's own sampler."""
        n = self.warmup_tokens
        base = SamplingParams(max_tokens=n, min_tokens=n)
        max_seqs = int(self.engine_args.get("max_num_seqs") or 256)
        batch = max(1, min(self.warmup_requests, max_seqs))

        async def one(i: int, p: SamplingParams) -> None:
            async for _ in self.stream(warmup_prompt(i), p, request_id=f"warmup-{i}-{uuid.uuid4().hex[:6]}"):
                pass

        await one(0, base)
        await asyncio.gather(*[one(i, base.with_(seed=i)) for i in range(batch)])
        await asyncio.gather(*[one(i, base.with_(constrained=False)) for i in range(batch)])
        self.stats.tokens_generated = 0
        self.stats.requests_finished = 0

    async def close(self) -> None:
        self._ready = False
        if self._engine is not None:
            try:
                self._engine.shutdown()
            finally:
                self._engine = None

    @property
    def ready(self) -> bool:
        return self._ready

    @property
    def engine(self) -> Any:
        return self._engine

    # -- generation
    def sampling_params(self, params: SamplingParams) -> Any:
        """vLLM ``SamplingParams`` (DELTA outputs) for one request in this backend's restrict mode."""
        return build_sampling_params(params, self._sp_cls, output_kind=self._delta, restrict=self.restrict)

    def stream(
        self, prompt_ids: list[int], params: SamplingParams, request_id: str | None = None
    ) -> AsyncIterator[list[int]]:
        """Generated ids in DELTA chunks (see :meth:`GenerationBackend.stream`)."""
        if params.speaker_embedding is not None:
            raise ValueError("the vLLM backend serves KaniTTS v1 models: it takes no speaker embedding")
        return self.generate(prompt_ids, lambda: self.sampling_params(params), request_id)

    async def generate(
        self, prompt_ids: list[int], vllm_params: Callable[[], Any], request_id: str | None = None
    ) -> AsyncIterator[list[int]]:
        """One vLLM request: generated ids in DELTA chunks, with the vLLM ``SamplingParams``
        that ``vllm_params()`` builds (called once the engine is known to be started).

        Raises RuntimeError before :meth:`start`. Closing the iterator aborts the request.
        """
        if self._engine is None:
            raise RuntimeError("VllmBackend.start() has not been called")
        rid = request_id or uuid.uuid4().hex
        sp = vllm_params()
        prompt = with_opening(prompt_ids) if self.force_opening else list(prompt_ids)
        gen = self._engine.generate({"prompt_token_ids": prompt}, sp, request_id=rid)
        finished = False
        self.stats.active_requests += 1
        try:
            async for out in gen:
                ids = list(out.outputs[0].token_ids) if out.outputs else []
                if ids:
                    self.stats.tokens_generated += len(ids)
                    yield ids
                if out.finished:
                    finished = True
                    break
        finally:
            self.stats.active_requests -= 1
            if finished:
                self.stats.requests_finished += 1
            else:
                self.stats.requests_aborted += 1
                try:
                    await gen.aclose()  # vLLM's generate() aborts on GeneratorExit
                except BaseException:  # noqa: BLE001
                    pass
                try:
                    await self._engine.abort(rid)
                except BaseException:  # noqa: BLE001
                    pass

    def num_unfinished(self) -> int | None:
        try:
            return int(self._engine.output_processor.get_num_unfinished_requests())
        except Exception:  # noqa: BLE001
            return None


def _stat_logger_factory(backend: VllmBackend) -> Any:
    """A vLLM per-engine stat logger that copies KV-cache usage into ``backend.stats``."""
    from vllm.v1.metrics.loggers import StatLoggerBase

    class _KaniStatLogger(StatLoggerBase):
        def __init__(self, vllm_config: Any, engine_index: int = 0) -> None:
            self.engine_index = engine_index

        def record(self, scheduler_stats: Any, iteration_stats: Any, mm_cache_stats: Any = None,
                   engine_idx: int = 0) -> None:
            if scheduler_stats is not None:
                usage = getattr(scheduler_stats, "kv_cache_usage", None)
                if usage is not None:
                    backend.stats.kv_cache_usage = float(usage)

        def log_engine_initialized(self) -> None:
            pass

    return _KaniStatLogger
