"""GPU-optimised streaming NanoCodec step: one batched, fixed-shape, graph-replayed call.

:class:`FastStreamingDecoder` has the interface of
:class:`kanitts.codec.streaming.StreamingDecoder` (``reset``, ``step``, ``step_slots``)
and computes the same function, but is built for serving many streams on a GPU:

* **Own state pool with a scratch slot.** Every stateful layer's left context lives in one
  ``[max_streams + 1, C, L]`` tensor allocated once (stable addresses). A call for ``k``
  slots is padded to a *batch bucket* (powers of two up to ``max_streams``) with the
  scratch slot, so each step has one of a few fixed shapes whatever the number of
  active streams; the padding rows read and write only the scratch slot.
* **One pure step function.** ``(codes, slot index, states) -> (audio, new contexts)``:
  gather the slots' contexts, dequantize, run the decoder, then ``index_copy_`` the new
  contexts back. The decoder walk is re-implemented functionally here over the codec's own
  weights so that, when compiled, it can use fusion-friendly forms:

  - half-snake as ONE pointwise expression over all channels
    (``where(c < C/2, x + sin(a x)^2 / (a + 1e-9), leaky_relu(x, 0.01))``, alpha kept in
    float32) instead of slice + two ops + ``cat``; Inductor fuses it with the residual
    add / chain average before it and the context concatenation after it, so each conv's
    padded input is written by a single Triton kernel;
  - NanoCodec's grouped causal transposed conv (``K = 2*stride``, 2 input channels per
    output channel) as the equivalent pointwise form
    ``out[n, r] = x[n] w[r] + x[n-1] w[stride + r]`` (cuDNN is slow on such depthwise
    transposed convs; this is one fused kernel).

  Without compilation the reference module forwards are used (identical to
  ``StreamingDecoder``); ``fused_ops=True`` runs the fused forms eagerly (tests check
  their math on CPU).
* **torch.compile** (Inductor, default mode, ``dynamic=True`` so a handful of compiles
  cover every bucket and chunk size) when CUDA and Triton are available.
* **CUDA graphs** per ``(bucket, frames)`` shape, captured lazily or by :meth:`warmup`:
  frames per step in ``frame_sizes`` (default 1, 2, 4, 8; other counts are split into
  those, which is exact because streaming is exact). Replay costs one launch.
* **Its own CUDA stream**: all work (input copies, replay, output copy) runs on
  :attr:`stream`, a non-blocking stream, so it overlaps with token generation on other
  streams of the same process; :meth:`stream_context` lets a caller put its own
  host<->device copies on it too.

Everything degrades: no CUDA -> eager (no graphs), no Triton -> no compile; a failed
compile or capture logs a warning and falls back to eager for that shape.
"""

from __future__ import annotations

import contextlib
import copy
import logging
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from kanitts.codec.nanocodec import (
    LRELU_SLOPE,
    SNAKE_EPS,
    Activation,
    CausalConv1d,
    CausalConvTranspose1d,
    NanoCodec,
    ResidualLayer,
)

logger = logging.getLogger(__name__)

DEFAULT_FRAME_SIZES = (1, 2, 4, 8)


def _act_cat(x: Tensor, ctx: Tensor, a: Tensor, inv: Tensor, m: Tensor) -> Tensor:
    """``cat([ctx, half_snake(x)], -1)`` as one expression (one kernel when compiled)."""
    xf = x.float()
    y = torch.where(m, xf + inv * torch.sin(a * xf).pow(2), F.leaky_relu(xf, LRELU_SLOPE))
    return torch.cat([ctx, y.to(x.dtype)], dim=-1)


def _up_pointwise(full: Tensor, w: Tensor, bias: Tensor) -> Tensor:
    """Grouped causal transposed conv, ``K = 2*stride``, 2 inputs per output channel, on
    ``full = cat([previous frame, x])``: ``out[n, r] = x[n] w[r] + x[n-1] w[stride + r]``."""
    b, cin, t1 = full.shape
    t, cout, s = t1 - 1, bias.shape[0], w.shape[-1] // 2
    cur = full[..., 1:].reshape(b, cout, 2, t, 1)
    prev = full[..., :-1].reshape(b, cout, 2, t, 1)
    w = w.reshape(cout, 2, 1, 2 * s)
    out = (cur * w[..., :s]).sum(2) + (prev * w[..., s:]).sum(2) + bias.reshape(1, cout, 1, 1)
    return out.reshape(b, cout, t * s)


def triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except Exception:  # noqa: BLE001
        return False
    return True


def default_buckets(max_streams: int, smallest: int = 1) -> tuple[int, ...]:
    """Powers of two from ``smallest`` below ``max_streams``, then ``max_streams``."""
    out, b = [], min(smallest, max_streams)
    while b < max_streams:
        out.append(b)
        b *= 2
    out.append(max_streams)
    return tuple(out)


