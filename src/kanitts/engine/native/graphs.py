"""The decode step over the first ``b`` slots, and its CUDA graphs (one per batch bucket).

Buckets are 1, 2, 4, ... up to the pool size (the pool size itself is the last bucket).
A step runs the smallest bucket that covers every slot in use; slots inside it that are
not in use are computed as padding and ignored. Graphs are captured at start-up after a
warm-up, largest bucket first, all sharing one memory pool; optionally the whole step is first
fused by ``torch.compile`` (Inductor, any device; a C++ compiler on the CPU). CPU and
``graphs=False`` run the same step without graphs. Rows of unconstrained requests need the
full head: such steps always run eagerly (uncompiled).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import torch

from kanitts.engine.native.model import Lfm2
from kanitts.engine.native.sampler import Sampler
from kanitts.engine.native.slots import SlotPool

logger = logging.getLogger(__name__)


def bucket_sizes(max_slots: int) -> list[int]:
    """``[1, 2, 4, ..., max_slots]``: powers of two below the pool size, then the pool size."""
    if max_slots < 1:
        raise ValueError("max_slots must be >= 1")
    sizes, b = [], 1
    while b < max_slots:
        sizes.append(b)
        b *= 2
    sizes.append(max_slots)
    return sizes


def length_buckets(max_len: int, smallest: int = 256) -> list[int]:
    """Attention spans: ``smallest, 2*smallest, ...`` below ``max_len``, then ``max_len``."""
    sizes, a = [], smallest
    while a < max_len:
        sizes.append(a)
        a *= 2
    sizes.append(max_len)
    return sizes


def pick_bucket(n: int, sizes: list[int]) -> int:
    """The smallest bucket holding ``n`` (ValueError if none does)."""
    for b in sizes:
        if b >= n:
            return b
    raise ValueError(f"{n} exceeds the largest bucket {sizes[-1]}")


class DecodeStep:
    """One token for slots ``0..b-1``: model step, sampling, state advance (all on device).

    Graphs are keyed by (batch bucket, attention span): a step attends over the first
    ``span`` cache positions only, the smallest span covering every slot in use, so short
    streams do not pay for ``max_model_len``. ``sizes`` / ``spans`` override the buckets.
    ``compile``: Inductor-fuse the step; ``dynamic`` is ``torch.compile``'s (False: one
    specialised graph per (bucket, span); None: sizes turn symbolic after the first change,
    a few graphs in all, shorter start-up).
    """

    def __init__(self, model: Lfm2, pool: SlotPool, sampler: Sampler, *, graphs: bool = False,
                 compile: bool = False, dynamic: bool | None = False, sizes: list[int] | None = None,
                 spans: list[int] | None = None) -> None:
        self.model, self.pool, self.sampler = model, pool, sampler
        self.sizes = sizes or bucket_sizes(pool.size)
        self.spans = spans or length_buckets(pool.max_len)
        self.use_graphs = graphs and model.device.type == "cuda"
        self.graphs: dict[tuple[int, int], Any] = {}
        self._fn = self._constrained_step
        if compile:
            # The whole constrained step (forward, codebook head, sampling, state advance) is
            # one Inductor graph (per (bucket, span) when not dynamic): fullgraph=True makes a
            # graph break an error. Every state write lands on the state tensor itself (no writes through
            # views), so Inductor updates the cache in place instead of copying it.
            import torch._dynamo

            limit = max(64, 2 * len(self.sizes) * len(self.spans) + 8)
            for key in ("cache_size_limit", "recompile_limit"):
                if hasattr(torch._dynamo.config, key):
                    setattr(torch._dynamo.config, key, limit)
            self._fn = torch.compile(self._constrained_step, dynamic=dynamic, fullgraph=True)
        self.capture_seconds = 0.0
        #: the graphs' memory pool (a ``torch.cuda.graph_pool_handle()``) once captured; the
        #: prefill graphs are captured into it too
        self.mempool: Any = None

    def _constrained_step(self, b: int, span: int) -> torch.Tensor:
        return self.step_eager(b, span, False)

    def step_eager(self, b: int, span: int, any_unconstrained: bool) -> torch.Tensor:
        """The step, uncompiled and without a graph: new tokens ``[b]`` int64."""
        p = self.pool
        rows = p.slot_ids[:b]
        idx = p.cache_len[:b].clamp(max=p.max_len - 1)
        # clamped: a -1 (an active row that had no valid candidate; its request is failed on
        # the host) must not index the embedding (a device-side assert kills the CUDA context)
        hidden = self.model.decode(p.cache, p.tok[:b].clamp(min=0), idx, p.rope_pos[:b], attn_len=span)
        act = p.active[:b]
        p.cache_len.index_copy_(0, rows, p.cache_len[:b] + act.to(torch.int64))
        p.rope_pos.index_copy_(0, rows, p.rope_pos[:b] + p.pos_step[:b] * act.to(torch.float32))
        return self.sampler.sample(hidden, slice(0, b), any_unconstrained)

    def capture(self, mempool: Any = None) -> None:
        """Warm up and capture every (bucket, span) (CUDA only) into ``mempool`` (None: a new
        pool, kept in :attr:`mempool`). Call while no slot is in use."""
        if not self.use_graphs:
            return
        t0 = time.perf_counter()
        p = self.pool
        saved = p.active.clone()
        p.active.zero_()  # warm-up and capture must not advance any slot
        mempool = mempool if mempool is not None else torch.cuda.graph_pool_handle()
        self.mempool = mempool
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        keys = [(b, a) for b in self.sizes for a in self.spans]
        with torch.inference_mode():
            with torch.cuda.stream(side):
                for b, a in keys:
                    for _ in range(2):
                        self._fn(b, a)
            torch.cuda.current_stream().wait_stream(side)
            torch.cuda.synchronize()
            for b, a in sorted(keys, reverse=True):
                g = torch.cuda.CUDAGraph()
                with torch.cuda.graph(g, pool=mempool):
                    self._fn(b, a)
                self.graphs[(b, a)] = g
        torch.cuda.synchronize()
        p.active.copy_(saved)
        self.capture_seconds = time.perf_counter() - t0
        logger.info("native engine: captured %d decode graphs in %.1f s", len(self.graphs), self.capture_seconds)

    def run(self, bound: int, needed_len: int, any_unconstrained: bool = False) -> int:
        """Advance slots ``0..bound-1`` (padded to a bucket) by one token, attending over at
        least ``needed_len`` positions; returns the bucket. New tokens: ``pool.tok[:bucket]``."""
        b = pick_bucket(bound, self.sizes)
        span = pick_bucket(min(needed_len, self.pool.max_len), self.spans)
        g = self.graphs.get((b, span))
        if any_unconstrained:
            self.step_eager(b, span, True)
        elif g is not None:
            g.replay()
        else:
            self._fn(b, span)
        return b
