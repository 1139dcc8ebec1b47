"""The NanoCodec model: codes ``[B, 4, T]`` -> 22.05 kHz float audio, built from a
``.nemo`` archive (:mod:`kanitts.codec.loading` reads it; the network is
:mod:`kanitts.codec.layers`)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from kanitts.codec import loading
from kanitts.codec.layers import CausalHiFiGANDecoder, CodecConfig, GroupFSQDequantizer
from kanitts.hub import resolve_file

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------- public model
class NanoCodec(nn.Module):
    """NanoCodec decode path: codes ``[B, num_codebooks, T]`` -> 22.05 kHz audio.

    Build with :meth:`from_pretrained`; the encoder is never loaded (serving only needs
    codes -> audio)."""

    def __init__(self, cfg: CodecConfig) -> None:
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.dequantizer = GroupFSQDequantizer(cfg.quantizer)
        self.decoder = CausalHiFiGANDecoder(cfg.decoder)

    # -- metadata ---------------------------------------------------------------------
    @property
    def sample_rate(self) -> int:
        return self.cfg.sample_rate

    @property
    def samples_per_frame(self) -> int:
        return self.cfg.samples_per_frame

    @property
    def num_codebooks(self) -> int:
        return self.cfg.quantizer.num_groups

    @property
    def codebook_size(self) -> int:
        return self.cfg.quantizer.codebook_size

    @property
    def device(self) -> torch.device:
        return self.decoder.pre_conv.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.decoder.pre_conv.weight.dtype

    # -- loading ----------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls,
        id_or_path: str | Path,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> NanoCodec:
        """Load from a ``.nemo`` file, a folder holding one, or a hub id such as
        ``nvidia/nemo-nano-codec-22khz-0.6kbps-12.5fps``.

        Raises :class:`kanitts.hub.ModelLoadError` with a one-line reason on any failure
        (missing file, offline hub, malformed archive, unknown/missing weights)."""
        path = resolve_file(id_or_path, ".nemo")
        config, state = loading.read_nemo_archive(path)
        model = codec_from_state(config, state, device=device, dtype=dtype)
        logger.info(
            "loaded NanoCodec from %s: %d Hz, %d samples/frame, %d codebooks, %.1fM decoder params",
            path,
            model.sample_rate,
            model.samples_per_frame,
            model.num_codebooks,
            sum(p.numel() for p in model.decoder.parameters()) / 1e6,
        )
        return model

    # -- decoding ---------------------------------------------------------------------
    def check_codes(self, codes: Tensor) -> None:
        """Validate shape and range (NeMo would silently wrap out-of-range codes)."""
        if codes.dim() != 3 or codes.shape[1] != self.num_codebooks:
            raise ValueError(
                f"codes must be [batch, {self.num_codebooks}, frames], got {tuple(codes.shape)}"
            )
        if codes.dtype not in (torch.int64, torch.int32, torch.int16):
            raise ValueError(f"codes must be an integer tensor, got {codes.dtype}")
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= self.codebook_size):
            raise ValueError(f"codes must lie in 0..{self.codebook_size - 1}")

    def dequantize(self, codes: Tensor) -> Tensor:
        """Codes ``[B, G, T]`` -> latent ``[B, latent_dim, T]`` in the model dtype."""
        return self.dequantizer(codes.to(device=self.device, dtype=torch.long)).to(self.dtype)

    @torch.inference_mode()
    def decode(self, codes: Tensor, lengths: Tensor | None = None) -> Tensor:
        """Decode ``codes[B, num_codebooks, T]`` to ``float[B, T * samples_per_frame]``.

        With ``lengths`` (frames per item), item ``b`` gets exactly what decoding it alone
        would give for its first ``lengths[b]`` frames, and zeros after that."""
        self.check_codes(codes)
        batch, _, frames = codes.shape
        audio = self.decoder(self.dequantize(codes))[:, 0]
        if lengths is not None:
            lengths = torch.as_tensor(lengths, device=audio.device).reshape(-1)
            if lengths.numel() != batch:
                raise ValueError(f"lengths has {lengths.numel()} entries for batch {batch}")
            if bool((lengths < 0).any()) or bool((lengths > frames).any()):
                raise ValueError(f"lengths must lie in 0..{frames}")
            samples = torch.arange(audio.shape[-1], device=audio.device)
            audio = audio * (samples[None, :] < (lengths[:, None] * self.samples_per_frame))
        return audio

    def extra_repr(self) -> str:
        return f"sample_rate={self.sample_rate}, samples_per_frame={self.samples_per_frame}"


def codec_from_state(
    config: Mapping[str, Any],
    state: Mapping[str, Tensor],
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> NanoCodec:
    """Build a :class:`NanoCodec` from an already-read config and NeMo state_dict."""
    cfg = loading.codec_config_from_dict(config)
    loading.check_quantizer_buffers(state, cfg.quantizer)
    model = NanoCodec(cfg)
    loading.load_decoder_weights(model, state)
    skipped: dict[str, int] = {}
    for key in state:
        if not key.startswith((loading.DECODER_PREFIX, loading.QUANTIZER_PREFIX)):
            top = key.split(".", 1)[0]
            skipped[top] = skipped.get(top, 0) + 1
    if skipped:
        logger.debug("not loading %s (not needed to decode)", skipped)
    model = model.to(device=device, dtype=dtype).eval()
    model.requires_grad_(False)
    return model
