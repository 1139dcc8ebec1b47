"""Read NanoCodec ``.nemo`` archives without NeMo.

A ``.nemo`` file is a tar archive (NeMo writes it uncompressed; gzip is also accepted)
holding ``model_config.yaml`` (the Hydra config of ``AudioCodecModel``) and
``model_weights.ckpt`` (a plain ``state_dict`` saved with ``torch.save``), sometimes under
a ``./`` prefix. Only the quantizer and decoder are needed to turn codes into audio, so
the encoder, discriminator and loss modules stored alongside are skipped.

Weight-normalised convolutions appear either as ``parametrizations.weight.original0/1``
(``torch.nn.utils.parametrizations.weight_norm``, current NeMo) or ``weight_g/weight_v``
(the legacy hook in older checkpoints). Both are folded into a plain weight here, once,
so inference never recomputes the norm.
"""

from __future__ import annotations

import io
import logging
import re
import tarfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import Tensor, nn

from kanitts.codec.layers import CodecConfig, DecoderConfig, QuantizerConfig
from kanitts.hub import ModelLoadError

logger = logging.getLogger(__name__)

CONFIG_NAME = "model_config.yaml"
WEIGHTS_NAME = "model_weights.ckpt"
DECODER_PREFIX = "audio_decoder."
QUANTIZER_PREFIX = "vector_quantizer."

_DECODER_TARGET = "CausalHiFiGANDecoder"
_GROUP_FSQ_TARGET = "GroupFiniteScalarQuantizer"
_FSQ_TARGET = "FiniteScalarQuantizer"
#: CausalHiFiGANDecoder arguments that do not change the decode math here: ``pad_mode``
#: is the conv's own padding mode, but NeMo's causal conv has padding 0 and pads
#: explicitly with zeros.
_IGNORED_DECODER_ARGS = {"_target_", "pad_mode"}
_INTERP = re.compile(r"\$\{([^}]+)\}")


