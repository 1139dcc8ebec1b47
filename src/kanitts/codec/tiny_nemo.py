"""Random-weight NanoCodec ``.nemo`` archives in the real on-disk layout.

Tests, the ``make-tiny`` CLI and benchmarks need a codec without downloading NVIDIA's
checkpoint. The archive written here is what NeMo itself writes: an uncompressed tar
with ``model_config.yaml`` (an ``AudioCodecModel`` config: ``CausalHiFiGANEncoder``,
``GroupFiniteScalarQuantizer``, ``CausalHiFiGANDecoder``, a discriminator and losses) and
``model_weights.ckpt`` (a ``torch.save``'d state_dict with NeMo's key names, weight-norm
parametrizations and the encoder's weights). NeMo's ``AudioCodecModel.restore_from``
loads it, which is how the parity tests obtain a reference on identical weights.

The discriminator's weights are not written: NeMo loads codec checkpoints with
``strict=False`` and they play no part in encoding or decoding.
"""

from __future__ import annotations

import io
import logging
import math
import tarfile
import time
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import Tensor

from kanitts.codec.layers import (
    Activation,
    CausalConvTranspose1d,
    CodecConfig,
    DecoderConfig,
    QuantizerConfig,
    StatefulLayer,
)
from kanitts.codec.loading import CONFIG_NAME, DECODER_PREFIX, WEIGHTS_NAME
from kanitts.codec.nanocodec import NanoCodec

logger = logging.getLogger(__name__)

_MODULES = "nemo.collections.tts.modules.audio_codec_modules"
_LOSSES = "nemo.collections.tts.losses.audio_codec_loss"

#: Real NanoCodec 22 kHz / 12.5 fps sizes.
FULL_DECODER_CHANNELS = 864
FULL_ENCODER_CHANNELS = 24
#: Tiny sizes. 96 halves to 3 channels in the last stage: NeMo's HalfSnake needs >= 2.
TINY_DECODER_CHANNELS = 96
TINY_ENCODER_CHANNELS = 4
#: Gain of the random output conv: random codes then give an RMS around 0.2-0.3 with ~1%
#: of samples at the clamp, so parity tests exercise it without being dominated by it.
_OUTPUT_GAIN = 0.5
#: Gain of each residual branch's last conv. Untrained snake stacks otherwise grow
#: activations ~10x over the 5 stages, which inflates float32 rounding noise (e.g.
#: between batch sizes) to ~1e-5 at the output; 0.3 keeps it at a few 1e-6.
_RESIDUAL_GAIN = 0.3


def tiny_codec_config(full_size: bool = False) -> CodecConfig:
    """The :class:`CodecConfig` that :func:`write_tiny_nemo` writes."""
    return CodecConfig(
        sample_rate=22050,
        samples_per_frame=1764,
        quantizer=QuantizerConfig(num_groups=4, levels=(9, 8, 8, 7)),
        decoder=DecoderConfig(
            base_channels=FULL_DECODER_CHANNELS if full_size else TINY_DECODER_CHANNELS
        ),
    )


def nemo_model_config(cfg: CodecConfig, encoder_channels: int) -> dict[str, Any]:
    """An ``AudioCodecModel`` config mirroring NanoCodec's ``model_config.yaml``."""
    dec, vq = cfg.decoder, cfg.quantizer
    down_rates = list(reversed(dec.up_sample_rates))
    resolutions = [[256, 64, 256], [512, 128, 512], [1024, 256, 1024]]
    return {
        "target": "nemo.collections.tts.models.audio_codec.AudioCodecModel",
        "sample_rate": cfg.sample_rate,
        "samples_per_frame": cfg.samples_per_frame,
        "mel_loss_l1_scale": 1.0,
        "mel_loss_l2_scale": 0.0,
        "stft_loss_scale": 20.0,
        "time_domain_loss_scale": 0.0,
        "commit_loss_scale": 0.0,
        "disc_updates_per_period": 1,
        "disc_update_period": 1,
        "loss_resolutions": resolutions,
        "mel_loss_dims": [32, 64, 128],
        "mel_loss_log_guard": 1.0,
        "stft_loss_log_guard": 1.0,
        "feature_loss_type": "absolute",
        "audio_encoder": {
            "_target_": f"{_MODULES}.CausalHiFiGANEncoder",
            "down_sample_rates": down_rates,
            "encoded_dim": vq.latent_dim,
            "base_channels": encoder_channels,
            "activation": "lrelu",
            "pad_mode": "replicate",
        },
        "audio_decoder": {
            "_target_": f"{_MODULES}.CausalHiFiGANDecoder",
            "up_sample_rates": list(dec.up_sample_rates),
            "input_dim": dec.input_dim,
            "base_channels": dec.base_channels,
            "activation": dec.activation,
            "output_activation": dec.output_activation,
            "pad_mode": "replicate",
            "n_groups_equal_to_out_channels": dec.n_groups_equal_to_out_channels,
        },
        "vector_quantizer": {
            "_target_": f"{_MODULES}.GroupFiniteScalarQuantizer",
            "num_groups": vq.num_groups,
            "num_levels_per_group": list(vq.levels),
        },
        "discriminator": {
            "_target_": f"{_MODULES}.Discriminator",
            "discriminators": [
                {
                    "_target_": f"{_MODULES}.MultiResolutionDiscriminatorSTFT",
                    "resolutions": [[512, 128, 512]],
                    "stft_bands": [[0.0, 0.5], [0.5, 1.0]],
                }
            ],
        },
        "generator_loss": {"_target_": f"{_LOSSES}.GeneratorSquaredLoss"},
        "discriminator_loss": {"_target_": f"{_LOSSES}.DiscriminatorSquaredLoss"},
    }


