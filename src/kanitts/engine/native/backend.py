"""``NativeBackend``: the native KaniTTS engine behind the :class:`GenerationBackend` contract.

Our own LFM2 forward on a static slot pool, continuous batching in one worker thread, the
codebook-only head with on-device sampling, and CUDA graphs per batch bucket on CUDA
(eager on CPU/MPS); on CUDA the admission prefill of prompts up to 256 rows is graphed too
(:mod:`kanitts.engine.native.prefill_graphs`). Needs only torch and safetensors (plus
``huggingface_hub`` for hub ids).

Requests arriving in the same event-loop tick (a burst) are handed to the worker together,
so they are admitted in one batched prefill where the prefill budget allows.

Back-pressure: at most ``max_num_seqs`` requests generate at once and ``max_waiting`` more
wait inside the engine; beyond that :meth:`stream` waits (it never fails for being busy).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import threading
import time
from collections.abc import AsyncIterator

import torch

from kanitts.engine.base import GenerationBackend, SamplingParams
from kanitts.engine.native.graphs import DecodeStep
from kanitts.engine.native.kanitts2 import Kani2Runtime, load_native_model
from kanitts.engine.native.model import Lfm2
from kanitts.engine.native.prefill_graphs import GroupPrefill
from kanitts.engine.native.sampler import Sampler
from kanitts.engine.native.scheduler import DONE, Request, Scheduler
from kanitts.engine.native.slots import SlotParams, SlotPool
from kanitts.engine.device import pick_device, pick_dtype
from kanitts.tokens import with_opening

logger = logging.getLogger(__name__)


class NativeBackend(GenerationBackend):
    """The native engine for one model (hub id or folder).

    ``max_num_seqs`` slots of ``max_model_len`` positions each are allocated at start;
    ``max_prefill_tokens`` bounds one batched prefill (padded tokens); ``stream_interval``
    tokens are handed over at a time (4 = one codec frame) at first, then in growing groups
    up to ``max_stream_interval`` tokens (None: no growth); ``cuda_graphs`` (CUDA only)
    graphs the decode step and the admission prefill; ``compile`` fuses the decode step
    with Inductor (any device; a C++ compiler on CPU). ``force_opening`` teacher-forces ``[START_OF_AI, START_OF_SPEECH]`` after a prompt
    ending with END_OF_HUMAN (as the other backends do).

    KaniTTS-2 checkpoints are detected at load (:mod:`kanitts.engine.native.kanitts2`); then
    ``SamplingParams.speaker_embedding`` (``speaker_emb_dim`` floats) gives a request its
    voice (one extra prompt row), and :attr:`kani2` is set. A v1 model rejects it (ValueError).

    ``single_span``: graphed decode steps (CUDA) attend over all ``max_model_len`` positions,
    one graph per batch bucket instead of one per bucket x attention span (less graph memory;
    each step reads the whole KV cache; steps without graphs keep their spans: the ``low_vram`` preset, :data:`kanitts.engine.modes.NATIVE_MODE_OPTIONS`).
    """

    name = "native"

    def __init__(self, model: str, *, device: str = "auto", dtype: str = "auto", max_num_seqs: int = 64,
                 max_model_len: int = 2048, max_prefill_tokens: int = 4096, max_waiting: int = 1024,
                 stream_interval: int = 4, max_stream_interval: int | None = None,
                 cuda_graphs: bool = True, compile: bool = False,
                 force_opening: bool = True, warmup: bool = False, single_span: bool = False) -> None:
        super().__init__()
        self.model_id = model
        self.device = pick_device(device)
        self.dtype = pick_dtype(dtype, self.device)
        self.max_num_seqs, self.max_model_len = max_num_seqs, max_model_len
        self.max_prefill_tokens = max(max_prefill_tokens, max_model_len)
        self.max_waiting = max_waiting
        self.stream_interval, self.max_stream_interval = stream_interval, max_stream_interval
        self.cuda_graphs, self.compile = cuda_graphs, compile
        self.force_opening = force_opening
        self.warmup = warmup
        self.single_span = single_span
        self.model: Lfm2 | None = None
        #: KaniTTS-2 state (None for a v1 model)
        self.kani2: Kani2Runtime | None = None
        self.scheduler: Scheduler | None = None
        self.startup_seconds = 0.0
        self._thread: threading.Thread | None = None
        self._ids = itertools.count()
        self._sem: asyncio.Semaphore | None = None
        self._sem_loop: asyncio.AbstractEventLoop | None = None
        self._ready = False
        #: requests of the current event-loop tick, per loop, not yet handed to the scheduler
        self._arrivals: dict[asyncio.AbstractEventLoop, list[Request]] = {}

    # -- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        t0 = time.perf_counter()
        await asyncio.to_thread(self._build)
        assert self.scheduler is not None
        self._thread = threading.Thread(target=self.scheduler.run, name=f"native-engine-{self.model_id}",
                                        daemon=True)
        self._thread.start()
        self._ready = True
        if self.warmup:
            await self._warm()
        if self.device.type == "cuda":  # hand back what start-up cached beyond the graph pools
            await asyncio.to_thread(torch.cuda.empty_cache)
        self.startup_seconds = time.perf_counter() - t0
        logger.info("native engine ready in %.1f s (%d slots x %d positions, %s, %s)", self.startup_seconds,
                    self.max_num_seqs, self.max_model_len, self.device, self.dtype)

    def _build(self) -> None:
        model, kani2 = load_native_model(self.model_id, self.device, self.dtype)
        pool = SlotPool(model, self.max_num_seqs, self.max_model_len)
        sampler = Sampler(model, pool)
        runtime = None if kani2 is None else kani2.runtime(pool.size)
        if runtime is not None:
            model.position_rule = runtime.decode_positions
        # dynamic=None: sizes turn symbolic after the first change, so start-up compiles a few
        # graphs (batch 1 stays specialised) instead of one per batch bucket x attention span
        # one span saves graph memory; without graphs (CPU, MPS, enforce_eager) it would only
        # make every step attend over all positions
        graphed = self.cuda_graphs and self.device.type == "cuda"
        spans = [self.max_model_len] if self.single_span and graphed else None
        step = DecodeStep(model, pool, sampler, graphs=self.cuda_graphs, compile=self.compile, dynamic=None,
                          spans=spans)
        step.capture()
        prefill = None
        if step.use_graphs:  # the admission prefill as graphs too, in the decode graphs' memory pool
            prefill = GroupPrefill(model, pool, sampler, runtime, graphs=True)
            try:
                prefill.capture(step.mempool)
            except RuntimeError:  # a capture that fails costs the fast first token, not the engine
                logger.exception("native engine: prefill graph capture failed; admissions use the eager prefill")
                prefill = None
        self.model, self.kani2 = model, runtime
        self.scheduler = Scheduler(model, pool, sampler, step, max_prefill_tokens=self.max_prefill_tokens,
                                   stream_interval=self.stream_interval,
                                   max_stream_interval=self.max_stream_interval, kani2=runtime,
                                   prefill=prefill)
        logger.info("native engine: %.0f MiB of slot state", pool.cache.nbytes() / 2**20)

    async def _warm(self) -> None:
        """A few sampled requests so prefill and sampling kernels exist before traffic."""
        from kanitts.tokens import END_OF_HUMAN, START_OF_HUMAN

        params = SamplingParams(max_tokens=8, min_tokens=8, seed=0)
        prompt = [START_OF_HUMAN, 1, 2, END_OF_HUMAN]

        async def one() -> None:
            async for _ in self.stream(prompt, params, "warmup"):
                pass

        await asyncio.gather(*(one() for _ in range(min(4, self.max_num_seqs))))

    async def close(self) -> None:
        self._ready = False
        if self.scheduler is not None:
            self.scheduler.stop()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 30)
        self.scheduler = None
        self.model = None

    @property
    def ready(self) -> bool:
        return self._ready

    # -- API -------------------------------------------------------------------------------
    def _semaphore(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        if self._sem is None or self._sem_loop is not loop:
            self._sem = asyncio.Semaphore(self.max_num_seqs + self.max_waiting)
            self._sem_loop = loop
        return self._sem

    def _request(self, prompt_ids: list[int], params: SamplingParams, rid: str) -> Request:
        assert self.model is not None
        prompt = with_opening(prompt_ids) if self.force_opening else list(prompt_ids)
        vocab = self.model.spec.vocab_size
        if not prompt:
            raise ValueError("empty prompt")
        speaker = self._speaker(params.speaker_embedding)
        rows = len(prompt) + (speaker is not None)  # the speaker row takes a position too
        if rows >= self.max_model_len:
            raise ValueError(f"prompt of {rows} tokens does not fit max_model_len {self.max_model_len}")
        if min(prompt) < 0 or max(prompt) >= vocab:
            raise ValueError(f"prompt token ids must be in 0..{vocab - 1}")
        seed = params.seed if params.seed is not None else random.getrandbits(31)
        sp = SlotParams(prompt=prompt, temperature=params.temperature, top_p=params.top_p,
                        repetition_penalty=params.repetition_penalty, seed=seed,
                        min_tokens=params.min_tokens, constrained=params.constrained,
                        stop_ids=tuple(params.stop_token_ids))
        max_new = max(1, min(params.max_tokens, self.max_model_len - rows))
        return Request(rid=rid, prompt=prompt, slot_params=sp, max_new=max_new,
                       stops=frozenset(params.stop_token_ids), out=asyncio.Queue(),
                       loop=asyncio.get_running_loop(), speaker_embedding=speaker)

    def _speaker(self, embedding: tuple[float, ...] | None) -> torch.Tensor | None:
        """The request's speaker embedding as ``[speaker_emb_dim]`` float32 (None: no speaker
        row). ValueError for a v1 model, a wrong size or non-finite values."""
        if embedding is None:
            return None
        if self.kani2 is None:
            raise ValueError(f"model {self.model_id} is not a KaniTTS-2 model: it takes no speaker embedding")
        t = torch.as_tensor(embedding, dtype=torch.float32).reshape(-1)
        if t.numel() != self.kani2.speaker_dim:
            raise ValueError(f"speaker embedding has {t.numel()} values, the model takes {self.kani2.speaker_dim}")
        if not bool(torch.isfinite(t).all()):
            raise ValueError("speaker embedding values must be finite")
        return t

    def _submit(self, scheduler: Scheduler, req: Request) -> None:
        """Queue ``req``; the tick's arrivals go to the worker in one hand-over at its end."""
        batch = self._arrivals.get(req.loop)
        if batch is None:
            batch = self._arrivals[req.loop] = []
            req.loop.call_soon(self._hand_over, scheduler, req.loop)
        batch.append(req)

    def _hand_over(self, scheduler: Scheduler, loop: asyncio.AbstractEventLoop) -> None:
        scheduler.submit(self._arrivals.pop(loop, []))

    async def stream(self, prompt_ids: list[int], params: SamplingParams, request_id: str | None = None
                     ) -> AsyncIterator[list[int]]:
        if not self._ready or self.scheduler is None:
            raise RuntimeError("native backend is not started")
        req = self._request(list(prompt_ids), params, request_id or f"req-{next(self._ids)}")
        sem = self._semaphore()
        await sem.acquire()
        scheduler = self.scheduler
        self.stats.active_requests += 1
        try:
            self._submit(scheduler, req)
            while True:
                item = await req.out.get()
                if item is DONE:
                    self.stats.requests_finished += 1
                    return
                if isinstance(item, BaseException):
                    raise item
                self.stats.tokens_generated += len(item)
                yield item
        finally:
            if not req.closed:
                req.cancelled.set()
                self.stats.requests_aborted += 1
                logger.debug("request %s aborted by its consumer", req.rid)
            self.stats.active_requests -= 1
            self.stats.kv_cache_usage = scheduler.active / self.max_num_seqs
            sem.release()

