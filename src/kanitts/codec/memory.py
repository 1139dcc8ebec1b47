"""Device memory of the serving codec pool, worked out from the decoder's shapes.

The decoder turns one 80 ms frame (``G`` codes) into ``samples_per_frame`` samples through
up-sampling stages; stage ``i`` holds ``C_i`` channels (padded to ``pad_channels``) at
``hop_i = prod(rates[: i + 1])`` samples per frame. Its activations are therefore
``C_i * hop_i`` elements per stream and frame. For the real NanoCodec (864 base channels,
rates 7, 7, 6, 3, 2; padding 8) that is:

====== ========== ======= ==================== ===================
stage  channels   hop     elements per frame   bf16 bytes / frame
====== ========== ======= ==================== ===================
1      432        7       3,024                6 KiB
2      216        49      10,584               21 KiB
3      112        294     32,928               64 KiB
4      56         882     49,392               96 KiB
5      32         1,764   56,448               110 KiB
====== ========== ======= ==================== ===================

so the largest intermediate tensor of a step of ``B`` streams x ``T`` frames is
``56,448 * B * T`` elements: 925 MB in bf16 at 1,024 x 8.

**What one step keeps alive.** Inside a residual layer the walk holds the stage input
``x0``, the running residual ``y`` (and its update ``y'``), the chains' ``total``, the
conv output ``h`` and two conv inputs ``full`` (the one being read, the next being
written): :data:`LIVE_TENSORS` = 7 tensors of the largest stage at the peak, plus the
contexts gathered for the call and the conv's workspace. That is :func:`step_bytes`'s
``working_set``: 1.7 GB for 256 x 8 in bf16, 6.9 GB for 1,024 x 8.

Until commit 5ef6165 every layer's new left context was kept as a *view* of its input
until the end of the step, and a view keeps its base alive: every conv input of the step
(:data:`RETAINED_PER_STAGE` per stage) stayed resident, the ``retained`` figure:
12.0 GB for one 256 x 8 step, 23.9 GB for 512 x 8, **47.8 GB for 1,024 x 8** (bf16). A
CUDA graph's private pool holds its step's peak, and the un-graphed warm-up runs before
each capture leave as much again in the caching allocator (never emptied), which accounts
for most of what the server held: 31 GB at 256 slots, 76 GB at 512, 128 GB at 1,024 (the
rest presumably: 40 captures of growing sizes fragmenting one pool). The CPU check (tiny codec,
float32, eager, 8 streams x 2 frames, torch.profiler's memory events): peak 42 MB
before, 10.2 MB after, against 34.0 MB retained / 7.1 MB working set modelled (eager adds
float32 temporaries the fused GPU kernels do not make); tests/test_codec_memory.py holds a
4 x 2 step under twice the modelled working set.

**Bounding it.** :class:`kanitts.codec.fast.FastStreamingDecoder` caps the stream-frames of
one call at ``max_batch_frames`` (the server's ``codec.max_batch_frames``, default 2,048 =
256 x 8, where the bare H100 step decoded 4,143 audio s/s against 4,297 at 512 x 8,
benchmarks/codec_h100-run4.json): a step with more work
runs several calls of a capped bucket in turn, so the activation peak is
``working_set`` at ``max_batch_frames`` whatever the number of streams: 1.7-2.0 GB in bf16
up to 1,024 streams (the larger for 1,024 x 2, whose gathered contexts weigh more). The graphs share one
memory pool, captured largest first so smaller ones reuse its blocks, and the warm-up's
un-graphed blocks are released after capture. What grows with the streams is the context
state (:func:`state_bytes`: 370 KB per slot in bf16, 379 MB at 1,024 slots) and each
graph's output buffer.
"""

from __future__ import annotations

from dataclasses import dataclass

from kanitts.codec.layers import DecoderConfig

#: Tensors of the largest stage alive at the walk's peak (x0, y, y', total, h, two conv inputs).
LIVE_TENSORS = 7
#: Conv inputs per stage that the pre-fix walk kept alive to the end of a step
#: (3 kernels x 3 dilations x 2 convs, plus the next stage's up-sample input).
RETAINED_PER_STAGE = 19


def _round_up(c: int, multiple: int) -> int:
    return -(-c // multiple) * multiple


@dataclass(frozen=True)
class StepMemory:
    """Bytes of one decoder call of ``streams`` x ``frames`` (a graph replay's activations).

    ``largest``: the largest intermediate tensor; ``working_set``: :data:`LIVE_TENSORS` of
    it plus the stage contexts gathered for the call (what a graph's pool must hold);
    ``retained``: what the walk held when every layer's input stayed alive to the end."""

    streams: int
    frames: int
    largest: int
    working_set: int
    retained: int


def stage_shapes(cfg: DecoderConfig, pad_channels: int = 8) -> list[tuple[int, int]]:
    """``(padded channels, samples per frame)`` of every up-sampling stage's activations."""
    out, c, hop = [], cfg.base_channels, 1
    for rate in cfg.up_sample_rates:
        c //= 2
        hop *= rate
        out.append((_round_up(c, pad_channels), hop))
    return out


def context_elements(cfg: DecoderConfig, pad_channels: int = 8) -> int:
    """Elements of one stream's left context over all stateful layers (padded channels):
    each residual conv keeps ``(K - 1) * d`` input samples, an up-sample one input frame."""
    total = _round_up(cfg.input_dim, pad_channels) * (cfg.in_kernel_size - 1)
    c = cfg.base_channels
    for rate in cfg.up_sample_rates:
        total += _round_up(c, pad_channels)  # the up-sample's previous frame (its input channels)
        c //= 2
        cp = _round_up(c, pad_channels)
        for k in cfg.resblock_kernel_sizes:
            for d in cfg.resblock_dilation_sizes:
                total += cp * (k - 1) * d + cp * (k - 1)  # input conv (dilated) + skip conv
    total += _round_up(c, pad_channels) * (cfg.out_kernel_size - 1)
    return total


def state_bytes(cfg: DecoderConfig, slots: int, itemsize: int = 2, pad_channels: int = 8) -> int:
    """Bytes of the pool's context state for ``slots`` streams (plus the scratch slot)."""
    return context_elements(cfg, pad_channels) * (slots + 1) * itemsize


def step_bytes(
    cfg: DecoderConfig, streams: int, frames: int, itemsize: int = 2, pad_channels: int = 8
) -> StepMemory:
    """The analytic activation bytes of one call of ``streams`` x ``frames`` (see the
    module docstring); ``itemsize`` 2 for bf16/fp16, 4 for float32."""
    shapes = stage_shapes(cfg, pad_channels)
    per_frame = max(c * hop for c, hop in shapes)
    sf = streams * frames
    largest = per_frame * sf * itemsize
    ctx = context_elements(cfg, pad_channels) * streams * itemsize
    retained = sum(RETAINED_PER_STAGE * c * hop for c, hop in shapes) * sf * itemsize
    return StepMemory(streams, frames, largest, LIVE_TENSORS * largest + ctx, retained + ctx)