def randomize_codec(model: NanoCodec, seed: int) -> None:
    """Deterministic random weights (CPU generator) scaled to keep activations O(1):
    weights ~ N(0, 1/fan_in), small biases, snake alphas around 1."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.decoder.modules():
            if isinstance(module, StatefulLayer):
                w = module.weight  # type: ignore[union-attr]
                if isinstance(module, CausalConvTranspose1d):
                    # Each output sample sees (in/groups) channels x (K/stride) taps.
                    fan_in = (w.shape[0] // module.groups) * (w.shape[2] // module.stride)
                else:
                    fan_in = w.shape[1] * w.shape[2]
                w.copy_(torch.randn(w.shape, generator=gen) / math.sqrt(max(1, fan_in)))
                module.bias.copy_(  # type: ignore[union-attr]
                    (torch.rand(module.bias.shape, generator=gen) - 0.5) * 0.1  # type: ignore[union-attr]
                )
            elif isinstance(module, Activation) and module.alpha is not None:
                module.alpha.copy_(0.5 + torch.rand(module.alpha.shape, generator=gen))
        for name, module in model.decoder.named_modules():
            if name.endswith(".skip_conv"):
                module.weight.mul_(_RESIDUAL_GAIN)  # type: ignore[operator]
        model.decoder.post_conv.weight.mul_(_OUTPUT_GAIN)


def nemo_decoder_state(model: NanoCodec, legacy_weight_norm: bool = False) -> dict[str, Tensor]:
    """The inverse of :func:`kanitts.codec.loading.decoder_state_from_nemo`: this decoder's weights under NeMo's
    key names, weight-normalised (``g = ||w||``, ``v = w``). Used to write test archives."""
    out: dict[str, Tensor] = {}
    for name, module in model.decoder.named_modules():
        if isinstance(module, StatefulLayer):
            w = module.weight.detach().float().cpu()  # type: ignore[union-attr]
            g = w.flatten(1).norm(dim=1).reshape((-1,) + (1,) * (w.dim() - 1))
            base = f"{DECODER_PREFIX}{name}.conv"
            out[f"{base}.bias"] = module.bias.detach().float().cpu().clone()  # type: ignore[union-attr]
            if legacy_weight_norm:
                out[f"{base}.weight_g"], out[f"{base}.weight_v"] = g, w.clone()
            else:
                out[f"{base}.parametrizations.weight.original0"] = g
                out[f"{base}.parametrizations.weight.original1"] = w.clone()
        elif isinstance(module, Activation) and module.alpha is not None:
            inner = "activation.snake_act" if module.kind == "half_snake" else "activation"
            out[f"{DECODER_PREFIX}{name}.{inner}.alpha"] = module.alpha.detach().float().cpu().clone()
    return out


def _encoder_state(cfg: CodecConfig, channels: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """Random ``audio_encoder.*`` weights with CausalHiFiGANEncoder's key names/shapes."""
    out: dict[str, torch.Tensor] = {}

    def conv(name: str, c_out: int, c_in: int, k: int) -> None:
        v = torch.randn(c_out, c_in, k, generator=gen) / math.sqrt(c_in * k)
        base = f"audio_encoder.{name}.conv"
        out[f"{base}.bias"] = torch.zeros(c_out)
        out[f"{base}.parametrizations.weight.original0"] = v.flatten(1).norm(dim=1).reshape(-1, 1, 1)
        out[f"{base}.parametrizations.weight.original1"] = v

    dec = cfg.decoder
    conv("pre_conv", channels, 1, 7)
    c = channels
    for i, rate in enumerate(reversed(dec.up_sample_rates)):
        for k_idx, k in enumerate(dec.resblock_kernel_sizes):
            for d_idx, _ in enumerate(dec.resblock_dilation_sizes):
                prefix = f"res_layers.{i}.res_blocks.{k_idx}.res_blocks.{d_idx}"
                conv(f"{prefix}.input_conv", c, c, k)
                conv(f"{prefix}.skip_conv", c, c, k)
        conv(f"down_sample_conv_layers.{i}", 2 * c, c, 2 * rate)
        c *= 2
    conv("post_conv", cfg.quantizer.latent_dim, c, 7)
    return out


