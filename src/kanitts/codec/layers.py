"""NanoCodec's decode network (grouped FSQ dequantizer + causal HiFi-GAN) in plain PyTorch:
its config, layers and streaming state. :class:`kanitts.codec.nanocodec.NanoCodec` wraps it.

This re-implements the decode path of NeMo's ``AudioCodecModel`` for the NanoCodec
checkpoints (``GroupFiniteScalarQuantizer`` + ``CausalHiFiGANDecoder``) so that serving
does not depend on NeMo. The behaviour follows NeMo's source exactly:

* FSQ: a code index is split into per-dimension digits, least-significant first, with
  bases ``cumprod([1] + levels[:-1])``; digit ``d`` of a dimension with ``L`` levels maps
  to ``(d - L//2) / (L//2)``. Group ``g`` fills latent dims ``g*D .. g*D+D-1``.
* Causal convs are zero-padded on the left by ``(K-1)*dilation`` (stride 1 everywhere in
  the decoder), causal transposed convs drop ``K - stride`` samples on the right, so every
  output sample depends only on the past. That is what makes exact streaming possible
  (see :mod:`kanitts.codec.streaming`).
* NeMo masks every layer's output past each item's length; because every layer is causal
  the valid region never sees the masked tail, so masking once at the output is
  equivalent and cheaper.

Weight norm is folded into plain weights at load time (:mod:`kanitts.codec.loading`):
the decoder here holds ordinary ``weight``/``bias`` tensors.

Every stateful layer (causal conv, causal transposed conv) accepts an optional
:class:`StreamState` that supplies its left context instead of zero padding and
collects the context the next call needs. ``None`` means "start of the stream" and is the
one-shot path; both paths run the very same code.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

logger = logging.getLogger(__name__)

#: Activations NeMo's ``CodecActivation`` knows.
ACTIVATIONS = ("lrelu", "elu", "snake", "half_snake")
#: NeMo's snake adds this to alpha before taking the reciprocal.
SNAKE_EPS = 1e-9
#: ``torch.nn.LeakyReLU()`` default slope, which NeMo uses without an argument.
LRELU_SLOPE = 0.01


# --------------------------------------------------------------------------- config
@dataclass(frozen=True)
class QuantizerConfig:
    """Grouped finite-scalar quantizer: ``num_groups`` codebooks, each with the same
    per-dimension ``levels``."""

    num_groups: int = 4
    levels: tuple[int, ...] = (9, 8, 8, 7)

    @property
    def codebook_size(self) -> int:
        return math.prod(self.levels)

    @property
    def latent_dim(self) -> int:
        return self.num_groups * len(self.levels)


@dataclass(frozen=True)
class DecoderConfig:
    """Hyper-parameters of NeMo's ``CausalHiFiGANDecoder`` (same names and defaults)."""

    input_dim: int = 16
    up_sample_rates: tuple[int, ...] = (7, 7, 6, 3, 2)
    base_channels: int = 864
    in_kernel_size: int = 7
    out_kernel_size: int = 3
    resblock_kernel_sizes: tuple[int, ...] = (3, 7, 11)
    resblock_dilation_sizes: tuple[int, ...] = (1, 3, 5)
    activation: str = "half_snake"
    output_activation: str = "clamp"
    n_groups_equal_to_out_channels: bool = True

    @property
    def hop_length(self) -> int:
        return math.prod(self.up_sample_rates)


