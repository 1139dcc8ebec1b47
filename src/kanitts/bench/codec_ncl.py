"""The channels-first (``[B, C, T]``) codec walk, for benchmarks and as a test reference.

Serving decodes with the channels-last walk (:class:`kanitts.codec.fast.FastStreamingDecoder`,
:mod:`kanitts.codec.walk_nlc`). :class:`NclStreamingDecoder` is the same pool (buckets,
scratch slot, CUDA graphs, stream) walking the decoder channels-first over the codec's
own modules, which scripts/codec_gpu_bench.py measures against it and the codec tests
use as a second reference; :func:`decoder_for_layout` builds either by layout name.

With ``fused_ops`` the walk uses fusion-friendly forms of two pieces:

- half-snake as ONE pointwise expression over all channels
  (``where(c < C/2, x + sin(a x)^2 / (a + 1e-9), leaky_relu(x, 0.01))``, alpha kept in
  float32) instead of slice + two ops + ``cat``;
- NanoCodec's grouped causal transposed conv (``K = 2*stride``, 2 input channels per
  output channel) as the equivalent pointwise form
  ``out[n, r] = x[n] w[r] + x[n-1] w[stride + r]``.

Without them the module forwards run (identical to ``StreamingDecoder``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from kanitts.codec.layers import (
    LRELU_SLOPE,
    SNAKE_EPS,
    Activation,
    CausalConv1d,
    CausalConvTranspose1d,
    ResidualLayer,
)
from kanitts.codec.fast import FastStreamingDecoder
from kanitts.codec.nanocodec import NanoCodec

logger = logging.getLogger(__name__)

#: Decoder walk layouts by name: "ncl" = ``[B, C, T]`` (this module), "nlc" = ``[B, T, C]``
#: channels-last (the serving walk; the default).
LAYOUTS = ("ncl", "nlc")


def act_cat_ncl(x: Tensor, ctx: Tensor, a: Tensor, inv: Tensor, m: Tensor) -> Tensor:
    """``cat([ctx, half_snake(x)], -1)`` as one expression (one kernel when compiled)."""
    xf = x.float()
    y = torch.where(m, xf + inv * torch.sin(a * xf).pow(2), F.leaky_relu(xf, LRELU_SLOPE))
    return torch.cat([ctx, y.to(x.dtype)], dim=-1)


def up_pointwise_ncl(full: Tensor, w: Tensor, bias: Tensor) -> Tensor:
    """Grouped causal transposed conv, ``K = 2*stride``, 2 inputs per output channel, on
    ``full = cat([previous frame, x])``: ``out[n, r] = x[n] w[r] + x[n-1] w[stride + r]``."""
    b, _, t1 = full.shape
    t, cout, s = t1 - 1, bias.shape[0], w.shape[-1] // 2
    cur = full[..., 1:].reshape(b, cout, 2, t, 1)
    prev = full[..., :-1].reshape(b, cout, 2, t, 1)
    w = w.reshape(cout, 2, 1, 2 * s)
    out = (cur * w[..., :s]).sum(2) + (prev * w[..., s:]).sum(2) + bias.reshape(1, cout, 1, 1)
    return out.reshape(b, cout, t * s)



class NclStreamingDecoder(FastStreamingDecoder):
    """:class:`~kanitts.codec.fast.FastStreamingDecoder` walking the decoder channels-first.

    Same constructor, interface and function; ``fused_ops`` (default: on when compiling)
    picks the fused forms above, ``pad_channels`` is ignored (no padding: reported as 1) and
    ``act_kernel`` always resolves to ``"compile"`` (there is no Triton kernel for this
    walk; asking for ``"triton"`` logs a warning). ``compile="ops"`` compiles the two fused
    pieces (with ``fused_ops``)."""

    layout = "ncl"

    def __init__(self, codec: NanoCodec, batch_size: int, *, fused_ops: bool | None = None, **kw: Any) -> None:
        self._fused_request = fused_ops
        super().__init__(codec, batch_size, **kw)

    def _setup_walk(self, compile: bool | str, pad_channels: int) -> list[Tensor]:
        """Fused forms and compiled pieces; the state pool is ``[slots + 1, C, L]`` per layer."""
        fused = self._fused_request
        self.fused_ops = bool(compile) if fused is None else bool(fused)
        self.pad_channels = 1
        self.ops_compiled = compile == "ops" and self.fused_ops
        self._prepare_fused()
        self._k_act_cat: Callable[..., Any] = act_cat_ncl
        self._k_up: Callable[..., Any] = up_pointwise_ncl
        if self.ops_compiled:
            self._k_act_cat = torch.compile(act_cat_ncl, dynamic=True)
            self._k_up = torch.compile(up_pointwise_ncl, dynamic=True)
        return [
            torch.zeros(self.batch_size + 1, c, length, device=self.device, dtype=self.dtype)
            for c, length in self.decoder.context_shapes()
        ]

    def _smallest_bucket(self) -> int:
        """The fused pieces compile with dynamic shapes: only a whole-step compile
        specialises on size 1."""
        return 2 if self.compiled else 1

    def _resolve_act_kernel(self, requested: str, is_cuda: bool) -> str:
        if requested == "triton":
            logger.warning("act_kernel='triton' unavailable (the ncl walk has no Triton kernel): "
                           "using the compiled functions")
        return "compile"

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

    def _walk(self, frames: Tensor, index: Tensor, states: list[Tensor]) -> Tensor:
        """Decode ``frames[k, T, G]`` for slots ``index[k]``, committing their contexts."""
        ctx = [s.index_select(0, index) for s in states]
        new: list[Tensor | None] = [None] * len(ctx)
        dec = self.decoder
        x = self.codec.dequantizer(frames.transpose(1, 2)).to(self.dtype)
        out = self._conv(dec.pre_conv, x, ctx, new)
        for act, up, res in zip(dec.activations, dec.up_sample_conv_layers, dec.res_layers):
            out = self._res(res, self._up(up, self._act(act, out), ctx, new), ctx, new)
        out = self._act_conv(dec.post_activation, dec.post_conv, out, ctx, new)
        out = torch.tanh(out) if dec.cfg.output_activation == "tanh" else out.clamp(-1.0, 1.0)
        for s, n in zip(states, new):
            if n is not None:
                s.index_copy_(0, index, n)
        return out[:, 0]


def decoder_for_layout(
    codec: NanoCodec,
    batch_size: int,
    *,
    layout: str | None = None,
    fused_ops: bool | None = None,
    **kw: Any,
) -> FastStreamingDecoder:
    """The pool that walks ``layout`` (:data:`LAYOUTS`; ``None`` = "nlc", the serving
    walk) with the constructor arguments ``kw``; ``fused_ops`` applies to "ncl" only (the
    nlc walk is always fused). Raises ``ValueError`` for an unknown layout."""
    layout = "nlc" if layout is None else layout
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    if layout == "ncl":
        return NclStreamingDecoder(codec, batch_size, fused_ops=fused_ops, **kw)
    return FastStreamingDecoder(codec, batch_size, **kw)