# --------------------------------------------------------------------------- archive
def read_nemo_archive(path: str | Path) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """``(config, state_dict)`` from a ``.nemo`` tar (plain or gzip)."""
    path = Path(path)
    try:
        with tarfile.open(path, "r:*") as tar:
            members = {Path(m.name).name: m for m in tar.getmembers() if m.isfile()}
            missing = [n for n in (CONFIG_NAME, WEIGHTS_NAME) if n not in members]
            if missing:
                raise ModelLoadError(
                    f"{path}: not a NeMo model archive (missing {', '.join(missing)})"
                )
            cfg_file = tar.extractfile(members[CONFIG_NAME])
            ckpt_file = tar.extractfile(members[WEIGHTS_NAME])
            assert cfg_file is not None and ckpt_file is not None
            cfg_text = cfg_file.read().decode("utf-8")
            ckpt_bytes = ckpt_file.read()
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise ModelLoadError(f"{path}: cannot read .nemo archive ({exc})") from None
    try:
        config = yaml.safe_load(cfg_text)
    except yaml.YAMLError as exc:
        raise ModelLoadError(f"{path}: malformed {CONFIG_NAME} ({exc})") from None
    if not isinstance(config, dict):
        raise ModelLoadError(f"{path}: {CONFIG_NAME} is not a mapping")
    try:
        # weights_only: a checkpoint is data, never code to execute.
        state = torch.load(io.BytesIO(ckpt_bytes), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is a load error
        raise ModelLoadError(f"{path}: cannot read {WEIGHTS_NAME} ({exc})") from None
    if isinstance(state, Mapping) and "state_dict" in state and isinstance(state["state_dict"], Mapping):
        state = state["state_dict"]  # a Lightning checkpoint, just in case
    if not isinstance(state, Mapping):
        raise ModelLoadError(f"{path}: {WEIGHTS_NAME} is not a state_dict")
    return resolve_interpolations(config), dict(state)


def resolve_interpolations(cfg: dict[str, Any]) -> dict[str, Any]:
    """Resolve OmegaConf-style absolute ``${a.b}`` references (configs saved without
    ``resolve=True`` keep them, e.g. ``up_sample_rates: ${up_sample_rates}``)."""

    def lookup(dotted: str, depth: int) -> Any:
        node: Any = cfg
        for part in dotted.split("."):
            if isinstance(node, dict) and part in node:
                node = node[part]
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                # Relative/resolver references (``${..x}``, ``${oc.env:X}``) are not
                # needed by the decode path; keep the literal so errors stay readable.
                return "${" + dotted + "}"
        return resolve(node, depth + 1)

    def resolve(node: Any, depth: int = 0) -> Any:
        if depth > 32:
            raise ModelLoadError("model_config.yaml: interpolation cycle")
        if isinstance(node, dict):
            return {k: resolve(v, depth) for k, v in node.items()}
        if isinstance(node, list):
            return [resolve(v, depth) for v in node]
        if isinstance(node, str):
            whole = _INTERP.fullmatch(node.strip())
            if whole:
                return lookup(whole.group(1), depth)
            return _INTERP.sub(lambda m: str(lookup(m.group(1), depth)), node)
        return node

    return resolve(cfg)


# --------------------------------------------------------------------------- config
def codec_config_from_dict(cfg: Mapping[str, Any]) -> CodecConfig:
    """Build a :class:`CodecConfig` from ``model_config.yaml`` (its ``audio_decoder`` and
    ``vector_quantizer`` sections), failing loudly on anything we cannot decode."""
    if "model" in cfg and "audio_decoder" not in cfg and isinstance(cfg["model"], Mapping):
        cfg = cfg["model"]  # a training config rather than a saved model config
    try:
        dec = dict(cfg["audio_decoder"])
        vq = dict(cfg["vector_quantizer"])
        sample_rate = int(cfg["sample_rate"])
        samples_per_frame = int(cfg["samples_per_frame"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelLoadError(f"model_config.yaml lacks a required entry: {exc}") from None

    target = str(dec.get("_target_", ""))
    if not target.endswith(_DECODER_TARGET):
        raise ModelLoadError(
            f"unsupported audio_decoder {target!r}: only {_DECODER_TARGET} (NanoCodec) is supported"
        )
    known = {f for f in DecoderConfig.__dataclass_fields__}
    unknown = sorted(set(dec) - known - _IGNORED_DECODER_ARGS)
    if unknown:
        raise ModelLoadError(f"audio_decoder has arguments this decoder does not implement: {unknown}")
    kwargs: dict[str, Any] = {}
    for key in known & set(dec):
        value = dec[key]
        kwargs[key] = tuple(int(v) for v in value) if isinstance(value, list) else value
    # NeMo's constructor defaults, which differ from NanoCodec's values.
    kwargs.setdefault("activation", "lrelu")
    kwargs.setdefault("output_activation", "tanh")
    kwargs.setdefault("up_sample_rates", (8, 8, 2, 2))
    kwargs.setdefault("base_channels", 512)
    decoder = DecoderConfig(**kwargs)

    vq_target = str(vq.get("_target_", ""))
    if vq_target.endswith(_GROUP_FSQ_TARGET):
        quantizer = QuantizerConfig(
            num_groups=int(vq["num_groups"]),
            levels=tuple(int(v) for v in vq["num_levels_per_group"]),
        )
    elif vq_target.endswith(_FSQ_TARGET):
        quantizer = QuantizerConfig(num_groups=1, levels=tuple(int(v) for v in vq["num_levels"]))
    else:
        raise ModelLoadError(
            f"unsupported vector_quantizer {vq_target!r}: expected {_GROUP_FSQ_TARGET}"
        )
    codec_cfg = CodecConfig(
        sample_rate=sample_rate,
        samples_per_frame=samples_per_frame,
        quantizer=quantizer,
        decoder=decoder,
    )
    try:
        codec_cfg.validate()
    except ValueError as exc:
        raise ModelLoadError(f"model_config.yaml: {exc}") from None
    return codec_cfg


# --------------------------------------------------------------------------- weights
_WN_SUFFIXES = {
    ".conv.parametrizations.weight.original0": "g",
    ".conv.parametrizations.weight.original1": "v",
    ".conv.weight_g": "g",
    ".conv.weight_v": "v",
}
_PLAIN_CONV = re.compile(r"^(.*)\.conv\.(weight|bias)$")
_ALPHA = re.compile(r"^(.*)\.activation\.(?:snake_act\.)?alpha$")


def fold_weight_norm(g: Tensor, v: Tensor) -> Tensor:
    """``w = g * v / ||v||`` with the norm over every dim but 0 (weight_norm's ``dim=0``,
    which is what NeMo uses for convs and transposed convs alike)."""
    g32, v32 = g.float(), v.float()
    norm = v32.flatten(1).norm(dim=1).reshape((-1,) + (1,) * (v32.dim() - 1))
    return v32 * (g32 / norm)


def decoder_state_from_nemo(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """NeMo ``audio_decoder.*`` keys -> this package's ``decoder.*`` parameter names,
    folding weight norm. Keys that match no known pattern are kept verbatim so that the
    strict comparison in :func:`load_decoder_weights` reports them."""
    out: dict[str, Tensor] = {}
    parts: dict[str, dict[str, Tensor]] = {}
    for key, value in state.items():
        if not key.startswith(DECODER_PREFIX):
            continue
        name = key[len(DECODER_PREFIX) :]
        for suffix, role in _WN_SUFFIXES.items():
            if name.endswith(suffix):
                parts.setdefault(name[: -len(suffix)], {})[role] = value
                break
        else:
            if m := _PLAIN_CONV.match(name):
                out[f"decoder.{m.group(1)}.{m.group(2)}"] = value
            elif m := _ALPHA.match(name):
                out[f"decoder.{m.group(1)}.alpha"] = value
            else:
                out[f"decoder.{name}"] = value
    for module, gv in parts.items():
        if set(gv) != {"g", "v"}:
            raise ModelLoadError(
                f"weight-normalised conv audio_decoder.{module} has only {sorted(gv)} of g/v"
            )
        key = f"decoder.{module}.weight"
        if key in out:
            raise ModelLoadError(f"audio_decoder.{module} has both plain and weight-norm weights")
        out[key] = fold_weight_norm(gv["g"], gv["v"])
    return out


def check_quantizer_buffers(state: Mapping[str, Tensor], cfg: QuantizerConfig) -> None:
    """The FSQ checkpoint buffers carry no learned values, but if present they must agree
    with the config; a mismatch means the config and weights belong to different models."""
    levels = torch.tensor(cfg.levels)
    for key, value in state.items():
        if not key.startswith(QUANTIZER_PREFIX):
            continue
        if key.endswith(".num_levels"):
            expected = levels
        elif key.endswith(".dim_base_index"):
            expected = torch.cumprod(torch.cat([torch.ones(1, dtype=torch.long), levels[:-1]]), 0)
        else:
            raise ModelLoadError(f"unexpected quantizer weight {key!r} (FSQ has no learned weights)")
        if not torch.equal(value.reshape(-1).long(), expected.long()):
            raise ModelLoadError(
                f"{key} = {value.reshape(-1).tolist()} disagrees with config levels {list(cfg.levels)}"
            )


def load_decoder_weights(model: nn.Module, state: Mapping[str, Tensor]) -> None:
    """Copy converted NeMo weights into ``model`` strictly: every decoder parameter must
    be present with the right shape and nothing unknown may be left over."""
    converted = decoder_state_from_nemo(state)
    own = {k: v for k, v in model.state_dict().items() if k.startswith("decoder.")}
    missing = sorted(set(own) - set(converted))
    unexpected = sorted(set(converted) - set(own))
    if missing or unexpected:
        def show(keys: list[str]) -> str:
            head = ", ".join(k.replace("decoder.", DECODER_PREFIX, 1) for k in keys[:8])
            return head + (f", ... ({len(keys)} total)" if len(keys) > 8 else "")

        problems = []
        if missing:
            problems.append(f"missing decoder weights: {show(missing)}")
        if unexpected:
            problems.append(f"unexpected decoder weights: {show(unexpected)}")
        raise ModelLoadError("checkpoint does not match its config: " + "; ".join(problems))
    for key, target in own.items():
        value = converted[key]
        if tuple(value.shape) != tuple(target.shape):
            raise ModelLoadError(
                f"{key.replace('decoder.', DECODER_PREFIX, 1)}: checkpoint shape "
                f"{tuple(value.shape)} != expected {tuple(target.shape)}"
            )
    model.load_state_dict(converted, strict=False)
