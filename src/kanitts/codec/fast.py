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

* **Layout** (``layout=``): ``"ncl"`` walks the decoder over ``[B, C, T]`` tensors (the
  reference layout); ``"nlc"`` keeps every activation as a contiguous ``[B, T, C]``
  (channels-last) tensor from the dequantizer to the output (next section).

Everything degrades: no CUDA -> eager (no graphs), no Triton -> no compile; a failed
compile or capture logs a warning and falls back to eager for that shape.

The channels-last ("nlc") walk
------------------------------
Why: on an H100 (bf16, batch 256, 8 frames) the ``ncl`` walk spent 22% of the step in the
``nchwToNhwc``/``nhwcToNchw`` transposes cuDNN wraps around every conv (its tensor-core
kernels are NHWC), 14% in a strided add launched once per conv (92 calls for 92 convs: the
bias add PyTorch runs after a cuDNN conv) and 5% in the residual adds. The ``nlc`` walk
removes all three:

* every conv is ``F.conv2d`` on the free 4-D view ``[B, C, 1, T]`` (channels_last strides)
  of the ``[B, T, C]`` input, with the weight pre-converted once to ``[Cout, Cin, 1, K]``
  channels_last and NO bias; the output comes back channels_last, so its ``[B, T, Cout]``
  view is free too. cuDNN sees NHWC in and out and adds no transposes;
