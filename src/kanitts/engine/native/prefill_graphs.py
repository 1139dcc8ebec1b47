"""The admission prefill as CUDA graphs: prompts -> slot state + first tokens.

One graph per (group bucket, width bucket) holds the whole admission on the device: the
prefill (:meth:`Lfm2.prefill`: K/V rows, conv state), the last real row's hidden state, the
slot writes the eager path does (``cache_len``, ``rope_pos``, ``tok``; KaniTTS-2's frame state)
and the first token's sampling (:meth:`Sampler.sample`, codebook head). Replaying it costs one
host->device copy of the packed inputs and one launch instead of ~400 kernels dispatched from
Python.

* **group buckets** ``1, 2, 4, 8`` (capped by the pool size): a group of ``n`` runs as the
  smallest bucket holding it; a larger group runs as several replays of at most 8 rows, in
  order (each row's state depends only on its own prompt, so chunks give the same result).
  A graph holds at most :data:`MAX_GRAPH_ROWS` padded rows (group x width), so groups of
  wide prompts replay in smaller chunks (8 x 256 -> 2 x (4 x 256)).
* **width buckets** :data:`PREFILL_WIDTHS` (capped by ``max_model_len``): multiples of
  :data:`PREFILL_ALIGN`, every one up to 64 (where TTS prompts are: 20-60 tokens plus the
  opening and the speaker row), coarser up to 256 (fewer graphs where prompts are rarer).
  Wider prompts take the eager path.
* **padding**: a group padded to its bucket repeats its last real row (same slot, ids,
  length, last id, speaker): every write a pad row makes is the write the real row makes,
  with the same value (``index_copy_`` / ``index_put_`` with duplicate indices and equal
  values; ``gen`` is written as ``gen[rows] + 1`` read before the write, so it advances
  once; ``seen`` only ever gets True). No other slot is touched.
* **fallbacks** (the scheduler's eager path): a row wider than the widest bucket, or any
  unconstrained (full-head) request in the group.
* **memory**: graphs are captured into the decode graphs' memory pool (their temporaries are
  never live at the same time), so the pool grows only by what the largest prefill needs
  beyond the largest decode step; :attr:`GroupPrefill.pool_growth_mib` records it.

Without graphs (CPU, ``graphs=False``) the same padded computation runs eagerly on the same
buffers, which is what the CPU tests check against the unpadded eager prefill.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import torch

from kanitts.engine.native.graphs import bucket_sizes, pick_bucket
from kanitts.engine.native.kanitts2 import (
    SPEAKER_PLACEHOLDER,
    Kani2Runtime,
    frame_positions,
    splice_speaker,
)
from kanitts.engine.native.model import Lfm2
from kanitts.engine.native.sampler import Sampler
from kanitts.engine.native.slots import SlotPool

logger = logging.getLogger(__name__)

#: Prefill widths are padded up to a multiple of this (eager and graphed).
PREFILL_ALIGN = 16
#: Width buckets of the graphed prefill (cache rows of the widest prompt, padded).
PREFILL_WIDTHS = (16, 32, 48, 64, 96, 128, 192, 256)
#: The largest group one graph replay prefills.
MAX_GRAPH_GROUP = 8
#: The most padded rows (group x width) one prefill graph holds: its temporaries (~50 KB a row
#: for the 350M model) set the memory pool's size, so 8 prompts of 129-256 rows run as 2 x 4.
MAX_GRAPH_ROWS = 1024
#: ... and for a small pool at most this many per slot (the ``low_vram`` preset's 4 slots:
#: 256 rows, 1 x 256 .. 4 x 64): its graph pool is then sized by its small decode steps.
GRAPH_ROWS_PER_SLOT = 64
#: The largest admission the graphs take (two replays of 8); a larger group runs the eager
#: prefill, which is faster there (H200, 24-row prompts, submit -> first token: 16 prompts
#: 4.9 ms graphed vs 9.7 eager; 64 prompts 18.4 ms graphed as 8 replays vs 11.0 eager).
MAX_GRAPHED_ADMISSION = 2 * MAX_GRAPH_GROUP
#: Integer inputs per row besides the ids: slot, length, last prompt id, has a speaker row.
_META = 4


def prefill_and_sample(model: Lfm2, pool: SlotPool, sampler: Sampler, kani2: Kani2Runtime | None,
                       slots: torch.Tensor, ids: torch.Tensor, lens: torch.Tensor, last: torch.Tensor,
                       rows: torch.Tensor, unconstrained: bool, **kw: torch.Tensor) -> torch.Tensor:
    """An admission on the device, eager or inside a graph: prefill ``ids`` ``[n, L]`` into
    ``slots`` ``[n]`` (real lengths ``lens``, ``kw`` KaniTTS-2's positions and speaker rows),
    set each slot's ``cache_len``, ``rope_pos`` and ``tok`` (``last`` ``[n]``: the prompts'
    last ids) and sample the first tokens from each prompt's last row (``rows`` =
    ``arange(n)`` on the device). Returns them ``[n]`` int64."""
    hidden = model.prefill(pool.cache, slots, ids, lens, **kw)
    if kani2 is not None:
        kani2.reset(slots)
    h_last = hidden[rows, lens - 1]
    pool.cache_len.index_copy_(0, slots, lens)
    pool.rope_pos.index_copy_(0, slots, lens.to(torch.float32))
    pool.tok.index_copy_(0, slots, last)
    return sampler.sample(h_last, slots, unconstrained)


def group_buckets(slots: int) -> list[int]:
    """Group sizes with a graph: ``1, 2, 4, 8``, capped by the pool size."""
    return bucket_sizes(min(MAX_GRAPH_GROUP, slots))


def width_buckets(max_len: int) -> list[int]:
    """Width buckets that fit ``max_len`` positions (possibly none)."""
    return [w for w in PREFILL_WIDTHS if w <= max_len]


class GroupPrefill:
    """Prefill + first token of admitted groups, graphed per (group, width) bucket on CUDA.

    ``groups`` / ``widths`` override the buckets (widths must be multiples of
    :data:`PREFILL_ALIGN` and at most ``pool.max_len``), ``max_rows`` the padded rows a graph
    may hold (default :data:`MAX_GRAPH_ROWS`, or :data:`GRAPH_ROWS_PER_SLOT` per slot when
    fewer; never less than the widest width). ``kani2``: the KaniTTS-2 runtime
    (speaker rows, frame-level positions), None for v1. Call :meth:`capture` once, at
    start-up, while no slot is in use; then :meth:`run` per admitted group.
    """

    def __init__(self, model: Lfm2, pool: SlotPool, sampler: Sampler, kani2: Kani2Runtime | None = None, *,
                 graphs: bool = False, groups: list[int] | None = None, widths: list[int] | None = None,
                 max_rows: int | None = None) -> None:
        self.model, self.pool, self.sampler, self.kani2 = model, pool, sampler, kani2
        self.groups = groups or group_buckets(pool.size)
        self.widths = widths if widths is not None else width_buckets(pool.max_len)
        if any(w % PREFILL_ALIGN or w > pool.max_len for w in self.widths):
            raise ValueError(f"prefill widths must be multiples of {PREFILL_ALIGN} up to {pool.max_len}")
        self.use_graphs = graphs and model.device.type == "cuda"
        if max_rows is None:
            max_rows = min(MAX_GRAPH_ROWS, GRAPH_ROWS_PER_SLOT * pool.size)
        self.max_rows = max(max_rows, max(self.widths, default=0))
        #: the (group, width) buckets that get a graph: at most ``max_rows`` padded rows
        self.keys = sorted(((g, w) for g in self.groups for w in self.widths if g * w <= self.max_rows),
                           reverse=True)
        self.graphs: dict[tuple[int, int], Any] = {}
        self.capture_seconds = 0.0
        self.pool_growth_mib = 0.0
        dev = model.device
        gmax, wmax = max(self.groups), max(self.widths, default=0)
        # static inputs: for bucket (g, w) the first g*w values are the ids [g, w], the next
        # 4*g the per-row meta [4, g] (slot, length, last id, has speaker), all contiguous
        self._ints = torch.zeros(gmax * (wmax + _META), dtype=torch.int64, device=dev)
        self._spk = (torch.zeros(gmax, kani2.speaker_dim, dtype=torch.float32, device=dev)
                     if kani2 is not None else None)
        self._first = torch.zeros(gmax, dtype=torch.int64, device=dev)
        self._ar = torch.arange(max(gmax, wmax, 2), device=dev)
        self._pin = dev.type == "cuda"
        self._pad_id = SPEAKER_PLACEHOLDER if kani2 is not None else 0

    @property
    def max_width(self) -> int:
        return max(self.widths, default=0)

    def takes(self, prompts: int, rows: int) -> bool:
        """Whether an admission of ``prompts`` prompts, the widest filling ``rows`` cache
        rows, should run here (:data:`MAX_GRAPHED_ADMISSION`, :meth:`covers`)."""
        return prompts <= MAX_GRAPHED_ADMISSION and self.covers(rows)

    def covers(self, rows: int) -> bool:
        """Whether a prompt filling ``rows`` cache rows fits a width bucket."""
        return 0 < rows <= self.max_width

    # -- the padded computation (captured, or run as is) --------------------------------------
    def _forward(self, g: int, w: int) -> None:
        flat = self._ints
        ids = flat[: g * w].view(g, w)
        meta = flat[g * w: g * w + _META * g].view(_META, g)
        slots, lens, last = meta[0], meta[1], meta[2]
        kw: dict[str, torch.Tensor] = {}
        if self.kani2 is not None:
            assert self._spk is not None
            kw["positions"] = frame_positions(ids, self.kani2.cfg)
            kw["embeds_mask"] = (self._ar[:w] == 1)[None] & (meta[3] != 0)[:, None]
            kw["embeds"] = self.kani2.project(self._spk[:g])[:, None, :]
        self._first[:g].copy_(prefill_and_sample(self.model, self.pool, self.sampler, self.kani2, slots, ids,
                                                 lens, last, self._ar[:g], False, **kw))

    def capture(self, mempool: Any = None) -> None:
        """Warm up and capture every (group, width) bucket into ``mempool`` (a
        ``torch.cuda.graph_pool_handle()``, e.g. the decode graphs'; None: a new one).
        CUDA only; call while no slot is in use (slot 0's rows are used and restored)."""
        if not self.use_graphs or not self.widths:
            return
        t0 = time.perf_counter()
        reserved0 = torch.cuda.memory_reserved()
        p = self.pool
        small = [p.tok, p.cache_len, p.rope_pos, p.gen]
        if self.kani2 is not None:
            small += [self.kani2.frame_pos, self.kani2.audio_count]
        saved = [t.clone() for t in small]
        seen0 = p.seen[:1].clone()
        keys = self.keys
        mempool = mempool if mempool is not None else torch.cuda.graph_pool_handle()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.inference_mode():
            with torch.cuda.stream(side):
                for g, w in keys:
                    self._set_lengths(g, w)
                    self._forward(g, w)
            torch.cuda.current_stream().wait_stream(side)
            torch.cuda.synchronize()
            for g, w in keys:
                self._set_lengths(g, w)
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph, pool=mempool):
                    self._forward(g, w)
                self.graphs[(g, w)] = graph
        torch.cuda.synchronize()
        for t, s in zip(small, saved):
            t.copy_(s)
        p.seen[:1].copy_(seen0)
        self.capture_seconds = time.perf_counter() - t0
        self.pool_growth_mib = (torch.cuda.memory_reserved() - reserved0) / 2**20
        logger.info("native engine: captured %d prefill graphs (groups %s x widths %s) in %.1f s, "
                    "+%.0f MiB reserved", len(self.graphs), self.groups, self.widths, self.capture_seconds,
                    self.pool_growth_mib)

    def _set_lengths(self, g: int, w: int) -> None:
        """Capture inputs for (g, w): slot 0, length 1 in every row (valid for any width)."""
        self._ints[: g * (w + _META)].zero_()
        self._ints[g * w + g: g * w + 2 * g].fill_(1)

    # -- per admission ------------------------------------------------------------------------
    def run(self, slots: Sequence[int], prompts: Sequence[Sequence[int]],
            speakers: Sequence[torch.Tensor | None] | None = None) -> torch.Tensor:
        """Prefill ``prompts`` into ``slots`` (already reset by :meth:`SlotPool.admit`) and
        sample their first tokens: ``[n]`` int64 on the device (also in ``pool.tok``).
        ``speakers``: KaniTTS-2 ``[speaker_emb_dim]`` float32 per request or None. Every
        prompt must fit (:meth:`covers`, counting the speaker row); raises ValueError if not.
        Groups beyond the largest bucket run as several replays, in order."""
        n = len(slots)
        spk = list(speakers) if speakers is not None else [None] * n
        if self.kani2 is None and any(s is not None for s in spk):
            raise ValueError("speaker embeddings need a KaniTTS-2 model")
        rows = [splice_speaker(pr, s is not None) for pr, s in zip(prompts, spk)]
        if not all(self.covers(len(r)) for r in rows):
            raise ValueError(f"a prompt is wider than the widest prefill bucket ({self.max_width})")
        out = torch.empty(n, dtype=torch.int64, device=self.model.device)
        widest = pick_bucket(max(len(r) for r in rows), self.widths)
        step = max(g for g in self.groups if g * widest <= self.max_rows)
        for lo in range(0, n, step):
            hi = min(n, lo + step)
            g = pick_bucket(hi - lo, self.groups)
            w = pick_bucket(max(len(r) for r in rows[lo:hi]), self.widths)  # g * w <= max_rows
            pick = [*range(lo, hi), *[hi - 1] * (g - (hi - lo))]  # pad rows repeat the last real row
            self._load(g, w, [rows[i] for i in pick], [slots[i] for i in pick],
                       [prompts[i][-1] for i in pick], [spk[i] for i in pick])
            graph = self.graphs.get((g, w))
            if graph is not None:
                graph.replay()
            else:
                self._forward(g, w)
            out[lo:hi].copy_(self._first[: hi - lo])
        return out

    def _load(self, g: int, w: int, rows: list[list[int]], slots: list[int], last: list[int],
              spk: list[torch.Tensor | None]) -> None:
        """Pack one bucket's inputs on the host and copy them to the static buffers (one copy,
        plus one for the speaker rows of a KaniTTS-2 model)."""
        flat: list[int] = []
        for r in rows:
            flat += r
            flat += [self._pad_id] * (w - len(r))
        flat += slots
        flat += [len(r) for r in rows]
        flat += last
        flat += [int(s is not None) for s in spk]
        host = torch.tensor(flat, dtype=torch.int64)
        if self._pin:
            host = host.pin_memory()
        self._ints[: host.numel()].copy_(host, non_blocking=self._pin)
        if self._spk is not None:
            sh = torch.stack([s if s is not None else torch.zeros(self._spk.shape[1]) for s in spk]).float()
            if self._pin:
                sh = sh.pin_memory()
            self._spk[:g].copy_(sh, non_blocking=self._pin)
