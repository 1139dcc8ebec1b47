"""Exact streaming NanoCodec decode for a fixed pool of concurrent streams.

Every layer of the decoder is causal, so a stream can be decoded frame by frame if each
stateful layer remembers the input history its kernel reaches back into: ``(K-1)*d``
samples for a causal conv, one input frame for a ``K = 2*stride`` causal transposed conv.
Carrying that left context makes chunked decoding *exactly* equal to decoding the whole
sequence at once; no look-back frames are re-decoded and each frame costs only its own
compute.

Design (after the pattern of kyutai's moshi ``StreamingModule``/``StreamingConv1d``):

* a pool of ``batch_size`` slots; every stateful layer owns one tensor
  ``[batch_size, C, L]`` holding all slots' context, allocated once, updated in place
  (stable addresses and fixed shapes, which CUDA-graph capture needs);
* :meth:`StreamingDecoder.reset` zeroes the context of the slots a new stream takes
  (zeros are exactly the padding a one-shot decode starts from);
* :meth:`StreamingDecoder.step` runs all slots with a boolean execution mask: slots
  outside the mask compute garbage that is discarded, and their context is left
  bit-for-bit unchanged (``torch.where``), so the call has one shape regardless of
  which streams have frames - the graph-capturable form;
* :meth:`StreamingDecoder.step_slots` gathers only the listed slots, decodes them and
  scatters their context back - the cheap form when few slots are active (CPU, or eager
  GPU with a large, mostly idle pool). :class:`kanitts.codec.worker.CodecWorker` uses it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from torch import Tensor

from kanitts.codec.layers import StreamState
from kanitts.codec.nanocodec import NanoCodec

logger = logging.getLogger(__name__)

SlotSelector = Tensor | Sequence[int] | None


class StreamingDecoder:
    """A fixed pool of ``batch_size`` NanoCodec decode streams.

    The codec itself is shared and stateless; all per-stream state lives here, so one
    :class:`NanoCodec` can serve one-shot decodes and any number of pools at once.
    Not thread-safe: drive a pool from one thread (the worker does).
    """

    def __init__(self, codec: NanoCodec, batch_size: int) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self.codec = codec
        self.batch_size = batch_size
        self.samples_per_frame = codec.samples_per_frame
        self.num_codebooks = codec.num_codebooks
        self.states: list[Tensor] = [
            torch.zeros(batch_size, channels, length, device=codec.device, dtype=codec.dtype)
            for channels, length in codec.decoder.context_shapes()
        ]
        logger.debug(
            "streaming pool: %d slots, %d stateful layers, %.1f MiB of context",
            batch_size,
            len(self.states),
            sum(s.numel() * s.element_size() for s in self.states) / 2**20,
        )

    @property
    def device(self) -> torch.device:
        return self.codec.device

    def _slot_mask(self, mask: SlotSelector) -> Tensor:
        """A ``bool[batch_size]`` mask from a mask, a list of slot ids, or ``None`` (all)."""
        if mask is None:
            return torch.ones(self.batch_size, dtype=torch.bool, device=self.device)
        t = torch.as_tensor(mask, device=self.device)
        if t.dtype == torch.bool:
            if t.shape != (self.batch_size,):
                raise ValueError(f"mask must have shape ({self.batch_size},), got {tuple(t.shape)}")
            return t
        out = torch.zeros(self.batch_size, dtype=torch.bool, device=self.device)
        out[t.long()] = True
        return out

    @torch.inference_mode()
    def reset(self, mask: SlotSelector = None) -> None:
        """Start fresh streams in the selected slots (all when ``mask`` is None)."""
        keep = ~self._slot_mask(mask)[:, None, None]
        for state in self.states:
            state.mul_(keep)

    @torch.inference_mode()
    def step(self, codes: Tensor, exec_mask: Tensor | None = None) -> Tensor:
        """Decode the next ``T`` frames of every slot: ``codes[batch_size, G, T]`` ->
        ``audio[batch_size, T * samples_per_frame]``.

        Slots where ``exec_mask`` is False keep their context unchanged and get zeros.
        Codes are not range-checked here (that would force a device sync per step);
        callers validate them (the worker does, where frames enter)."""
        if codes.dim() != 3 or codes.shape[0] != self.batch_size or codes.shape[1] != self.num_codebooks:
            raise ValueError(
                f"codes must be [{self.batch_size}, {self.num_codebooks}, T], got {tuple(codes.shape)}"
            )
        if codes.shape[-1] < 1:
            raise ValueError("a step needs at least one frame")
        stream = StreamState(self.states)
        audio = self.codec.decoder(self.codec.dequantize(codes), stream)[:, 0]
        if exec_mask is None:
            for state, new in zip(self.states, stream.updated):
                if new is not None:
                    state.copy_(new)
            return audio
        run = exec_mask.to(device=audio.device, dtype=torch.bool)
        for state, new in zip(self.states, stream.updated):
            if new is not None:
                state.copy_(torch.where(run[:, None, None], new, state))
        return audio * run[:, None]

    @torch.inference_mode()
    def step_slots(self, slots: Sequence[int] | Tensor, frames: Tensor) -> Tensor:
        """Decode the next ``T`` frames of the listed (distinct) slots only:
        ``frames[len(slots), T, G]`` (codes, one row per frame, as
        :class:`~kanitts.codec.worker.CodecWorker` collects them) ->
        ``audio[len(slots), T * samples_per_frame]``. Other slots are not touched and cost
        nothing. Raises ``ValueError`` for a wrong shape or no frames; codes are not
        range-checked (the worker validates frames where they enter)."""
        index = torch.as_tensor(slots, dtype=torch.long, device=self.device).reshape(-1)
        if frames.dim() != 3 or frames.shape[0] != index.numel() or frames.shape[2] != self.num_codebooks:
            raise ValueError(
                f"frames must be [{index.numel()}, T, {self.num_codebooks}], got {tuple(frames.shape)}"
            )
        if frames.shape[1] < 1:
            raise ValueError("a step needs at least one frame")
        stream = StreamState([state.index_select(0, index) for state in self.states])
        # The channels-first decoder takes [k, G, T] codes: a view, the one permute here.
        audio = self.codec.decoder(self.codec.dequantize(frames.transpose(1, 2)), stream)[:, 0]
        for state, new in zip(self.states, stream.updated):
            if new is not None:
                state.index_copy_(0, index, new)
        return audio