def split_frames(frames: int, sizes: Sequence[int]) -> list[int]:
    """Greedy split of ``frames`` into the allowed ``sizes`` (1 must be allowed)."""
    parts, left = [], frames
    for size in sorted(sizes, reverse=True):
        while left >= size:
            parts.append(size)
            left -= size
    if left:
        raise ValueError(f"cannot split {frames} frames into {sorted(sizes)}")
    return parts


class FastStreamingDecoder:
    """A fixed pool of ``batch_size`` decode streams, stepped as one batched call.

    ``dtype`` (default: the codec's) may differ from the codec's: the decoder is then
    copied and converted (bf16 on GPU is ~2x faster; see benchmarks/codec_h100.txt for its
    error). ``compile``/``cuda_graphs`` default to on when CUDA (and for compile, Triton)
    is present. Not thread-safe: drive it from one thread.
    """

    def __init__(
        self,
        codec: NanoCodec,
        batch_size: int,
        *,
        dtype: torch.dtype | None = None,
        compile: bool | str | None = None,
        cuda_graphs: bool | None = None,
        fused_ops: bool | None = None,
        frame_sizes: Sequence[int] = DEFAULT_FRAME_SIZES,
        buckets: Sequence[int] | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
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
        self.fused_ops = bool(compile) if fused_ops is None else bool(fused_ops)
        self.frame_sizes = tuple(sorted(set(int(f) for f in frame_sizes) | {1}))
        # Compiled code specialises on size 1: starting the buckets at 2 saves a compile.
        self.buckets = (
            tuple(sorted(set(buckets))) if buckets else default_buckets(batch_size, 2 if self.compiled else 1)
        )
        if self.buckets[-1] < batch_size:
            self.buckets = self.buckets + (batch_size,)
        self.scratch = batch_size  # the extra slot padding rows read and write
        self.states: list[Tensor] = [
            torch.zeros(batch_size + 1, c, length, device=dev, dtype=self.dtype)
            for c, length in self.decoder.context_shapes()
        ]
        self.stream: torch.cuda.Stream | None = torch.cuda.Stream(dev) if is_cuda else None
        self._prepare_fused()
        # compile="ops": compile only the fused pointwise pieces (seconds, not minutes).
        self.ops_compiled = compile == "ops" and self.fused_ops
        self._k_act_cat, self._k_up = _act_cat, _up_pointwise
        if self.ops_compiled:
            self._k_act_cat = torch.compile(_act_cat, dynamic=True)
            self._k_up = torch.compile(_up_pointwise, dynamic=True)
            self.compiled = False
        fn = self._step_fn
        if self.compiled:
            import torch._dynamo as dynamo

            dynamo.config.cache_size_limit = max(dynamo.config.cache_size_limit, 64)
            fn = torch.compile(self._step_fn, dynamic=True)
        self._fn = fn
        self._graphs: dict[tuple[int, int], tuple[torch.cuda.CUDAGraph, Tensor, Tensor, Tensor]] = {}
        self._graph_pool = torch.cuda.graph_pool_handle() if self.cuda_graphs else None
        self._failed: set[tuple[int, int]] = set()

    # ------------------------------------------------------------------ set-up
    @property
    def device(self) -> torch.device:
        return self.codec.device

    def _prepare_fused(self) -> None:
        """Give every snake/half-snake activation float32 ``alpha``, ``1/(alpha+eps)`` and
        a snake-channel mask over ALL its channels (lrelu channels get alpha 1), stored as
        plain attributes (traced as constants), for the single-expression form."""
        for mod in self.decoder.modules():
            if isinstance(mod, Activation) and mod.alpha is not None:
                n, c = mod.snake_channels, mod.channels
                dev = mod.alpha.device
                a = torch.ones(1, c, 1, device=dev)
                a[:, :n] = mod.alpha.detach().float()
                m = torch.zeros(1, c, 1, dtype=torch.bool, device=dev)
                m[:, :n] = True
                mod._fast_alpha = a
                mod._fast_inv_alpha = (a + SNAKE_EPS).reciprocal()
                mod._fast_mask = m

    # ------------------------------------------------------------------ the pure step
    def _act(self, mod: Activation, x: Tensor) -> Tensor:
        if not self.fused_ops or mod.kind in ("lrelu", "elu"):
            return mod(x)
        a, inv, m = mod._fast_alpha, mod._fast_inv_alpha, mod._fast_mask
        xf = x.float()
        snake = xf + inv * torch.sin(a * xf).pow(2)
        if mod.kind == "snake":
            return snake.to(x.dtype)
        return torch.where(m, snake, F.leaky_relu(xf, LRELU_SLOPE)).to(x.dtype)

    def _act_conv(
        self, mod: Activation, layer: CausalConv1d, x: Tensor, ctx: list[Tensor], new: list[Tensor | None]
    ) -> Tensor:
        if not (self.ops_compiled and mod.kind == "half_snake" and layer.context):
            return self._conv(layer, self._act(mod, x), ctx, new)
        full = self._k_act_cat(x, ctx[layer.state_index], mod._fast_alpha, mod._fast_inv_alpha, mod._fast_mask)
        new[layer.state_index] = full[..., -layer.context :]
        return F.conv1d(full, layer.weight, layer.bias, dilation=layer.dilation)

    @staticmethod
    def _conv(layer: CausalConv1d, x: Tensor, ctx: list[Tensor], new: list[Tensor | None]) -> Tensor:
        if layer.context == 0:
            return F.conv1d(x, layer.weight, layer.bias)
        full = torch.cat([ctx[layer.state_index], x], dim=-1)
        new[layer.state_index] = full[..., -layer.context :]
        return F.conv1d(full, layer.weight, layer.bias, dilation=layer.dilation)

    def _up(self, layer: CausalConvTranspose1d, x: Tensor, ctx: list[Tensor], new: list[Tensor | None]) -> Tensor:
        b, cin, t = x.shape
        s = layer.stride
        w = layer.weight
        cout = layer.bias.shape[0]
        simple = layer.context == 1 and w.shape[2] == 2 * s and layer.groups == cout and cin == 2 * cout
        full = torch.cat([ctx[layer.state_index], x], dim=-1) if layer.context else x
        if self.ops_compiled and simple:
            new[layer.state_index] = full[..., -1:]
            return self._k_up(full, w, layer.bias)
        if layer.context:
            new[layer.state_index] = full[..., -layer.context :]
        if not (self.fused_ops and simple):
            out = F.conv_transpose1d(full, w, layer.bias, stride=s, groups=layer.groups)
            start = layer.context * s
            return out[..., start : start + t * s]
        cur = full[..., 1:].reshape(b, cout, 2, t, 1)
        prev = full[..., :-1].reshape(b, cout, 2, t, 1)
        w = w.reshape(cout, 2, 1, 2 * s)
        out = (cur * w[..., :s]).sum(2) + (prev * w[..., s:]).sum(2) + layer.bias.reshape(1, cout, 1, 1)
        return out.reshape(b, cout, t * s)

    def _res(self, layer: ResidualLayer, x: Tensor, ctx: list[Tensor], new: list[Tensor | None]) -> Tensor:
        total: Tensor | None = None
        for chain in layer.res_blocks:
            y = x
            for unit in chain.res_blocks:
                h = self._act_conv(unit.input_activation, unit.input_conv, y, ctx, new)
                h = self._act_conv(unit.skip_activation, unit.skip_conv, h, ctx, new)
                y = y + h
            total = y if total is None else total + y
        assert total is not None
        return total / len(layer.res_blocks)

    def _step_fn(self, codes: Tensor, index: Tensor, states: list[Tensor]) -> Tensor:
        """Decode ``codes[k, G, T]`` for slots ``index[k]``, committing their contexts."""
        ctx = [s.index_select(0, index) for s in states]
        new: list[Tensor | None] = [None] * len(ctx)
        dec = self.decoder
        x = self.codec.dequantizer(codes).to(self.dtype)
        out = self._conv(dec.pre_conv, x, ctx, new)
        for act, up, res in zip(dec.activations, dec.up_sample_conv_layers, dec.res_layers):
            out = self._res(res, self._up(up, self._act(act, out), ctx, new), ctx, new)
        out = self._act_conv(dec.post_activation, dec.post_conv, out, ctx, new)
        out = torch.tanh(out) if dec.cfg.output_activation == "tanh" else out.clamp(-1.0, 1.0)
        for s, n in zip(states, new):
            if n is not None:
                s.index_copy_(0, index, n)
        return out[:, 0]

    # ------------------------------------------------------------------ running
    def stream_context(self) -> contextlib.AbstractContextManager[object]:
        """``with pool.stream_context():`` puts the caller's device work on :attr:`stream`."""
        if self.stream is None:
            return contextlib.nullcontext()
        return torch.cuda.stream(self.stream)

    def bucket_for(self, k: int) -> int:
        for b in self.buckets:
            if b >= k:
                return b
        raise ValueError(f"{k} slots exceed the pool ({self.batch_size})")

    def _index(self, slots: Sequence[int] | Tensor) -> Tensor:
        index = torch.as_tensor(slots, dtype=torch.long).reshape(-1)
        return index

    def _capture(self, bucket: int, frames: int) -> tuple[torch.cuda.CUDAGraph, Tensor, Tensor, Tensor]:
        dev = self.device
        codes = torch.zeros(bucket, self.num_codebooks, frames, dtype=torch.long, device=dev)
        index = torch.full((bucket,), self.scratch, dtype=torch.long, device=dev)
        # Warm up (compiles, cuDNN autotune) on the side stream, touching only the scratch slot.
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
                with self.stream_context():
                    got = self._capture(bucket, frames)
                self._graphs[key] = got
            except Exception:  # noqa: BLE001 - degrade to the un-graphed call
                logger.warning("CUDA graph capture failed for %s; running un-graphed", key, exc_info=True)
                self._failed.add(key)
        return got

    @torch.inference_mode()
    def warmup(self, frame_sizes: Sequence[int] | None = None, buckets: Sequence[int] | None = None) -> int:
        """Capture the graphs for these shapes now (default: all); returns how many exist."""
        if self.cuda_graphs:
            for b in buckets or self.buckets:
                for f in frame_sizes or self.frame_sizes:
                    self._graph(self.bucket_for(b), f)
        elif self.compiled:
            with self.stream_context():
                for b in buckets or self.buckets[:1]:
                    for f in frame_sizes or self.frame_sizes:
                        idx = torch.full((b,), self.scratch, dtype=torch.long, device=self.device)
                        codes = torch.zeros(b, self.num_codebooks, f, dtype=torch.long, device=self.device)
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
    def step_slots(self, slots: Sequence[int] | Tensor, codes: Tensor) -> Tensor:
        """Decode the next ``T`` frames of the listed (distinct) slots:
        ``codes[len(slots), G, T]`` -> ``audio[len(slots), T * samples_per_frame]``
        (a fresh tensor on :attr:`device`, produced on :attr:`stream`)."""
        index = self._index(slots)
        k = index.numel()
        if codes.dim() != 3 or codes.shape[0] != k or codes.shape[1] != self.num_codebooks:
            raise ValueError(f"codes must be [{k}, {self.num_codebooks}, T], got {tuple(codes.shape)}")
        if codes.shape[-1] < 1:
            raise ValueError("a step needs at least one frame")
        if k and (int(index.min()) < 0 or int(index.max()) >= self.batch_size):
            raise ValueError(f"slots must lie in 0..{self.batch_size - 1}")
        if self.stream is not None and codes.is_cuda:
            self.stream.wait_stream(torch.cuda.current_stream(self.device))  # codes made there
        with self.stream_context():
            codes = codes.to(self.device, torch.long, non_blocking=True)
            if not self.cuda_graphs:
                return self._fn(codes, index.to(self.device), self.states)
            bucket = self.bucket_for(k)
            pieces, t0 = [], 0
            for f in split_frames(codes.shape[-1], self.frame_sizes):
                pieces.append(self._run_graphed(bucket, index, codes[..., t0 : t0 + f]))
                t0 += f
            return pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=-1)

    def _run_graphed(self, bucket: int, index: Tensor, codes: Tensor) -> Tensor:
        k, frames = index.numel(), codes.shape[-1]
        got = self._graph(bucket, frames)
        if got is None:
            return self._fn(codes, index.to(self.device), self.states)
        graph, codes_buf, index_buf, out = got
        index_buf.fill_(self.scratch)
        index_buf[:k].copy_(index, non_blocking=True)
        codes_buf.zero_()
        codes_buf[:k].copy_(codes)
        graph.replay()
        return out[:k].clone()

    @torch.inference_mode()
    def step(self, codes: Tensor, exec_mask: Tensor | None = None) -> Tensor:
        """Whole-pool step (``StreamingDecoder.step`` semantics): slots outside
        ``exec_mask`` keep their context and get zeros."""
        if codes.dim() != 3 or codes.shape[0] != self.batch_size or codes.shape[1] != self.num_codebooks:
            raise ValueError(
                f"codes must be [{self.batch_size}, {self.num_codebooks}, T], got {tuple(codes.shape)}"
            )
        if exec_mask is None:
            return self.step_slots(list(range(self.batch_size)), codes)
        run = torch.as_tensor(exec_mask).to("cpu", torch.bool)
        slots = run.nonzero().reshape(-1)
        out = torch.zeros(self.batch_size, codes.shape[-1] * self.samples_per_frame, device=self.device, dtype=self.dtype)
        if slots.numel():
            with self.stream_context():
                out[slots.to(self.device)] = self.step_slots(slots, codes[slots.to(codes.device)])
        return out

    def stats(self) -> dict[str, object]:
        return {
            "compiled": self.compiled,
            "ops_compiled": self.ops_compiled,
            "cuda_graphs": self.cuda_graphs,
            "fused_ops": self.fused_ops,
            "dtype": str(self.dtype).replace("torch.", ""),
            "graphs": sorted(self._graphs),
            "failed": sorted(self._failed),
        }


def iter_shapes(fast: FastStreamingDecoder) -> Iterator[tuple[int, int]]:
    for b in fast.buckets:
        for f in fast.frame_sizes:
            yield b, f
