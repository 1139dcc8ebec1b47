"""PyTorch + transformers backend: runs anywhere (CPU, CUDA, MPS).

One worker thread owns the model. Requests are interleaved round-robin a few tokens at a
time, each with its own KV cache, so concurrent streams all make progress, the event
loop never blocks, and a cancelled request stops costing compute at the next turn.
It favours simplicity and portability over throughput; the vLLM backend is the fast path.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import logging
import queue
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import torch

from kanitts.engine.base import GenerationBackend, SamplingParams
from kanitts.hub import ModelLoadError, resolve_dir
from kanitts.tokens import SpeechConstraint, with_opening

logger = logging.getLogger(__name__)

_DONE = object()


def pick_device(device: str = "auto") -> torch.device:
    if device != "auto":
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def pick_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype != "auto":
        return getattr(torch, dtype)
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def sample_next(
    logits: torch.Tensor,
    params: SamplingParams,
    history: torch.Tensor,
    constraint: SpeechConstraint | None,
    allow_stop: bool,
    generator: torch.Generator | None,
) -> int:
    """One sampling step on a [vocab] logits row (float32).

    Order: validity mask, repetition penalty (over prompt + output, as HF and vLLM do),
    temperature, nucleus. With a constraint only the valid slice is materialised, so
    the sort/softmax work is on 4k candidates instead of 80k.
    """
    vocab = logits.shape[-1]
    if constraint is not None:
        singles, rng = constraint.allowed(allow_stop)
        parts = [torch.tensor(singles, dtype=torch.long, device=logits.device)]
        if rng is not None:
            parts.append(torch.arange(rng[0], min(rng[1], vocab), device=logits.device))
        cand = torch.cat(parts)
        cand = cand[cand < vocab]
    else:
        cand = torch.arange(vocab, device=logits.device)
        if not allow_stop:
            logits = logits.clone()
            logits[[t for t in params.stop_token_ids if t < vocab]] = float("-inf")
    sub = logits[cand].float()
    if params.repetition_penalty != 1.0 and history.numel():
        seen = torch.isin(cand, history)
        penalised = torch.where(sub > 0, sub / params.repetition_penalty, sub * params.repetition_penalty)
        sub = torch.where(seen, penalised, sub)
    if params.temperature < 1e-5:  # vLLM's threshold: tiny temperatures are greedy
        return int(cand[int(torch.argmax(sub))])
    sub = (sub - sub.max()) / params.temperature
    probs = torch.softmax(sub, dim=-1)
    if params.top_p < 1.0:
        sorted_p, order = torch.sort(probs, descending=True)
        cum = torch.cumsum(sorted_p, dim=-1)
        keep = cum - sorted_p < params.top_p
        keep[0] = True
        sorted_p = torch.where(keep, sorted_p, torch.zeros_like(sorted_p))
        pick = torch.multinomial(sorted_p, 1, generator=generator)
        return int(cand[order[pick]])
    pick = torch.multinomial(probs, 1, generator=generator)
    return int(cand[pick])


@dataclass
class _Request:
    rid: str
    prompt: list[int]
    params: SamplingParams
    out: asyncio.Queue[Any]
    loop: asyncio.AbstractEventLoop
    cancelled: threading.Event = field(default_factory=threading.Event)
    cache: Any = None
    next_input: torch.Tensor | None = None
    history: torch.Tensor | None = None
    generated: int = 0
    constraint: SpeechConstraint | None = None
    generator: torch.Generator | None = None
    finished: bool = False

    def emit(self, item: Any) -> None:
        self.loop.call_soon_threadsafe(self.out.put_nowait, item)


class TorchBackend(GenerationBackend):
    """transformers ``AutoModelForCausalLM`` (LFM2) with per-request KV caches."""

    name = "torch"

    def __init__(
        self,
        model: str,
        *,
        device: str = "auto",
        dtype: str = "auto",
        tokens_per_turn: int = 4,
        max_active: int = 64,
        force_opening: bool = True,
    ) -> None:
        super().__init__()
        self.model_id = model
        self.device = pick_device(device)
        self.dtype = pick_dtype(dtype, self.device)
        self.tokens_per_turn = tokens_per_turn
        self.max_active = max_active
        #: Teacher-force ``[START_OF_AI, START_OF_SPEECH]`` after the prompt (as vLLM does).
        self.force_opening = force_opening
        self._model: Any = None
        self._cache_kw = "past_key_values"
        self._incoming: queue.Queue[_Request | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._ids = itertools.count()
        self._ready = False
        self._stop = threading.Event()

    # -- lifecycle -----------------------------------------------------------------
    async def start(self) -> None:
        await asyncio.to_thread(self._load)
        self._thread = threading.Thread(target=self._run, name=f"torch-engine-{self.model_id}", daemon=True)
        self._thread.start()
        self._ready = True

    def _load(self) -> None:
        from transformers import AutoModelForCausalLM

        from kanitts.engine.native.kanitts2 import require_v1

        path = resolve_dir(self.model_id)
        require_v1(path, "torch")
        try:
            model = AutoModelForCausalLM.from_pretrained(path, dtype=self.dtype)
        except Exception as exc:  # noqa: BLE001 - one clear line for users
            raise ModelLoadError(f"could not load model from {path}: {exc}") from exc
        self._model = model.to(self.device).eval()
        # transformers >= 5.2x renamed past_key_values -> cache; support both.
        params = inspect.signature(self._model.forward).parameters
        self._cache_kw = "cache" if "cache" in params else "past_key_values"
        logger.info(
            "torch backend: loaded %s on %s (%s, %.1fM parameters)",
            self.model_id, self.device, self.dtype,
            sum(p.numel() for p in self._model.parameters()) / 1e6,
        )

    async def close(self) -> None:
        self._stop.set()
        self._incoming.put(None)
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 10)
        self._model = None
        self._ready = False

    @property
    def ready(self) -> bool:
        return self._ready

    # -- API -------------------------------------------------------------------------
    async def stream(
        self, prompt_ids: list[int], params: SamplingParams, request_id: str | None = None
    ) -> AsyncIterator[list[int]]:
        if not self._ready:
            raise RuntimeError("torch backend is not started")
        if params.speaker_embedding is not None:
            raise ValueError("the torch backend serves KaniTTS v1 models: it takes no speaker embedding")
        loop = asyncio.get_running_loop()
        req = _Request(
            rid=request_id or f"req-{next(self._ids)}",
            prompt=list(prompt_ids),
            params=params,
            out=asyncio.Queue(),
            loop=loop,
        )
        self.stats.active_requests += 1
        self._incoming.put(req)
        try:
            while True:
                item = await req.out.get()
                if item is _DONE:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            if not req.finished:
                req.cancelled.set()
                self.stats.requests_aborted += 1
                logger.debug("request %s aborted by its consumer", req.rid)
            self.stats.active_requests -= 1

    # -- worker thread ----------------------------------------------------------------
    def _run(self) -> None:
        active: list[_Request] = []
        while not self._stop.is_set():
            block = not active
            try:
                while True:
                    item = self._incoming.get(block=block, timeout=None if block else 0)
                    block = False
                    if item is None:
                        if self._stop.is_set():
                            return
                        continue
                    active.append(item)
                    if len(active) >= self.max_active:
                        break
            except queue.Empty:
                pass
            still: list[_Request] = []
            for req in active:
                if req.cancelled.is_set():
                    req.cache = None
                    continue
                try:
                    self._turn(req)
                except Exception as exc:  # noqa: BLE001 - a failure ends one request only
                    logger.exception("generation failed for %s", req.rid)
                    req.finished = True
                    req.emit(RuntimeError(f"generation failed: {exc}"))
                if not req.finished and not req.cancelled.is_set():
                    still.append(req)
                else:
                    req.cache = None
            active = still

    @torch.inference_mode()
    def _turn(self, req: _Request) -> None:
        """Advance one request by up to ``tokens_per_turn`` tokens."""
        model = self._model
        p = req.params
        if req.cache is None and req.next_input is None:
            prompt = with_opening(req.prompt) if self.force_opening else req.prompt
            req.next_input = torch.tensor([prompt], dtype=torch.long, device=self.device)
            req.history = torch.tensor(prompt, dtype=torch.long, device=self.device)
            req.constraint = SpeechConstraint.for_prompt(prompt) if p.constrained else None
            if p.seed is not None:
                req.generator = torch.Generator(device=self.device).manual_seed(p.seed)
        new: list[int] = []
        t0 = time.perf_counter()
        for _ in range(self.tokens_per_turn):
            out = model(input_ids=req.next_input, use_cache=True, logits_to_keep=1,
                        **{self._cache_kw: req.cache})
            req.cache = getattr(out, self._cache_kw, None)
            logits = out.logits[0, -1].float()
            allow_stop = req.generated >= p.min_tokens
            tok = sample_next(logits, p, req.history, req.constraint, allow_stop, req.generator)
            req.generated += 1
            if req.constraint is not None:
                req.constraint.advance(tok)
            req.history = torch.cat([req.history, torch.tensor([tok], device=self.device)])
            req.next_input = torch.tensor([[tok]], dtype=torch.long, device=self.device)
            new.append(tok)
            if (tok in p.stop_token_ids and allow_stop) or req.generated >= p.max_tokens:
                req.finished = True
                break
        self.stats.tokens_generated += len(new)
        logger.debug("%s: %d tokens in %.1f ms", req.rid, len(new), (time.perf_counter() - t0) * 1e3)
        req.emit(new)
        if req.finished:
            self.stats.requests_finished += 1
            req.emit(_DONE)
