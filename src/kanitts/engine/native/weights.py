"""Load an ``Lfm2ForCausalLM`` checkpoint (config.json + safetensors) into :class:`Lfm2`.

A hub id or a folder (``kanitts.hub.resolve_dir``); one ``model.safetensors`` or shards
listed in ``model.safetensors.index.json``. Tensor names follow transformers
(``model.layers.N.self_attn.q_proj.weight`` ...); a missing ``model.`` prefix is accepted.
Errors are :class:`kanitts.hub.ModelLoadError` with one user-facing line.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from kanitts.engine.native.model import AttnWeights, ConvWeights, LayerWeights, Lfm2
from kanitts.engine.native.spec import Lfm2Spec
from kanitts.hub import ModelLoadError, resolve_dir

logger = logging.getLogger(__name__)


def read_spec(folder: str | Path) -> Lfm2Spec:
    path = Path(folder) / "config.json"
    try:
        return Lfm2Spec.from_config(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError) as exc:
        raise ModelLoadError(f"could not read an LFM2 config from {path}: {exc}") from exc


def _read_tensors(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    index = folder / "model.safetensors.index.json"
    if index.exists():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    else:
        files = [p.name for p in sorted(folder.glob("*.safetensors"))]
    if not files:
        raise ModelLoadError(f"no *.safetensors weights in {folder}")
    out: dict[str, torch.Tensor] = {}
    for name in files:
        for key, t in load_file(str(folder / name)).items():
            out[key[len("model."):] if key.startswith("model.") else key] = t
    return out


def build_model(spec: Lfm2Spec, tensors: dict[str, torch.Tensor], device: torch.device | str,
                dtype: torch.dtype) -> Lfm2:
    """An :class:`Lfm2` from transformers-named tensors (``model.`` prefix stripped)."""
    dev = torch.device(device)
    used: set[str] = set()

    def get(name: str, optional: bool = False) -> torch.Tensor | None:
        if name not in tensors:
            if optional:
                return None
            raise ModelLoadError(f"checkpoint lacks tensor {name!r}")
        used.add(name)
        return tensors[name].to(device=dev, dtype=dtype)

    def need(name: str) -> torch.Tensor:
        t = get(name)
        assert t is not None
        return t

    layers: list[LayerWeights] = []
    for i in range(spec.num_layers):
        p = f"layers.{i}."
        w13 = torch.cat([need(p + "feed_forward.w1.weight"), need(p + "feed_forward.w3.weight")], 0)
        lw = LayerWeights(op_norm=need(p + "operator_norm.weight"), ffn_norm=need(p + "ffn_norm.weight"),
                          w13=w13, w2=need(p + "feed_forward.w2.weight"))
        if i in spec.attn_layers:
            a = p + "self_attn."
            qkv = torch.cat([need(a + "q_proj.weight"), need(a + "k_proj.weight"), need(a + "v_proj.weight")], 0)
            lw.attn = AttnWeights(qkv=qkv, out=need(a + "out_proj.weight"),
                                  q_norm=need(a + "q_layernorm.weight"), k_norm=need(a + "k_layernorm.weight"))
        else:
            c = p + "conv."
            kernel = need(c + "conv.weight")
            lw.conv = ConvWeights(in_proj=need(c + "in_proj.weight"), conv=kernel.reshape(spec.hidden_size, -1),
                                  out_proj=need(c + "out_proj.weight"), in_bias=get(c + "in_proj.bias", True),
                                  conv_bias=get(c + "conv.bias", True), out_bias=get(c + "out_proj.bias", True))
        layers.append(lw)
    norm_name = "embedding_norm.weight" if "embedding_norm.weight" in tensors else "norm.weight"
    embed = need("embed_tokens.weight")
    head = None if spec.tie_embeddings else get("lm_head.weight", optional=True)
    model = Lfm2(spec, embed, need(norm_name), layers, head)
    unused = set(tensors) - used - {"lm_head.weight"}
    if unused:
        logger.warning("native engine: %d checkpoint tensors unused (e.g. %s)", len(unused), sorted(unused)[0])
    return model


def load_lfm2(model: str | Path, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
              ) -> Lfm2:
    """Load a hub id or folder onto ``device`` in ``dtype``. Raises ModelLoadError."""
    folder = resolve_dir(model)
    spec = read_spec(folder)
    model_ = build_model(spec, _read_tensors(folder), device, dtype)
    logger.info("native engine: loaded %s (%d layers, %d attention) on %s in %s",
                model, spec.num_layers, len(spec.attn_layers), device, dtype)
    return model_