@dataclass(frozen=True)
class CodecConfig:
    """Everything needed to build the decode path of a NanoCodec checkpoint."""

    sample_rate: int = 22050
    samples_per_frame: int = 1764
    quantizer: QuantizerConfig = field(default_factory=QuantizerConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)

    def validate(self) -> None:
        """Raise ``ValueError`` on configurations the decoder cannot serve correctly."""
        d, q = self.decoder, self.quantizer
        if d.hop_length != self.samples_per_frame:
            raise ValueError(
                f"up_sample_rates {list(d.up_sample_rates)} multiply to {d.hop_length}, "
                f"but samples_per_frame is {self.samples_per_frame}"
            )
        if d.input_dim != q.latent_dim:
            raise ValueError(
                f"decoder input_dim {d.input_dim} != quantizer latent dim {q.latent_dim} "
                f"({q.num_groups} groups x {len(q.levels)} levels)"
            )
        if d.activation not in ACTIVATIONS:
            raise ValueError(f"unsupported activation {d.activation!r} (known: {ACTIVATIONS})")
        if d.output_activation not in ("tanh", "clamp"):
            raise ValueError(f"unsupported output_activation {d.output_activation!r}")
        channels = d.base_channels
        for rate in d.up_sample_rates:
            if channels % 2:
                raise ValueError(f"base_channels {d.base_channels} cannot be halved per stage")
            channels //= 2
            if rate < 1:
                raise ValueError(f"up-sample rate {rate} must be >= 1")
        if d.activation == "half_snake" and channels < 2:
            # NeMo's HalfSnake builds a zero-channel snake on a 1-channel stage.
            raise ValueError("half_snake needs >= 2 channels in the last decoder stage")


# --------------------------------------------------------------------------- streaming state
class StreamState:
    """Left context for every stateful layer during one decoder call.

    ``context[i]`` is the input history layer ``i`` needs (shape ``[B, C_i, L_i]``); each
    layer writes the history the *next* call will need to ``updated[i]``. The owner
    (:class:`kanitts.codec.streaming.StreamingDecoder`) decides whether to commit it,
    which is how execution masks keep idle slots untouched.
    """

    __slots__ = ("context", "updated")

    def __init__(self, context: Sequence[Tensor]) -> None:
        self.context = list(context)
        self.updated: list[Tensor | None] = [None] * len(self.context)


class StatefulLayer(nn.Module):
    """Base of layers that need left context; ``state_index`` is assigned by the decoder."""

    state_index: int = -1

    def context_shape(self) -> tuple[int, int]:
        """``(channels, length)`` of the left context this layer keeps."""
        raise NotImplementedError


