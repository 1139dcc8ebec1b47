"""The generation-backend contract: prompt ids in, an async stream of new token ids out.

The native and vLLM backends both implement :class:`GenerationBackend`, so synthesis,
the server and the benchmarks never care which one runs.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace

from kanitts.tokens import STOP_TOKEN_IDS


@dataclass(frozen=True)
class SamplingParams:
    """Per-request generation settings (the seed's defaults)."""

    temperature: float = 0.6
    top_p: float = 0.95
    repetition_penalty: float = 1.1
    max_tokens: int = 1200
    seed: int | None = None
    #: Generate at least this many tokens before a stop token may end the stream
    #: (benchmarks use ``min_tokens == max_tokens`` for a fixed cost).
    min_tokens: int = 0
    #: Only the next codebook's ids (or END_OF_SPEECH at a frame boundary) may be sampled
    #: once speech has started, so every frame is valid.
    constrained: bool = True
    stop_token_ids: tuple[int, ...] = field(default=STOP_TOKEN_IDS)
    #: KaniTTS-2 voice cloning: the request's speaker embedding (``speaker_emb_dim`` floats,
    #: e.g. 128 from :mod:`kanitts.speaker`). Only backends serving a KaniTTS-2 model accept
    #: it (the native engine); the others raise ValueError when it is set.
    speaker_embedding: tuple[float, ...] | None = None

    def with_(self, **changes: object) -> "SamplingParams":
        return replace(self, **changes)  # type: ignore[arg-type]


#: The one definition of the sampling defaults; settings and synthesis options derive theirs.
DEFAULT_SAMPLING = SamplingParams()


@dataclass
class BackendStats:
    """Live counters a backend exposes for health, metrics and routing."""

    active_requests: int = 0
    tokens_generated: int = 0
    requests_finished: int = 0
    requests_aborted: int = 0
    kv_cache_usage: float | None = None


class GenerationBackend(abc.ABC):
    """An engine serving one model. Implementations must be safe to call from many
    concurrent asyncio tasks and must stop generating for a request as soon as the
    consumer of :meth:`stream` goes away (``aclose``/cancellation)."""

    name: str = "base"

    def __init__(self) -> None:
        self.stats = BackendStats()

    async def start(self) -> None:
        """Load weights / start workers / warm up. Called once before serving."""

    async def close(self) -> None:
        """Release the model and stop workers."""

    @abc.abstractmethod
    def stream(
        self, prompt_ids: list[int], params: SamplingParams, request_id: str | None = None
    ) -> AsyncIterator[list[int]]:
        """Yield lists of newly generated token ids (stop token included when hit).

        Closing the iterator early (or cancelling the consuming task) aborts the request.
        """

    @property
    def ready(self) -> bool:
        return True
