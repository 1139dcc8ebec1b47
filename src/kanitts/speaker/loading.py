"""Load the speaker encoder from a hub id or a local folder.

The on-disk format is a transformers ``save_pretrained`` folder of the reference
``EmbeddingsModel`` (a ``WavLMPreTrainedModel``): ``config.json`` (a ``wavlm`` config plus
``embd_size`` and ``top_interm_size``) and the weights as ``model.safetensors`` (possibly
sharded) or ``pytorch_model.bin``, with keys ``wavlm.*`` and ``top_layers.*``. Older
checkpoints store the positional conv's weight norm as ``weight_g``/``weight_v``; they are
renamed to torch's parametrization names on load, as transformers does.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from transformers import WavLMConfig

from kanitts.hub import ModelLoadError, resolve_dir
from kanitts.speaker.encoder import DEFAULT_SPEAKER_ENCODER, SpeakerEncoder

logger = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
SAFETENSORS_NAME = "model.safetensors"
BIN_NAME = "pytorch_model.bin"
_LEGACY_RENAMES = (
    (".weight_g", ".parametrizations.weight.original0"),
    (".weight_v", ".parametrizations.weight.original1"),
)
#: Keys a checkpoint may carry or lack without affecting inference.
_OPTIONAL_SUFFIXES = ("num_batches_tracked", "masked_spec_embed")


def read_encoder_config(folder: Path) -> WavLMConfig:
    """``config.json`` of an encoder folder as a :class:`WavLMConfig` (extra keys kept)."""
    path = folder / CONFIG_NAME
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"speaker encoder {folder}: cannot read {CONFIG_NAME} ({exc})") from None
    if raw.get("model_type") not in (None, "wavlm"):
        raise ModelLoadError(
            f"speaker encoder {folder}: model_type {raw.get('model_type')!r} is not 'wavlm'"
        )
    raw.pop("model_type", None)
    return WavLMConfig(**raw)


def read_encoder_state(folder: Path) -> dict[str, torch.Tensor]:
    """The checkpoint's tensors with legacy weight-norm names renamed."""
    index = folder / (SAFETENSORS_NAME + ".index.json")
    if index.is_file():
        try:
            names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (OSError, ValueError, KeyError) as exc:
            raise ModelLoadError(f"speaker encoder {folder}: bad {index.name} ({exc})") from None
        shards = [folder / name for name in names]
    elif (folder / SAFETENSORS_NAME).is_file():
        shards = [folder / SAFETENSORS_NAME]
    else:
        shards = sorted(folder.glob("*.safetensors"))[:1]
    state: dict[str, torch.Tensor] = {}
    if shards:
        from safetensors.torch import load_file

        for shard in shards:
            state.update(load_file(str(shard)))
    elif (folder / BIN_NAME).is_file():
        state = torch.load(folder / BIN_NAME, map_location="cpu", weights_only=True)
    else:
        raise ModelLoadError(
            f"speaker encoder {folder}: no {SAFETENSORS_NAME} or {BIN_NAME} in the folder"
        )
    renamed: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        for old, new in _LEGACY_RENAMES:
            if key.endswith(old):
                key = key[: -len(old)] + new
        renamed[key] = value
    return renamed


def encoder_from_state(
    config: WavLMConfig, state: dict[str, torch.Tensor], source: str = "state dict"
) -> SpeakerEncoder:
    """Build a :class:`SpeakerEncoder` and load ``state`` into it (strict, except for
    training-only keys). Raises :class:`ModelLoadError` naming missing/unexpected keys."""
    model = SpeakerEncoder(config)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith(_OPTIONAL_SUFFIXES)]
    unexpected = [k for k in unexpected if not k.endswith(_OPTIONAL_SUFFIXES)]
    if missing or unexpected:
        raise ModelLoadError(
            f"speaker encoder {source}: weights do not match its config "
            f"(missing {missing[:4]}{'...' if len(missing) > 4 else ''}, "
            f"unexpected {unexpected[:4]}{'...' if len(unexpected) > 4 else ''})"
        )
    return model.eval()


def load_speaker_encoder(
    id_or_path: str | Path = DEFAULT_SPEAKER_ENCODER,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> SpeakerEncoder:
    """Load the encoder by hub id (cache first) or folder, on ``device`` in ``dtype``,
    in eval mode. Raises :class:`kanitts.hub.ModelLoadError` (one user-facing line) when
    it cannot be found, fetched or matched to its config."""
    folder = resolve_dir(id_or_path, allow_patterns=[CONFIG_NAME, "model*.safetensors*"])
    if not any(folder.glob("*.safetensors")) and not (folder / BIN_NAME).is_file():
        folder = resolve_dir(id_or_path, allow_patterns=[CONFIG_NAME, BIN_NAME])  # older repos
    config = read_encoder_config(folder)
    model = encoder_from_state(config, read_encoder_state(folder), source=str(id_or_path))
    logger.info("speaker encoder %s: %d-d embeddings, %d WavLM layers", id_or_path, model.dim,
                config.num_hidden_layers)
    return model.to(device=device, dtype=dtype)