class CausalConv1d(StatefulLayer):
    """Stride-1 causal convolution: left zero padding of ``(K-1)*dilation`` at stream
    start (NeMo's ``CausalConv1dNorm`` with constant padding), otherwise the stream's
    real history."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, dilation: int = 1
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.dilation = dilation
        self.context = (kernel_size - 1) * dilation
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size))
        self.bias = nn.Parameter(torch.empty(out_channels))

    def context_shape(self) -> tuple[int, int]:
        return self.in_channels, self.context

    def forward(self, x: Tensor, state: StreamState | None = None) -> Tensor:
        if self.context == 0:
            return F.conv1d(x, self.weight, self.bias)
        if state is None:
            full = F.pad(x, (self.context, 0))
        else:
            full = torch.cat([state.context[self.state_index], x], dim=-1)
            state.updated[self.state_index] = full[..., -self.context :]
        return F.conv1d(full, self.weight, self.bias, dilation=self.dilation)


class CausalConvTranspose1d(StatefulLayer):
    """Causal transposed convolution (NeMo's ``CausalConvTranspose1dNorm`` with
    ``trim_right_ratio=1``): output sample ``t`` comes from input frames
    ``<= t // stride``, and ``T`` inputs give exactly ``T*stride`` outputs.

    Output block ``n`` also receives the tail of earlier frames' kernels, so the layer
    keeps the last ``ceil((K - stride) / stride)`` input frames as context (one frame for
    NanoCodec's ``K = 2*stride``)."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, stride: int, groups: int
    ) -> None:
        super().__init__()
        if kernel_size < stride:
            raise ValueError(f"transposed conv kernel {kernel_size} < stride {stride}")
        self.in_channels = in_channels
        self.stride = stride
        self.groups = groups
        self.context = -(-(kernel_size - stride) // stride)
        self.weight = nn.Parameter(torch.empty(in_channels, out_channels // groups, kernel_size))
        self.bias = nn.Parameter(torch.empty(out_channels))

    def context_shape(self) -> tuple[int, int]:
        return self.in_channels, self.context

    def forward(self, x: Tensor, state: StreamState | None = None) -> Tensor:
        frames = x.shape[-1]
        if self.context == 0:
            full = x
        elif state is None:
            full = F.pad(x, (self.context, 0))
        else:
            full = torch.cat([state.context[self.state_index], x], dim=-1)
            state.updated[self.state_index] = full[..., -self.context :]
        out = F.conv_transpose1d(full, self.weight, self.bias, stride=self.stride, groups=self.groups)
        start = self.context * self.stride
        return out[..., start : start + frames * self.stride]


class Activation(nn.Module):
    """NeMo's ``CodecActivation``: ``lrelu``, ``elu``, ``snake`` or ``half_snake``.

    ``half_snake`` applies snake to the first ``channels // 2`` channels and LeakyReLU
    (slope 0.01) to the rest; snake is ``x + sin(alpha*x)^2 / (alpha + 1e-9)`` with a
    learned per-channel ``alpha``."""

    def __init__(self, kind: str, channels: int) -> None:
        super().__init__()
        if kind not in ACTIVATIONS:
            raise ValueError(f"unknown activation {kind!r}")
        self.kind = kind
        self.channels = channels
        self.snake_channels = {"snake": channels, "half_snake": channels // 2}.get(kind, 0)
        self.alpha: nn.Parameter | None = (
            nn.Parameter(torch.ones(1, self.snake_channels, 1)) if self.snake_channels else None
        )

    def _snake(self, x: Tensor) -> Tensor:
        assert self.alpha is not None
        return x + (self.alpha + SNAKE_EPS).reciprocal() * torch.sin(self.alpha * x).pow(2)

    def forward(self, x: Tensor) -> Tensor:
        if self.kind == "lrelu":
            return F.leaky_relu(x, LRELU_SLOPE)
        if self.kind == "elu":
            return F.elu(x)
        if self.kind == "snake":
            return self._snake(x)
        n = self.snake_channels
        return torch.cat([self._snake(x[:, :n]), F.leaky_relu(x[:, n:], LRELU_SLOPE)], dim=1)


class ResidualUnit(nn.Module):
    """act -> dilated causal conv -> act -> causal conv (dilation 1) -> + input."""

    def __init__(self, channels: int, kernel_size: int, dilation: int, activation: str) -> None:
        super().__init__()
        self.input_activation = Activation(activation, channels)
        self.input_conv = CausalConv1d(channels, channels, kernel_size, dilation)
        self.skip_activation = Activation(activation, channels)
        self.skip_conv = CausalConv1d(channels, channels, kernel_size, 1)

    def forward(self, x: Tensor, state: StreamState | None = None) -> Tensor:
        h = self.input_conv(self.input_activation(x), state)
        h = self.skip_conv(self.skip_activation(h), state)
        return x + h


class ResidualChain(nn.Module):
    """Residual units of one kernel size, one per dilation, applied in sequence."""

    def __init__(
        self, channels: int, kernel_size: int, dilations: Sequence[int], activation: str
    ) -> None:
        super().__init__()
        self.res_blocks = nn.ModuleList(
            [ResidualUnit(channels, kernel_size, d, activation) for d in dilations]
        )

    def forward(self, x: Tensor, state: StreamState | None = None) -> Tensor:
        for block in self.res_blocks:
            x = block(x, state)
        return x


class ResidualLayer(nn.Module):
    """Multi-receptive-field fusion: one chain per kernel size, outputs averaged."""

    def __init__(
        self,
        channels: int,
        kernel_sizes: Sequence[int],
        dilations: Sequence[int],
        activation: str,
    ) -> None:
        super().__init__()
        self.res_blocks = nn.ModuleList(
            [ResidualChain(channels, k, dilations, activation) for k in kernel_sizes]
        )

    def forward(self, x: Tensor, state: StreamState | None = None) -> Tensor:
        # Summation order mirrors NeMo's ``sum(residuals) / len(residuals)``.
        total: Tensor | None = None
        for chain in self.res_blocks:
            y = chain(x, state)
            total = y if total is None else total + y
        assert total is not None
        return total / len(self.res_blocks)


class CausalHiFiGANDecoder(nn.Module):
    """Latent frames ``[B, input_dim, T]`` -> waveform ``[B, 1, T * prod(up_sample_rates)]``.

    Module names follow NeMo's so that checkpoint keys map one-to-one (minus the
    weight-norm and activation wrappers, see :mod:`kanitts.codec.loading`)."""

    def __init__(self, cfg: DecoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.pre_conv = CausalConv1d(cfg.input_dim, cfg.base_channels, cfg.in_kernel_size)
        self.activations = nn.ModuleList()
        self.up_sample_conv_layers = nn.ModuleList()
        self.res_layers = nn.ModuleList()
        channels = cfg.base_channels
        for rate in cfg.up_sample_rates:
            out_channels = channels // 2
            self.activations.append(Activation(cfg.activation, channels))
            groups = out_channels if cfg.n_groups_equal_to_out_channels else 1
            self.up_sample_conv_layers.append(
                CausalConvTranspose1d(channels, out_channels, 2 * rate, rate, groups)
            )
            self.res_layers.append(
                ResidualLayer(
                    out_channels,
                    cfg.resblock_kernel_sizes,
                    cfg.resblock_dilation_sizes,
                    cfg.activation,
                )
            )
            channels = out_channels
        self.post_activation = Activation(cfg.activation, channels)
        self.post_conv = CausalConv1d(channels, 1, cfg.out_kernel_size)
        self.stateful_layers: list[StatefulLayer] = [m for m in self.modules() if isinstance(m, StatefulLayer)]
        for i, layer in enumerate(self.stateful_layers):
            layer.state_index = i

    def context_shapes(self) -> list[tuple[int, int]]:
        """Per stateful layer (in ``state_index`` order): ``(channels, context length)``."""
        return [layer.context_shape() for layer in self.stateful_layers]

    def forward(self, x: Tensor, state: StreamState | None = None) -> Tensor:
        out = self.pre_conv(x, state)
        for act, up, res in zip(self.activations, self.up_sample_conv_layers, self.res_layers):
            out = res(up(act(out), state), state)
        out = self.post_conv(self.post_activation(out), state)
        if self.cfg.output_activation == "tanh":
            return torch.tanh(out)
        return out.clamp(-1.0, 1.0)


class GroupFSQDequantizer(nn.Module):
    """Codes ``[B, G, T]`` -> latent ``[B, G*D, T]`` by table lookup.

    The table holds every codebook entry, computed with the same integer arithmetic and
    float division as NeMo's ``FiniteScalarQuantizer.decode``, so lookup results are
    bit-identical to NeMo's while costing one gather (no integer div/mod per frame)."""

    def __init__(self, cfg: QuantizerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        levels = torch.tensor(cfg.levels, dtype=torch.long)
        bases = torch.cumprod(torch.cat([torch.ones(1, dtype=torch.long), levels[:-1]]), 0)
        index = torch.arange(cfg.codebook_size, dtype=torch.long)[:, None]
        digits = (index // bases) % levels  # [N, D], least-significant digit first
        half = levels // 2
        table = (digits - half) / half  # float32, as in NeMo
        self.register_buffer("table", table.to(torch.float32), persistent=False)
        self.register_buffer("bases", bases, persistent=False)
        self.register_buffer("levels", levels, persistent=False)

    def forward(self, codes: Tensor) -> Tensor:
        b, g, t = codes.shape
        # [B, G, T, D] -> [B, G, D, T] -> [B, G*D, T]
        latent = self.table[codes]
        return latent.permute(0, 1, 3, 2).reshape(b, g * self.table.shape[1], t)
