"""A :class:`~kanitts.engine.vllm_backend.VllmBackend` for benchmarks whose requests may each
take another sampling path, so that every path is timed on one engine, back to back.

The serving backend has one path per engine (its ``restrict`` mode); here ``stream`` also takes

* ``restrict``: ``sample`` | ``mask`` | ``off`` (see :func:`~kanitts.engine.vllm_backend.sampling_kwargs`),
  or ``sample_old``: the round-1 processor (:mod:`kanitts.bench.round1_logits`, loaded into the
  engine when ``round1=True``) samples instead of the current one;
* ``vllm_overrides``: extra vLLM ``SamplingParams`` keyword arguments.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from kanitts.bench.round1_logits import EXTRA_ARGS_KEY as ROUND1_EXTRA_ARGS_KEY
from kanitts.bench.round1_logits import LOGITS_PROCESSOR_FQCN as ROUND1_PROCESSOR_FQCN
from kanitts.engine.base import SamplingParams
from kanitts.engine.vllm_backend import VllmBackend, build_sampling_params, sampling_kwargs
from kanitts.engine.vllm_logits import EXTRA_ARGS_KEY

#: ``restrict`` value of the round-1 processor's path.
ROUND1_MODE = "sample_old"


class SamplingPathBackend(VllmBackend):
    """VllmBackend plus per-request sampling paths (benchmarks only; see the module docstring).

    ``round1``: also load the round-1 logits processor, so ``restrict="sample_old"`` works.
    Other arguments as :class:`VllmBackend`.
    """

    def __init__(self, model: str, engine_args: dict[str, Any] | None = None, *, round1: bool = False,
                 **kwargs: Any) -> None:
        engine_args = dict(engine_args or {})
        if round1:
            engine_args["logits_processors"] = [*(engine_args.get("logits_processors") or []),
                                                ROUND1_PROCESSOR_FQCN]
        super().__init__(model, engine_args, **kwargs)
        self.round1 = round1

    def stream(
        self,
        prompt_ids: list[int],
        params: SamplingParams,
        request_id: str | None = None,
        *,
        restrict: str | None = None,
        vllm_overrides: dict[str, Any] | None = None,
    ) -> AsyncIterator[list[int]]:
        """Generated ids in DELTA chunks, sampled on path ``restrict`` (default: the
        backend's), with ``vllm_overrides`` applied last."""
        if restrict == ROUND1_MODE:
            settings = sampling_kwargs(params, "sample")["extra_args"][EXTRA_ARGS_KEY]
            restrict = "sample"
            vllm_overrides = {**(vllm_overrides or {}), "extra_args": {ROUND1_EXTRA_ARGS_KEY: settings}}
        mode = restrict or self.restrict

        def vllm_params() -> Any:
            if not vllm_overrides:
                return build_sampling_params(params, self._sp_cls, output_kind=self._delta, restrict=mode)
            kw = sampling_kwargs(params, mode)
            kw.update(vllm_overrides)
            kw["output_kind"] = self._delta
            return self._sp_cls(**kw)

        return self.generate(prompt_ids, vllm_params, request_id)
