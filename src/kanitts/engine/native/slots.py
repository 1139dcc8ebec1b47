"""The static slot pool: ``max_num_seqs`` slots, each with its model state and sampling state.

All per-slot state lives in preallocated device tensors, so a decode step over slots
``0..b-1`` has fixed shapes (CUDA-graph friendly) and admitting a request is a few small
host->device copies into its row. Free slots are handed out lowest index first, so the
active slots stay packed at the front and the decode bucket stays small.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from kanitts.engine.native.model import Lfm2, StateCache

#: Most stop ids one request may carry (the default is 2).
MAX_STOP_IDS = 8


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Host -> device without waiting for the device's queued work (pinned, non-blocking on CUDA)."""
    if device.type != "cuda":
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)


@dataclass(frozen=True)
class SlotParams:
    """What admitting a request writes into its slot (host values)."""

    prompt: Sequence[int]
    temperature: float
    top_p: float
    repetition_penalty: float
    seed: int
    min_tokens: int
    constrained: bool
    stop_ids: Sequence[int]


class SlotPool:
    """Per-slot tensors (``S`` = slots, ``T`` = positions, ``V`` = vocab), all on the model's device:

    * ``tok [S] int64``: the last token (next decode input); ``cache_len [S] int64``: cached
      positions (where the next K/V go); ``rope_pos [S] float32``: the next RoPE position,
      advanced by ``pos_step [S]`` per token; ``active [S] bool``;
    * sampling: ``gen [S] int64`` tokens sampled so far (also the RNG counter), ``seed``,
      ``min_tokens``, ``temperature``/``top_p``/``rep_penalty [S] float32``,
      ``constrained [S] bool``, ``stop_ids [S, MAX_STOP_IDS]`` (-1 = none) and
      ``seen [S, V] bool`` (prompt + generated ids, for the repetition penalty);
    * ``slot_ids [S] int64``: ``0..S-1`` (index tensors for writes into a prefix of slots).
    """

    def __init__(self, model: Lfm2, slots: int, max_len: int) -> None:
        if slots < 1 or max_len < 2:
            raise ValueError("a slot pool needs at least 1 slot and 2 positions")
        dev = model.device
        self.size, self.max_len = slots, max_len
        self.device = dev
        self.cache = StateCache(model.spec, slots, max_len, dev, model.dtype)
        i64 = {"dtype": torch.int64, "device": dev}
        f32 = {"dtype": torch.float32, "device": dev}
        self.tok = torch.zeros(slots, **i64)
        self.cache_len = torch.zeros(slots, **i64)
        self.rope_pos = torch.zeros(slots, **f32)
        self.pos_step = torch.ones(slots, **f32)
        self.active = torch.zeros(slots, dtype=torch.bool, device=dev)
        self.gen = torch.zeros(slots, **i64)
        self.seed = torch.zeros(slots, **i64)
        self.min_tokens = torch.zeros(slots, **i64)
        self.temperature = torch.ones(slots, **f32)
        self.top_p = torch.ones(slots, **f32)
        self.rep_penalty = torch.ones(slots, **f32)
        self.constrained = torch.ones(slots, dtype=torch.bool, device=dev)
        self.stop_ids = torch.full((slots, MAX_STOP_IDS), -1, **i64)
        self.seen = torch.zeros(slots, model.spec.vocab_size, dtype=torch.bool, device=dev)
        self.slot_ids = torch.arange(slots, device=dev)  # constant; ``slot_ids[:b]`` indexes slots 0..b-1
        self._free = list(range(slots))
        heapq.heapify(self._free)
        self.used: set[int] = set()

    # -- host bookkeeping -------------------------------------------------------------------
    @property
    def free_count(self) -> int:
        return len(self._free)

    def take(self) -> int:
        """The lowest free slot (IndexError when full)."""
        s = heapq.heappop(self._free)
        self.used.add(s)
        return s

    def release(self, slot: int) -> None:
        """Mark ``slot`` free; its device rows are reset by the next :meth:`admit`."""
        if slot in self.used:
            self.used.discard(slot)
            heapq.heappush(self._free, slot)
            self.active.narrow(0, slot, 1).fill_(False)  # a fill kernel, no host copy

    def bound(self) -> int:
        """1 + the highest slot in use (0 when none): the prefix a decode step must cover."""
        return max(self.used) + 1 if self.used else 0

    # -- device rows ------------------------------------------------------------------------
    def admit(self, slots: Sequence[int], params: Sequence[SlotParams]) -> None:
        """Reset the sampling state of ``slots`` for new requests (model state is written by
        prefill). A few batched host->device copies, whatever the number of slots."""
        dev = self.device
        idx = to_device(torch.tensor(list(slots), dtype=torch.int64), dev)
        ints = to_device(torch.tensor([[p.seed & 0x7FFFFFFF, p.min_tokens] for p in params], dtype=torch.int64), dev)
        flts = to_device(torch.tensor([[p.temperature, p.top_p, p.repetition_penalty] for p in params],
                                      dtype=torch.float32), dev)
        stops = torch.full((len(params), MAX_STOP_IDS), -1, dtype=torch.int64)
        for r, p in enumerate(params):
            if len(p.stop_ids) > MAX_STOP_IDS:
                raise ValueError(f"at most {MAX_STOP_IDS} stop token ids per request")
            stops[r, : len(p.stop_ids)] = torch.tensor(list(p.stop_ids), dtype=torch.int64)
        self.seed.index_copy_(0, idx, ints[:, 0])
        self.min_tokens.index_copy_(0, idx, ints[:, 1])
        self.temperature.index_copy_(0, idx, flts[:, 0])
        self.top_p.index_copy_(0, idx, flts[:, 1])
        self.rep_penalty.index_copy_(0, idx, flts[:, 2])
        self.constrained.index_copy_(0, idx, to_device(torch.tensor([p.constrained for p in params]), dev))
        self.stop_ids.index_copy_(0, idx, to_device(stops, dev))
        self.gen.index_fill_(0, idx, 0)
        self.pos_step.index_fill_(0, idx, 1.0)
        self.seen.index_fill_(0, idx, False)
        rows = [r for r, p in zip(slots, params) for _ in p.prompt]
        cols = [int(t) for p in params for t in p.prompt]
        if rows:
            rc = to_device(torch.tensor([rows, cols], dtype=torch.int64), dev)
            self.seen.index_put_((rc[0], rc[1].clamp(0, self.seen.shape[1] - 1)),
                                 torch.ones((), dtype=torch.bool, device=dev))
        self.active.index_fill_(0, idx, True)
