"""The shape of an LFM2 checkpoint, read from its ``config.json`` (no transformers needed).

Covers both spellings the published configs use: ``layer_types`` or ``full_attn_idxs``,
``rope_theta`` or ``rope_parameters.rope_theta``, ``block_ff_dim`` / ``tie_embedding``
aliases, and transformers' feed-forward size adjustment (``block_auto_adjust_ff_dim``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: transformers' Lfm2Config default RoPE base.
DEFAULT_ROPE_THETA = 1_000_000.0


@dataclass(frozen=True)
class Lfm2Spec:
    """Sizes and layer kinds of one LFM2 model.

    ``rope_scales``: one multiplier per layer applied to its RoPE frequencies
    (1.0 for LFM2; KaniTTS-2 learns one per layer). ``intermediate_size`` is the
    effective feed-forward width (after transformers' auto adjustment).
    """

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    attn_layers: tuple[int, ...]
    norm_eps: float = 1e-5
    conv_kernel: int = 3
    conv_bias: bool = False
    rope_theta: float = DEFAULT_ROPE_THETA
    tie_embeddings: bool = True
    rope_scales: tuple[float, ...] = field(default=())

    @property
    def conv_layers(self) -> tuple[int, ...]:
        return tuple(i for i in range(self.num_layers) if i not in self.attn_layers)

    def rope_scale(self, layer: int) -> float:
        return self.rope_scales[layer] if self.rope_scales else 1.0

    def kv_bytes_per_token(self, dtype_bytes: int) -> int:
        """Bytes of K and V one cached position takes over all attention layers."""
        return 2 * len(self.attn_layers) * self.num_kv_heads * self.head_dim * dtype_bytes

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> Lfm2Spec:
        """Parse a transformers ``Lfm2Config`` dict. Raises ValueError on a non-LFM2 config."""
        if cfg.get("model_type", "lfm2") != "lfm2":
            raise ValueError(f"not an LFM2 config (model_type {cfg.get('model_type')!r})")
        n = int(cfg["num_hidden_layers"])
        types = cfg.get("layer_types")
        if types is None:
            idxs = cfg.get("full_attn_idxs")
            attn = tuple(range(n)) if idxs is None else tuple(int(i) for i in idxs)
        else:
            if len(types) != n:
                raise ValueError(f"layer_types has {len(types)} entries for {n} layers")
            attn = tuple(i for i, t in enumerate(types) if t != "conv")
        hidden = int(cfg["hidden_size"])
        heads = int(cfg["num_attention_heads"])
        ff = int(cfg.get("block_ff_dim", cfg.get("intermediate_size", 12288)))
        if cfg.get("block_auto_adjust_ff_dim", True):
            ff = int(2 * ff / 3)
            mult = cfg.get("block_ffn_dim_multiplier", 1.0)
            if mult is not None:
                ff = int(mult * ff)
                m = int(cfg.get("block_multiple_of", 256))
                ff = m * ((ff + m - 1) // m)
        rope = cfg.get("rope_parameters") or {}
        theta = float(rope.get("rope_theta", cfg.get("rope_theta", DEFAULT_ROPE_THETA)))
        if rope.get("rope_type", "default") != "default":
            raise ValueError(f"unsupported rope_type {rope.get('rope_type')!r}")
        scales = cfg.get("rope_layer_scales") or ()
        return cls(
            vocab_size=int(cfg["vocab_size"]),
            hidden_size=hidden,
            intermediate_size=ff,
            num_layers=n,
            num_heads=heads,
            num_kv_heads=int(cfg.get("num_key_value_heads", heads)),
            head_dim=int(cfg.get("head_dim") or hidden // heads),
            attn_layers=attn,
            norm_eps=float(cfg.get("norm_eps", 1e-5)),
            conv_kernel=int(cfg.get("conv_L_cache", 3)),
            conv_bias=bool(cfg.get("conv_bias", False)),
            rope_theta=theta,
            tie_embeddings=bool(cfg.get("tie_embedding", cfg.get("tie_word_embeddings", True))),
            rope_scales=tuple(float(s) for s in scales),
        )
