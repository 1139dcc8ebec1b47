"""The channels-last (``[B, T, C]``) decoder walk that serves
(:class:`kanitts.codec.fast.FastStreamingDecoder`).

Every conv is ``F.conv2d`` on the free 4-D view ``[B, C, 1, T]`` (channels_last strides)
of the ``[B, T, C]`` input with a bias-free ``[Cout, Cin, 1, K]`` channels_last weight,
so cuDNN sees NHWC in and out and adds no transposes. Each conv's bias, the residual
adds, the activation and the next conv's context concatenation ride in one pointwise
function per pattern (``nlc_act_cat``, ``nlc_add_act_cat``, ``nlc_add``,
``nlc_sum_act_cat``, ``nlc_up``; compiled with C static and B/T dynamic under
``compile="ops"``), or in the Triton kernel of :mod:`kanitts.codec.kernels`
(``act_kernel="triton"``). Streaming contexts live as ``[slots + 1, L, C]``; channels
are padded to multiples of ``pad_channels`` with zero weights, biases and alpha 1, so
padded channels stay exactly 0. Why and what it saves: docs/ARCHITECTURE.md.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from kanitts.codec import kernels
from kanitts.codec.layers import (
    LRELU_SLOPE,
    SNAKE_EPS,
    Activation,
    CausalConv1d,
    CausalConvTranspose1d,
    ResidualLayer,
    ResidualUnit,
)
from kanitts.codec.nanocodec import NanoCodec

logger = logging.getLogger(__name__)

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


class Pointwise:
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


class NlcPlan:
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


class _Commit:
    """Writes each stateful layer's new left context into the state pool as soon as the
    layer's input exists. The contexts were gathered (copied) at the start of the step, so
    nothing reads the pool afterwards and the early write is exact. Keeping a *view*
    ``full[:, -L:]`` until the end of the step instead would keep every layer's whole
    input ``full`` alive (a view holds its base): ~19 inputs per stage, about 10x the
    step's working set (see :mod:`kanitts.codec.memory`)."""

    __slots__ = ("index", "states")

    def __init__(self, states: list[Tensor], index: Tensor) -> None:
        self.states, self.index = states, index

    def keep(self, layer: int, length: int, full: Tensor) -> None:
        if length:
            self.states[layer].index_copy_(0, self.index, full[:, -length:])


class NlcWalk:
    """The channels-last step (mixed into :class:`~kanitts.codec.fast.FastStreamingDecoder`,
    which sets these attributes)."""

    _nlc: NlcPlan | None
    _triton: bool
    act_kernel: str
    sin_mode: str
    dtype: torch.dtype
    device: torch.device
    _p_act_cat: Pointwise
    _p_add_act_cat: Pointwise
    _p_add: Pointwise
    _p_sum_act_cat: Pointwise
    _p_up: Pointwise

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
    def _ctx_cat(ctx: list[Tensor], new: _Commit, index: int, length: int, x: Tensor) -> Tensor:
        """``cat([context, x], T)`` for a layer without a fused activation (pre_conv)."""
        if not length:
            return x
        full = torch.cat([ctx[index], x], dim=1)
        new.keep(index, length, full)
        return full

    @staticmethod
    def _keep(new: _Commit, index: int, length: int, full: Tensor) -> None:
        new.keep(index, length, full)

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
        self, st: _NlcStage, x0: Tensor, ctx: list[Tensor], new: _Commit, nxt: _NlcAct, nxt_conv: tuple[int, int]
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

    def _walk(self, frames: Tensor, index: Tensor, states: list[Tensor]) -> Tensor:
        """Decode ``frames[k, T, G]`` (codes) for slots ``index[k]`` over channels-last
        ``[B, T, C]`` activations, committing their contexts as it goes (each layer's
        right after its input is built): ``audio[k, T * samples]``."""
        plan = self._nlc
        assert plan is not None
        ctx = [s.index_select(0, index) for s in states]
        new = _Commit(states, index)
        # Frames come [B, T, G]: the lookup's latent is [B, T, G, D], already channels-last.
        lat = plan.table[frames]
        b, t, g, d = lat.shape
        x = lat.reshape(b, t, g * d).to(self.dtype)
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
        return torch.tanh(out) if plan.tanh else out.clamp(-1.0, 1.0)
