"""The serving codec pool: many NanoCodec streams stepped as one batched, fixed-shape,
graph-replayed call.

:class:`FastStreamingDecoder` has the interface of
:class:`kanitts.codec.streaming.StreamingDecoder` (``reset``, ``step``, ``step_slots``)
and computes the same function, but is built for serving many streams on a GPU:

* **Own state pool with a scratch slot.** Every stateful layer's left context lives in one
  tensor of ``max_streams + 1`` slots allocated once (stable addresses). A call for ``k``
  slots is padded to a *batch bucket* (powers of two up to ``max_streams``) with the
  scratch slot, so each step has one of a few fixed shapes whatever the number of
  active streams; the padding rows read and write only the scratch slot.
* **One pure step function** ``(frames, slot index, states) -> audio`` that gathers the
  slots' contexts, runs the channels-last decoder *walk* (:mod:`kanitts.codec.walk_nlc`)
  and ``index_copy_``s the new contexts back. It takes the frames as the worker has them,
  ``[k, T, G]`` (one row of ``G`` codes per frame), which is also the order the walk's
  codebook lookup wants: no permute on the way. (The channels-first walk the benchmarks
  compare it with is :mod:`kanitts.bench.codec_ncl`, a subclass.)
* **torch.compile** (``compile=True``: the whole step; ``"ops"``: only the fused
  pointwise pieces, what the serving worker uses on CUDA).
* **CUDA graphs** per ``(bucket, frames)`` shape, captured lazily or by :meth:`warmup`:
  frames per step in ``frame_sizes`` (default 1, 2, 4, 8; other counts are split into
  those, which is exact because streaming is exact). Replay costs one launch. All graphs
  share one memory pool; :meth:`warmup` captures the largest first (smaller ones then
  reuse its blocks) and releases the un-graphed warm-up runs' blocks afterwards.
* **A bounded call size**: ``max_batch_frames`` caps the stream-frames of one call
  (``bucket * frames``); a step with more work runs several calls of a capped bucket in
  turn (:meth:`plan_calls`), so the activation memory of a step
  (:mod:`kanitts.codec.memory`) does not grow with the number of streams, and no graph
  larger than the cap is ever captured.
* **Its own CUDA stream**: all work (input copies, replay, output copy) runs on
  :attr:`stream`, a non-blocking stream, so it overlaps with token generation on other
  streams of the same process; :meth:`stream_context` lets a caller put its own
  host<->device copies on it too.

Everything degrades: no CUDA -> eager (no graphs), no Triton -> no compile; a failed
compile or capture logs a warning and falls back to eager for that shape.
Why channels-last, and the memory passes of each walk: docs/ARCHITECTURE.md,
"The codec's channels-last walk".
"""

from __future__ import annotations

import contextlib
import copy
import logging
import time
from collections.abc import Iterator, Sequence

import torch
from torch import Tensor

from kanitts.codec import kernels
from kanitts.codec.nanocodec import NanoCodec
from kanitts.codec.shapes import (  # noqa: F401 - default_buckets/split_frames: re-exported
    Call,
    bucket_cap,
    bucket_for,
    default_buckets,
    graph_shapes,
    plan_calls,
    split_frames,
    usable_frame_sizes,
)
from kanitts.codec.walk_nlc import (
    NlcPlan,
    NlcWalk,
    Pointwise,
    nlc_act_cat,
    nlc_add,
    nlc_add_act_cat,
    nlc_sum_act_cat,
    nlc_up,
)

logger = logging.getLogger(__name__)

DEFAULT_FRAME_SIZES = (1, 2, 4, 8)
#: Implementations of the nlc walk's activation patterns: the torch(.compile)d functions
#: of :mod:`kanitts.codec.walk_nlc`, or the hand-written Triton kernel of
#: :mod:`kanitts.codec.kernels` (CUDA only).
ACT_KERNELS = ("auto", "compile", "triton")


@contextlib.contextmanager
def cudnn_autotune(enabled: bool = True) -> Iterator[None]:
    """cuDNN picks each conv's algorithm by timing them (``cudnn.benchmark``) inside the
    block, as the H100 codec benchmarks did. Without it cuDNN's heuristics choose: the
    serving worker (not autotuned) decoded 641-718 audio s/s at 256 streams (H100 runs 5-6)
    where the autotuned pool step does 2,669 -- most likely their choice for the
    channels-last ``[B, C, 1, T]`` convs. The algorithm chosen while a CUDA graph is
    captured is the one it replays."""
    if not enabled:
        yield
        return
    prev = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = prev


def triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except Exception:  # noqa: BLE001
        return False
    return True


class FastStreamingDecoder(NlcWalk):
    """A fixed pool of ``batch_size`` decode streams, stepped as one batched call over the
    channels-last walk (:mod:`kanitts.codec.walk_nlc`).

    ``dtype`` (default: the codec's) may differ from the codec's: the decoder is then
    copied and converted (bf16 on GPU is ~2x faster; see benchmarks/codec_h100.txt for its
    error). ``compile``/``cuda_graphs`` default to on when CUDA (and for compile, Triton)
    is present. The walk always uses the fused pointwise forms (compiled under
    ``compile="ops"``) and pads every stage's channels to a multiple of ``pad_channels``
    (1 = no padding). ``act_kernel`` (:data:`ACT_KERNELS`) picks the implementation of the
    activation patterns: ``"auto"`` (default) = ``"triton"`` for a 16-bit codec on CUDA with
    Triton, else ``"compile"``; ``"triton"`` = the hand-written kernel with ``sin_mode``
    (:data:`kanitts.codec.kernels.SIN_MODES`), used when the codec is on CUDA and Triton
    imports, else the ``"compile"`` functions (a warning says so; :meth:`stats` reports what
    runs). ``max_batch_frames`` (None: no cap) bounds ``bucket * frames`` of one call (see
    :meth:`plan_calls`); frame sizes above it are dropped. Raises ``ValueError`` for
    ``batch_size < 1``, ``pad_channels < 1``, ``max_batch_frames < 1`` or an unknown
    ``act_kernel``/``sin_mode``. Not thread-safe: drive it from one thread.

    Subclasses may walk another layout (the benchmarks' channels-first variant,
    :mod:`kanitts.bench.codec_ncl`) by overriding :attr:`layout`, :meth:`_setup_walk`,
    :meth:`_smallest_bucket`, :meth:`_resolve_act_kernel` and :meth:`_walk`.
    """

    #: The activation layout of the walk, as :meth:`stats` reports it: ``[B, T, C]``.
    #: Channels-last because on the H100 (benchmarks/codec_h100-run3.txt) it decodes 2,669
    #: audio s/s at batch 256 against 1,408 for "ncl" in the same run, and a batch-1 step
    #: takes 1.7 ms against 3.2; on the CPU (eager, 2 cores) it is ~1.2x faster.
    layout = "nlc"

    def __init__(
        self,
        codec: NanoCodec,
        batch_size: int,
        *,
        dtype: torch.dtype | None = None,
        compile: bool | str | None = None,
        cuda_graphs: bool | None = None,
        frame_sizes: Sequence[int] = DEFAULT_FRAME_SIZES,
        buckets: Sequence[int] | None = None,
        pad_channels: int = 8,
        act_kernel: str = "auto",
        sin_mode: str = kernels.DEFAULT_SIN_MODE,
        max_batch_frames: int | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        if max_batch_frames is not None and max_batch_frames < 1:
            raise ValueError("max_batch_frames must be >= 1")
        if pad_channels < 1:
            raise ValueError("pad_channels must be >= 1")
        if act_kernel not in ACT_KERNELS:
            raise ValueError(f"act_kernel must be one of {ACT_KERNELS}, got {act_kernel!r}")
        if sin_mode not in kernels.SIN_MODES:
            raise ValueError(f"sin_mode must be one of {sorted(kernels.SIN_MODES)}, got {sin_mode!r}")
        if dtype is not None and dtype != codec.dtype:
            codec = copy.deepcopy(codec).to(dtype)
        codec.eval()
        self.codec = codec
        self.decoder = codec.decoder
        self.batch_size = batch_size
        self.samples_per_frame = codec.samples_per_frame
        self.num_codebooks = codec.num_codebooks
        self.dtype = codec.dtype
        dev = codec.device
        is_cuda = dev.type == "cuda"
        if compile is None:
            compile = bool(is_cuda and triton_available())
        self.compiled = compile is True
        self.cuda_graphs = is_cuda if cuda_graphs is None else bool(cuda_graphs and is_cuda)
        self.frame_sizes = tuple(sorted({int(f) for f in frame_sizes} | {1}))
        self.scratch = batch_size  # the extra slot padding rows read and write
        # The walk's own pieces: fused/compiled forms and the state pool (slots + scratch).
        self.states: list[Tensor] = self._setup_walk(compile, int(pad_channels))
        smallest = self._smallest_bucket()
        self.buckets = tuple(sorted(set(buckets))) if buckets else default_buckets(batch_size, smallest)
        if self.buckets[-1] < batch_size:
            self.buckets = self.buckets + (batch_size,)
        self.max_batch_frames = max_batch_frames
        # A frame count even the smallest bucket cannot take within the cap is split.
        self.frame_sizes = usable_frame_sizes(self.frame_sizes, self.buckets, max_batch_frames)
        self.stream: torch.cuda.Stream | None = torch.cuda.Stream(dev) if is_cuda else None
        if self.ops_compiled:
            self.compiled = False
        self.sin_mode = sin_mode
        self.act_kernel = self._resolve_act_kernel(act_kernel, is_cuda)
        self._triton = self.act_kernel == "triton"
        fn = self._walk
        if self.compiled:
            import torch._dynamo as dynamo

            dynamo.config.cache_size_limit = max(dynamo.config.cache_size_limit, 64)
            fn = torch.compile(fn, dynamic=True)
        self._fn = fn
        self._graphs: dict[tuple[int, int], tuple[torch.cuda.CUDAGraph, Tensor, Tensor, Tensor]] = {}
        self._graph_pool = torch.cuda.graph_pool_handle() if self.cuda_graphs else None
        self._failed: set[tuple[int, int]] = set()
        #: Seconds each graph's capture took (warm-up runs, compiles, autotune included).
        self.capture_seconds: dict[tuple[int, int], float] = {}

    # ------------------------------------------------------------------ set-up
    @property
    def device(self) -> torch.device:
        return self.codec.device

    def _setup_walk(self, compile: bool | str, pad_channels: int) -> list[Tensor]:
        """Prepare the channels-last walk (sets ``fused_ops``, ``ops_compiled``,
        ``pad_channels``, the plan and the pointwise functions) and return its zeroed
        state pool: one ``[slots + 1, L, C_padded]`` tensor per stateful layer (a
        context is a contiguous chunk per stream)."""
        self.fused_ops = True  # the nlc walk exists only in the fused form
        self.pad_channels = pad_channels
        # compile="ops": compile only the fused pointwise pieces (seconds, not minutes).
        self.ops_compiled = compile == "ops"
        if self.ops_compiled:
            import torch._dynamo as dynamo

            # About one compile per (channel count, pattern): more than dynamo's default 8.
            dynamo.config.recompile_limit = max(dynamo.config.recompile_limit, 64)
        ops = self.ops_compiled
        self._p_act_cat = Pointwise(nlc_act_cat, 2, ops)
        self._p_add_act_cat = Pointwise(nlc_add_act_cat, 3, ops)
        self._p_add = Pointwise(nlc_add, 3, ops)
        self._p_sum_act_cat = Pointwise(nlc_sum_act_cat, 4, ops)
        self._p_up = Pointwise(nlc_up, 1, ops)
        self._nlc = NlcPlan(self.codec, pad_channels)
        return [
            torch.zeros(self.batch_size + 1, length, c, device=self.device, dtype=self.dtype)
            for length, c in self._nlc.context_shapes
        ]

    def _smallest_bucket(self) -> int:
        """Compiled code specialises on size 1: starting the buckets at 2 saves a compile
        (for the pointwise functions under "ops": one per function and channel count)."""
        return 2 if self.compiled or self.ops_compiled else 1

    def _resolve_act_kernel(self, requested: str, is_cuda: bool) -> str:
        """The activation implementation that can run here: "triton" needs a CUDA codec
        and an importable Triton; anything else degrades to "compile"."""
        if requested == "auto":
            # The Triton kernel where it was measured (H100, benchmarks/codec_h100-run4.txt:
            # 4,143 vs 2,738 audio s/s at batch 256, same accuracy against float32): the nlc
            # walk on CUDA in a 16-bit dtype. float32 keeps the compiled functions (the fast
            # sin approximation is sized for bf16 resolution).
            ok = (not self.compiled and is_cuda and kernels.triton is not None
                  and self.dtype in (torch.bfloat16, torch.float16))
            return "triton" if ok else "compile"
        if requested != "triton":
            return requested
        why = None
        if self.compiled:
            why = "the whole step is torch.compiled"
        elif not is_cuda:
            why = "the codec is not on CUDA"
        elif kernels.triton is None:
            why = "Triton is not importable"
        if why:
            logger.warning("act_kernel='triton' unavailable (%s): using the compiled functions", why)
            return "compile"
        return "triton"

    # ------------------------------------------------------------------ running
    def stream_context(self) -> contextlib.AbstractContextManager[object]:
        """``with pool.stream_context():`` puts the caller's device work on :attr:`stream`."""
        if self.stream is None:
            return contextlib.nullcontext()
        return torch.cuda.stream(self.stream)

    def bucket_for(self, k: int) -> int:
        return bucket_for(self.buckets, k)

    def bucket_cap(self, frames: int) -> int:
        """:func:`kanitts.codec.shapes.bucket_cap` for this pool."""
        return bucket_cap(self.buckets, frames, self.max_batch_frames)

    def plan_calls(self, k: int, frames: int) -> list[Call]:
        """The calls a step of ``k`` slots x ``frames`` frames runs
        (:func:`kanitts.codec.shapes.plan_calls`; graphed or eager as this pool runs)."""
        return plan_calls(k, frames, self.buckets, self.frame_sizes, self.max_batch_frames, self.cuda_graphs)

    def graph_shapes(self) -> list[tuple[int, int]]:
        """Every ``(bucket, frames)`` shape a step can use, largest first: what
        :meth:`warmup` captures."""
        return graph_shapes(self.buckets, self.frame_sizes, self.max_batch_frames)

    def _index(self, slots: Sequence[int] | Tensor) -> Tensor:
        index = torch.as_tensor(slots, dtype=torch.long).reshape(-1)
        return index

    def _capture(self, bucket: int, frames: int) -> tuple[torch.cuda.CUDAGraph, Tensor, Tensor, Tensor]:
        dev = self.device
        codes = torch.zeros(bucket, frames, self.num_codebooks, dtype=torch.long, device=dev)
        index = torch.full((bucket,), self.scratch, dtype=torch.long, device=dev)
        # Warm up (compiles, cuDNN autotune) on the side stream, touching only the scratch slot.
        with cudnn_autotune():
            for _ in range(2):
                self._fn(codes, index, self.states)
            torch.cuda.current_stream().synchronize()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=self._graph_pool, stream=self.stream):
                out = self._fn(codes, index, self.states)
        return graph, codes, index, out

    def _graph(self, bucket: int, frames: int) -> tuple[torch.cuda.CUDAGraph, Tensor, Tensor, Tensor] | None:
        key = (bucket, frames)
        got = self._graphs.get(key)
        if got is None and key not in self._failed:
            try:
                t0 = time.perf_counter()
                with self.stream_context():
                    got = self._capture(bucket, frames)
                self._graphs[key] = got
                self.capture_seconds[key] = round(time.perf_counter() - t0, 3)
            except Exception:  # degrade to the un-graphed call
                logger.warning("CUDA graph capture failed for %s; running un-graphed", key, exc_info=True)
                self._failed.add(key)
        return got

    @torch.inference_mode()
    def warmup(self, frame_sizes: Sequence[int] | None = None, buckets: Sequence[int] | None = None) -> int:
        """Capture the graphs for these shapes now (default: every shape of
        :meth:`graph_shapes`; ``frame_sizes``/``buckets`` restrict it), largest first, then
        release the caching allocator's blocks the un-graphed warm-up runs left (the graphs'
        pool keeps its own); returns how many graphs exist."""
        if self.cuda_graphs:
            for b, f in self.graph_shapes():
                if (frame_sizes and f not in frame_sizes) or (buckets and not any(self.bucket_for(x) == b for x in buckets)):
                    continue
                self._graph(b, f)
            torch.cuda.synchronize(self.device)
            torch.cuda.empty_cache()
        elif self.compiled:
            with self.stream_context():
                for b in buckets or self.buckets[:1]:
                    for f in frame_sizes or self.frame_sizes:
                        idx = torch.full((b,), self.scratch, dtype=torch.long, device=self.device)
                        codes = torch.zeros(b, f, self.num_codebooks, dtype=torch.long, device=self.device)
                        self._fn(codes, idx, self.states)
        return len(self._graphs)

    @torch.inference_mode()
    def reset(self, mask: Tensor | Sequence[int] | None = None) -> None:
        """Start fresh streams in the selected slots (all when ``mask`` is None)."""
        with self.stream_context():
            if mask is None:
                for s in self.states:
                    s.zero_()
                return
            t = torch.as_tensor(mask)
            if t.dtype == torch.bool:
                if t.shape != (self.batch_size,):
                    raise ValueError(f"mask must have shape ({self.batch_size},), got {tuple(t.shape)}")
                t = t.nonzero().reshape(-1)
            index = t.long().to(self.device)
            for s in self.states:
                s.index_fill_(0, index, 0)

    @torch.inference_mode()
    def step_slots(self, slots: Sequence[int] | Tensor, frames: Tensor) -> Tensor:
        """Decode the next ``T`` frames of the listed (distinct) slots:
        ``frames[len(slots), T, G]`` (integer codes, one row per frame, as
        :class:`~kanitts.codec.worker.CodecWorker` collects them) ->
        ``audio[len(slots), T * samples_per_frame]`` in the pool's dtype (a fresh tensor on
        :attr:`device`, produced on :attr:`stream`). Raises ``ValueError`` for a wrong shape,
        no frames or a slot outside the pool; codes are not range-checked here (that would
        sync the device): the worker validates frames where they enter."""
        index = self._index(slots)
        k = index.numel()
        if frames.dim() != 3 or frames.shape[0] != k or frames.shape[2] != self.num_codebooks:
            raise ValueError(f"frames must be [{k}, T, {self.num_codebooks}], got {tuple(frames.shape)}")
        if frames.shape[1] < 1:
            raise ValueError("a step needs at least one frame")
        if k and (int(index.min()) < 0 or int(index.max()) >= self.batch_size):
            raise ValueError(f"slots must lie in 0..{self.batch_size - 1}")
        if self.stream is not None and frames.is_cuda:
            self.stream.wait_stream(torch.cuda.current_stream(self.device))  # frames made there
        with self.stream_context(), cudnn_autotune(self.device.type == "cuda"):
            frames = frames.to(self.device, torch.long, non_blocking=True)
            if k == 0:
                return torch.zeros(0, frames.shape[1] * self.samples_per_frame, device=self.device, dtype=self.dtype)
            index_dev = index.to(self.device)
            by_start: dict[int, list[Tensor]] = {}
            for c in self.plan_calls(k, frames.shape[1]):
                r0, r1 = c.rows
                piece = frames[r0:r1, c.start : c.start + c.frames]
                if self.cuda_graphs:
                    out = self._run_graphed(c.bucket, index[r0:r1], piece)
                else:
                    out = self._fn(piece, index_dev[r0:r1], self.states)
                by_start.setdefault(c.start, []).append(out)
            cols = [parts[0] if len(parts) == 1 else torch.cat(parts, dim=0) for parts in by_start.values()]
            return cols[0] if len(cols) == 1 else torch.cat(cols, dim=-1)

    def _run_graphed(self, bucket: int, index: Tensor, frames: Tensor) -> Tensor:
        k, n = index.numel(), frames.shape[1]
        got = self._graph(bucket, n)
        if got is None:
            return self._fn(frames, index.to(self.device), self.states)
        graph, frames_buf, index_buf, out = got
        # Padding rows point at the scratch slot; their codes are whatever an earlier call
        # left (zeros at first, validated codes after): always in range, so not cleared.
        index_buf[:k].copy_(index, non_blocking=True)
        if k < index_buf.shape[0]:
            index_buf[k:].fill_(self.scratch)
        frames_buf[:k].copy_(frames)
        graph.replay()
        return out[:k].clone()

    @torch.inference_mode()
    def step(self, codes: Tensor, exec_mask: Tensor | None = None) -> Tensor:
        """Whole-pool step (``StreamingDecoder.step`` semantics: ``codes[batch_size, G, T]``,
        the layout of :meth:`NanoCodec.decode`): slots outside ``exec_mask`` keep their
        context and get zeros."""
        if codes.dim() != 3 or codes.shape[0] != self.batch_size or codes.shape[1] != self.num_codebooks:
            raise ValueError(
                f"codes must be [{self.batch_size}, {self.num_codebooks}, T], got {tuple(codes.shape)}"
            )
        frames = codes.transpose(1, 2)  # [B, T, G]: the layout step_slots takes
        if exec_mask is None:
            return self.step_slots(list(range(self.batch_size)), frames)
        run = torch.as_tensor(exec_mask).to("cpu", torch.bool)
        slots = run.nonzero().reshape(-1)
        out = torch.zeros(self.batch_size, codes.shape[-1] * self.samples_per_frame, device=self.device, dtype=self.dtype)
        if slots.numel():
            with self.stream_context():
                out[slots.to(self.device)] = self.step_slots(slots, frames[slots.to(frames.device)])
        return out

    def stats(self) -> dict[str, object]:
        return {
            "compiled": self.compiled,
            "ops_compiled": self.ops_compiled,
            "cuda_graphs": self.cuda_graphs,
            "fused_ops": self.fused_ops,
            "layout": self.layout,
            "pad_channels": self.pad_channels,
            "act_kernel": self.act_kernel,
            "sin_mode": self.sin_mode,
            "dtype": str(self.dtype).replace("torch.", ""),
            "graphs": sorted(self._graphs),
            "max_batch_frames": self.max_batch_frames,
            "failed": sorted(self._failed),
        }
