"""Random-weight speaker encoders in the real on-disk format.

Tests and ``kanitts make-tiny --kanitts2`` need a speaker encoder without downloading the
real one. :func:`write_tiny_speaker_encoder` writes what ``save_pretrained`` of the
reference ``EmbeddingsModel`` writes: ``config.json`` (a ``wavlm`` config plus
``embd_size``/``top_interm_size``, ``architectures: ["EmbeddingsModel"]``) and
``model.safetensors`` with the reference key names, so the reference's ``from_pretrained``
and :func:`kanitts.speaker.loading.load_speaker_encoder` both load it.

Weights come from a seeded ``torch.Generator`` in sorted key order, so a seed gives the
same tensors on every machine (the parity fixture relies on it). The hidden size stays
1024: the reference hard-codes the pooled width (2 x 1024) of its first projection.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import torch
from transformers import WavLMConfig

from kanitts.speaker.encoder import DEFAULT_EMBEDDING_DIM, SpeakerEncoder
from kanitts.speaker.loading import CONFIG_NAME, SAFETENSORS_NAME

#: The reference's projection expects 2 x 1024 pooled features.
_HIDDEN = 1024


def tiny_encoder_config(embd_size: int = DEFAULT_EMBEDDING_DIM) -> WavLMConfig:
    """A one-layer WavLM (hidden 1024, 4 heads, FFN 64; two 16-channel feature convs of
    stride 10 and 32, i.e. 50 frames/s like the real encoder) with a 32-wide projection
    to ``embd_size``: ~6.4 M parameters."""
    return WavLMConfig(
        hidden_size=_HIDDEN,
        num_hidden_layers=1,
        num_attention_heads=4,
        intermediate_size=64,
        conv_dim=(16, 16),
        conv_kernel=(10, 32),
        conv_stride=(10, 32),
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=16,
        num_buckets=32,
        max_bucket_distance=100,
        do_stable_layer_norm=True,
        feat_extract_norm="layer",
        embd_size=embd_size,
        top_interm_size=32,
        architectures=["EmbeddingsModel"],
    )


def _random_tensor(key: str, like: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    shape = like.shape
    if like.dtype == torch.int64:  # num_batches_tracked
        return torch.zeros_like(like)
    randn = torch.randn(shape, generator=gen, dtype=torch.float32)
    rand = torch.rand(shape, generator=gen, dtype=torch.float32)
    if key.endswith("running_var"):
        return 0.5 + rand
    if key.endswith("running_mean"):
        return 0.1 * randn
    if key.endswith(".original0") or key.endswith("gru_rel_pos_const"):
        return 0.9 + 0.2 * rand
    if "layer_norm" in key:
        return (1.0 + 0.1 * randn) if key.endswith("weight") else 0.1 * randn
    if key.endswith("bias") or key.endswith("rel_attn_embed.weight"):
        return 0.02 * randn
    if key.endswith("masked_spec_embed"):
        return rand
    fan_in = math.prod(shape[1:]) if len(shape) > 1 else 1
    return randn / math.sqrt(fan_in)


def build_tiny_state(
    config: WavLMConfig | None = None, seed: int = 0
) -> tuple[WavLMConfig, dict[str, torch.Tensor]]:
    """``(config, state_dict)`` of a random encoder; same seed -> same float32 tensors."""
    config = config or tiny_encoder_config()
    template = SpeakerEncoder(config).state_dict()
    gen = torch.Generator().manual_seed(seed)
    state = {key: _random_tensor(key, template[key], gen) for key in sorted(template)}
    return config, state


def state_digest(state: dict[str, torch.Tensor]) -> str:
    """Short SHA-256 over keys and raw bytes: proves two machines built the same weights."""
    h = hashlib.sha256()
    for key in sorted(state):
        h.update(key.encode())
        h.update(state[key].contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def write_tiny_speaker_encoder(
    out_dir: str | Path, seed: int = 0, config: WavLMConfig | None = None
) -> Path:
    """Write a random encoder folder (``config.json`` + ``model.safetensors``) to
    ``out_dir`` (created) and return it. ``config`` defaults to :func:`tiny_encoder_config`;
    pass a full-size one for benchmarks."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config, state = build_tiny_state(config, seed)
    raw = config.to_dict()
    raw["architectures"] = ["EmbeddingsModel"]
    (out / CONFIG_NAME).write_text(json.dumps(raw, indent=2, sort_keys=True) + "\n")
    save_file(state, str(out / SAFETENSORS_NAME), metadata={"format": "pt"})
    return out
