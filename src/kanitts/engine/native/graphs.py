"""The decode step over the first ``b`` slots, and its CUDA graphs (one per batch bucket).

Buckets are 1, 2, 4, ... up to the pool size (the pool size itself is the last bucket).
A step runs the smallest bucket that covers every slot in use; slots inside it that are
not in use are computed as padding and ignored. Graphs are captured at start-up after a
warm-up, largest bucket first, all sharing one memory pool; optionally the step is first
fused by ``torch.compile`` (Inductor). CPU and ``graphs=False`` run the same step eagerly.
Rows of unconstrained requests need the full head: such steps always run eagerly.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
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


def pick_bucket(n: int, sizes: list[int]) -> int:
    """The smallest bucket holding ``n`` slots (ValueError if none does)."""
    for b in sizes:
        if b >= n:
            return b
    raise ValueError(f"{n} slots exceed the largest bucket {sizes[-1]}")


#: ``(tokens [b], cache_index [b], active [b]) -> positions [b] float32``: a model's own
#: decode positions (KaniTTS-2's frame-level ones); it may advance its own per-slot state
#: for active slots and must not sync with the host. None: ``pool.rope_pos`` (+1 per token).
PositionRule = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


class DecodeStep:
    """One token for slots ``0..b-1``: model step, sampling, state advance (all on device)."""

    def __init__(self, model: Lfm2, pool: SlotPool, sampler: Sampler, *, graphs: bool = False,
                 compile: bool = False, positions: PositionRule | None = None) -> None:
        self.model, self.pool, self.sampler = model, pool, sampler
        self.positions = positions
        self.sizes = bucket_sizes(pool.size)
        self.use_graphs = graphs and model.device.type == "cuda"
        self.graphs: dict[int, Any] = {}
        self._fn = self._step
        if compile:
            import torch._dynamo

            torch._dynamo.config.cache_size_limit = max(64, 2 * len(self.sizes) + 8)
            self._fn = torch.compile(self._step, dynamic=False, fullgraph=False)
        self.capture_seconds = 0.0

    def _step(self, b: int) -> torch.Tensor:
        return self.step_eager(b, False)

    def step_eager(self, b: int, any_unconstrained: bool) -> torch.Tensor:
        p = self.pool
        idx = p.cache_len[:b].clamp(max=p.max_len - 1)
        pos = p.rope_pos[:b] if self.positions is None else self.positions(p.tok[:b], idx, p.active[:b])
        hidden = self.model.decode(p.cache, p.tok[:b], idx, pos)
        act = p.active[:b]
        p.cache_len[:b].add_(act.to(torch.int64))
        p.rope_pos[:b].add_(p.pos_step[:b] * act.to(torch.float32))
        return self.sampler.sample(hidden, slice(0, b), any_unconstrained)

    def capture(self) -> None:
        """Warm up and capture every bucket (CUDA only). Call while no slot is in use."""
        if not self.use_graphs:
            return
        t0 = time.perf_counter()
        p = self.pool
        saved = p.active.clone()
        p.active.zero_()  # warm-up and capture must not advance any slot
        mempool = torch.cuda.graph_pool_handle()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.inference_mode():
            with torch.cuda.stream(side):
                for b in self.sizes:
                    for _ in range(3):
                        self._fn(b)
            torch.cuda.current_stream().wait_stream(side)
            torch.cuda.synchronize()
            for b in sorted(self.sizes, reverse=True):
                g = torch.cuda.CUDAGraph()
                with torch.cuda.graph(g, pool=mempool):
                    self._fn(b)
                self.graphs[b] = g
        torch.cuda.synchronize()
        p.active.copy_(saved)
        self.capture_seconds = time.perf_counter() - t0
        logger.info("native engine: captured %d decode graphs in %.1f s", len(self.graphs), self.capture_seconds)

    def run(self, bound: int, any_unconstrained: bool = False) -> int:
        """Advance slots ``0..bound-1`` (padded to a bucket) by one token; returns the bucket.
        The new tokens are in ``pool.tok[:bucket]``."""
        b = pick_bucket(bound, self.sizes)
        g = self.graphs.get(b)
        if g is not None and not any_unconstrained:
            g.replay()
        elif any_unconstrained:
            self.step_eager(b, True)
        else:
            self._fn(b)
        return b