* each conv's bias is added inside the pointwise kernel that consumes its output, and
  the residual adds ride along with the next activation (one function per pattern over
  ``[B, T, C]``, compiled with C static and B/T dynamic under ``compile="ops"``):

  - ``nlc_act_cat(x, ctx, b)``: ``cat([ctx, act(x + b)], T)``;
  - ``nlc_add_act_cat(y, h, ctx, b)``: ``y' = y + (h + b)`` AND the next unit's
    ``cat([ctx, act(y')], T)``, two outputs from one kernel;
  - ``nlc_add(total, y, h, b)``: a chain's end, ``total + (y + (h + b))``;
  - ``nlc_sum_act_cat(total, y, h, ctx, b)``: the last chain's end, the chain average
    ``/ n`` and the NEXT stage's half-snake + context cat in one kernel (the residual
    layer's plain output is never materialised);
  - ``nlc_up(full, w, b)``: the pointwise grouped transposed conv in NLC.

* ``act_kernel="triton"`` runs the four activation patterns above (not ``nlc_up``) as ONE
  hand-written Triton kernel (:mod:`kanitts.codec.kernels`) instead of the Inductor ones:
  on the H100 those took 61% of the step at 3-4x their DRAM floor (suspected: per-element
  div/mod by the dynamic sizes to index the cat, libdevice ``sinf``; and the profile's call
  counts show ``nlc_add_act_cat`` split in two kernels that both read ``y`` and ``h``).
  The kernel indexes by (time block, batch) with C constexpr,
  writes all outputs of a pattern in one launch and uses the SFU's ``cos.approx`` after a
  range reduction for ``sin^2`` (``sin_mode``). It needs CUDA and Triton; otherwise (and
  for ELU activations) the compiled functions run. Default ``"compile"`` until measured.
* Streaming contexts live as ``[slots + 1, L, C]``, so ``cat([ctx, x], T)`` joins two
  contiguous chunks per stream.
* Channel padding (``pad_channels``, default 8): cuDNN's NHWC tensor-core kernels want
  ``C % 8 == 0`` (the last stages have 54 and 27). Every stage is padded with zero weight
  rows/columns, zero biases and alpha 1; padded channels stay exactly 0 (snake(0) =
  lrelu(0) = 0), so the audio is unchanged.

Memory passes per residual unit (one pass = reading or writing one ``[B, T, C]`` tensor
once; conv reads/writes of their own input/output, 4 per unit, are the same in both):

* ``ncl`` + ``compile="ops"``: 2 cuDNN layout transposes per conv, each a read and a
  write of the conv's input or output (8), 2 bias adds (4), 2 fused act+cat (4), the
  residual add (3): **19** (11 without the transposes). A whole residual layer (3 chains
  x 3 units): 9 x 19 + two chain sums (6) + ``/ n`` (2) = **179**, then the next stage's
  activation and cat (eager, several passes) on top.
* ``nlc``: ``nlc_act_cat`` (2) + ``nlc_add_act_cat`` (4): **6**. A chain's first unit
  starts with ``nlc_act_cat`` of the layer input (2 instead of 4) and its last unit ends
  in ``nlc_add`` (3, then 4) or ``nlc_sum_act_cat`` (4). A whole residual layer:
  3 x 16 + 3 + 4 + 4 = **59**, the next stage's activation and cat included.
"""

from __future__ import annotations

import contextlib
import copy
import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from kanitts.codec import kernels
from kanitts.codec.nanocodec import (
    LRELU_SLOPE,
    SNAKE_EPS,
    Activation,
    CausalConv1d,
    CausalConvTranspose1d,
    NanoCodec,
    ResidualLayer,
    ResidualUnit,
)

logger = logging.getLogger(__name__)

DEFAULT_FRAME_SIZES = (1, 2, 4, 8)
#: Decoder walk layouts: "ncl" = [B, C, T] (reference), "nlc" = [B, T, C] channels-last.
LAYOUTS = ("ncl", "nlc")
#: Implementations of the nlc walk's activation patterns: the torch(.compile)d functions
#: below, or the hand-written Triton kernel of :mod:`kanitts.codec.kernels` (CUDA only).
ACT_KERNELS = ("auto", "compile", "triton")
#: Default layout (``layout=None``): channels-last. On the H100 (benchmarks/codec_h100-run3.txt)
#: it decodes 2,669 audio s/s at batch 256 against 1,408 for "ncl" in the same run, and a
#: batch-1 step takes 1.7 ms against 3.2; on the CPU (eager, 2 cores) it is ~1.2x faster.
DEFAULT_LAYOUT = "nlc"


def _act_cat(x: Tensor, ctx: Tensor, a: Tensor, inv: Tensor, m: Tensor) -> Tensor:
    """``cat([ctx, half_snake(x)], -1)`` as one expression (one kernel when compiled)."""
    xf = x.float()
    y = torch.where(m, xf + inv * torch.sin(a * xf).pow(2), F.leaky_relu(xf, LRELU_SLOPE))
    return torch.cat([ctx, y.to(x.dtype)], dim=-1)


def _up_pointwise(full: Tensor, w: Tensor, bias: Tensor) -> Tensor:
    """Grouped causal transposed conv, ``K = 2*stride``, 2 inputs per output channel, on
    ``full = cat([previous frame, x])``: ``out[n, r] = x[n] w[r] + x[n-1] w[stride + r]``."""
    b, _, t1 = full.shape
    t, cout, s = t1 - 1, bias.shape[0], w.shape[-1] // 2
    cur = full[..., 1:].reshape(b, cout, 2, t, 1)
    prev = full[..., :-1].reshape(b, cout, 2, t, 1)
    w = w.reshape(cout, 2, 1, 2 * s)
    out = (cur * w[..., :s]).sum(2) + (prev * w[..., s:]).sum(2) + bias.reshape(1, cout, 1, 1)
    return out.reshape(b, cout, t * s)


# --------------------------------------------------------------------------- nlc pointwise
# Pure functions over [B, T, C] activations (C last, contiguous). The leading tensor
# arguments are activations (B/T dynamic when compiled); the rest are per-channel float32
# parameters (C static). ``elu`` selects ELU instead of the snake/lrelu ``where``.


def _nlc_act(xf: Tensor, a: Tensor, inv: Tensor, m: Tensor, elu: bool) -> Tensor:
    """Half-snake (snake where ``m``, lrelu elsewhere) in float32, or ELU."""
    if elu:
        return F.elu(xf)
    return torch.where(m, xf + inv * torch.sin(a * xf).pow(2), F.leaky_relu(xf, LRELU_SLOPE))


def nlc_act_cat(x: Tensor, ctx: Tensor, b: Tensor, a: Tensor, inv: Tensor, m: Tensor, elu: bool) -> Tensor:
    """``cat([ctx, act(x + b)], T)``: the previous conv's bias, the activation and the
    next conv's left context in one pass (read x, write the conv input)."""
    y = _nlc_act(x.float() + b, a, inv, m, elu)
    return torch.cat([ctx, y.to(x.dtype)], dim=1)


def nlc_add_act_cat(
    y: Tensor, h: Tensor, ctx: Tensor, b: Tensor, a: Tensor, inv: Tensor, m: Tensor, elu: bool
) -> tuple[Tensor, Tensor]:
    """Residual add ``y' = y + (h + b)`` fused with the next unit's input activation and
    context cat: returns ``(y', cat([ctx, act(y')], T))`` (read y, h; write y', full)."""
    yf = y.float() + (h.float() + b)
    out = _nlc_act(yf, a, inv, m, elu)
    return yf.to(y.dtype), torch.cat([ctx, out.to(y.dtype)], dim=1)


def nlc_add(total: Tensor | None, y: Tensor, h: Tensor, b: Tensor) -> Tensor:
    """A residual chain's end: ``total + (y + (h + b))`` (``y + (h + b)`` for the first)."""
    z = y.float() + (h.float() + b)
    if total is not None:
        z = total.float() + z
    return z.to(y.dtype)


def nlc_sum_act_cat(
    total: Tensor | None,
    y: Tensor,
    h: Tensor,
    ctx: Tensor,
    b: Tensor,
    a: Tensor,
    inv: Tensor,
    m: Tensor,
    elu: bool,
    n: int,
) -> Tensor:
    """The last chain's end: the residual layer's output ``(total + (y + (h + b))) / n``
    goes straight into the NEXT layer's activation and context cat (never stored)."""
    z = y.float() + (h.float() + b)
    if total is not None:
        z = total.float() + z
    out = _nlc_act(z / n, a, inv, m, elu)
    return torch.cat([ctx, out.to(y.dtype)], dim=1)


def nlc_up(full: Tensor, w: Tensor, b: Tensor, cout_p: int) -> Tensor:
    """Grouped causal transposed conv (``K = 2*stride``, input channels ``2g, 2g+1`` feed
    output channel ``g``) in NLC: ``full[B, T+1, Cin_p]`` (previous frame first) ->
    ``[B, T*stride, cout_p]``; ``w[4, stride, cout]`` holds the taps
    (cur even, cur odd, prev even, prev odd), float32. Padded output channels are 0."""
    bsz, t1, _ = full.shape
    s, cout = w.shape[1], w.shape[2]
    t = t1 - 1
    x = full[..., : 2 * cout].float()
    cur, prev = x[:, 1:], x[:, :-1]
    out = (
        cur[..., 0::2].unsqueeze(2) * w[0]
        + cur[..., 1::2].unsqueeze(2) * w[1]
        + prev[..., 0::2].unsqueeze(2) * w[2]
        + prev[..., 1::2].unsqueeze(2) * w[3]
        + b
    )
    out = out.to(full.dtype).reshape(bsz, t * s, cout)
    if cout_p > cout:
        out = F.pad(out, (0, cout_p - cout))
    return out


def conv_nlc(full: Tensor, weight: Tensor, bias: Tensor | None = None, dilation: int = 1) -> Tensor:
    """Causal conv over ``full[B, T', Cin]`` (context already prepended) as a channels-last
    ``conv2d``: ``[B, Cin, 1, T']`` is a free view with channels_last strides, ``weight`` is
    ``[Cout, Cin, 1, K]`` channels_last, and the channels_last output's ``[B, T, Cout]``
    view is contiguous (``contiguous()`` is then a no-op), so no layout copies happen."""
    out = F.conv2d(full.transpose(1, 2).unsqueeze(2), weight, bias, dilation=(1, dilation))
    return out.squeeze(2).transpose(1, 2).contiguous()


class _Pointwise:
    """One nlc pointwise function, eager or compiled with C static and B/T dynamic.

    ``torch.compile(dynamic=False)`` specialises every size; ``mark_dynamic`` on dims 0 and
    1 of the first ``n_act`` (activation) arguments (``maybe_mark_dynamic``: a size that
    the code specialises, e.g. T = 1 broadcasting, is allowed to) then makes B and T symbolic
    (size-1 dims stay static: dynamo specialises them anyway). So each function compiles
    about once per channel count / pattern (plus a few size-1 specialisations, e.g. a
    1-frame step's first stage), not per shape: 29 graphs for every bucket and frame count
    of the tiny 5-stage codec (tests/test_codec_fast_nlc.py checks that B/T changes do not
    recompile)."""

    def __init__(self, fn: Callable[..., Any], n_act: int, compiled: bool) -> None:
        self.n_act = n_act
        self.compiled = compiled
        self.fn = torch.compile(fn, dynamic=False) if compiled else fn

    def __call__(self, *args: Any) -> Any:
        if not self.compiled:
            return self.fn(*args)
        import torch._dynamo as dynamo

        for t in args[: self.n_act]:
            if isinstance(t, Tensor):
                for d in (0, 1):
                    if t.shape[d] > 1:
                        dynamo.maybe_mark_dynamic(t, d)
        return self.fn(*args)


def _round_up(c: int, multiple: int) -> int:
    return -(-c // multiple) * multiple


class _NlcAct:
    """Per-channel float32 parameters of one activation over ``cp`` (padded) channels."""

    def __init__(self, mod: Activation, cp: int, device: torch.device) -> None:
        self.elu = mod.kind == "elu"
        a = torch.ones(cp, device=device)
        m = torch.zeros(cp, dtype=torch.bool, device=device)
        n = mod.snake_channels
        if n:
            assert mod.alpha is not None
            a[:n] = mod.alpha.detach().reshape(-1).float()
            m[:n] = True
        self.a, self.inv, self.m = a, (a + SNAKE_EPS).reciprocal(), m
        #: ``[3, cp]`` (alpha, gain, slope) for the Triton kernel; None for ELU (not covered).
        self.kparams: Tensor | None = None if self.elu else kernels.act_params(self.a, self.inv, self.m)

    def args(self) -> tuple[Tensor, Tensor, Tensor, bool]:
        return self.a, self.inv, self.m, self.elu


class _NlcConv:
    """A causal conv's weight as ``[Cout_p, Cin_p, 1, K]`` channels_last (zero padded),
    its bias as float32 ``[Cout_p]`` (added by the consumer) and in the model dtype."""

    def __init__(self, layer: CausalConv1d, cin_p: int, cout_p: int) -> None:
        w = layer.weight.detach()
        cout, cin, k = w.shape
        wp = w.new_zeros(cout_p, cin_p, 1, k)
        wp[:cout, :cin, 0] = w
        self.weight = wp.contiguous(memory_format=torch.channels_last)
        self.bias = torch.zeros(cout_p, device=w.device)
        self.bias[:cout] = layer.bias.detach().float()
        self.bias_dt = self.bias.to(w.dtype)
        self.dilation = layer.dilation
        self.context = layer.context
        self.index = layer.state_index
        self.cout_p = cout_p


class _NlcUp:
    """A causal transposed conv in NLC: the pointwise taps when it is NanoCodec's
    ``K = 2*stride``, ``groups = Cout``, 2-inputs-per-output form, else the module."""

    def __init__(self, layer: CausalConvTranspose1d, cin_p: int, cout_p: int) -> None:
        w = layer.weight.detach()
        cin, k = w.shape[0], w.shape[2]
        s, cout = layer.stride, layer.bias.shape[0]
        self.layer, self.stride, self.cin, self.cout, self.cout_p = layer, s, cin, cout, cout_p
        self.context, self.index = layer.context, layer.state_index
        self.simple = layer.context == 1 and k == 2 * s and layer.groups == cout and cin == 2 * cout
        self.w = w.new_zeros(0)
        if self.simple:
            wf = w.float()[:, 0, :]  # [2 * cout, 2 * stride]
            self.w = torch.stack([wf[0::2, :s].T, wf[1::2, :s].T, wf[0::2, s:].T, wf[1::2, s:].T]).contiguous()
        self.bias = layer.bias.detach().float()


class _NlcUnit:
    """One residual unit's activations and convs over ``cp`` (padded) channels."""

    def __init__(self, unit: ResidualUnit, cp: int, dev: torch.device) -> None:
        self.act_in = _NlcAct(unit.input_activation, cp, dev)
        self.conv_in = _NlcConv(unit.input_conv, cp, cp)
        self.act_skip = _NlcAct(unit.skip_activation, cp, dev)
        self.conv_skip = _NlcConv(unit.skip_conv, cp, cp)


class _NlcStage:
    """One up-sampling stage: input activation, transposed conv, residual layer."""

    def __init__(self, act: Activation, up: CausalConvTranspose1d, res: ResidualLayer, pad: int) -> None:
        dev = up.bias.device
        self.cin_p = _round_up(up.in_channels, pad)
        self.cp = _round_up(up.bias.shape[0], pad)
        self.act = _NlcAct(act, self.cin_p, dev)
        self.up = _NlcUp(up, self.cin_p, self.cp)
        self.chains = [[_NlcUnit(u, self.cp, dev) for u in chain.res_blocks] for chain in res.res_blocks]
        self.zero_bias = torch.zeros(self.cp, device=dev)


class _NlcPlan:
    """Everything the nlc walk needs, converted once from the decoder's weights."""

    def __init__(self, codec: NanoCodec, pad: int) -> None:
        dec = codec.decoder
        dev = codec.device
        self.table = codec.dequantizer.table
        self.cin = dec.cfg.input_dim
        self.cin_p = _round_up(self.cin, pad)
        self.pre = _NlcConv(dec.pre_conv, self.cin_p, _round_up(dec.cfg.base_channels, pad))
        self.stages = [
            _NlcStage(a, u, r, pad)
            for a, u, r in zip(dec.activations, dec.up_sample_conv_layers, dec.res_layers)
        ]
        c_last = dec.post_conv.in_channels
        cp_last = _round_up(c_last, pad)
        self.post_act = _NlcAct(dec.post_activation, cp_last, dev)
        self.post = _NlcConv(dec.post_conv, cp_last, _round_up(1, pad))
        self.tanh = dec.cfg.output_activation == "tanh"
        # (length, padded channels) of every stateful layer's context, in state_index
        # order: a layer's context holds its input channels, padded like its input.
        self.context_shapes = [(length, _round_up(c, pad)) for c, length in dec.context_shapes()]


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
    is present. ``layout`` picks the decoder walk (``"ncl"``/``"nlc"``, ``None`` =
    :data:`DEFAULT_LAYOUT`); ``"nlc"`` always uses the fused pointwise forms (compiled
    under ``compile="ops"``) and pads every stage's channels to a multiple of
    ``pad_channels`` (1 = no padding). ``act_kernel`` (:data:`ACT_KERNELS`) picks the
    implementation of the nlc activation patterns: ``"auto"`` (default) = ``"triton"`` for a
    16-bit codec on CUDA with Triton, else ``"compile"``; ``"triton"`` = the hand-written kernel
    with ``sin_mode`` (:data:`kanitts.codec.kernels.SIN_MODES`), used when the layout is
    ``"nlc"``, the codec is on CUDA and Triton imports, else the ``"compile"`` functions
    (a warning says so; :meth:`stats` reports what runs). Not thread-safe: drive it from
    one thread.
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
        layout: str | None = None,
        pad_channels: int = 8,
        act_kernel: str = "auto",
        sin_mode: str = kernels.DEFAULT_SIN_MODE,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        layout = DEFAULT_LAYOUT if layout is None else layout
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
        if pad_channels < 1:
            raise ValueError("pad_channels must be >= 1")
        if act_kernel not in ACT_KERNELS:
            raise ValueError(f"act_kernel must be one of {ACT_KERNELS}, got {act_kernel!r}")
        if sin_mode not in kernels.SIN_MODES:
            raise ValueError(f"sin_mode must be one of {sorted(kernels.SIN_MODES)}, got {sin_mode!r}")
        self.layout = layout
        self.pad_channels = int(pad_channels) if layout == "nlc" else 1
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
        if layout == "nlc":
            self.fused_ops = True  # the nlc walk exists only in the fused form
        self.frame_sizes = tuple(sorted({int(f) for f in frame_sizes} | {1}))
        # Compiled code specialises on size 1: starting the buckets at 2 saves a compile
        # (for the nlc pointwise functions under "ops": one per function and channel count).
        smallest = 2 if self.compiled or (compile == "ops" and layout == "nlc") else 1
        self.buckets = tuple(sorted(set(buckets))) if buckets else default_buckets(batch_size, smallest)
        if self.buckets[-1] < batch_size:
            self.buckets = self.buckets + (batch_size,)
        self.scratch = batch_size  # the extra slot padding rows read and write
        self._nlc: _NlcPlan | None = None
        if layout == "nlc":
            self._nlc = _NlcPlan(codec, self.pad_channels)
            # [slots + 1, L, C_padded]: a context is a contiguous chunk per stream.
            self.states: list[Tensor] = [
                torch.zeros(batch_size + 1, length, c, device=dev, dtype=self.dtype)
                for length, c in self._nlc.context_shapes
            ]
        else:
            self.states = [
                torch.zeros(batch_size + 1, c, length, device=dev, dtype=self.dtype)
                for c, length in self.decoder.context_shapes()
            ]
        self.stream: torch.cuda.Stream | None = torch.cuda.Stream(dev) if is_cuda else None
        self._prepare_fused()
        # compile="ops": compile only the fused pointwise pieces (seconds, not minutes).
        self.ops_compiled = compile == "ops" and self.fused_ops
        self._k_act_cat, self._k_up = _act_cat, _up_pointwise
        if self.ops_compiled and layout == "ncl":
            self._k_act_cat = torch.compile(_act_cat, dynamic=True)
            self._k_up = torch.compile(_up_pointwise, dynamic=True)
        if self.ops_compiled:
            self.compiled = False
            if layout == "nlc":
                import torch._dynamo as dynamo

                # About one compile per (channel count, pattern): more than dynamo's default 8.
                dynamo.config.recompile_limit = max(dynamo.config.recompile_limit, 64)
        ops = self.ops_compiled
        self._p_act_cat = _Pointwise(nlc_act_cat, 2, ops)
        self._p_add_act_cat = _Pointwise(nlc_add_act_cat, 3, ops)
        self._p_add = _Pointwise(nlc_add, 3, ops)
        self._p_sum_act_cat = _Pointwise(nlc_sum_act_cat, 4, ops)
        self._p_up = _Pointwise(nlc_up, 1, ops)
        self.sin_mode = sin_mode
        self.act_kernel = self._resolve_act_kernel(act_kernel, is_cuda)
        self._triton = self.act_kernel == "triton"
        fn = self._step_fn if layout == "ncl" else self._step_fn_nlc
        if self.compiled:
            import torch._dynamo as dynamo

            dynamo.config.cache_size_limit = max(dynamo.config.cache_size_limit, 64)
            fn = torch.compile(fn, dynamic=True)
        self._fn = fn
        self._graphs: dict[tuple[int, int], tuple[torch.cuda.CUDAGraph, Tensor, Tensor, Tensor]] = {}
        self._graph_pool = torch.cuda.graph_pool_handle() if self.cuda_graphs else None
        self._failed: set[tuple[int, int]] = set()

    # ------------------------------------------------------------------ set-up
    @property
    def device(self) -> torch.device:
        return self.codec.device

    def _resolve_act_kernel(self, requested: str, is_cuda: bool) -> str:
        """The activation implementation that can run here: "triton" needs the nlc walk,
        a CUDA codec and an importable Triton; anything else degrades to "compile"."""
        if requested == "auto":
            # The Triton kernel where it was measured (H100, benchmarks/codec_h100-run4.txt:
            # 4,143 vs 2,738 audio s/s at batch 256, same accuracy against float32): the nlc
            # walk on CUDA in a 16-bit dtype. float32 keeps the compiled functions (the fast
            # sin approximation is sized for bf16 resolution).
            ok = (self.layout == "nlc" and not self.compiled and is_cuda and kernels.triton is not None
                  and self.dtype in (torch.bfloat16, torch.float16))
            return "triton" if ok else "compile"
        if requested != "triton":
            return requested
        why = None
        if self.layout != "nlc":
            why = "the ncl walk has no Triton kernel"
        elif self.compiled:
            why = "the whole step is torch.compiled"
        elif not is_cuda:
            why = "the codec is not on CUDA"
        elif kernels.triton is None:
            why = "Triton is not importable"
        if why:
            logger.warning("act_kernel='triton' unavailable (%s): using the compiled functions", why)
            return "compile"
        return "triton"

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

    # ------------------------------------------------------------------ the nlc step
    def _kernel(self, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        """Run a :mod:`kernels` function; if it fails outside a CUDA graph capture (e.g. the
        device's Triton cannot build it), log once and use the compiled functions from now
        on (``None`` tells the caller to fall back for this call too)."""
        if self.device.type == "cuda" and torch.cuda.is_current_stream_capturing():
            return fn(*args, sin_mode=self.sin_mode, **kw)  # compiled by the warm-up runs
        try:
            return fn(*args, sin_mode=self.sin_mode, **kw)
        except Exception:  # degrade, never break decoding
            logger.warning("Triton activation kernel failed; using the compiled functions", exc_info=True)
            self._triton = False
            self.act_kernel = "compile"
            return None

    def _act_cat(self, x: Tensor, ctx: Tensor, b: Tensor, act: _NlcAct) -> Tensor:
        """``nlc_act_cat`` through the selected implementation."""
        if self._triton and act.kparams is not None:
            out = self._kernel(kernels.act_cat, x, ctx, b, act.kparams)
            if out is not None:
                return out
        return self._p_act_cat(x, ctx, b, *act.args())

    def _add_act_cat(self, y: Tensor, h: Tensor, ctx: Tensor, b: Tensor, act: _NlcAct) -> tuple[Tensor, Tensor]:
        """``nlc_add_act_cat`` through the selected implementation."""
        if self._triton and act.kparams is not None:
            out = self._kernel(kernels.add_act_cat, y, h, ctx, b, act.kparams)
            if out is not None:
                return out
        return self._p_add_act_cat(y, h, ctx, b, *act.args())

    def _add(self, total: Tensor | None, y: Tensor, h: Tensor, b: Tensor) -> Tensor:
        """``nlc_add`` through the selected implementation."""
        if self._triton:
            out = self._kernel(kernels.add, total, y, h, b)
            if out is not None:
                return out
        return self._p_add(total, y, h, b)

    def _sum_act_cat(
        self, total: Tensor | None, y: Tensor, h: Tensor, ctx: Tensor, b: Tensor, act: _NlcAct, n: int
    ) -> Tensor:
        """``nlc_sum_act_cat`` through the selected implementation."""
        if self._triton and act.kparams is not None:
            out = self._kernel(kernels.sum_act_cat, total, y, h, ctx, b, act.kparams, n)
            if out is not None:
                return out
        return self._p_sum_act_cat(total, y, h, ctx, b, *act.args(), n)

    @staticmethod
    def _ctx_cat(ctx: list[Tensor], new: list[Tensor | None], index: int, length: int, x: Tensor) -> Tensor:
        """``cat([context, x], T)`` for a layer without a fused activation (pre_conv)."""
        if not length:
            return x
        full = torch.cat([ctx[index], x], dim=1)
        new[index] = full[:, -length:]
        return full

    @staticmethod
    def _keep(new: list[Tensor | None], index: int, length: int, full: Tensor) -> None:
        if length:
            new[index] = full[:, -length:]

    def _up_nlc(self, up: _NlcUp, full: Tensor) -> Tensor:
        """The stage's transposed conv on ``full = cat([context, act(x)], T)``."""
        if up.simple:
            return self._p_up(full, up.w, up.bias, up.cout_p)
        # General form (not NanoCodec's): via the module's transposed conv in NCL.
        layer = up.layer
        t = full.shape[1] - up.context
        x = full[..., : up.cin].transpose(1, 2)
        out = F.conv_transpose1d(x, layer.weight, layer.bias, stride=up.stride, groups=layer.groups)
        start = up.context * up.stride
        out = out[..., start : start + t * up.stride].transpose(1, 2)
        return F.pad(out, (0, up.cout_p - up.cout)).contiguous()

    def _res_nlc(
        self, st: _NlcStage, x0: Tensor, ctx: list[Tensor], new: list[Tensor | None], nxt: _NlcAct, nxt_conv: tuple[int, int]
    ) -> Tensor:
        """One residual layer over ``x0[B, T, C]``, ending in the next layer's activation
        and context cat (``nxt_conv`` = its ``(state index, context length)``)."""
        total: Tensor | None = None
        n = len(st.chains)
        for ci, chain in enumerate(st.chains):
            y = x0
            h: Tensor | None = None
            bias = st.zero_bias
            for u in chain:
                ci_in, l_in = u.conv_in.index, u.conv_in.context
                if h is None:
                    full = self._act_cat(y, ctx[ci_in], bias, u.act_in)
                else:
                    y, full = self._add_act_cat(y, h, ctx[ci_in], bias, u.act_in)
                self._keep(new, ci_in, l_in, full)
                h = conv_nlc(full, u.conv_in.weight, dilation=u.conv_in.dilation)
                ci_sk, l_sk = u.conv_skip.index, u.conv_skip.context
                full = self._act_cat(h, ctx[ci_sk], u.conv_in.bias, u.act_skip)
                self._keep(new, ci_sk, l_sk, full)
                h = conv_nlc(full, u.conv_skip.weight, dilation=u.conv_skip.dilation)
                bias = u.conv_skip.bias
            assert h is not None
            if ci < n - 1:
                total = self._add(total, y, h, bias)
            else:
                index, length = nxt_conv
                full = self._sum_act_cat(total, y, h, ctx[index], bias, nxt, n)
                self._keep(new, index, length, full)
                return full
        raise AssertionError("a residual layer has at least one chain")

    def _step_fn_nlc(self, codes: Tensor, index: Tensor, states: list[Tensor]) -> Tensor:
        """:meth:`_step_fn` over channels-last ``[B, T, C]`` activations (module docstring)."""
        plan = self._nlc
        assert plan is not None
        ctx = [s.index_select(0, index) for s in states]
        new: list[Tensor | None] = [None] * len(ctx)
        lat = plan.table[codes]  # [B, G, T, D]
        b, g, t, d = lat.shape
        x = lat.permute(0, 2, 1, 3).reshape(b, t, g * d).to(self.dtype)
        if plan.cin_p > plan.cin:
            x = F.pad(x, (0, plan.cin_p - plan.cin))
        pre = plan.pre
        h = conv_nlc(self._ctx_cat(ctx, new, pre.index, pre.context, x), pre.weight, dilation=pre.dilation)
        st0 = plan.stages[0]
        full = self._act_cat(h, ctx[st0.up.index], pre.bias, st0.act)
        for i, st in enumerate(plan.stages):
            self._keep(new, st.up.index, st.up.context, full)
            x0 = self._up_nlc(st.up, full)
            if i + 1 < len(plan.stages):
                nxt, conv = plan.stages[i + 1].act, (plan.stages[i + 1].up.index, plan.stages[i + 1].up.context)
            else:
                nxt, conv = plan.post_act, (plan.post.index, plan.post.context)
            full = self._res_nlc(st, x0, ctx, new, nxt, conv)
        out = conv_nlc(full, plan.post.weight, plan.post.bias_dt, plan.post.dilation)[..., 0]
        out = torch.tanh(out) if plan.tanh else out.clamp(-1.0, 1.0)
        for s, n in zip(states, new):
            if n is not None:
                s.index_copy_(0, index, n)
        return out

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
                with self.stream_context():
                    got = self._capture(bucket, frames)
                self._graphs[key] = got
            except Exception:  # degrade to the un-graphed call
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
        with self.stream_context(), cudnn_autotune(self.device.type == "cuda"):
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
            "layout": self.layout,
            "pad_channels": self.pad_channels,
            "act_kernel": self.act_kernel,
            "sin_mode": self.sin_mode,
            "dtype": str(self.dtype).replace("torch.", ""),
            "graphs": sorted(self._graphs),
            "failed": sorted(self._failed),
        }


def iter_shapes(fast: FastStreamingDecoder) -> Iterator[tuple[int, int]]:
    for b in fast.buckets:
        for f in fast.frame_sizes:
            yield b, f