def _quantizer_state(cfg: QuantizerConfig) -> dict[str, torch.Tensor]:
    levels = torch.tensor(cfg.levels, dtype=torch.int32)
    bases = torch.cumprod(torch.cat([torch.ones(1, dtype=torch.int32), levels[:-1]]), 0, dtype=torch.int32)
    out: dict[str, torch.Tensor] = {}
    for g in range(cfg.num_groups):
        out[f"vector_quantizer.fsqs.{g}.dim_base_index"] = bases.reshape(1, -1, 1).clone()
        out[f"vector_quantizer.fsqs.{g}.num_levels"] = levels.reshape(1, -1, 1).clone()
    return out


def build_tiny_state(
    full_size: bool = False, seed: int = 0, legacy_weight_norm: bool = False
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """``(model_config, state_dict)`` of a random NanoCodec, deterministic in ``seed``."""
    cfg = tiny_codec_config(full_size)
    model = NanoCodec(cfg)
    randomize_codec(model, seed)
    enc_channels = FULL_ENCODER_CHANNELS if full_size else TINY_ENCODER_CHANNELS
    gen = torch.Generator().manual_seed(seed + 1)
    state: dict[str, torch.Tensor] = {}
    state.update(_encoder_state(cfg, enc_channels, gen))
    state.update(_quantizer_state(cfg.quantizer))
    state.update(nemo_decoder_state(model, legacy_weight_norm=legacy_weight_norm))
    return nemo_model_config(cfg, enc_channels), state


def write_nemo(
    path: str | Path, config: dict[str, Any], state: dict[str, torch.Tensor], gzip: bool = False
) -> Path:
    """Write ``config`` + ``state`` as a ``.nemo`` tar (members under ``./`` as NeMo does)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ckpt = io.BytesIO()
    torch.save(state, ckpt)
    members = {
        CONFIG_NAME: yaml.safe_dump(config, sort_keys=False).encode("utf-8"),
        WEIGHTS_NAME: ckpt.getvalue(),
    }
    tmp = path.with_name(path.name + ".partial")
    with tarfile.open(tmp, "w:gz" if gzip else "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(f"./{name}")
            info.size = len(data)
            info.mtime = int(time.time())
            tar.addfile(info, io.BytesIO(data))
    tmp.replace(path)  # never leave a half-written archive under the final name
    return path


def write_tiny_nemo(
    path: str | Path,
    *,
    full_size: bool = False,
    seed: int = 0,
    gzip: bool = False,
    legacy_weight_norm: bool = False,
) -> Path:
    """Write a random-weight NanoCodec ``.nemo`` to ``path`` (a file, or a folder that
    receives ``nanocodec-tiny.nemo``/``nanocodec-full.nemo``) and return its path.

    ``full_size`` uses the real sizes (864 decoder channels, ~31.5M decoder parameters)
    for benchmarks; the default (96 channels) keeps tests fast. ``gzip`` and
    ``legacy_weight_norm`` (``weight_g``/``weight_v`` keys) produce the variants older
    tools wrote."""
    path = Path(path)
    if path.is_dir() or not path.suffix:
        path = path / ("nanocodec-full.nemo" if full_size else "nanocodec-tiny.nemo")
    config, state = build_tiny_state(full_size, seed, legacy_weight_norm)
    out = write_nemo(path, config, state, gzip=gzip)
    logger.info("wrote random NanoCodec (%s, seed %d) to %s", "full" if full_size else "tiny", seed, out)
    return out
