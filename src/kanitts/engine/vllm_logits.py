"""Codebook-restricted decoding inside vLLM: the v1 custom logits processor.

Which ids are valid (and the sampling math) lives in :mod:`kanitts.engine.codebook_constraint`.
Two ways to enforce it, chosen per request through ``SamplingParams.extra_args["kanitts"]``:

* ``mode="sample"`` (default, the fast path): the processor *samples* the token itself
  on the 4,032 (+2 special) candidates of the row — repetition penalty, temperature,
  top-p and a counter-based seeded RNG, all on a ``[rows, 4034]`` tensor — and hands vLLM
  a one-hot row. The request is sent to vLLM as greedy with no penalties, so vLLM's own
  sampler does an argmax only and never builds the ``[batch, 80539]`` penalty / top-p
  work that halves throughput at batch 256.
* ``mode="mask"``: the processor sets every invalid logit to -inf and vLLM samples as
  usual over the full vocabulary (same validity guarantee, no speed gain).

The vLLM class below only tracks the persistent batch and calls the pure pieces.
"""


from __future__ import annotations

import logging
import os
import random
from typing import Any

import torch

from kanitts.engine.codebook_constraint import (
    _BIG,
    _NEG_INF,
    EXTRA_ARGS_KEY,
    NUM_CANDIDATES,
    RESTRICT_MODES,
    SEEN_LO,
    SEEN_WIDTH,
    gather_candidates,
    layout_table,
    request_settings,
    sample_candidates,
)
from kanitts.engine.vllm_patch import patch_vllm_output_token_sync
from kanitts.tokens import CODEBOOK_SIZE

logger = logging.getLogger(__name__)

#: FQCN that vLLM loads in its engine process (``logits_processors=[...]`` engine arg).
LOGITS_PROCESSOR_FQCN = "kanitts.engine.vllm_logits:KaniCodebookLogitsProcessor"
_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)

try:  # the base class only exists where vLLM is installed; the class stays importable
    from vllm.v1.sample.logits_processor import LogitsProcessor as _LPBase  # type: ignore
except Exception:  # noqa: BLE001  (vLLM absent or incompatible)
    _LPBase = object  # type: ignore[assignment,misc]


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
