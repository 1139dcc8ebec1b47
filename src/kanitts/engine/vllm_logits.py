"""Codebook-restricted decoding for vLLM (v1 custom logits processor).

Inside speech only the next codebook's 4,032 ids (or END_OF_SPEECH at a frame boundary)
are valid. Which ids are valid depends only on the *last* token of the sequence
(prompt + generated so far), so the constraint is a tiny state machine:

====================================  ==========================================
last token                            valid next tokens
====================================  ==========================================
anything else (e.g. END_OF_HUMAN)     START_OF_AI, START_OF_SPEECH
START_OF_AI                           START_OF_SPEECH
START_OF_SPEECH                       codebook 0
codebook k (k = 0, 1, 2)              codebook k + 1
codebook 3                            codebook 0, END_OF_SPEECH
END_OF_SPEECH / END_OF_AI             END_OF_AI
====================================  ==========================================

END_OF_AI is never valid before speech: an empty utterance is not a useful outcome, and
the reference implementation only ever stops on END_OF_SPEECH / END_OF_AI after audio.

Two ways to enforce it, chosen per request through ``SamplingParams.extra_args["kanitts"]``:

* ``mode="sample"`` (default, the fast path): the processor *samples* the token itself
  on the 4,032 (+2 special) candidates of the row — repetition penalty, temperature,
  top-p and a counter-based seeded RNG, all on a ``[rows, 4034]`` tensor — and hands vLLM
  a one-hot row. The request is sent to vLLM as greedy with no penalties, so vLLM's own
  sampler does an argmax only and never builds the ``[batch, 80539]`` penalty / top-p
  work that halves throughput at batch 256.
* ``mode="mask"``: the processor sets every invalid logit to -inf and vLLM samples as
  usual over the full vocabulary (same validity guarantee, no speed gain).

The pure pieces (:func:`allowed_token_ids`, :func:`candidate_layout`,
:func:`sample_candidates`) are plain Python / torch and tested on the CPU; the vLLM class
below only tracks the persistent batch and calls them.
"""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from kanitts.tokens import (
    AUDIO_TOKEN_END,
    AUDIO_TOKEN_START,
    CODEBOOK_SIZE,
    END_OF_AI,
    END_OF_SPEECH,
    MODEL_VOCAB_SIZE,
    NUM_CODEBOOKS,
    START_OF_AI,
    START_OF_SPEECH,
    TEXT_VOCAB_SIZE,
)

logger = logging.getLogger(__name__)

#: FQCN that vLLM loads in its engine process (``logits_processors=[...]`` engine arg).
LOGITS_PROCESSOR_FQCN = "kanitts.engine.vllm_logits:KaniCodebookLogitsProcessor"
#: Key in ``SamplingParams.extra_args`` carrying the per-request settings.
EXTRA_ARGS_KEY = "kanitts"
RESTRICT_MODES = ("sample", "mask", "off")

#: Candidate columns: the 4,032 ids of one codebook, then two special ids.
NUM_EXTRA = 2
NUM_CANDIDATES = CODEBOOK_SIZE + NUM_EXTRA
#: Region of the vocabulary whose "already generated" bits are tracked for the
#: repetition penalty (special tokens + all audio ids).
SEEN_LO = TEXT_VOCAB_SIZE
SEEN_WIDTH = AUDIO_TOKEN_END - SEEN_LO
_NEG_INF = float("-inf")
_SAMPLING_EPS = 1e-5


@dataclass(frozen=True)
class Allowed:
    """Valid next tokens: ``[lo, hi)`` (empty when lo == hi) plus a few single ids."""

    lo: int
    hi: int
    extra: tuple[int, ...]

    def ids(self) -> list[int]:
        return [*range(self.lo, self.hi), *self.extra]

    def __contains__(self, token: int) -> bool:
        return self.lo <= token < self.hi or token in self.extra


