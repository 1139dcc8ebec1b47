"""Random-weight KaniTTS-2 checkpoints in the real format (``kanitts make-tiny --kanitts2``).

A folder the official ``kani-tts-2`` package loads: ``config.json`` (an LFM2 config plus the
KaniTTS-2 keys and ``language_settings``), ``model.safetensors`` in bfloat16 with the
reference's tensor names (``model.speaker_emb_projection.weight``,
``model.learnable_rope_layers.{i}.alpha_weight`` for each attention layer ``i``) and the
tokenizer of the v1 tiny model; next to it a NanoCodec ``.nemo`` and a speaker encoder.

Weights come from a seeded ``torch.Generator`` in key order, not from a library's
initialiser, so one seed gives the same tensors on any machine and any transformers version
(:func:`state_digest` proves it). Norm weights are random too (all-ones norms would hide a
swapped norm). ``full_size`` gives the real LFM2-350M sizes for speed work.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from pathlib import Path
from typing import Any

import torch

from kanitts.tokens import AUDIO_TOKEN_START, END_OF_TEXT, MODEL_VOCAB_SIZE, NUM_CODEBOOKS, START_OF_TEXT

logger = logging.getLogger(__name__)

#: Language tags the tiny model lists (``language_settings.language_tags_list``).
DEFAULT_LANGUAGE_TAGS: tuple[str, ...] = ("en_us", "en_bost", "es", "ky")
SPEAKER_EMB_DIM = 128


def kanitts2_config(*, full_size: bool = False, audio_step: float = 0.5, learnable_rope: bool = True,
                    language_tags: tuple[str, ...] | list[str] = DEFAULT_LANGUAGE_TAGS) -> dict[str, Any]:
    """The ``config.json`` dict of a random KaniTTS-2 model (tiny: 4 layers, 2 of them
    attention, grouped-query heads; full size: the LFM2-350M backbone)."""
    if full_size:
        layers = ["full_attention" if i in (2, 5, 8, 10, 12, 14) else "conv" for i in range(16)]
        dims = {"hidden_size": 1024, "intermediate_size": 6656, "num_hidden_layers": 16,
                "num_attention_heads": 16, "num_key_value_heads": 8, "block_multiple_of": 256,
                "max_position_embeddings": 128000}
    else:
        layers = ["conv", "full_attention", "conv", "full_attention"]
        dims = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 4,
                "num_attention_heads": 4, "num_key_value_heads": 2, "block_multiple_of": 16,
                "max_position_embeddings": 4096}
    tags = list(language_tags)
    return {
        "architectures": ["KaniTTS2ForCausalLM"],
        "model_type": "lfm2",
        "vocab_size": MODEL_VOCAB_SIZE,
        **dims,
        "layer_types": layers,
        "norm_eps": 1e-5,
        "conv_bias": False,
        "conv_L_cache": 3,
        "block_ffn_dim_multiplier": 1.0,
        "block_auto_adjust_ff_dim": True,
        "rope_theta": 1000000.0,
        "tie_word_embeddings": True,
        "torch_dtype": "bfloat16",
        "bos_token_id": START_OF_TEXT,
        "eos_token_id": END_OF_TEXT,
        "pad_token_id": 0,
        "use_cache": True,
        "audio_tokens_start": AUDIO_TOKEN_START,
        "tokens_per_frame": NUM_CODEBOOKS,
        "audio_step": float(audio_step),
        "use_learnable_rope": bool(learnable_rope),
        "alpha_min": 0.1,
        "alpha_max": 2.0,
        "speaker_emb_dim": SPEAKER_EMB_DIM,
        "language_settings": {"status": "available_language_tags" if tags else "no_language_tags",
                              "language_tags_list": tags},
    }


def _shapes(cfg: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    from kanitts.engine.native.spec import Lfm2Spec

    spec = Lfm2Spec.from_config(cfg)
    h, ff, hd = spec.hidden_size, spec.intermediate_size, spec.head_dim
    out: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (spec.vocab_size, h),
                                       "model.embedding_norm.weight": (h,),
                                       "model.speaker_emb_projection.weight": (h, int(cfg["speaker_emb_dim"]))}
    for i in range(spec.num_layers):
        p = f"model.layers.{i}."
        out.update({p + "operator_norm.weight": (h,), p + "ffn_norm.weight": (h,),
                    p + "feed_forward.w1.weight": (ff, h), p + "feed_forward.w3.weight": (ff, h),
                    p + "feed_forward.w2.weight": (h, ff)})
        if i in spec.attn_layers:
            a = p + "self_attn."
            out.update({a + "q_proj.weight": (spec.num_heads * hd, h), a + "k_proj.weight": (spec.num_kv_heads * hd, h),
                        a + "v_proj.weight": (spec.num_kv_heads * hd, h), a + "out_proj.weight": (h, spec.num_heads * hd),
                        a + "q_layernorm.weight": (hd,), a + "k_layernorm.weight": (hd,)})
            if cfg.get("use_learnable_rope"):
                out[f"model.learnable_rope_layers.{i}.alpha_weight"] = ()
        else:
            c = p + "conv."
            out.update({c + "in_proj.weight": (3 * h, h), c + "conv.weight": (h, 1, int(cfg["conv_L_cache"])),
                        c + "out_proj.weight": (h, h)})
    return out


def _random(key: str, shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
    x = torch.randn(shape, generator=gen, dtype=torch.float32)
    if "norm" in key:
        return 1.0 + 0.2 * x
    if key.endswith("alpha_weight"):
        return 1.5 * x
    if key.endswith("embed_tokens.weight") or key.endswith("conv.conv.weight"):
        return 0.5 * x
    if "speaker_emb_projection" in key:  # unit-norm embeddings in: rows of about unit scale out
        return x
    return x / math.sqrt(shape[1])


def build_state(cfg: dict[str, Any], seed: int = 0) -> dict[str, torch.Tensor]:
    """The checkpoint's tensors (bfloat16, reference names); same seed -> same tensors."""
    gen = torch.Generator().manual_seed(seed)
    shapes = _shapes(cfg)
    return {k: _random(k, shapes[k], gen).to(torch.bfloat16) for k in sorted(shapes)}


