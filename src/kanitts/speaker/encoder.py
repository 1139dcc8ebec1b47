"""The speaker encoder of KaniTTS-2: 16 kHz mono PCM -> one L2-normalised embedding.

Architecture (``nineninesix/speaker-emb-tbr``, derived from Orange's Speaker-wavLM-tbr):

1. per-utterance mean-variance normalisation of the waveform;
2. a transformers :class:`~transformers.WavLMModel` (last hidden state, ``[B, frames, H]``);
3. statistics pooling over frames: mean and standard deviation (unbiased), ``[B, 2H]``;
4. two 1x1 convolutions, each followed by ReLU and then a non-affine batch norm
   (running statistics, eps 1e-3), ``2H -> top_interm_size -> embd_size``;
5. L2 normalisation: ``[B, embd_size]`` float32 unit vectors (128-d for the real encoder).

Parameter and buffer names match the checkpoint on disk (``wavlm.*`` and
``top_layers.{affine1,batchnorm1,affine2,batchnorm2}.*``), so a state dict loads strictly.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import WavLMConfig, WavLMModel

from kanitts.speaker.constants import DEFAULT_EMBEDDING_DIM, DEFAULT_SPEAKER_ENCODER, SPEAKER_SAMPLE_RATE

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_EMBEDDING_DIM", "DEFAULT_SPEAKER_ENCODER", "SPEAKER_SAMPLE_RATE", "SpeakerEncoder", "embedding_dim"]
#: Width of the first projection when a config does not say (the real encoder's).
DEFAULT_TOP_INTERM_SIZE = 512
_BATCH_NORM_EPS = 1e-3
_MVN_EPS = 1e-10
_VAR_FLOOR = 1e-10


def embedding_dim(config: WavLMConfig) -> int:
    """The output size a config describes (``embd_size``)."""
    return int(getattr(config, "embd_size", DEFAULT_EMBEDDING_DIM))


class _TopLayers(nn.Module):
    """Pooled statistics ``[B, 2H, 1]`` -> unit embeddings ``[B, D]``."""

    def __init__(self, in_channels: int, interm: int, out: int) -> None:
        super().__init__()
        self.affine1 = nn.Conv1d(in_channels, interm, kernel_size=1)
        self.batchnorm1 = nn.BatchNorm1d(interm, eps=_BATCH_NORM_EPS, affine=False)
        self.affine2 = nn.Conv1d(interm, out, kernel_size=1)
        self.batchnorm2 = nn.BatchNorm1d(out, eps=_BATCH_NORM_EPS, affine=False)

    def forward(self, stats: torch.Tensor) -> torch.Tensor:
        x = self.batchnorm1(F.relu(self.affine1(stats)))
        x = self.batchnorm2(F.relu(self.affine2(x)))
        return F.normalize(x[:, :, 0], dim=1)


class SpeakerEncoder(nn.Module):
    """WavLM + statistics pooling + projection; see the module docstring.

    Build it from a :class:`~transformers.WavLMConfig` carrying ``embd_size`` and
    ``top_interm_size`` (as the checkpoint's ``config.json`` does); load weights with
    :func:`kanitts.speaker.loading.load_speaker_encoder`. The module is put in eval mode.
    """

    def __init__(self, config: WavLMConfig) -> None:
        super().__init__()
        self.config = config
        self.wavlm = WavLMModel(config)
        self.top_layers = _TopLayers(
            2 * config.hidden_size,
            int(getattr(config, "top_interm_size", DEFAULT_TOP_INTERM_SIZE)),
            embedding_dim(config),
        )
        self.eval()

    @property
    def dim(self) -> int:
        """Embedding size ``D``."""
        return embedding_dim(self.config)

    @property
    def device(self) -> torch.device:
        return self.top_layers.affine1.weight.device

    def forward(self, input_values: torch.Tensor) -> torch.Tensor:
        """``input_values``: float ``[B, T]`` 16 kHz waveforms of equal length (no padding:
        each row is normalised, in float32, and pooled over its full length). Returns
        ``[B, D]`` unit vectors in the model's dtype. ``T`` must exceed the WavLM feature extractor's
        receptive field (400 samples for the real encoder)."""
        x = input_values.float()  # normalise in float32 even for a bf16/fp16 model
        x = (x - x.mean(dim=1, keepdim=True)) / (x.std(dim=1, keepdim=True) + _MVN_EPS)
        x = x.to(self.top_layers.affine1.weight.dtype)
        hidden = self.wavlm(input_values=x).last_hidden_state  # [B, frames, H]
        mean = hidden.mean(dim=1)
        std = hidden.var(dim=1).clamp(min=_VAR_FLOOR).sqrt()
        return self.top_layers(torch.cat((mean, std), dim=1).unsqueeze(2))

    @torch.inference_mode()
    def embed(self, pcm: np.ndarray) -> np.ndarray:
        """One utterance -> its embedding.

        ``pcm``: float32 ``[T]`` mono samples at :data:`SPEAKER_SAMPLE_RATE` (as
        :func:`kanitts.speaker.audio_input.decode_reference_audio` returns).
        Returns float32 ``[D]`` with unit L2 norm. CPU/GPU bound: call it from a worker
        thread, never on an event loop. Raises ``ValueError`` for a non-1-D or too-short
        input."""
        if pcm.ndim != 1:
            raise ValueError(f"expected mono samples [T], got shape {pcm.shape}")
        if pcm.shape[0] < SPEAKER_SAMPLE_RATE // 10:
            raise ValueError(f"{pcm.shape[0]} samples is too short to embed")
        x = torch.from_numpy(np.ascontiguousarray(pcm, dtype=np.float32))
        out = self(x.to(self.device).unsqueeze(0))
        return out[0].float().cpu().numpy()