def allowed_after(last_token: int | None) -> Allowed:
    """Valid next tokens given the last token of prompt + generated ids."""
    if last_token is not None and AUDIO_TOKEN_START <= last_token < AUDIO_TOKEN_END:
        k = ((last_token - AUDIO_TOKEN_START) // CODEBOOK_SIZE + 1) % NUM_CODEBOOKS
        lo = AUDIO_TOKEN_START + k * CODEBOOK_SIZE
        return Allowed(lo, lo + CODEBOOK_SIZE, (END_OF_SPEECH,) if k == 0 else ())
    if last_token == START_OF_SPEECH:
        return Allowed(AUDIO_TOKEN_START, AUDIO_TOKEN_START + CODEBOOK_SIZE, ())
    if last_token == START_OF_AI:
        return Allowed(0, 0, (START_OF_SPEECH,))
    if last_token in (END_OF_SPEECH, END_OF_AI):
        return Allowed(0, 0, (END_OF_AI,))
    return Allowed(0, 0, (START_OF_AI, START_OF_SPEECH))


def allowed_token_ids(prompt_ids: Sequence[int], generated_ids: Sequence[int]) -> Allowed:
    """Valid next tokens for a sequence (the CPU-testable seam)."""
    if generated_ids:
        return allowed_after(generated_ids[-1])
    return allowed_after(prompt_ids[-1] if prompt_ids else None)


def candidate_layout(last: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Vectorised :func:`allowed_after` over a ``[R]`` int64 tensor of last tokens.

    Returns ``(block_lo, extra1, extra2)``, each ``[R]`` int64: the first id of the valid
    codebook block (-1 when no block is valid) and up to two extra valid ids (-1 = none).
    """
    audio = (last >= AUDIO_TOKEN_START) & (last < AUDIO_TOKEN_END)
    k_next = torch.remainder(torch.div(last - AUDIO_TOKEN_START, CODEBOOK_SIZE, rounding_mode="floor") + 1,
                             NUM_CODEBOOKS)
    neg = torch.full_like(last, -1)
    block_lo = torch.where(audio, AUDIO_TOKEN_START + k_next * CODEBOOK_SIZE, neg)
    block_lo = torch.where(last == START_OF_SPEECH, torch.full_like(last, AUDIO_TOKEN_START), block_lo)
    is_sos = last == START_OF_SPEECH
    is_soa = last == START_OF_AI
    is_end = (last == END_OF_SPEECH) | (last == END_OF_AI)
    start = ~(audio | is_sos | is_soa | is_end)
    extra1 = torch.where(audio & (k_next == 0), torch.full_like(last, END_OF_SPEECH), neg)
    extra1 = torch.where(is_soa, torch.full_like(last, START_OF_SPEECH), extra1)
    extra1 = torch.where(is_end, torch.full_like(last, END_OF_AI), extra1)
    extra1 = torch.where(start, torch.full_like(last, START_OF_AI), extra1)
    extra2 = torch.where(start, torch.full_like(last, START_OF_SPEECH), neg)
    return block_lo, extra1, extra2


def gather_candidates(logits: torch.Tensor, rows: torch.Tensor, last: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """Candidate logits ``[R, 4034]`` (invalid = -inf) and their token ids ``[R, 4034]``."""
    block_lo, e1, e2 = candidate_layout(last)
    ar = torch.arange(CODEBOOK_SIZE, device=logits.device)
    has_block = block_lo >= 0
    ids_block = torch.where(has_block, block_lo, torch.full_like(block_lo, AUDIO_TOKEN_START))[:, None] + ar
    ids = torch.cat([ids_block, e1[:, None], e2[:, None]], dim=1)
    valid = torch.cat([has_block[:, None].expand(-1, CODEBOOK_SIZE), (e1 >= 0)[:, None], (e2 >= 0)[:, None]], 1)
    ids = torch.where(valid, ids, torch.zeros_like(ids))
    cand = logits[rows[:, None], ids].float()
    cand = cand.masked_fill(~valid, _NEG_INF)
    return cand, torch.where(valid, ids, torch.full_like(ids, -1))


_M32 = 0xFFFFFFFF


def _fmix32(h: torch.Tensor) -> torch.Tensor:
    h = h ^ (h >> 16)
    h = (h * 0x85EBCA6B) & _M32
    h = h ^ (h >> 13)
    h = (h * 0xC2B2AE35) & _M32
    return h ^ (h >> 16)


def counter_uniform(seed: torch.Tensor, step: torch.Tensor, n: int) -> torch.Tensor:
    """Deterministic uniforms in (0, 1), ``[R, n]`` float32, from per-row (seed, step).

    A counter-based hash (murmur3 finalizer), so one vectorised op serves every row with its
    own seed; the same (seed, step) always gives the same numbers whatever the batch is.
    """
    s = _fmix32((seed.to(torch.int64) & _M32) ^ 0x5BD1E995)
    base = (s * 0x9E3779B1 + (step.to(torch.int64) & _M32) * 0x85EBCA77) & _M32
    j = torch.arange(n, device=seed.device, dtype=torch.int64)
    h = _fmix32((base[:, None] + j[None, :] * 0xC2B2AE3D) & _M32)
    h = _fmix32(h ^ s[:, None])
    return ((h >> 8).to(torch.float32) + 0.5) * (1.0 / (1 << 24))


def sample_candidates(
    cand: torch.Tensor,
    seen: torch.Tensor | None,
    temperature: torch.Tensor,
    top_p: torch.Tensor,
    repetition_penalty: torch.Tensor,
    seed: torch.Tensor,
    step: torch.Tensor,
) -> torch.Tensor:
    """Sample one candidate column per row; returns ``[R]`` int64 column indices.

    ``cand``: ``[R, C]`` float32 logits, -inf = invalid. ``seen``: ``[R, C]`` bool, True
    where the candidate token was generated before (repetition penalty, vLLM semantics:
    positive logits divided, negative multiplied). Temperature < 1e-5 = greedy.
    """
    x = cand
    if seen is not None:
        pen = repetition_penalty[:, None]
        x = torch.where(seen, torch.where(x > 0, x / pen, x * pen), x)
    # a row with no valid candidate (cannot happen with consistent stop ids) picks column 0
    dead = torch.isneginf(x).all(dim=1, keepdim=True)
    first = torch.zeros_like(x, dtype=torch.bool)
    first[:, 0] = True
    x = torch.where(dead & first, torch.zeros_like(x), x)  # no host sync
    greedy = x.argmax(dim=1)
    temp = torch.where(temperature < _SAMPLING_EPS, torch.ones_like(temperature), temperature)
    probs = torch.softmax(x / temp[:, None], dim=1)
    sp, si = probs.sort(dim=1, descending=True)
    cum = sp.cumsum(dim=1)
    keep = (cum - sp) < top_p[:, None]
    keep[:, 0] = True
    sp = sp.masked_fill(~keep, 0.0)
    expo = -torch.log(counter_uniform(seed, step, sp.shape[1]))
    pick = (sp / expo).argmax(dim=1)
    sampled = si.gather(1, pick[:, None]).squeeze(1)
    return torch.where(temperature < _SAMPLING_EPS, greedy, sampled)


# --------------------------------------------------------------------- vLLM integration
try:  # the base class only exists where vLLM is installed; the class stays importable
    from vllm.v1.sample.logits_processor import LogitsProcessor as _LPBase  # type: ignore
except Exception:  # noqa: BLE001  (vLLM absent or incompatible)
    _LPBase = object  # type: ignore[assignment,misc]


def request_settings(params: Any, key: str = EXTRA_ARGS_KEY) -> dict[str, Any] | None:
    """The kanitts settings in a vLLM SamplingParams' extra_args under ``key`` (None: not ours)."""
    extra = getattr(params, "extra_args", None) or {}
    cfg = extra.get(key)
    if not cfg or cfg.get("mode", "sample") not in ("sample", "mask"):
        return None
    return cfg


# ------------------------------------------------------------ vLLM input-batch integration
_PATCHED = False


def _needs_tokens(proc: Any) -> bool:
    fn = getattr(proc, "needs_output_token_ids", None)
    return True if fn is None else bool(fn())


def patch_vllm_output_token_sync() -> bool:
    """Let vLLM skip its per-step host sync when no logits processor needs real output ids.

    vLLM 0.26 marks *every* custom logits processor as needing the generated token ids
    (``InputBatch.logitsprocs_need_output_token_ids = bool(custom_logitsprocs)``). Under
    async scheduling those ids are ``-1`` placeholders, so before sampling each step vLLM
    waits for the previous step's token copy to reach the host
    (``update_async_output_token_ids`` -> ``async_copy_ready_event.synchronize()``).
    The ``sample`` mode keeps its state on the GPU and never reads them; this wraps
    ``InputBatch._make_sampling_metadata`` (rebuilt on every batch change, right after the
    processors' ``update_state``) so that the flag is the OR of each custom processor's
    ``needs_output_token_ids()`` (True for processors without that method: vLLM's own
    conservative rule). Called in the engine process; ``KANITTS_LP_KEEP_SYNC=1`` disables it.
    """
    global _PATCHED
    if _PATCHED:
        return True
    if os.environ.get("KANITTS_LP_KEEP_SYNC", "") == "1":
        return False
    try:
        from vllm.v1.worker import gpu_input_batch as gib  # type: ignore

        ib_cls = gib.InputBatch
        orig = ib_cls._make_sampling_metadata
    except Exception:  # noqa: BLE001 - vLLM absent or moved: keep its default
        return False

    def _make_sampling_metadata(self: Any) -> Any:
        procs = getattr(self, "logitsprocs", None)
        custom = [p for p in (getattr(procs, "all", None) or [])
                  if not type(p).__module__.startswith("vllm.")]
        if custom:
            self.logitsprocs_need_output_token_ids = any(_needs_tokens(p) for p in custom)
        return orig(self)

    ib_cls._make_sampling_metadata = _make_sampling_metadata
    _PATCHED = True
    return True


class _Row:
    """CPU record of one persistent-batch row handled by the processor."""

    __slots__ = ("mode", "out", "young", "last_len", "pending", "prompt_last")

    def __init__(self, mode: str, out: list[int], prompt_last: int) -> None:
        self.mode = mode
        self.out = out  # vLLM's live list of generated ids (-1 placeholders under async scheduling)
        self.young = True  # may still be in (chunked) prefill: its samples can be discarded
        self.last_len = len(out)
        self.pending = False
        self.prompt_last = prompt_last


_BIG = 1e30  # finite (no NaN under vLLM's temperature/softmax in mixed batches), beats any logit
_NO_BLOCK = -(1 << 20)  # block start of "no codebook valid": block ids stay negative (= invalid)
_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


def layout_table(device: torch.device | str = "cpu") -> torch.Tensor:
    """``[T, 3]`` int64: row ``last + 1`` = (first id of the valid codebook or a large negative
    number, extra id 1, extra id 2) -- :func:`candidate_layout` for every possible last token
    (row 0: no last token). One gather per step replaces ~20 elementwise ops."""
    top = max(AUDIO_TOKEN_END, MODEL_VOCAB_SIZE) + 1
    last = torch.arange(-1, top, dtype=torch.int64)
    lo, e1, e2 = candidate_layout(last)
    lo = torch.where(last < 0, torch.full_like(lo, -1), lo)
    lo = torch.where(lo < 0, torch.full_like(lo, _NO_BLOCK), lo)
    return torch.stack([lo, e1, e2], dim=1).to(device)


class KaniCodebookLogitsProcessor(_LPBase):  # type: ignore[misc,valid-type]
    """Batch-level vLLM v1 logits processor enforcing (and, in ``sample`` mode, doing)
    codebook-restricted sampling. See the module docstring.

    ``sample`` rows keep their whole state on the GPU (last token, RNG step, seen ids,
    sampled-but-uncommitted token): the processor picks the token itself, so it never needs
    vLLM's generated ids. Per step, with no batch change, that is two CUDA-graph replays,
    one gather and one scatter, and no host<->device traffic. The only host-side check is
    for "young" rows (just added): vLLM discards the sample of a row still in chunked prefill,
    which shows as its output list not growing; that row's pending token is then dropped.
    """

    def __init__(self, vllm_config: Any, device: torch.device, is_pin_memory: bool) -> None:
        max_reqs = int(vllm_config.scheduler_config.max_num_seqs) if vllm_config is not None else 256
        self.device = dev = torch.device(device)
        self.max_reqs = max_reqs
        self.pin = dev.type == "cuda" and bool(is_pin_memory)
        m = next((b for b in _BUCKETS if b >= max_reqs), max_reqs)
        self.slots = m  # state rows (graph buckets pad up to here)
        self.rows: list[_Row | None] = [None] * m
        self.young: set[int] = set()
        i64 = {"dtype": torch.int64, "device": dev}
        self.last = torch.full((m,), -1, **i64)
        self.pend = torch.full((m,), -1, **i64)
        self.step = torch.zeros((m,), **i64)
        self.seed = torch.zeros((m,), **i64)
        self.fparams = torch.ones((m, 3), dtype=torch.float32, device=dev)  # temperature, top_p, rep
        self.active = torch.zeros((m,), dtype=torch.bool, device=dev)
        self.seen = torch.zeros((m, SEEN_WIDTH), dtype=torch.bool, device=dev)
        self.table = layout_table(dev)
        self.ar = torch.arange(CODEBOOK_SIZE, **i64)
        self.ids = torch.full((m, NUM_CANDIDATES), -1, **i64)
        self.gidx = torch.zeros((m, NUM_CANDIDATES), **i64)
        self.wb_idx = torch.zeros((m,), **i64)
        self._cand: dict[torch.dtype, torch.Tensor] = {}
        self._wb_val: dict[torch.dtype, torch.Tensor] = {}
        self.n_active = 0
        self.n_mask = 0
        # CUDA graphs of the per-step math, one pair per batch bucket (KANITTS_LP_GRAPHS=0: eager)
        self.use_graphs = dev.type == "cuda" and os.environ.get("KANITTS_LP_GRAPHS", "1") != "0"
        self._graphs: dict[tuple[int, torch.dtype], Any] = {}
        self._seen_buckets: set[tuple[int, torch.dtype]] = set()
        self._pool: Any = None
        self.graph_error: str | None = None
        if dev.type == "cuda":
            patch_vllm_output_token_sync()

    @classmethod
    def validate_params(cls, sampling_params: Any) -> None:
        cfg = (getattr(sampling_params, "extra_args", None) or {}).get(EXTRA_ARGS_KEY)
        if cfg and cfg.get("mode", "sample") not in RESTRICT_MODES:
            raise ValueError(f"kanitts restrict mode must be one of {RESTRICT_MODES}")

    def is_argmax_invariant(self) -> bool:
        return False

    def needs_output_token_ids(self) -> bool:
        """Only ``mask`` rows read vLLM's generated ids (see :func:`patch_vllm_output_token_sync`)."""
        return self.n_mask > 0

    # ------------------------------------------------------------------ host -> device
    def _h2d(self, data: Any, dtype: torch.dtype) -> torch.Tensor:
        """Pinned, non-blocking copy: a pageable host->device copy waits for the GPU stream."""
        t = torch.tensor(data, dtype=dtype)
        if self.device.type != "cuda":
            return t
        if self.pin:
            t = t.pin_memory()
        return t.to(self.device, non_blocking=self.pin)

    # ------------------------------------------------- persistent batch bookkeeping
    def update_state(self, batch_update: Any) -> None:
        """Order as vLLM applies it: removed, added, moved."""
        if not batch_update:
            return
        rows = self.rows
        for index in batch_update.removed:
            rows[index] = None
            self.young.discard(index)
        add_i: list[list[int]] = []
        add_f: list[list[float]] = []
        seen_r: list[int] = []
        seen_c: list[int] = []
        for index, params, prompt_ids, output_ids in batch_update.added:
            cfg = request_settings(params)
            self.young.discard(index)
            if cfg is None:
                rows[index] = None
                continue
            mode = cfg.get("mode", "sample")
            prompt_last = int(prompt_ids[-1]) if prompt_ids else -1
            row = _Row(mode, output_ids, prompt_last)
            rows[index] = row
            if mode != "sample":
                continue
            self.young.add(index)
            seed = cfg.get("seed")
            if seed is None:
                seed = random.getrandbits(31)
            # a re-added row (preempted / unscheduled) comes back with its real ids
            real = [t for t in output_ids if t >= 0]
            last = real[-1] if real else prompt_last
            add_i.append([index, last, len(output_ids), int(seed)])
            add_f.append([float(cfg.get("temperature", 1.0)), float(cfg.get("top_p", 1.0)),
                          float(cfg.get("repetition_penalty", 1.0))])
            for t in real:
                if SEEN_LO <= t < SEEN_LO + SEEN_WIDTH:
                    seen_r.append(index)
                    seen_c.append(t - SEEN_LO)
        if add_i:
            ints = self._h2d(add_i, torch.int64)
            idx = ints[:, 0]
            self.last.index_copy_(0, idx, ints[:, 1])
            self.step.index_copy_(0, idx, ints[:, 2])
            self.seed.index_copy_(0, idx, ints[:, 3])
            self.pend.index_fill_(0, idx, -1)
            self.fparams.index_copy_(0, idx, self._h2d(add_f, torch.float32))
            self.seen.index_fill_(0, idx, False)
            if seen_r:
                rc = self._h2d([seen_r, seen_c], torch.int64)
                self.seen[rc[0], rc[1]] = True
        if batch_update.moved:
            src: dict[int, int] = {}  # slot -> slot whose (pre-move) content it now holds

            def cur(k: int) -> int:
                return src.get(k, k)

            for a, b, direction in batch_update.moved:
                swap = getattr(direction, "name", direction) == "SWAP"
                ra, rb = rows[a], rows[b]
                ca, cb = cur(a), cur(b)
                rows[b] = ra
                src[b] = ca
                ya, yb = a in self.young, b in self.young
                self.young.discard(a)
                self.young.discard(b)
                if ya:
                    self.young.add(b)
                if swap:
                    rows[a] = rb
                    src[a] = cb
                    if yb:
                        self.young.add(a)
                else:
                    rows[a] = None
            moves = [(d, s) for d, s in src.items() if d != s]
            if moves:
                ds = self._h2d([[d for d, _ in moves], [s for _, s in moves]], torch.int64)
                dst, srci = ds[0], ds[1]
                for t in (self.last, self.pend, self.step, self.seed, self.fparams, self.seen):
                    t.index_copy_(0, dst, t.index_select(0, srci))
        act = [r is not None and r.mode == "sample" for r in rows]
        self.n_active = sum(act)
        self.n_mask = sum(1 for r in rows if r is not None and r.mode == "mask")
        self.active.copy_(self._h2d(act, torch.bool))

    # ---------------------------------------------------------------- per-step math
    def _pre(self, r: int) -> None:
        """Commit last step's samples, then the candidate ids of each row (graph-capturable)."""
        p = self.pend[:r]
        acc = p >= 0
        self.last[:r] = torch.where(acc, p, self.last[:r])
        self.step[:r] += acc.to(torch.int64)
        col = (p - SEEN_LO).clamp(0, SEEN_WIDTH - 1)[:, None]
        inr = (acc & (p >= SEEN_LO) & (p < SEEN_LO + SEEN_WIDTH))[:, None]
        seen = self.seen[:r]
        seen.scatter_(1, col, seen.gather(1, col) | inr)
        self.pend[:r] = -1
        lay = self.table[(self.last[:r] + 1).clamp(0, self.table.shape[0] - 1)]
        ids = torch.cat([lay[:, :1] + self.ar, lay[:, 1:]], dim=1)
        self.ids[:r] = ids
        self.gidx[:r] = ids.clamp(min=0)

    def _post(self, r: int, dtype: torch.dtype) -> None:
        """Sample on the gathered candidates; record the pick (graph-capturable)."""
        ids = self.ids[:r]
        valid = ids >= 0
        cand = self._cand[dtype][:r]
        x = cand.float().masked_fill(~valid, _NEG_INF)
        seen = self.seen[:r].gather(1, (ids - SEEN_LO).clamp(0, SEEN_WIDTH - 1)) & valid
        fp = self.fparams[:r]
        col = sample_candidates(x, seen, fp[:, 0], fp[:, 1], fp[:, 2], self.seed[:r], self.step[:r])
        chosen = ids.gather(1, col[:, None]).squeeze(1)
        ok = self.active[:r] & (chosen >= 0)
        self.pend[:r] = torch.where(ok, chosen, torch.full_like(chosen, -1))
        # rows not ours get their own first gathered logit written back (a no-op)
        self.wb_idx[:r] = torch.where(ok, chosen, self.gidx[:r, 0])
        self._wb_val[dtype][:r] = torch.where(ok, torch.full_like(cand[:, 0], _BIG), cand[:, 0])

    def _buffers(self, dtype: torch.dtype) -> None:
        if dtype not in self._cand:
            self._cand[dtype] = torch.zeros((self.slots, NUM_CANDIDATES), dtype=dtype, device=self.device)
            self._wb_val[dtype] = torch.zeros((self.slots,), dtype=dtype, device=self.device)

    def _graph(self, rb: int, dtype: torch.dtype) -> Any:
        """(pre, post) CUDA graphs for bucket ``rb``: captured on a bucket's second use (its
        first runs eagerly, which also initialises the kernels); None = run eagerly."""
        if not self.use_graphs:
            return None
        key = (rb, dtype)
        g = self._graphs.get(key)
        if g is not None or key not in self._seen_buckets:
            self._seen_buckets.add(key)
            return g
        try:
            if self._pool is None:
                self._pool = torch.cuda.graph_pool_handle()
            ga, gb = torch.cuda.CUDAGraph(), torch.cuda.CUDAGraph()
            with torch.cuda.graph(ga, pool=self._pool, capture_error_mode="thread_local"):
                self._pre(rb)
            with torch.cuda.graph(gb, pool=self._pool, capture_error_mode="thread_local"):
                self._post(rb, dtype)
            g = (ga, gb)
            self._graphs[key] = g
        except Exception as e:  # noqa: BLE001 - any capture problem: stay eager, say why once
            self.use_graphs = False
            self.graph_error = repr(e)[:500]
            logger.warning("kanitts logits processor: CUDA graph capture failed, running eagerly: %s",
                           self.graph_error)
            return None
        return g

    def _check_young(self) -> None:
        """Drop the pending sample of rows whose last step vLLM discarded (chunked prefill)."""
        drop = []
        for i in list(self.young):
            row = self.rows[i]
            if row is None or row.mode != "sample":
                self.young.discard(i)
                continue
            n = len(row.out)
            if row.pending:
                if n > row.last_len:
                    self.young.discard(i)  # accepted: decoding from now on
                else:
                    drop.append(i)
            row.last_len = n
            row.pending = True
        if drop:
            self.pend.index_fill_(0, self._h2d(drop, torch.int64), -1)

    def _apply_mask(self, logits: torch.Tensor, b: int) -> None:
        rows_i, lasts = [], []
        for i in range(min(b, self.slots)):
            row = self.rows[i]
            if row is None or row.mode != "mask":
                continue
            real = [t for t in row.out if t >= 0]  # vLLM repairs placeholders for mask rows
            rows_i.append(i)
            lasts.append(real[-1] if real else row.prompt_last)
        if not rows_i:
            return
        rl = self._h2d([rows_i, lasts], torch.int64)
        rows, lt = rl[0], rl[1]
        cand, ids = gather_candidates(logits, rows, lt)
        new = torch.full((len(rows_i), logits.shape[1]), _NEG_INF, dtype=logits.dtype, device=logits.device)
        new.scatter_(1, ids.clamp(min=0), cand.to(logits.dtype))  # invalid -> -inf on id 0 (never valid)
        logits[rows] = new

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        b = int(logits.shape[0])
        if self.n_mask:
            self._apply_mask(logits, b)
        if not self.n_active or b == 0:
            return logits
        if self.young:
            self._check_young()
        dtype = logits.dtype
        self._buffers(dtype)
        rb = next((x for x in _BUCKETS if x >= b), b) if self.use_graphs else b
        rb = min(rb, self.slots) if rb > b else rb
        g = self._graph(rb, dtype)
        if g is not None:
            g[0].replay()
        else:
            self._pre(rb)
        torch.gather(logits, 1, self.gidx[:b], out=self._cand[dtype][:b])
        if g is not None:
            g[1].replay()
        else:
            self._post(rb, dtype)
        logits.scatter_(1, self.wb_idx[:b, None], self._wb_val[dtype][:b, None])
        return logits