def state_digest(state: dict[str, torch.Tensor]) -> str:
    """Short SHA-256 over names and raw bytes: proves two machines built the same weights."""
    h = hashlib.sha256()
    for key in sorted(state):
        t = state[key].contiguous()
        h.update(key.encode())
        h.update((t.view(torch.int16) if t.dtype == torch.bfloat16 else t).numpy().tobytes())
    return h.hexdigest()[:16]


def write_kanitts2_model(out: str | Path, *, seed: int = 0, language: str = "en", **config: Any) -> Path:
    """Write a random KaniTTS-2 model folder (created) and return it; ``config`` goes to
    :func:`kanitts2_config`."""
    from safetensors.torch import save_file

    from kanitts.tiny import write_tokenizer

    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    cfg = kanitts2_config(**config)
    cfg["kanitts_language"] = language
    save_file(build_state(cfg, seed), str(folder / "model.safetensors"), metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    write_tokenizer(folder)
    return folder


def make_tiny_kanitts2(out_dir: str | Path, *, language: str = "en", full_size: bool = False, seed: int = 0,
                       audio_step: float = 0.5, learnable_rope: bool = True,
                       language_tags: tuple[str, ...] | list[str] = DEFAULT_LANGUAGE_TAGS,
                       ) -> tuple[Path, Path, Path]:
    """Write ``out_dir/model/`` (KaniTTS-2), ``out_dir/codec.nemo`` and ``out_dir/speaker/``
    (the speaker encoder); returns the three paths."""
    from kanitts.codec.tiny_nemo import write_tiny_nemo
    from kanitts.speaker.tiny import write_tiny_speaker_encoder

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model_dir = write_kanitts2_model(out / "model", seed=seed, language=language, full_size=full_size,
                                     audio_step=audio_step, learnable_rope=learnable_rope,
                                     language_tags=language_tags)
    codec_path = Path(write_tiny_nemo(out / "codec.nemo", full_size=full_size, seed=seed))
    speaker_dir = write_tiny_speaker_encoder(out / "speaker", seed=seed)
    logger.info("wrote %s, %s and %s", model_dir, codec_path, speaker_dir)
    return model_dir, codec_path, speaker_dir
